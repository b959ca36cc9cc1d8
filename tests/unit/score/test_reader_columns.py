"""The scoring reader reads the features' explicit column list: never `leads.status` nor `leads.updated_at`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from pipelines.features.columns import INPUT_COLUMNS, NEVER_READ
from pipelines.score import reader


def _chunks(url: str) -> list[reader.CrmChunk]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            reader.preflight(conn)
            return list(reader.iter_chunks(conn, chunk_leads=1))
    finally:
        engine.dispose()


def test_chunks_hold_exactly_the_listed_columns(tiny_crm_sqlite: str) -> None:
    chunks = _chunks(tiny_crm_sqlite)

    assert chunks
    for chunk in chunks:
        for table, frame in chunk.tables.items():
            # the keys that name a bad row, then exactly the features' and rules' columns
            expected = dict.fromkeys([*reader.KEY_COLUMNS[table], *INPUT_COLUMNS[table]])
            assert list(frame.columns) == list(expected), table


def test_a_crm_without_the_current_state_columns_is_read_alike(tiny_crm_sqlite: str) -> None:
    before = _chunks(tiny_crm_sqlite)
    db = Path(sa.make_url(tiny_crm_sqlite).database or "")
    with sqlite3.connect(db) as conn:
        for column in NEVER_READ["leads"]:
            conn.execute(f"ALTER TABLE leads DROP COLUMN {column}")
    after = _chunks(tiny_crm_sqlite)

    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        for table in old.tables:
            assert old.tables[table].equals(new.tables[table]), table
