"""The Arrow reader (ADBC) hands out the same validated CRM rows as the SQLAlchemy cursors, in whole accounts."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from pipelines.config import DemoCrmParams
from pipelines.crm.db import COVERING_COLUMNS, SCORING_INDEXES, index_name, make_engine, scoring_indexes, write_crm
from pipelines.crm.demo import generate
from pipelines.crm.schema import CrmDataError
from pipelines.score import arrow_reader, reader
from tests.support.params import demo_icp

pytest.importorskip("adbc_driver_sqlite")
CHUNK = 50


@pytest.fixture(scope="module")
def demo_tables() -> dict[str, pd.DataFrame]:
    return generate(DemoCrmParams(leads=400, seed=3, end_date=date(2026, 11, 20), history_days=300), demo_icp()).tables


@pytest.fixture(scope="module")
def demo_db(demo_tables: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arrow") / "crm.db"
    write_crm(make_engine(f"sqlite:///{path}", create_dirs=True), demo_tables)
    return path


def _chunks(url: str, arrow: bool, chunk_leads: int = CHUNK) -> list[reader.CrmChunk]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            counts = reader.preflight(conn)
            return list(reader.iter_chunks(conn, chunk_leads, counts=counts, arrow=arrow))
    finally:
        engine.dispose()


def _whole(chunks: list[reader.CrmChunk], table: str) -> pd.DataFrame:
    key = reader.KEY_COLUMNS[table][0]
    return pd.concat([c.tables[table] for c in chunks]).sort_values(key).reset_index(drop=True)


def _same_rows(arrow: list[reader.CrmChunk], rows: list[reader.CrmChunk]) -> None:
    """Every table's rows and dtypes alike, accounts without leads included (each is checked once)."""
    pd.testing.assert_frame_equal(arrow[0].tables["campaigns"], rows[0].tables["campaigns"], obj="campaigns")
    for table in ("accounts", "leads", "activities", "stage_history"):
        pd.testing.assert_frame_equal(_whole(arrow, table), _whole(rows, table), obj=table)


def test_arrow_chunks_hold_the_rows_of_the_cursor_chunks(demo_db: Path) -> None:
    url = f"sqlite:///{demo_db}"
    _same_rows(_chunks(url, arrow=True), _chunks(url, arrow=False))


@pytest.mark.postgres
def test_arrow_chunks_hold_the_rows_of_the_cursor_chunks_on_postgresql(
    demo_tables: dict[str, pd.DataFrame], pg_schema_url: str
) -> None:
    pytest.importorskip("adbc_driver_postgresql")
    write_crm(make_engine(pg_schema_url), demo_tables)
    _same_rows(_chunks(pg_schema_url, arrow=True), _chunks(pg_schema_url, arrow=False))


def test_every_lead_is_in_one_chunk_with_its_whole_account_and_its_events(demo_db: Path) -> None:
    chunks = _chunks(f"sqlite:///{demo_db}", arrow=True)
    seen: set[int] = set()
    for i, chunk in enumerate(chunks):
        leads = chunk.tables["leads"]
        ids = set(leads["lead_id"].tolist())
        assert not ids & seen
        seen |= ids
        accounts = set(leads["account_id"].dropna().tolist())
        assert accounts <= set(chunk.tables["accounts"]["account_id"].tolist())
        assert accounts.isdisjoint(
            set().union(*(set(c.tables["leads"]["account_id"].dropna()) for c in chunks[i + 1 :]))
        )
        for table in ("activities", "stage_history"):
            assert set(chunk.tables[table]["lead_id"].tolist()) <= ids
        # at least chunk_leads leads, except the last chunk of each kind (accounts, then leads without one)
        last_of_kind = i == len(chunks) - 1 or (
            leads["account_id"].notna().all() and chunks[i + 1].tables["leads"]["account_id"].isna().all()
        )
        assert len(leads) >= CHUNK or last_of_kind
    with sqlite3.connect(demo_db) as conn:
        assert seen == {r[0] for r in conn.execute("SELECT lead_id FROM leads")}
        assert (
            sum(len(c.tables["activities"]) for c in chunks)
            == conn.execute("SELECT COUNT(*) FROM activities").fetchone()[0]
        )


def _batches(ids: list[int], counts: list[int], size: int) -> list[pa.RecordBatch]:
    return [
        pa.record_batch([pa.array(ids[i : i + size]), pa.array(counts[i : i + size])], names=["id", "n"])
        for i in range(0, len(ids), size)
    ]


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 100])
def test_ranges_cut_after_the_group_that_reaches_the_size_whatever_the_batches(batch: int) -> None:
    rng = np.random.default_rng(batch)
    ids = sorted(rng.choice(1000, size=40, replace=False).tolist())
    counts = rng.integers(1, 6, size=40).tolist()
    expected, first, total = [], None, 0
    for i, n in zip(ids, counts, strict=True):  # the rule, one group at a time
        first = i if first is None else first
        total += n
        if total >= 10:
            expected.append((first, i))
            first, total = None, 0
    if first is not None:
        expected.append((first, ids[-1]))

    assert arrow_reader.ranges(_batches(ids, counts, batch), 10) == expected
    assert arrow_reader.ranges([], 10) == []


def test_the_writer_creates_the_indexes_sqlite_plans_the_chunk_queries_with(demo_db: Path) -> None:
    columns = {t: reader._columns(t) for t in reader.KEY_COLUMNS}
    with sqlite3.connect(demo_db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {index_name(t, c) for t, c in scoring_indexes("sqlite")} <= names
        for kind in ("account", "lead"):
            for table, sql in arrow_reader.chunk_queries(kind, 1, 50, columns).items():
                plan = " | ".join(r[-1] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
                assert "SCAN" not in plan.replace("SCAN CONSTANT ROW", ""), (table, plan)  # searches only
                if table in ("activities", "stage_history"):  # the events come from the index alone
                    assert "USING COVERING INDEX ix_" + table in plan, plan


def test_the_event_indexes_cover_every_column_the_reader_selects() -> None:
    for table, covered in COVERING_COLUMNS.items():
        index = dict(scoring_indexes("sqlite"))[table]
        assert set(reader._columns(table)) <= set(index), table
        assert index[0] == "lead_id" and index == ("lead_id", *covered)
    assert scoring_indexes("postgresql") == SCORING_INDEXES


def test_a_value_of_another_type_deep_in_a_column_is_named_with_its_row(demo_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    shutil.copy(demo_db, db)
    with sqlite3.connect(db) as conn:
        last = conn.execute(
            "SELECT MAX(account_id) FROM accounts WHERE account_id IN (SELECT account_id FROM leads)"
        ).fetchone()[0]
        conn.execute("UPDATE accounts SET employee_count = 'lots' WHERE account_id = ?", (last,))
    with pytest.raises(CrmDataError) as err:
        _chunks(f"sqlite:///{db}", arrow=True, chunk_leads=10_000)
    assert "table 'accounts', column 'employee_count'" in str(err.value)
    assert "'lots'" in str(err.value) and f"account_id={last}" in str(err.value)


def test_the_sqlalchemy_reader_serves_databases_without_an_adbc_driver(demo_db: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{demo_db}")
    with engine.connect() as conn:
        assert arrow_reader.supports(conn)
    memory = sa.create_engine("sqlite://")
    with memory.connect() as conn:
        assert not arrow_reader.supports(conn)  # an in-memory database is this process's own: no second connection
