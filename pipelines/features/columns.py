"""The CRM columns the features and rules may read: one explicit list, shared by `build_features` and the nightly
scoring reader, so no code path reads a whole table.

A CRM row holds *current* values, not the values at a past snapshot t. Columns that only ever describe the past
as it was (creation-form fields, timestamps of events) are safe; `leads.status` and `leads.updated_at` say what
happened after t and are never read. In between are fields reps fill in or correct while they qualify a lead:
budget, purchase timeframe and the account's firmographics. Their current value may encode the outcome (a budget
typed in during the discovery call that made the lead an SQL), so they become features only when
`features.current_value_fields` opts in; otherwise the feature code sees them as missing (docs/features.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final, get_args

import pandas as pd

from pipelines.config import CurrentValueField
from pipelines.crm.schema import CrmDataError

log = logging.getLogger(__name__)

#: Per table, the columns features and rules read (the features stage and the scoring reader read exactly these).
INPUT_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "campaigns": ("campaign_id", "channel", "region"),
    "accounts": ("account_id", "domain", "industry", "employee_count", "annual_revenue", "country", "region"),
    "leads": (
        "lead_id",
        "account_id",
        "created_at",
        "first_name",
        "last_name",
        "email",
        "phone",
        "job_title",
        "lead_source",
        "campaign_id",
        "country",
        "budget_range",
        "purchase_timeframe",
    ),
    "activities": ("lead_id", "occurred_at", "activity_type", "detail"),
    "stage_history": ("stage_history_id", "lead_id", "stage", "entered_at"),
}
#: Columns never read: they are current values that reveal what happened after any past snapshot.
NEVER_READ: Final[dict[str, tuple[str, ...]]] = {"leads": ("status", "updated_at")}

#: Opt-in field -> (table, columns) it unlocks for the features: values reps may fill in or edit after creation.
CURRENT_VALUE_FIELDS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "budget_range": ("leads", ("budget_range",)),
    "purchase_timeframe": ("leads", ("purchase_timeframe",)),
    "industry": ("accounts", ("industry",)),
    "employee_count": ("accounts", ("employee_count",)),
    "annual_revenue": ("accounts", ("annual_revenue",)),
    "account_location": ("accounts", ("country", "region")),
}
assert set(CURRENT_VALUE_FIELDS) == set(get_args(CurrentValueField)), "params and columns must name the same fields"
#: Feature -> the opt-in fields it is computed from (features absent here need none).
FEATURE_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "budget_range": ("budget_range",),
    "purchase_timeframe": ("purchase_timeframe",),
    "industry": ("industry",),
    "icp_industry": ("industry",),
    "employee_count": ("employee_count",),
    "icp_size": ("employee_count",),
    "icp_fit_count": ("industry", "employee_count"),
    "icp_match": ("industry", "employee_count"),
    "annual_revenue": ("annual_revenue",),
}


def feature_allowed(name: str, opted_in: tuple[str, ...]) -> bool:
    """Whether a feature may be built: every current-value field it needs is opted in."""
    return all(field in opted_in for field in FEATURE_FIELDS.get(name, ()))


def blanked_columns(opted_in: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Per table, the current-value columns the features must see as missing (those not opted in)."""
    out: dict[str, list[str]] = {}
    for field, (table, columns) in CURRENT_VALUE_FIELDS.items():
        if field not in opted_in:
            out.setdefault(table, []).extend(columns)
    return {table: tuple(columns) for table, columns in out.items()}


def input_tables(tables: Mapping[str, pd.DataFrame], opted_in: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """The tables as the feature code may see them: only `INPUT_COLUMNS`, current values not opted in blanked.

    Other tables (a mapped CRM's `lead_attributes`) pass through. A missing column is a CrmDataError naming it.
    """
    blank = blanked_columns(opted_in)
    out: dict[str, pd.DataFrame] = {}
    for name, frame in tables.items():
        if name not in INPUT_COLUMNS:
            out[name] = frame
            continue
        missing = [c for c in INPUT_COLUMNS[name] if c not in frame.columns]
        if missing:
            raise CrmDataError(f"table '{name}' is missing column(s) {missing} the features read")
        kept = frame[list(INPUT_COLUMNS[name])]
        if blank.get(name):
            kept = kept.assign(**{c: kept[c].where(pd.Series(False, index=kept.index)) for c in blank[name]})
        out[name] = kept
    return out
