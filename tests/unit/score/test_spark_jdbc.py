"""How the Spark engine reaches a CRM database: PostgreSQL URLs become JDBC options (schema from search_path,
password only when the URL has one); other databases are pointed at the Parquet snapshot."""

from __future__ import annotations

import pytest

from pipelines.errors import BadInputError
from pipelines.score.spark import jdbc_options


def test_a_postgresql_url_becomes_jdbc_options_with_its_schema() -> None:
    options = jdbc_options("postgresql+psycopg://scoring@crm-db:6543/crm?options=-csearch_path%3Dsales")
    assert options == {
        "url": "jdbc:postgresql://crm-db:6543/crm",
        "driver": "org.postgresql.Driver",
        "user": "scoring",
        "currentSchema": "sales",
    }
    assert jdbc_options("postgresql://u:secret@h/db")["password"] == "secret"


def test_a_sqlite_crm_is_read_through_its_snapshot() -> None:
    with pytest.raises(BadInputError, match=r"leadscore extract.*--snapshot"):
        jdbc_options("sqlite:///data/crm.db")
