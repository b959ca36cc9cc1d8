"""The explicit column list: features read only listed CRM columns, and current values only when params opt in."""

from __future__ import annotations

import pandas as pd
import pytest
from crm_builder import ALL_CURRENT_VALUES, DEFAULT_ACCOUNTS, at, build_crm, lead, params, snapshots

from pipelines.crm.schema import SCHEMAS, CrmDataError, validate_crm
from pipelines.features.build import build_features, feature_specs
from pipelines.features.columns import FEATURE_FIELDS, INPUT_COLUMNS, NEVER_READ

CURRENT_VALUE_FEATURES = {
    "budget_range",
    "purchase_timeframe",
    "industry",
    "employee_count",
    "annual_revenue",
    "icp_industry",
    "icp_size",
    "icp_fit_count",
    "icp_match",
}


def _tables() -> dict[str, pd.DataFrame]:
    leads = [
        lead(1, account_id=10, budget_range="50k-250k", purchase_timeframe="0-3 months"),
        lead(2, created=1, account_id=11, country=None),
    ]
    return build_crm(leads, activities=[(1, 1, "demo_request")], stages=[(1, 2, "MQL")])


def test_current_value_features_exist_only_when_opted_in() -> None:
    default = {s.name for s in feature_specs(params())}
    opted_in = {s.name for s in feature_specs(params(current_value_fields=ALL_CURRENT_VALUES))}

    assert not default & CURRENT_VALUE_FEATURES
    assert opted_in >= CURRENT_VALUE_FEATURES
    assert opted_in - default == CURRENT_VALUE_FEATURES == set(FEATURE_FIELDS)
    only_size = {s.name for s in feature_specs(params(current_value_fields=("employee_count",)))}
    assert only_size - default == {"employee_count", "icp_size"}  # icp_match needs the industry too


def test_the_leak_safe_default_ignores_edits_of_current_values_and_opting_in_sees_them() -> None:
    keys = snapshots([(1, 5), (2, 5)])
    edited_accounts = [
        {
            **DEFAULT_ACCOUNTS[0],
            "industry": "Retail",
            "employee_count": 9,
            "annual_revenue": 1.0,
            "country": "BR",
            "region": "LATAM",
        },
        DEFAULT_ACCOUNTS[1],
    ]
    edited_leads = [
        lead(1, account_id=10, budget_range=">250k", purchase_timeframe="no plans", status="SQL", updated_at=at(40)),
        lead(2, created=1, account_id=11, country=None),
    ]
    original = _tables()
    edited = build_crm(
        edited_leads, activities=[(1, 1, "demo_request")], stages=[(1, 2, "MQL")], accounts=edited_accounts
    )

    safe = params()
    pd.testing.assert_frame_equal(build_features(original, keys, safe), build_features(edited, keys, safe))
    risky = params(current_value_fields=ALL_CURRENT_VALUES)
    before, after = build_features(original, keys, risky), build_features(edited, keys, risky)
    assert before.loc[0, "budget_range"] == "50k-250k" and after.loc[0, "budget_range"] == ">250k"
    assert before.loc[0, "icp_match"] == 1 and after.loc[0, "icp_match"] == 0
    assert before.loc[1, "region"] == "LATAM" and pd.isna(build_features(original, keys, safe).loc[1, "region"])


def test_features_never_read_status_or_updated_at() -> None:
    tables = _tables()
    without = {**tables, "leads": tables["leads"].drop(columns=list(NEVER_READ["leads"]))}
    keys = snapshots([(1, 5), (2, 5)])

    pd.testing.assert_frame_equal(build_features(tables, keys, params()), build_features(without, keys, params()))


def test_a_missing_listed_column_is_named() -> None:
    tables = _tables()
    with pytest.raises(CrmDataError, match=r"'leads' is missing column\(s\) \['job_title'\]"):
        build_features({**tables, "leads": tables["leads"].drop(columns="job_title")}, snapshots([(1, 5)]), params())


def test_the_column_list_is_part_of_the_schemas_and_excludes_the_current_state() -> None:
    for table, columns in INPUT_COLUMNS.items():
        assert set(columns) <= set(SCHEMAS[table].columns), table
    assert not set(NEVER_READ["leads"]) & set(INPUT_COLUMNS["leads"])
    tables = _tables()
    partial = {name: frame[list(INPUT_COLUMNS[name])] for name, frame in tables.items()}
    checked = validate_crm(partial, INPUT_COLUMNS)
    assert list(checked["leads"].columns) == list(INPUT_COLUMNS["leads"])
    with pytest.raises(CrmDataError, match="missing column"):
        validate_crm(partial)  # the extract still demands every column
