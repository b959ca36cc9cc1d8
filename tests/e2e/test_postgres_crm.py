"""PostgreSQL specifics: tables land in the throwaway schema, and corrupted rows are named on read.

The round trip and all-or-nothing writes run on PostgreSQL too, through the backend-parametrised tests in
tests/unit/crm/test_db.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.crm.db import make_engine, read_crm, write_crm
from pipelines.crm.schema import TABLES, CrmDataError

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


def test_read_crm_names_a_corrupted_row(engine: sa.Engine, tiny_crm: Crm) -> None:
    write_crm(engine, tiny_crm)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE stage_history SET stage = 'Closed Won' WHERE stage_history_id = 1001")

    with pytest.raises(CrmDataError, match=r"'stage_history', column 'stage'.*stage_history_id=1001: 'Closed Won'"):
        read_crm(engine)
