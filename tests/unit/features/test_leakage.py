"""Leakage guard: no feature of a snapshot may change when anything the CRM learns after it changes.

Hypothesis draws small CRMs (several leads sharing accounts, activities and stage entries of every kind) and
snapshot times, then mutates what a CRM may learn after some of the snapshots: activity and stage_history rows
stamped strictly after them (added, removed or altered, by as little as a nanosecond), leads created after them
(with their own activities and stages, possibly in the same account), and the current-value fields of leads and
accounts, which a CRM overwrites in place (status, updated_at, budget, timeframe, firmographics). Every snapshot
before the earliest dated mutation must keep exactly the same features, including the account-level features
computed from the other leads. Current-value fields count as edited after every snapshot: with the leak-safe
params they must never matter.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from crm_builder import ALL_CURRENT_VALUES, DEFAULT_ACCOUNTS, at, build_crm, lead, params
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipelines.config import FeaturesParams
from pipelines.crm import vocab
from pipelines.features.build import build_features

DETAILS = ("ebook: pipeline", "ebook: scoring", "guide: abm", None)
#: Offsets after a snapshot: a nanosecond, half a second, a second, an hour, a day, a week, a quarter.
OFFSETS = (
    pd.Timedelta(1, "ns"),
    pd.Timedelta(0.5, "s"),
    pd.Timedelta(1, "s"),
    pd.Timedelta(1, "h"),
    pd.Timedelta(1, "D"),
    pd.Timedelta(7, "D"),
    pd.Timedelta(90, "D"),
)
DAYS = st.floats(min_value=0, max_value=150, allow_nan=False)
#: Values a CRM may overwrite a lead's current-value fields with (None: cleared).
LEAD_EDITS: dict[str, st.SearchStrategy[Any]] = {
    "status": st.sampled_from(vocab.LEAD_STATUSES),
    "updated_at": st.floats(150, 400).map(at),
    "budget_range": st.sampled_from((None, *vocab.BUDGET_RANGES)),
    "purchase_timeframe": st.sampled_from((None, *vocab.PURCHASE_TIMEFRAMES)),
}
ACCOUNT_EDITS: dict[str, st.SearchStrategy[Any]] = {
    "industry": st.sampled_from((None, "Software", "Retail", "Healthcare", "Bakery")),
    "employee_count": st.sampled_from((None, 5, 250, 4_999, 80_000)),
    "annual_revenue": st.sampled_from((None, 1.0e5, 5.0e7, 2.0e9)),
    "country": st.sampled_from((None, "US", "DE", "BR", "JP")),
    "region": st.sampled_from((None, *vocab.REGIONS)),
}


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """A CRM, snapshot times, and the same CRM after 1-3 mutations of what it learns after some snapshots."""
    n_leads = draw(st.integers(1, 5))
    leads = [lead(1, created=0.0, account_id=10)] + [
        lead(
            i,
            created=draw(st.floats(0, 60)),
            account_id=draw(st.sampled_from([None, 10, 11])),
            budget_range=draw(LEAD_EDITS["budget_range"]),
            purchase_timeframe=draw(LEAD_EDITS["purchase_timeframe"]),
        )
        for i in range(2, n_leads + 1)
    ]
    lead_ids = st.integers(1, n_leads)
    activity = st.tuples(lead_ids, DAYS.map(at), st.sampled_from(vocab.ACTIVITY_TYPES), st.sampled_from(DETAILS))
    stage = st.tuples(lead_ids, DAYS.map(at), st.sampled_from(vocab.STAGES))
    before = {"activities": draw(st.lists(activity, max_size=30)), "stage_history": draw(st.lists(stage, max_size=8))}
    event_times = [row[1] for rows in before.values() for row in rows]
    snapshot_time = st.one_of(DAYS.map(at), st.sampled_from(event_times)) if event_times else DAYS.map(at)
    times = draw(st.lists(snapshot_time, min_size=1, max_size=4))

    after: dict[str, Any] = {name: list(rows) for name, rows in before.items()}
    after_leads = [dict(row) for row in leads]
    after_accounts = [dict(row) for row in DEFAULT_ACCOUNTS]
    changed: list[pd.Timestamp] = []
    for _ in range(draw(st.integers(1, 3))):  # several mutations per example: more chances to expose a peek
        target = draw(st.sampled_from(["activities", "stage_history", "new_lead", "lead_field", "account_field"]))
        anchor = draw(st.sampled_from(times))
        if target == "lead_field":  # overwritten in place: no date, so after every snapshot
            row = draw(st.sampled_from(after_leads))
            field = draw(st.sampled_from(sorted(LEAD_EDITS)))
            row[field] = (
                max(draw(LEAD_EDITS[field]), row["created_at"]) if field == "updated_at" else draw(LEAD_EDITS[field])
            )
            continue
        if target == "account_field":
            row = draw(st.sampled_from(after_accounts))
            field = draw(st.sampled_from(sorted(ACCOUNT_EDITS)))
            row[field] = draw(ACCOUNT_EDITS[field])
            continue
        if target == "new_lead":  # created after the anchor, maybe in an existing account, with its own history
            created = anchor + draw(st.sampled_from(OFFSETS))
            new_id = max(row["lead_id"] for row in after_leads) + 1
            after_leads.append(
                lead(
                    new_id,
                    created=0.0,
                    account_id=draw(st.sampled_from([None, 10, 11])),
                    created_at=created,
                    updated_at=created,
                )
            )
            for _ in range(draw(st.integers(0, 3))):
                new = draw(activity)
                after["activities"].append((new_id, created + draw(st.sampled_from(OFFSETS)), *new[2:]))
            for _ in range(draw(st.integers(0, 2))):
                new = draw(stage)
                after["stage_history"].append((new_id, created + draw(st.sampled_from(OFFSETS)), *new[2:]))
            changed.append(created)
            continue
        new_row = activity if target == "activities" else stage
        rows = after[target]
        kind = draw(st.sampled_from(["add", "remove", "alter"]))
        later = [i for i, row in enumerate(rows) if row[1] > anchor]
        if kind == "add" or not later:
            when = anchor + draw(st.sampled_from(OFFSETS))
            new = draw(new_row)
            rows.append((new[0], when, *new[2:]))
            changed.append(when)
            continue
        i = draw(st.sampled_from(later))
        changed.append(rows[i][1])
        if kind == "remove":
            rows.pop(i)
        else:  # any field may change: lead, time (still after the snapshot), type or stage, detail
            new = draw(new_row)
            when = anchor + draw(st.sampled_from(OFFSETS))
            rows[i] = (new[0], when, *new[2:])
            changed.append(when)
    after.update(leads=after_leads, accounts=after_accounts)
    before.update(leads=leads, accounts=list(DEFAULT_ACCOUNTS))
    earliest = min(changed) if changed else at(10_000)  # only undated edits: every snapshot is checked
    return {"times": times, "before": before, "after": after, "earliest_change": earliest}


def _features(
    crm: dict[str, Any], pairs: list[tuple[int, pd.Timestamp]], features_params: FeaturesParams | None = None
) -> pd.DataFrame:
    """Features of the (lead, t) pairs in the CRM described by `crm` (leads, accounts and event rows)."""
    tables = build_crm(crm["leads"], crm["activities"], crm["stage_history"], accounts=crm["accounts"])
    snapshots = pd.DataFrame(
        {"lead_id": [p[0] for p in pairs], "snapshot_at": pd.Series([p[1] for p in pairs], dtype="datetime64[ns, UTC]")}
    )
    return build_features(tables, snapshots, features_params or params(chunk_leads=2))


def _pairs(leads: list[dict[str, Any]], times: list[pd.Timestamp]) -> list[tuple[int, pd.Timestamp]]:
    """Every lead already created at each snapshot time."""
    return [(row["lead_id"], t) for t in times for row in leads if row["created_at"] <= t]


def check_no_leak(scenario: dict[str, Any]) -> None:
    """Every snapshot strictly before the earliest dated change has identical features."""
    checked = pd.Series([t < scenario["earliest_change"] for t in scenario["times"]])
    assume(checked.any())
    times = [t for t, keep in zip(scenario["times"], checked, strict=True) if keep]
    pairs = _pairs(scenario["before"]["leads"], times)
    before = _features(scenario["before"], pairs)
    after = _features(scenario["after"], pairs)
    pd.testing.assert_frame_equal(before, after)


@given(scenarios())
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_features_ignore_rows_dated_after_the_snapshot(scenario: dict[str, Any]) -> None:
    check_no_leak(scenario)


@pytest.mark.slow
@given(scenarios())
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_features_ignore_rows_dated_after_the_snapshot_thoroughly(scenario: dict[str, Any]) -> None:
    check_no_leak(scenario)


def test_the_guard_sees_a_change_before_the_snapshot() -> None:
    """Sanity check of the harness: a row moved to before the snapshot must change its features."""
    leads = [lead(1, account_id=10), lead(2, created=1.0, account_id=10)]
    crm = {
        "leads": leads,
        "accounts": list(DEFAULT_ACCOUNTS),
        "stage_history": [],
        "activities": [(2, at(30), "pricing_page_visit", None)],
    }
    moved = {**crm, "activities": [(2, at(5), "pricing_page_visit", None)]}

    before = _features(crm, _pairs(leads, [at(10)]))
    after = _features(moved, _pairs(leads, [at(10)]))

    assert not before.equals(after)
    assert after.loc[after["lead_id"] == 1, "account_other_high_intent_7d"].item() == 1


def test_the_guard_sees_a_lead_created_before_the_snapshot_and_opted_in_current_values() -> None:
    """The new mutations are not vacuous: a colleague created before t counts, and opted-in fields are read."""
    crm = {"leads": [lead(1, account_id=10)], "accounts": list(DEFAULT_ACCOUNTS), "stage_history": [], "activities": []}
    pairs = _pairs(crm["leads"], [at(10)])
    colleague = {**crm, "leads": [*crm["leads"], lead(2, created=9.0, account_id=10)]}
    assert _features(colleague, pairs)["account_contacts"].item() == 1
    assert _features(crm, pairs)["account_contacts"].item() == 0

    edited = {
        **crm,
        "accounts": [{**DEFAULT_ACCOUNTS[0], "employee_count": 9}, DEFAULT_ACCOUNTS[1]],
        "leads": [lead(1, account_id=10, budget_range=">250k")],
    }
    opted_in = params(chunk_leads=2, current_value_fields=ALL_CURRENT_VALUES)
    pd.testing.assert_frame_equal(_features(crm, pairs), _features(edited, pairs))  # the leak-safe default
    assert not _features(crm, pairs, opted_in).equals(_features(edited, pairs, opted_in))
