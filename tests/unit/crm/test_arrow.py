"""ADBC reading shared by the extract stage and nightly scoring: connections fail in one line, columns stream as
the kind their schema declares."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pipelines.crm import arrow
from pipelines.errors import DatabaseUnavailableError


def test_an_adbc_connection_that_fails_is_one_line_naming_the_database_with_the_password_masked() -> None:
    pytest.importorskip("adbc_driver_postgresql")
    import adbc_driver_postgresql.dbapi as driver

    url = sa.make_url("postgresql+psycopg://scoring:s3cret-pw@127.0.0.1:1/crm")
    with pytest.raises(DatabaseUnavailableError) as err:
        arrow.open_adbc(driver, url.set(drivername="postgresql").render_as_string(hide_password=False), url)
    assert "127.0.0.1" in str(err.value) and "s3cret-pw" not in str(err.value) and "\n" not in str(err.value)


def test_sqlite_streams_a_typed_leading_row_then_the_table_with_text_cast_as_text() -> None:
    sql = arrow.stream_query("accounts", ["account_id", "domain", "employee_count", "annual_revenue"], "sqlite")

    assert sql == (
        "SELECT 0, '', 0, 0.0 UNION ALL "
        'SELECT "account_id", CAST("domain" AS TEXT), "employee_count", "annual_revenue" FROM "accounts"'
    )
    assert (
        arrow.stream_query("stage_history", ["entered_at"], "postgresql") == 'SELECT "entered_at" FROM "stage_history"'
    )
    assert [arrow.column_kind("leads", c) for c in ("lead_id", "created_at", "email")] == ["integer", "text", "text"]
