"""Tiny hand-built CRMs for the feature tests: canonical dtypes without the cost of pandera on every build.

Times are given in days after T0 (a Monday, UTC midnight), so a test reads like its story: "lead 1 is created on
day 0, visits the pricing page on day 3, becomes an MQL on day 5".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, get_args

import pandas as pd

from pipelines.config import CurrentValueField, FeaturesParams, IcpParams
from pipelines.crm.schema import UTC_NS

T0 = pd.Timestamp("2025-01-06", tz="UTC")  # a Monday
#: Every current-value field opted in (params.yaml's default opts in none).
ALL_CURRENT_VALUES: tuple[str, ...] = get_args(CurrentValueField)


def at(days: float) -> pd.Timestamp:
    """T0 + days, as a UTC timestamp (nanosecond precision)."""
    return T0 + pd.to_timedelta(days, unit="D")


def params(**overrides: Any) -> FeaturesParams:
    """The features params of params.yaml's defaults, small chunks so chunking is exercised; overrides applied."""
    values: dict[str, Any] = {
        "target_stage": "SQL",
        "horizon_days": 30,
        "cadence_days": 7,
        "max_lead_age_days": 180,
        "old_lead_days": 180,
        "old_lead_keep_one_in": 1,
        "sample_leads": None,
        "windows_days": (7, 30, 90),
        "velocity_days": 14,
        "decay_half_life_days": (7.0, 30.0),
        "chunk_leads": 2,
        "part_leads": 1_000,
        "icp": IcpParams(
            industries=("Software", "Financial Services", "Healthcare", "Manufacturing"),
            employees_min=200,
            employees_max=5000,
            regions=("NA", "EMEA"),
        ),
        "current_value_fields": (),
    }
    values.update(overrides)
    return FeaturesParams(**values)


DEFAULT_ACCOUNTS: tuple[dict[str, Any], ...] = (
    {
        "account_id": 10,
        "company_name": "Acme Corp",
        "domain": "acme.com",
        "industry": "Software",
        "employee_count": 250,
        "annual_revenue": 5.0e7,
        "country": "US",
        "region": "NA",
    },
    {
        "account_id": 11,
        "company_name": "Tiny Shop",
        "domain": "tinyshop.com.br",
        "industry": "Retail",
        "employee_count": 20,
        "annual_revenue": 1.0e6,
        "country": "BR",
        "region": "LATAM",
    },
)
DEFAULT_CAMPAIGNS: tuple[dict[str, Any], ...] = (
    {
        "campaign_id": 1,
        "name": "Spring webinar",
        "channel": "webinar",
        "region": "Global",
        "start_date": at(-30),
        "end_date": at(30),
    },
    {
        "campaign_id": 2,
        "name": "Trade show",
        "channel": "trade_show",
        "region": "EMEA",
        "start_date": at(-10),
        "end_date": at(-8),
    },
)


def lead(lead_id: int, created: float = 0.0, **fields: Any) -> dict[str, Any]:
    """One leads row with plausible defaults; `created` in days after T0."""
    row: dict[str, Any] = {
        "lead_id": lead_id,
        "account_id": None,
        "created_at": at(created),
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": f"ada{lead_id}@acme.com",
        "phone": "+1 555 010 1234",
        "job_title": "VP Marketing",
        "lead_source": "organic_search",
        "campaign_id": None,
        "country": "US",
        "budget_range": None,
        "purchase_timeframe": None,
        "status": "Open",
        "updated_at": at(created),
    }
    row.update(fields)
    return row


def _frame(rows: Iterable[Mapping[str, Any]], dtypes: Mapping[str, Any]) -> pd.DataFrame:
    rows = list(rows)
    columns = {}
    for column, dtype in dtypes.items():
        values = [row.get(column) for row in rows]
        if dtype == "ts":
            columns[column] = (
                pd.DatetimeIndex(values, tz="UTC").astype(UTC_NS) if values else pd.Series([], dtype=UTC_NS)
            )
        elif dtype == "str":
            columns[column] = pd.array([None if v is None else str(v) for v in values], dtype="str")
        else:
            columns[column] = pd.array(values, dtype=dtype)
    return pd.DataFrame(
        {
            name: pd.Series(values).reset_index(drop=True) if isinstance(values, pd.Series) else values
            for name, values in columns.items()
        }
    )


def build_crm(
    leads: Sequence[Mapping[str, Any]],
    activities: Sequence[tuple[Any, ...]] = (),
    stages: Sequence[tuple[int, float, str]] = (),
    accounts: Sequence[Mapping[str, Any]] = DEFAULT_ACCOUNTS,
    campaigns: Sequence[Mapping[str, Any]] = DEFAULT_CAMPAIGNS,
) -> dict[str, pd.DataFrame]:
    """The five tables with canonical dtypes.

    activities: (lead_id, day, activity_type[, detail]); stages: (lead_id, day, stage); days may be Timestamps.
    """

    def when(value: Any) -> pd.Timestamp:
        return value if isinstance(value, pd.Timestamp) else at(value)

    acts = [
        {
            "activity_id": i + 1,
            "lead_id": a[0],
            "occurred_at": when(a[1]),
            "activity_type": a[2],
            "detail": a[3] if len(a) > 3 else None,
        }
        for i, a in enumerate(activities)
    ]
    stage_rows = [
        {"stage_history_id": i + 1, "lead_id": s[0], "stage": s[2], "entered_at": when(s[1]), "reason": None}
        for i, s in enumerate(stages)
    ]
    return {
        "campaigns": _frame(
            campaigns,
            {
                "campaign_id": "int64",
                "name": "str",
                "channel": "str",
                "region": "str",
                "start_date": "ts",
                "end_date": "ts",
            },
        ),
        "accounts": _frame(
            accounts,
            {
                "account_id": "int64",
                "company_name": "str",
                "domain": "str",
                "industry": "str",
                "employee_count": "Int64",
                "annual_revenue": "float64",
                "country": "str",
                "region": "str",
            },
        ),
        "leads": _frame(
            leads,
            {
                "lead_id": "int64",
                "account_id": "Int64",
                "created_at": "ts",
                "first_name": "str",
                "last_name": "str",
                "email": "str",
                "phone": "str",
                "job_title": "str",
                "lead_source": "str",
                "campaign_id": "Int64",
                "country": "str",
                "budget_range": "str",
                "purchase_timeframe": "str",
                "status": "str",
                "updated_at": "ts",
            },
        ),
        "activities": _frame(
            acts,
            {"activity_id": "int64", "lead_id": "int64", "occurred_at": "ts", "activity_type": "str", "detail": "str"},
        ),
        "stage_history": _frame(
            stage_rows,
            {"stage_history_id": "int64", "lead_id": "int64", "stage": "str", "entered_at": "ts", "reason": "str"},
        ),
    }


def snapshots(pairs: Sequence[tuple[int, float | pd.Timestamp]]) -> pd.DataFrame:
    """A snapshots frame from (lead_id, day or timestamp) pairs."""
    return pd.DataFrame(
        {
            "lead_id": pd.Series([p[0] for p in pairs], dtype="int64"),
            "snapshot_at": pd.Series(
                [p[1] if isinstance(p[1], pd.Timestamp) else at(p[1]) for p in pairs], dtype=UTC_NS
            ),
        }
    )
