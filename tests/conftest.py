"""Shared fixtures: a tiny valid CRM, a SQLite copy of it, and the PostgreSQL test database (or a skip)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_URL_ENV = "LEADSCORE_TEST_PG_URL"


def _tiny_crm() -> dict[str, pd.DataFrame]:
    """The five canonical tables with 2-3 rows each, as a user would hand them over (text timestamps)."""
    campaigns = pd.DataFrame(
        {
            "campaign_id": [1, 2],
            "name": ["Spring webinar", "Trade show Berlin"],
            "channel": ["webinar", "trade_show"],
            "region": ["Global", "EMEA"],
            "start_date": ["2025-03-01", "2025-05-10"],
            "end_date": ["2025-03-31", "2025-05-12"],
        }
    )
    accounts = pd.DataFrame(
        {
            "account_id": [10, 11],
            "company_name": ["Acme Corp", "Müller GmbH"],
            "domain": ["acme.com", None],
            "industry": ["Software", "Manufacturing"],
            "employee_count": [250, None],
            "annual_revenue": [12_500_000.5, None],
            "country": ["US", "DE"],
            "region": ["NA", "EMEA"],
        }
    )
    leads = pd.DataFrame(
        {
            "lead_id": [1, 2, 3],
            "account_id": [10, 11, None],
            # naive (taken as UTC) and with an offset (converted): both end up tz-aware UTC
            "created_at": ["2025-03-02 09:15:00", "2025-05-11T16:00:00+02:00", "2025-06-01 08:00:00"],
            "first_name": ["Ada", "Zoë", None],
            "last_name": ["Lovelace", "Builder", "Smith"],
            "email": ["ada@acme.com", "zoe@gmail.com", None],
            "phone": ["+1 555 0100", None, None],
            "job_title": ["VP Mktg", "Marketing intern", None],
            "lead_source": ["webinar", "trade_show", "organic_search"],
            "campaign_id": [1, 2, None],
            "country": ["US", "DE", None],
            "budget_range": ["50k-250k", None, None],
            "purchase_timeframe": ["0-3 months", None, "no plans"],
            "status": ["SQL", "MQL", "Open"],
            "updated_at": ["2025-03-20 10:00:00", "2025-05-12 09:00:00", "2025-06-01 08:00:00"],
        }
    )
    activities = pd.DataFrame(
        {
            "activity_id": [100, 101, 102],
            "lead_id": [1, 1, 2],
            "occurred_at": ["2025-03-03 10:00:00", "2025-03-05 11:30:00.123456", "2025-05-11 15:00:00"],
            "activity_type": ["email_open", "pricing_page_visit", "trade_show_scan"],
            # quotes, a comma and a newline exercise CSV quoting on PostgreSQL's COPY
            "detail": ['subject: "Hello, world"\nsecond line', None, "booth 12"],
        }
    )
    stage_history = pd.DataFrame(
        {
            "stage_history_id": [1000, 1001, 1002],
            "lead_id": [1, 1, 2],
            "stage": ["MQL", "SQL", "MQL"],
            "entered_at": ["2025-03-04 00:00:00", "2025-03-20 10:00:00", "2025-05-12 09:00:00"],
            "reason": [None, "budget confirmed", None],
        }
    )
    return {
        "campaigns": campaigns,
        "accounts": accounts,
        "leads": leads,
        "activities": activities,
        "stage_history": stage_history,
    }


@pytest.fixture
def tiny_crm() -> dict[str, pd.DataFrame]:
    """A fresh, valid five-table CRM (2-3 rows per table) that a test may mutate freely."""
    return _tiny_crm()


@pytest.fixture
def tiny_crm_sqlite(tmp_path: Path) -> str:
    """URL of a temporary SQLite file holding the tiny CRM, written with `write_crm`."""
    from pipelines.crm.db import make_engine, write_crm

    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = make_engine(url, create_dirs=True)
    write_crm(engine, _tiny_crm())
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the PostgreSQL test database ($LEADSCORE_TEST_PG_URL or the local default); skips if unreachable."""
    url = os.environ.get(PG_URL_ENV) or DEFAULT_PG_URL
    from pipelines.crm.db import display_url

    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:  # any failure to connect means "not available here", not a test failure
        pytest.skip(
            f"PostgreSQL not reachable at {display_url(url)} ({type(exc).__name__}); to enable: start PostgreSQL "
            f"on 127.0.0.1:5432 with a `test` database, or set {PG_URL_ENV}"
        )
    return url


@pytest.fixture
def pg_schema_url(pg_url: str) -> Iterator[str]:
    """`pg_url` pointed (via search_path) at a fresh throwaway schema, dropped with everything in it afterwards."""
    schema = f"leadscore_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()
