"""Streaming the CRM in batches: the same validated rows as a whole-table read, and the whole-table checks
(unique keys, references) across batches, with memory for one batch.

Tests taking the `engine` fixture run on SQLite and on PostgreSQL (throwaway schema; skipped where it is absent).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.crm import arrow, stream
from pipelines.crm.db import make_engine, read_crm, replace_tables, write_crm
from pipelines.crm.schema import TABLES, CrmDataError, validate_crm
from pipelines.crm.stream import CrmChecker, KeySet, read_crm_batches

Crm = dict[str, pd.DataFrame]
ONE_ROW = dict.fromkeys(TABLES, 1)  # every table in batches of one row: every check spans batches


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path, tiny_crm: Crm) -> Iterator[sa.Engine]:
    url = f"sqlite:///{tmp_path / 'crm.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    engine = make_engine(url, create_dirs=True)
    write_crm(engine, tiny_crm)
    yield engine
    engine.dispose()


def _execute(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def _streamed(engine: sa.Engine, rows: dict[str, int] | None = ONE_ROW) -> Crm:
    parts: dict[str, list[pd.DataFrame]] = {}
    for table, frame in read_crm_batches(engine, rows=rows):
        parts.setdefault(table, []).append(frame)
    return {table: pd.concat(frames, ignore_index=True) for table, frames in parts.items()}


def test_batches_hold_the_rows_and_dtypes_of_the_whole_table_read(engine: sa.Engine) -> None:
    streamed = _streamed(engine)

    whole = read_crm(engine)
    assert list(streamed) == list(TABLES)
    for table in TABLES:
        pd.testing.assert_frame_equal(streamed[table], whole[table], obj=table)


def test_the_sqlalchemy_cursor_serves_databases_without_an_adbc_driver(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrowed = _streamed(engine)
    monkeypatch.setattr(arrow, "supports", lambda conn: False)

    rows = _streamed(engine)

    for table in TABLES:
        pd.testing.assert_frame_equal(rows[table], arrowed[table], obj=table)


def test_columns_whose_first_rows_are_empty_keep_their_kind(tmp_path: Path, tiny_crm: Crm) -> None:
    # SQLite's ADBC driver types a column from its first batch: all NULL there would make it an integer column
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}", create_dirs=True)
    write_crm(engine, tiny_crm)
    _execute(
        engine,
        "UPDATE accounts SET domain = NULL, employee_count = NULL, annual_revenue = NULL WHERE account_id = 10",
        "UPDATE accounts SET annual_revenue = 7 WHERE account_id = 11",  # an integer in a real column
    )

    accounts = _streamed(engine)["accounts"]

    assert accounts["domain"].isna().tolist() == [True, True]
    assert accounts["annual_revenue"].tolist()[1] == 7.0
    assert str(accounts["annual_revenue"].dtype) == "float64"
    engine.dispose()


def test_a_value_of_the_wrong_kind_in_a_later_batch_names_its_row(tmp_path: Path, tiny_crm: Crm) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}", create_dirs=True)
    write_crm(engine, tiny_crm)
    _execute(engine, "UPDATE activities SET lead_id = 'two' WHERE activity_id = 102")

    with pytest.raises(CrmDataError) as err:
        _streamed(engine)

    assert "table 'activities', column 'lead_id': 1 value(s) are text, not integer" in str(err.value)
    assert "activity_id=102: 'two'" in str(err.value)
    engine.dispose()


def test_a_key_repeated_in_another_batch_is_refused_with_its_value(engine: sa.Engine, tiny_crm: Crm) -> None:
    tables = validate_crm(tiny_crm)
    tables["activities"].loc[2, "activity_id"] = 100  # the first row's id, two batches later
    replace_tables(engine, tables)  # no primary key: a CRM export does not promise one

    with pytest.raises(CrmDataError, match=r"table 'activities', column 'activity_id': 1 row\(s\) repeat .*100"):
        _streamed(engine)


def test_references_to_missing_rows_are_refused_all_at_once(engine: sa.Engine, tiny_crm: Crm) -> None:
    tables = validate_crm(tiny_crm)
    tables["activities"].loc[2, "lead_id"] = 99
    tables["leads"].loc[1, "campaign_id"] = 7
    replace_tables(engine, tables)

    with pytest.raises(CrmDataError) as err:
        _streamed(engine)

    message = str(err.value)
    assert "table 'leads', column 'campaign_id': 1 row(s) refer to no row of 'campaigns.campaign_id'" in message
    assert "lead_id=2: campaign_id=7" in message
    assert "table 'activities', column 'lead_id': 1 row(s) refer to no row of 'leads.lead_id'" in message
    assert "activity_id=102: lead_id=99" in message


def test_a_missing_column_is_named_before_any_row_is_read(engine: sa.Engine) -> None:
    _execute(engine, "ALTER TABLE stage_history DROP COLUMN reason")

    with pytest.raises(CrmDataError, match=r"table 'stage_history' is missing column\(s\) \['reason'\]"):
        next(read_crm_batches(engine))


def test_batch_sizes_follow_the_values_per_batch() -> None:
    assert stream.batch_rows("activities") == stream.BATCH_CELLS // 5
    assert stream.batch_rows("leads") == stream.BATCH_CELLS // 15


def test_a_key_set_finds_repeats_and_members_across_small_and_large_keys() -> None:
    keys = KeySet()
    huge = 1 << 40

    assert keys.add(np.array([3, 0, 17, huge])).tolist() == []
    assert keys.add(np.array([4, 17, huge, huge + 1])).tolist() == [17, huge]

    assert keys.contains(np.array([0, 1, 3, 4, 17, 18, 10**6, huge + 1, huge + 2])).tolist() == [
        True,
        False,
        True,
        True,
        True,
        False,
        False,
        True,
        False,
    ]
    assert keys.values().tolist() == [0, 3, 4, 17, huge, huge + 1]


def test_the_checker_needs_referenced_tables_first(tiny_crm: Crm) -> None:
    with pytest.raises(RuntimeError, match="'leads' must be read before 'activities'"):
        CrmChecker().batch("activities", tiny_crm["activities"])
