"""The CRM round trip and all-or-nothing writes against a real PostgreSQL (COPY path), in a throwaway schema."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.crm import db
from pipelines.crm.db import make_engine, read_crm, read_table, write_crm
from pipelines.crm.schema import TABLES, TIMESTAMP_COLUMNS, UTC_NS, CrmDataError, validate_crm

pytestmark = pytest.mark.postgres

Crm = dict[str, pd.DataFrame]


@pytest.fixture
def engine(pg_schema_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(pg_schema_url)
    yield engine
    engine.dispose()  # no idle connection may outlive the test: the schema is dropped next


def assert_same_crm(actual: Crm, expected: Crm) -> None:
    assert list(actual) == list(expected)
    for name in expected:
        pd.testing.assert_frame_equal(actual[name], expected[name], check_exact=True, obj=name)


def test_tables_land_in_the_throwaway_schema(engine: sa.Engine, pg_url: str, tiny_crm: Crm) -> None:
    write_crm(engine, tiny_crm)

    with engine.connect() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
    assert schema is not None and schema.startswith("leadscore_test_")
    plain = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)  # the URL without the search_path option
    assert set(sa.inspect(plain).get_table_names(schema=schema)) == set(TABLES)
    plain.dispose()


def test_write_then_read_round_trips_values_and_dtypes(engine: sa.Engine, tiny_crm: Crm) -> None:
    expected = validate_crm(tiny_crm)

    write_crm(engine, tiny_crm)
    actual = read_crm(engine)

    assert_same_crm(actual, expected)
    for table in TABLES:
        for column in TIMESTAMP_COLUMNS[table]:
            assert actual[table][column].dtype == UTC_NS
    assert actual["activities"]["occurred_at"][1] == pd.Timestamp("2025-03-05 11:30:00.123456", tz="UTC")
    assert actual["activities"]["detail"][0] == 'subject: "Hello, world"\nsecond line'
    assert actual["accounts"]["company_name"][1] == "Müller GmbH"


def test_copy_keeps_empty_strings_distinct_from_null(engine: sa.Engine, tiny_crm: Crm) -> None:
    tiny_crm["campaigns"].loc[1, "name"] = ""  # non-null column: "" must not arrive as NULL
    tiny_crm["activities"].loc[0, "detail"] = ""
    tiny_crm["activities"].loc[2, "detail"] = "\\N"  # the usual NULL marker, as a value

    write_crm(engine, tiny_crm)
    actual = read_crm(engine)

    assert actual["campaigns"]["name"][1] == ""
    assert actual["activities"]["detail"].tolist()[0] == ""
    assert pd.isna(actual["activities"]["detail"][1])
    assert actual["activities"]["detail"][2] == "\\N"


def test_replace_tables_is_all_or_nothing_when_an_insert_fails(
    engine: sa.Engine, tiny_crm: Crm, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_crm(engine, tiny_crm)
    before = {name: read_table(engine, name) for name in TABLES}
    changed = {name: frame.copy() for name, frame in tiny_crm.items()}
    changed["campaigns"]["name"] = ["renamed 1", "renamed 2"]
    changed["activities"] = changed["activities"].iloc[:1]
    calls: list[str] = []
    real_insert = db.insert_frame

    def flaky_insert(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
        calls.append(table.name)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        real_insert(conn, table, frame)

    monkeypatch.setattr(db, "insert_frame", flaky_insert)

    with pytest.raises(RuntimeError, match="disk full"):
        write_crm(engine, changed)

    assert calls == ["campaigns", "accounts", "leads"]
    assert_same_crm({name: read_table(engine, name) for name in TABLES}, before)


def test_read_crm_names_a_corrupted_row(engine: sa.Engine, tiny_crm: Crm) -> None:
    write_crm(engine, tiny_crm)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE stage_history SET stage = 'Closed Won' WHERE stage_history_id = 1001")

    with pytest.raises(CrmDataError, match=r"'stage_history', column 'stage'.*stage_history_id=1001: 'Closed Won'"):
        read_crm(engine)
