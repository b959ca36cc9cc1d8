"""Database I/O: safe identifiers, masked URLs, a lossless round trip and all-or-nothing writes.

Tests taking the `engine` fixture run on SQLite and on PostgreSQL (COPY path, throwaway schema; skipped with a
reason where PostgreSQL is absent).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.crm import db
from pipelines.crm.db import (
    check_identifier,
    display_url,
    make_engine,
    read_crm,
    read_table,
    replace_tables,
    table_for_frame,
    write_crm,
)
from pipelines.crm.schema import PRIMARY_KEYS, TABLES, TIMESTAMP_COLUMNS, UTC_NS, CrmDataError, validate_crm

Crm = dict[str, pd.DataFrame]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'crm.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[sa.Engine]:
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    engine = make_engine(url, create_dirs=True)
    yield engine
    engine.dispose()  # no idle connection may outlive the test: the PostgreSQL schema is dropped next


# --- identifiers and URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["leads", "stage_history", "_tmp", "Leads2025", "a" * 63])
def test_check_identifier_accepts_plain_names(name: str) -> None:
    assert check_identifier(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "leads; DROP TABLE x",
        'leads"; DROP TABLE x; --',
        "a-b",
        "a b",
        "a.b",
        "",
        "a" * 64,
        "1leads",
        "lëads",
        "表",
        "leads\n",
        None,
        42,
    ],
)
def test_check_identifier_rejects_anything_but_a_plain_name(name: object) -> None:
    with pytest.raises(ValueError, match="is not allowed"):
        check_identifier(name)  # type: ignore[arg-type]


def test_check_identifier_says_what_kind_of_name_it_rejected() -> None:
    with pytest.raises(ValueError, match=r"^column name 'a-b' is not allowed"):
        check_identifier("a-b", "column")


def test_table_for_frame_rejects_an_injected_column_name() -> None:
    frame = pd.DataFrame({"id": [1], "x) ; DROP TABLE leads; --": [2]})

    with pytest.raises(ValueError, match="column name"):
        table_for_frame("leads", frame, sa.MetaData())


def test_read_table_rejects_an_injected_table_name_before_touching_the_database(engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="is not allowed"):
        read_table(engine, "leads; DROP TABLE leads")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://scorer:s3cr3t@db.example.com:5432/crm",
            "postgresql+psycopg://scorer:***@db.example.com:5432/crm",
        ),
        ("postgresql+psycopg://scorer@db.example.com/crm", "postgresql+psycopg://scorer@db.example.com/crm"),
        ("sqlite:///data/crm.db", "sqlite:///data/crm.db"),
    ],
)
def test_display_url_masks_the_password_only(url: str, shown: str) -> None:
    assert display_url(url) == shown


@pytest.mark.parametrize("url", ["not a url", "postgresql://u:s3cr3t@host:notaport/db"])
def test_display_url_never_echoes_an_unparseable_url(url: str) -> None:
    assert display_url(url) == "<unparseable database URL>"


def test_display_url_accepts_url_objects() -> None:
    url = sa.make_url("postgresql+psycopg://u:s3cr3t@h/db")

    assert "s3cr3t" not in display_url(url)


# --- engines -----------------------------------------------------------------------------------------------------


def test_make_engine_refuses_a_missing_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "crm.db"

    with pytest.raises(CrmDataError, match=r"does not exist"):
        make_engine(f"sqlite:///{missing}")

    assert not missing.parent.exists()


def test_make_engine_creates_the_folder_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "crm.db"

    engine = make_engine(f"sqlite:///{path}", create_dirs=True)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()

    assert path.exists()


def test_make_engine_accepts_in_memory_sqlite() -> None:
    engine = make_engine("sqlite://")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


@pytest.mark.parametrize("url", ["garbage", "nodialect://u:s3cr3t@h/db", "postgresql+psycopg://u:s3cr3t@h:notaport/db"])
def test_make_engine_reports_an_unusable_url_as_bad_input_without_the_password(url: str) -> None:
    with pytest.raises(CrmDataError, match="not a usable database URL") as caught:
        make_engine(url)

    assert "s3cr3t" not in str(caught.value)


# --- round trip --------------------------------------------------------------------------------------------------


def assert_same_crm(actual: Crm, expected: Crm) -> None:
    assert list(actual) == list(expected)
    for name in expected:
        pd.testing.assert_frame_equal(actual[name], expected[name], check_exact=True, obj=name)


def test_write_then_read_round_trips_values_and_dtypes(engine: sa.Engine, tiny_crm: Crm) -> None:
    expected = validate_crm(tiny_crm)

    write_crm(engine, tiny_crm)
    actual = read_crm(engine)

    assert_same_crm(actual, expected)
    for table in TABLES:
        for column in TIMESTAMP_COLUMNS[table]:
            assert actual[table][column].dtype == UTC_NS
    # microseconds survive, and the +02:00 input came back as its UTC instant
    assert actual["activities"]["occurred_at"][1] == pd.Timestamp("2025-03-05 11:30:00.123456", tz="UTC")
    assert actual["leads"]["created_at"][1] == pd.Timestamp("2025-05-11 14:00:00", tz="UTC")


def test_round_trip_keeps_empty_strings_distinct_from_null(engine: sa.Engine, tiny_crm: Crm) -> None:
    tiny_crm["campaigns"].loc[1, "name"] = ""  # non-null column: "" is a value
    tiny_crm["activities"].loc[0, "detail"] = ""
    tiny_crm["activities"].loc[2, "detail"] = "\\N"  # PostgreSQL COPY's usual NULL marker, as a value

    write_crm(engine, tiny_crm)
    actual = read_crm(engine)

    assert actual["campaigns"]["name"][1] == ""
    assert actual["activities"]["detail"][0] == ""
    assert pd.isna(actual["activities"]["detail"][1])
    assert actual["activities"]["detail"][2] == "\\N"


def test_round_trip_of_empty_event_tables(engine: sa.Engine, tiny_crm: Crm) -> None:
    tiny_crm["activities"] = tiny_crm["activities"].iloc[0:0]
    tiny_crm["stage_history"] = tiny_crm["stage_history"].iloc[0:0]
    expected = validate_crm(tiny_crm)

    write_crm(engine, tiny_crm)

    assert_same_crm(read_crm(engine), expected)


def test_write_crm_replaces_previous_contents(engine: sa.Engine, tiny_crm: Crm) -> None:
    write_crm(engine, tiny_crm)
    smaller = {name: frame.copy() for name, frame in tiny_crm.items()}
    smaller["activities"] = smaller["activities"].iloc[:1]

    write_crm(engine, smaller)

    assert read_table(engine, "activities")["activity_id"].tolist() == [100]


def test_write_crm_validates_before_writing_anything(engine: sa.Engine, tiny_crm: Crm) -> None:
    tiny_crm["activities"].loc[1, "activity_type"] = "telepathy"

    with pytest.raises(CrmDataError, match="activity_type"):
        write_crm(engine, tiny_crm)

    assert sa.inspect(engine).get_table_names() == []


def test_write_crm_declares_the_primary_keys(engine: sa.Engine, tiny_crm: Crm) -> None:
    write_crm(engine, tiny_crm)

    inspector = sa.inspect(engine)
    for table, key in PRIMARY_KEYS.items():
        assert inspector.get_pk_constraint(table)["constrained_columns"] == [key]


def test_insert_frame_writes_every_row_across_batches(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "_INSERT_BATCH", 2)
    frame = pd.DataFrame({"id": range(7), "label": list("abcdefg")})

    replace_tables(engine, {"letters": frame}, {"letters": "id"})

    pd.testing.assert_frame_equal(read_table(engine, "letters"), frame, check_dtype=False)


# --- atomicity ---------------------------------------------------------------------------------------------------


def fail_on_third_table(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make `insert_frame` raise when it reaches the third table; returns the names it was called with."""
    calls: list[str] = []
    real_insert = db.insert_frame

    def flaky_insert(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
        calls.append(table.name)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        real_insert(conn, table, frame)

    monkeypatch.setattr(db, "insert_frame", flaky_insert)
    return calls


def test_replace_tables_is_all_or_nothing_when_an_insert_fails(
    engine: sa.Engine, tiny_crm: Crm, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_crm(engine, tiny_crm)
    before = {name: read_table(engine, name) for name in TABLES}
    changed = {name: frame.copy() for name, frame in tiny_crm.items()}
    changed["campaigns"]["name"] = ["renamed 1", "renamed 2"]
    changed["activities"] = changed["activities"].iloc[:1]
    calls = fail_on_third_table(monkeypatch)

    with pytest.raises(RuntimeError, match="disk full"):
        write_crm(engine, changed)

    assert calls == ["campaigns", "accounts", "leads"]  # two tables were already dropped and rewritten
    assert_same_crm({name: read_table(engine, name) for name in TABLES}, before)  # rolled back: intact, complete


def test_failed_first_write_leaves_no_tables_behind(
    engine: sa.Engine, tiny_crm: Crm, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_on_third_table(monkeypatch)

    with pytest.raises(RuntimeError):
        write_crm(engine, tiny_crm)

    assert sa.inspect(engine).get_table_names() == []


def test_replace_tables_writes_arbitrary_frames_with_their_dtypes(engine: sa.Engine) -> None:
    frame = pd.DataFrame(
        {
            "id": [1, 2],
            "score": [0.25, None],
            "flag": [True, False],
            "label": ["a", None],
            "at": pd.to_datetime(["2025-01-01 00:00:00.5", None]).tz_localize("UTC"),
        }
    )

    replace_tables(engine, {"scores": frame}, {"scores": "id"})
    back = read_table(engine, "scores")

    assert back["id"].tolist() == [1, 2]
    assert back["score"][0] == 0.25 and pd.isna(back["score"][1])
    assert back["label"][0] == "a" and pd.isna(back["label"][1])
    assert pd.Timestamp(back["at"][0]).tz_localize(None) == pd.Timestamp("2025-01-01 00:00:00.5")


# --- reads -------------------------------------------------------------------------------------------------------


def test_read_table_names_a_missing_table(tiny_crm_sqlite: str) -> None:
    engine = make_engine(tiny_crm_sqlite)

    with pytest.raises(CrmDataError, match=r"table 'opportunities' not found"):
        read_table(engine, "opportunities")


def test_read_table_names_a_missing_column(tiny_crm_sqlite: str) -> None:
    engine = make_engine(tiny_crm_sqlite)

    with pytest.raises(CrmDataError, match=r"table 'leads' is missing column\(s\) \['score'\]"):
        read_table(engine, "leads", ["lead_id", "score"])


def test_read_table_returns_the_named_columns_in_order(tiny_crm_sqlite: str) -> None:
    engine = make_engine(tiny_crm_sqlite)

    frame = read_table(engine, "leads", ["status", "lead_id"])

    assert list(frame.columns) == ["status", "lead_id"]
    assert frame["lead_id"].tolist() == [1, 2, 3]


def test_read_crm_reports_a_missing_crm_table(tiny_crm_sqlite: str) -> None:
    engine = make_engine(tiny_crm_sqlite)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE stage_history")

    with pytest.raises(CrmDataError, match=r"table 'stage_history' not found"):
        read_crm(engine)


def test_read_crm_validates_what_it_reads(tiny_crm_sqlite: str) -> None:
    engine = make_engine(tiny_crm_sqlite)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE activities SET activity_type = 'telepathy' WHERE activity_id = 102")

    with pytest.raises(CrmDataError, match=r"'activity_type'.*activity_id=102: 'telepathy'"):
        read_crm(engine)
