"""Time-dependent features on hand-built histories: engagement windows, recency, velocity, content, lead age,
the lead's own stage so far, and what the OTHER leads of its account did before t."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crm_builder import build_crm, lead, params, snapshots

from pipelines.features.build import build_features


def one_row(tables: dict[str, pd.DataFrame], lead_id: int, day: float | pd.Timestamp, **overrides: object) -> pd.Series:
    return build_features(tables, snapshots([(lead_id, day)]), params(**overrides)).iloc[0]


def test_window_counts_include_an_event_at_t_and_exclude_one_at_t_minus_window() -> None:
    tables = build_crm(
        [lead(1)],
        activities=[
            (1, 3, "email_open"),  # exactly t - 7 days: outside the 7-day window (t - 7d, t]
            (1, 3.5, "email_open"),
            (1, 10, "email_open"),  # exactly t: known at t
            (1, 10 + 1e-9, "web_visit"),  # a moment after t: unknown
            (1, 40, "email_click"),
        ],
    )

    row = one_row(tables, 1, 10)

    assert row["n_email_open_7d"] == 2
    assert row["n_email_open_all"] == 3
    assert row["n_web_visit_all"] == 0 and row["n_email_click_all"] == 0
    assert row["n_activities_7d"] == 2 and row["n_activities_all"] == 3


def test_windows_follow_params() -> None:
    tables = build_crm([lead(1)], activities=[(1, 1, "form_submit"), (1, 8, "form_submit")])

    row = one_row(tables, 1, 10, windows_days=(3, 14))

    assert row["n_form_submit_3d"] == 1 and row["n_form_submit_14d"] == 2 and row["n_form_submit_all"] == 2
    assert "n_form_submit_7d" not in row.index


def test_recency_is_days_since_the_last_known_signal_and_missing_when_none() -> None:
    tables = build_crm(
        [lead(1)],
        activities=[
            (1, 2, "pricing_page_visit"),
            (1, 6.5, "pricing_page_visit"),
            (1, 12, "pricing_page_visit"),
            (1, 8, "email_open"),
        ],
    )

    row = one_row(tables, 1, 10)

    assert row["days_since_pricing_page_visit"] == pytest.approx(3.5)
    assert row["days_since_any_activity"] == pytest.approx(2.0)
    assert np.isnan(row["days_since_demo_request"])


def test_recency_never_borrows_another_leads_event() -> None:
    tables = build_crm([lead(1), lead(2)], activities=[(1, 2, "demo_request")])

    assert np.isnan(one_row(tables, 2, 10)["days_since_demo_request"])
    assert np.isnan(one_row(tables, 2, 10)["days_since_any_activity"])


def test_velocity_compares_the_last_window_with_the_one_before() -> None:
    tables = build_crm([lead(1)], activities=[(1, d, "web_visit") for d in (1, 3, 20, 25, 27)])

    row = one_row(tables, 1, 28)  # last 14 days: 20, 25, 27; the 14 before: 1, 3

    assert row["n_activities_last_14d"] == 3 and row["n_activities_prior_14d"] == 2
    assert row["activity_velocity_14d"] == pytest.approx((3 - 2) / (3 + 2 + 1))


def test_distinct_content_counts_assets_not_downloads() -> None:
    tables = build_crm(
        [lead(1), lead(2)],
        activities=[
            (1, 1, "content_download", "ebook: a"),
            (1, 2, "content_download", "ebook: a"),
            (1, 3, "content_download", "guide: b"),
            (1, 4, "content_download", None),
            (1, 20, "content_download", "report: c"),
            (2, 1, "content_download", "report: c"),
        ],
    )

    row = one_row(tables, 1, 10)

    assert row["n_content_download_all"] == 4
    assert row["distinct_content_all"] == 2


def test_lead_age_in_days() -> None:
    tables = build_crm([lead(1, created=2.25)])

    assert one_row(tables, 1, 10)["lead_age_days"] == pytest.approx(7.75)


def test_stage_so_far() -> None:
    tables = build_crm([lead(1)], stages=[(1, 2, "MQL"), (1, 4, "SAL"), (1, 6, "Nurture"), (1, 15, "SQL")])

    row = one_row(tables, 1, 10)
    fresh = one_row(tables, 1, 1)

    assert row["stage_at_t"] == "Nurture"
    assert row[["ever_mql", "ever_sal", "ever_nurture", "ever_disqualified"]].tolist() == [1, 1, 1, 0]
    assert row["n_stage_entries"] == 3 and row["days_since_stage_change"] == pytest.approx(4.0)
    assert fresh["stage_at_t"] == "none" and np.isnan(fresh["days_since_stage_change"])
    assert fresh[["ever_mql", "n_stage_entries"]].tolist() == [0, 0]


def test_account_features_count_only_the_other_leads_and_only_what_was_known() -> None:
    tables = build_crm(
        [
            lead(1, account_id=10),
            lead(2, created=1, account_id=10),
            lead(3, created=5, account_id=10),
            lead(4, created=20, account_id=10),
            lead(5, account_id=11),
            lead(6),
        ],
        activities=[
            (1, 2, "pricing_page_visit"),  # the lead's own: never counted for itself
            (2, 3, "pricing_page_visit"),
            (2, 4, "demo_request"),
            (2, 9, "email_open"),
            (3, 6, "web_visit"),
            (2, 12, "demo_request"),  # after t
            (5, 3, "demo_request"),  # another account
        ],
        stages=[(2, 5, "MQL"), (3, 7, "MQL"), (3, 8, "SQL"), (2, 11, "SQL")],
    )

    row = one_row(tables, 1, 10)

    assert row["account_contacts"] == 2  # leads 2 and 3; lead 4 is created after t
    assert row["account_other_activities_all"] == 4
    assert row["account_other_activities_7d"] == 3  # day 3 is outside (3, 10]
    assert row["account_other_high_intent_all"] == 2 and row["account_other_high_intent_7d"] == 1
    assert row["account_other_mql"] == 2 and row["account_other_sql"] == 1


def test_colleague_features_are_zero_without_an_account() -> None:
    tables = build_crm([lead(1), lead(2)], activities=[(2, 1, "demo_request")])

    row = one_row(tables, 1, 10)

    colleagues = [c for c in row.index if c.startswith("account_other_")] + ["account_contacts"]
    assert (row[colleagues] == 0).all() and row["has_account"] == 0
    assert row["account_intent_decay_7d"] == 0 and row["account_open_contacts"] == 1  # the lead alone is its group


@pytest.mark.parametrize("chunk_leads", [1, 2, 1000])
def test_chunking_never_changes_a_value(chunk_leads: int) -> None:
    tables = build_crm(
        [lead(1, account_id=10), lead(2, account_id=11), lead(3, created=1, account_id=10), lead(4), lead(5)],
        activities=[
            (i % 5 + 1, i * 0.7, t)
            for i, t in enumerate(
                ["email_open", "web_visit", "demo_request", "pricing_page_visit", "content_download"] * 6
            )
        ],
        stages=[(1, 3, "MQL"), (3, 4, "MQL"), (2, 9, "SAL")],
    )
    rows = snapshots([(lead_id, day) for lead_id in range(1, 6) for day in (2, 7, 14, 21)])

    reference = build_features(tables, rows, params(chunk_leads=1000))
    chunked = build_features(tables, rows, params(chunk_leads=chunk_leads))

    pd.testing.assert_frame_equal(chunked, reference)


def test_each_row_depends_only_on_its_own_lead_and_time() -> None:
    tables = build_crm(
        [lead(1, account_id=10), lead(2, account_id=10)],
        activities=[(1, 1, "web_visit"), (2, 2, "demo_request"), (1, 5, "email_click")],
    )
    rows = snapshots([(1, 3), (2, 3), (1, 7), (2, 7)])

    together = build_features(tables, rows, params())
    alone = pd.concat([build_features(tables, rows.iloc[[i]], params()) for i in range(len(rows))], ignore_index=True)

    pd.testing.assert_frame_equal(together, alone)
