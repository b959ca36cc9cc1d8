"""Tiny hand-built CRMs for the rules tests: a lead is a dict of the fields that matter, the rest is filled in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from pipelines import rules
from pipelines.crm.schema import SCHEMAS, TIMESTAMP_COLUMNS, to_utc

T0 = pd.Timestamp("2026-01-01", tz="UTC")

ACCOUNTS: list[dict[str, Any]] = [
    # 10: ideal (Software, 250 people, NA); 11: near size, not ICP industry, APAC; 12: nothing known
    {"account_id": 10, "industry": "Software", "employee_count": 250, "country": "US", "region": "NA"},
    {"account_id": 11, "industry": "Retail", "employee_count": 100, "country": "JP", "region": "APAC"},
    {"account_id": 12, "industry": None, "employee_count": None, "country": None, "region": None},
]
CAMPAIGNS: list[dict[str, Any]] = [
    {"campaign_id": 1, "channel": "webinar", "region": "Global"},
    {"campaign_id": 2, "channel": "trade_show", "region": "EMEA"},
]


def canonical(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The dtypes `validate_table` would give, without its (slow) checks; test_canonical_matches_validation
    keeps the two in step."""
    out = {}
    for column, spec in SCHEMAS[table].columns.items():
        values = frame[column]
        dtype = "str" if "str" in str(spec.dtype) else str(spec.dtype)
        out[column] = to_utc(values) if column in TIMESTAMP_COLUMNS[table] else values.astype(dtype)
    return pd.DataFrame(out)


def make_crm(
    leads: Sequence[dict[str, Any]],
    activities: Sequence[tuple[int, str, pd.Timestamp]] = (),
    accounts: Sequence[dict[str, Any]] = ACCOUNTS,
    campaigns: Sequence[dict[str, Any]] = CAMPAIGNS,
) -> dict[str, pd.DataFrame]:
    """The four tables the rules read, canonical dtypes; leads default to an anonymous organic lead at T0."""
    lead_defaults = {
        "account_id": None,
        "created_at": T0,
        "first_name": None,
        "last_name": None,
        "email": None,
        "phone": None,
        "job_title": None,
        "lead_source": "organic_search",
        "campaign_id": None,
        "country": None,
        "budget_range": None,
        "purchase_timeframe": None,
        "status": "Open",
    }
    lead_rows = [{**lead_defaults, **lead} for lead in leads]
    for row in lead_rows:
        row.setdefault("updated_at", row["created_at"])
    account_defaults = {"company_name": None, "domain": None, "annual_revenue": None}
    campaign_defaults = {"name": "c", "start_date": T0 - pd.Timedelta(days=365), "end_date": T0}
    acts = pd.DataFrame(
        [
            {"activity_id": i + 1, "lead_id": lead, "activity_type": kind, "occurred_at": when, "detail": None}
            for i, (lead, kind, when) in enumerate(activities)
        ],
        columns=["activity_id", "lead_id", "occurred_at", "activity_type", "detail"],
    )
    return {
        "campaigns": canonical("campaigns", pd.DataFrame([{**campaign_defaults, **c} for c in campaigns])),
        "accounts": canonical("accounts", pd.DataFrame([{**account_defaults, **a} for a in accounts])),
        "leads": canonical("leads", pd.DataFrame(lead_rows)),
        "activities": canonical("activities", acts),
    }


def score(
    raw_rules: dict[str, Any], crm: dict[str, pd.DataFrame], snapshots: Sequence[tuple[int, pd.Timestamp]]
) -> pd.DataFrame:
    """Evaluate rules given as a dict on (lead_id, snapshot_at) pairs."""
    keys = pd.DataFrame(list(snapshots), columns=["lead_id", "snapshot_at"])
    return rules.evaluate_rules(rules.parse_rules(raw_rules), keys, crm)


def days(n: float) -> pd.Timestamp:
    """T0 plus n days."""
    return T0 + pd.Timedelta(days=n)
