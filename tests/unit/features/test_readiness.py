"""Account readiness features on hand-built histories, and the two point-in-time helpers they rest on (decayed
sums and interval coverage), checked against brute force."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from crm_builder import build_crm, lead, params, snapshots

from pipelines.features import timeline as tl
from pipelines.features.build import build_features, feature_specs
from pipelines.features.directions import feature_direction, monotone_direction
from pipelines.features.readiness import readiness_specs


def one_row(tables: dict[str, pd.DataFrame], lead_id: int, day: float, **overrides: object) -> pd.Series:
    return build_features(tables, snapshots([(lead_id, day)]), params(**overrides)).iloc[0]


@pytest.mark.parametrize("half_life", [0.5, 7.0, 30.0])
def test_decayed_sums_match_brute_force_over_many_eras(half_life: float) -> None:
    rng = np.random.default_rng(7)
    owners, seconds = rng.integers(0, 4, 2_000), rng.integers(0, 4_000 * tl.DAY, 2_000)  # 11 years: many eras
    keys = np.sort(tl.make_keys(owners, seconds))
    weights = rng.random(2_000) < 0.6
    q_owner, q_sec = rng.integers(0, 5, 500), rng.integers(0, 4_100 * tl.DAY, 500)
    o, s = tl.key_owner(keys), tl.key_seconds(keys)

    got = tl.decayed_sums(keys, weights, q_owner, q_sec, half_life)

    age = np.maximum(q_sec[:, None] - s[None, :], 0) / tl.DAY
    known = (o[None, :] == q_owner[:, None]) & (s[None, :] <= q_sec[:, None]) & weights[None, :]
    expected = np.where(known, 0.5 ** (age / half_life), 0.0).sum(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_covering_counts_count_the_owners_intervals_that_contain_t() -> None:
    starts = np.sort(tl.make_keys(np.array([0, 0, 1]), np.array([10, 20, 10])))
    ends = np.sort(tl.make_keys(np.array([0, 0, 1]), np.array([30, 25, 11])))

    got = tl.covering_counts(starts, ends, np.array([0, 0, 0, 0, 1, 1, 2]), np.array([9, 10, 22, 25, 10, 11, 10]))

    assert got.tolist() == [0, 1, 2, 1, 1, 0, 0]


def test_account_decay_counts_every_lead_of_the_account_and_fades_with_the_half_life() -> None:
    tables = build_crm(
        [lead(1, account_id=10), lead(2, account_id=10), lead(3, account_id=11)],
        activities=[
            (1, 3, "pricing_page_visit"),  # the lead's own: counted (the whole account)
            (2, 10, "demo_request"),  # at t: full weight
            (2, 9, "email_open"),  # not engagement
            (2, 6, "web_visit"),
            (3, 9, "pricing_page_visit"),  # another account
            (2, 10.5, "pricing_page_visit"),  # after t
        ],
    )

    row = one_row(tables, 1, 10)

    assert row["account_intent_decay_7d"] == pytest.approx(1 + 0.5, rel=1e-6)
    assert row["account_intent_decay_30d"] == pytest.approx(1 + 0.5 ** (7 / 30), rel=1e-6)
    assert row["account_engagement_decay_7d"] == pytest.approx(1 + 0.5 + 0.5 ** (4 / 7), rel=1e-6)
    assert row["days_since_account_intent"] == 0 and row["days_since_account_engagement"] == 0
    assert one_row(tables, 3, 10)["days_since_account_intent"] == pytest.approx(1)
    assert math.isnan(one_row(tables, 1, 2)["days_since_account_intent"])


def test_change_compares_the_last_velocity_window_with_the_one_before() -> None:
    tables = build_crm(
        [lead(1, account_id=10), lead(2, account_id=10)],
        activities=[(2, 1, "web_visit"), (2, 2, "web_visit"), (2, 3, "pricing_page_visit"), (1, 20, "demo_request")],
    )

    row = one_row(tables, 1, 28)  # last 14 days: (14, 28]; the 14 before: (0, 14]

    assert row["account_engagement_change_14d"] == 1 - 3
    assert row["account_intent_change_14d"] == 1 - 1


def test_breadth_counts_distinct_engaged_contacts_in_the_window_and_its_change() -> None:
    tables = build_crm(
        [lead(i, account_id=10) for i in (1, 2, 3, 4)] + [lead(5, account_id=11)],
        activities=[
            (1, 25, "web_visit"),
            (1, 26, "web_visit"),  # the same contact twice: one
            (2, 27, "pricing_page_visit"),
            (3, 5, "content_download"),  # engaged, but before the 7-day window
            (4, 27, "email_open"),  # opens are not engagement
            (5, 27, "demo_request"),  # another account
        ],
    )

    row = one_row(tables, 1, 28)

    assert row["account_engaged_contacts_7d"] == 2
    assert row["account_engaged_contacts_30d"] == 3
    assert row["account_intent_contacts_30d"] == 1
    assert row["account_engaged_contacts_change_14d"] == 2 - 1  # (14, 28]: leads 1, 2; (0, 14]: lead 3


def test_open_contacts_end_at_conversion_or_disqualification_and_start_at_creation() -> None:
    tables = build_crm(
        [lead(1, account_id=10), lead(2, account_id=10), lead(3, account_id=10), lead(4, created=12, account_id=10)],
        stages=[(2, 4, "SQL"), (3, 5, "Disqualified"), (3, 11, "Disqualified")],
    )

    assert one_row(tables, 1, 3)["account_open_contacts"] == 3
    assert one_row(tables, 1, 10)["account_open_contacts"] == 1
    assert one_row(tables, 1, 14)["account_open_contacts"] == 2


def test_colleague_conversions_by_window_and_days_since_the_latest_one() -> None:
    tables = build_crm(
        [lead(i, account_id=10) for i in (1, 2, 3, 4)] + [lead(5, account_id=11), lead(6)],
        stages=[(2, 5, "SQL"), (2, 8, "Opportunity"), (3, 60, "SQL"), (4, 70, "SQL"), (5, 69, "SQL")],
    )

    row = one_row(tables, 1, 68)

    assert row["account_other_sql_7d"] == 0  # lead 3's is 8 days before t, lead 4's after t
    assert row["account_other_sql_30d"] == 1  # lead 3
    assert row["account_other_sql_90d"] == 2  # leads 2 and 3 (lead 2 once: its first entry)
    assert row["days_since_account_other_sql"] == pytest.approx(8)
    assert math.isnan(one_row(tables, 6, 68)["days_since_account_other_sql"])  # no account: no colleagues
    # a converted lead's own entry is skipped: the latest *colleague* conversion counts
    assert one_row(tables, 4, 71)["days_since_account_other_sql"] == pytest.approx(11)
    assert one_row(tables, 4, 71)["account_other_sql_30d"] == 1  # lead 3, not its own


def test_a_lead_without_an_account_is_its_own_group() -> None:
    tables = build_crm([lead(1), lead(2)], activities=[(1, 9, "pricing_page_visit"), (2, 9, "demo_request")])

    row = one_row(tables, 1, 10)

    assert row["account_intent_decay_7d"] == pytest.approx(0.5 ** (1 / 7), rel=1e-6)
    assert row["account_intent_contacts_7d"] == 1 and row["account_open_contacts"] == 1
    assert row["account_other_sql_90d"] == 0


def test_readiness_columns_follow_params_and_declare_their_directions() -> None:
    p = params(decay_half_life_days=(3.0, 45.5), windows_days=(10,), velocity_days=5)
    names = [s.name for s in readiness_specs(p)]

    assert {"account_intent_decay_3d", "account_engagement_decay_45.5d", "account_engaged_contacts_10d"} <= set(names)
    assert {"account_intent_change_5d", "account_engaged_contacts_change_5d"} <= set(names)
    assert set(names) <= {s.name for s in feature_specs(p)}
    assert feature_direction("account_intent_decay_3d", "account") == +1
    assert feature_direction("account_engaged_contacts_10d", "account") == +1
    assert feature_direction("account_open_contacts", "account") == 0  # more contacts: more exposure, no sign
    assert monotone_direction("days_since_account_intent", "account") == -1  # a new signal only shortens it
    tables = build_crm([lead(1, account_id=10)], activities=[(1, 1, "demo_request")])
    assert set(names) <= set(build_features(tables, snapshots([(1, 2)]), p).columns)


def test_active_contact_runs_do_not_depend_on_the_order_events_come_in() -> None:
    """The chunk hands its events sorted by (lead, time) and the runs skip the sort then; any other order must give
    the same intervals."""
    from pipelines.features.readiness import ChunkEvents, _active_contacts, _Runs

    rng = np.random.default_rng(3)
    n_events, n_leads = 400, 30
    lead_of = rng.integers(0, n_leads, n_events)
    seconds = rng.integers(0, 60 * tl.DAY, n_events)
    kind = rng.integers(0, 13, n_events).astype(np.int8)
    order = np.lexsort((seconds, lead_of))

    def events(rows: np.ndarray) -> ChunkEvents:
        group = np.arange(n_leads) // 3
        never = np.full(n_leads, np.iinfo(np.int64).max)
        return ChunkEvents(
            group, np.ones(n_leads, bool), lead_of[rows], seconds[rows], kind[rows], np.zeros(n_leads), never, never
        )

    shuffled = rng.permutation(n_events)
    for window in (7, 30):
        sorted_runs = _active_contacts(_Runs.of(events(order), kind[order] < 8), window)
        shuffled_runs = _active_contacts(_Runs.of(events(shuffled), kind[shuffled] < 8), window)
        np.testing.assert_array_equal(sorted_runs[0], shuffled_runs[0])
        np.testing.assert_array_equal(sorted_runs[1], shuffled_runs[1])
        assert len(sorted_runs[0]) > 50
