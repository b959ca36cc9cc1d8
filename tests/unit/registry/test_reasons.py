"""Reason codes: business words per feature value, one group per activity type or family, top-k by SHAP sums."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipelines.registry.reasons import ReasonFeature, describe, explain, reason_features, reason_group, top_reasons


def test_feature_values_read_as_business_words() -> None:
    assert describe("n_pricing_page_visit_30d", 3.0) == "visited the pricing page 3 times in the last 30 days"
    assert describe("n_pricing_page_visit_7d", 1) == "visited the pricing page once in the last 7 days"
    assert describe("n_demo_request_all", 0) == "no demo requests so far"
    assert describe("n_demo_request_all", 2) == "requested a demo twice in total"
    assert describe("seniority", "vp") == "VP-level title"
    assert describe("seniority", "intern_student") == "intern or student title"
    assert describe("lead_age_days", 38.7) == "lead is 39 days old"
    assert describe("icp_match", 0.0) == "company outside the ideal profile"
    assert describe("icp_match", 1) == "company in the ideal profile"
    assert describe("days_since_pricing_page_visit", math.nan) == "no pricing page visits yet"
    assert describe("days_since_pricing_page_visit", 1.1) == "last pricing page visit 1 day ago"
    assert describe("account_other_high_intent_30d", 0) == (
        "no pricing visits or demo requests by colleagues at the company in the last 30 days"
    )
    assert describe("bogus_signal_count", 2.0) == "contact details look fake or incomplete (2 warning signs)"
    assert describe("budget_range", None) == "no budget stated"
    assert describe("activity_velocity_14d", 0.4) == "activity rising over the last 14 days"
    assert describe("something_new", 2.5) == "something new: 2.5"


def test_engagement_and_recency_of_one_activity_form_one_group_other_features_their_family() -> None:
    assert reason_group("n_pricing_page_visit_7d", "engagement") == "activity:pricing_page_visit"
    assert reason_group("n_pricing_page_visit_all", "engagement") == "activity:pricing_page_visit"
    assert reason_group("days_since_pricing_page_visit", "recency") == "activity:pricing_page_visit"
    assert reason_group("n_activities_30d", "engagement") == "activity:any"
    assert reason_group("icp_match", "fit") == "fit"
    assert reason_group("seniority", "title") == "title"


def test_top_reasons_sum_groups_and_describe_the_strongest_feature() -> None:
    features = reason_features(
        [
            {"name": "n_pricing_page_visit_30d", "kind": "numeric", "family": "engagement"},
            {"name": "n_pricing_page_visit_all", "kind": "numeric", "family": "engagement"},
            {"name": "seniority", "kind": "categorical", "family": "title"},
            {"name": "icp_match", "kind": "numeric", "family": "fit"},
            {"name": "bogus_signal_count", "kind": "numeric", "family": "bogus"},
        ]
    )
    frame = pd.DataFrame(
        {
            "n_pricing_page_visit_30d": [3.0, 0.0],
            "n_pricing_page_visit_all": [5.0, 0.0],
            "seniority": ["vp", "individual"],
            "icp_match": [0.0, 1.0],
            "bogus_signal_count": [0.0, 2.0],
        }
    )
    contrib = np.array(
        [
            [0.6, 0.3, 0.4, -0.5, 0.05, -2.0],  # last column: bias, ignored
            [-0.2, -0.1, -0.3, 0.2, -0.9, -2.0],
        ]
    )

    positive, negative = top_reasons(contrib, frame, features, k=2)

    assert positive[0] == ["visited the pricing page 3 times in the last 30 days", "VP-level title"]
    assert negative[0] == ["company outside the ideal profile"]
    assert positive[1] == ["company in the ideal profile"]
    assert negative[1] == [
        "contact details look fake or incomplete (2 warning signs)",
        "no pricing page visits in the last 30 days",
    ]


def test_counts_agree_in_number_and_sources_read_as_sentences() -> None:
    assert describe("n_activities_30d", 1) == "1 activity in the last 30 days"
    assert describe("n_activities_30d", 4) == "4 activities in the last 30 days"
    assert describe("n_activities_all", 0) == "no activity so far"
    assert describe("n_activities_last_14d", 1) == "1 activity in the last 14 days"
    assert describe("account_other_activities_7d", 1) == "1 activity by colleagues at the company in the last 7 days"
    assert describe("account_other_high_intent_all", 1) == (
        "1 pricing visit or demo request by colleagues at the company in total"
    )
    assert describe("account_other_mql", 1) == "1 other contact at the company is an MQL"
    assert describe("account_other_mql", 3) == "3 other contacts at the company are MQLs"
    assert describe("account_contacts", 1) == "1 other contact at the company"
    assert describe("n_stage_entries", 1) == "1 stage change so far"
    assert describe("distinct_content_all", 1) == "downloaded 1 distinct content piece"
    assert describe("bogus_signal_count", 1) == "contact details look fake or incomplete (1 warning sign)"
    assert describe("employee_count", 1) == "company of 1 employee"
    assert describe("annual_revenue", 5.0e7) == "annual revenue of 50 million"
    assert describe("lead_source", "sales_generated") == "came in through sales prospecting"
    assert describe("lead_source", "purchased_list") == "came in from a purchased list"
    assert describe("campaign_channel", "email") == "from an e-mail campaign"
    assert describe("region", "APAC") == "based in Asia-Pacific"
    assert describe("purchase_timeframe", "0-3 months") == "plans to buy within 3 months"
    assert describe("budget_range", "<10k") == "stated budget under 10k"
    assert describe("stage_at_t", "MQL") == "currently an MQL"
    assert describe("n_unsubscribe_all", 0) == "never unsubscribed"
    assert describe("n_unsubscribe_all", 1) == "unsubscribed from e-mails once in total"
    assert describe("days_since_webinar_attend", 3) == "last webinar attendance 3 days ago"
    assert describe("seniority", "unknown") == "seniority unknown"
    assert describe("department", "it") == "works in IT"


def _reasons_of(
    rows: dict[str, list[object]], contributions: list[list[float]], k: int = 3
) -> tuple[list[list[str]], list[list[str]]]:
    features = reason_features(
        [
            {"name": "n_unsubscribe_all", "kind": "numeric", "family": "engagement"},
            {"name": "n_demo_request_30d", "kind": "numeric", "family": "engagement"},
            {"name": "seniority", "kind": "categorical", "family": "title"},
            {"name": "employee_count", "kind": "numeric", "family": "fit"},
            {"name": "email_invalid", "kind": "numeric", "family": "bogus"},
        ]
    )
    frame = pd.DataFrame(rows).astype({"seniority": "category"})
    contrib = np.array([[*row, -2.0] for row in contributions])
    return top_reasons(contrib, frame, features, k)


def test_a_reason_contradicting_its_declared_direction_is_left_out() -> None:
    rows = {
        "n_unsubscribe_all": [1.0, 0.0],
        "n_demo_request_30d": [0.0, 2.0],
        "seniority": ["vp", "vp"],
        "employee_count": [300.0, 300.0],
        "email_invalid": [1.0, 0.0],
    }
    # row 0: one unsubscribe and no demo request pushed UP, an invalid address UP: all three contradict.
    # row 1: no unsubscribes pushed DOWN, two demo requests DOWN, a valid address DOWN: all three contradict.
    positive, negative = _reasons_of(rows, [[0.4, 0.3, 0.2, -0.1, 0.5], [-0.4, -0.3, 0.2, 0.1, -0.5]])

    assert positive == [["VP-level title"], ["VP-level title", "company of 300 employees"]]
    assert negative == [["company of 300 employees"], []]


def test_consistent_reasons_are_kept_on_both_sides() -> None:
    rows = {
        "n_unsubscribe_all": [2.0, 0.0],
        "n_demo_request_30d": [0.0, 1.0],
        "seniority": ["vp", "vp"],
        "employee_count": [300.0, 300.0],
        "email_invalid": [0.0, 0.0],
    }
    positive, negative = _reasons_of(rows, [[-0.4, -0.3, 0.0, 0.0, 0.1], [0.1, 0.6, 0.0, 0.0, 0.0]])

    assert negative[0] == ["unsubscribed from e-mails twice in total", "no demo requests in the last 30 days"]
    assert positive[0] == ["valid e-mail address"]
    assert positive[1] == ["requested a demo once in the last 30 days", "never unsubscribed"]


def test_missing_or_unknown_values_are_never_reasons_in_favour() -> None:
    rows = {
        "n_unsubscribe_all": [0.0, 0.0],
        "n_demo_request_30d": [0.0, 0.0],
        "seniority": ["unknown", None],
        "employee_count": [np.nan, 250.0],
        "email_invalid": [0.0, 0.0],
    }
    positive, negative = _reasons_of(rows, [[0.0, 0.0, 0.7, 0.5, 0.0], [0.0, 0.0, 0.7, -0.5, 0.0]])

    assert positive == [[], []]
    assert negative == [[], ["company of 250 employees"]]
    # the same unknowns may still count against a lead
    _, against = _reasons_of(rows, [[0.0, 0.0, -0.7, -0.5, 0.0], [0.0, 0.0, -0.7, 0.0, 0.0]])
    assert against == [["seniority unknown", "company size unknown"], ["seniority unknown"]]


def test_explain_names_the_feature_behind_each_reason() -> None:
    features = reason_features(
        [
            {"name": "n_demo_request_30d", "kind": "numeric", "family": "engagement"},
            {"name": "n_demo_request_all", "kind": "numeric", "family": "engagement"},
        ]
    )
    frame = pd.DataFrame({"n_demo_request_30d": [0.0], "n_demo_request_all": [3.0]})
    # the group pushed up, its strongest feature (30d: none) would contradict: the next one carries the reason
    positive, negative = explain(np.array([[0.5, 0.2, -2.0]]), frame, features, k=2)

    assert [(r.feature, r.sign, r.text) for r in positive[0]] == [
        ("n_demo_request_all", 1, "requested a demo 3 times in total")
    ]
    assert negative == [[]]


def _row_by_row(
    contrib: np.ndarray, frame: pd.DataFrame, features: list[ReasonFeature], k: int
) -> tuple[list[list[str]], list[list[str]]]:
    """The reasons one row at a time, straight from the rules in `explain`'s docstring (a slow reference)."""
    from pipelines.registry.reasons import _admissible, group_matrix

    contrib = contrib[:, : len(features)]
    groups, member = group_matrix(features)
    up, down = _admissible(contrib, frame, features)
    out: list[list[list[str]]] = []
    for sign, allowed in ((+1, up), (-1, down)):
        side = []
        for i in range(len(frame)):
            candidates = []
            for j in range(len(groups)):
                cols = np.flatnonzero(member[:, j])
                total = float(contrib[i, cols].sum())
                strengths = [sign * contrib[i, c] if allowed[i, c] else 0.0 for c in cols]
                if sign * total > 0 and max(strengths) > 0:
                    candidates.append((-sign * total, j, int(cols[int(np.argmax(strengths))])))
            candidates.sort(key=lambda c: (c[0], c[1]))  # strongest first; ties by group order (a stable sort)
            side.append(
                [
                    describe(features[f].name, frame[features[f].name].to_numpy(dtype=object)[i])
                    for *_, f in candidates[:k]
                ]
            )
        out.append(side)
    return out[0], out[1]


def test_the_vectorised_top_k_says_what_a_row_by_row_reading_of_the_rules_says() -> None:
    rng = np.random.default_rng(7)
    features = reason_features(
        [
            {"name": "n_pricing_page_visit_30d", "kind": "numeric", "family": "engagement"},
            {"name": "n_pricing_page_visit_all", "kind": "numeric", "family": "engagement"},
            {"name": "days_since_pricing_page_visit", "kind": "numeric", "family": "recency"},
            {"name": "n_unsubscribe_all", "kind": "numeric", "family": "engagement"},
            {"name": "n_demo_request_30d", "kind": "numeric", "family": "engagement"},
            {"name": "seniority", "kind": "categorical", "family": "title"},
            {"name": "icp_match", "kind": "numeric", "family": "fit"},
            {"name": "employee_count", "kind": "numeric", "family": "fit"},
            {"name": "lead_source", "kind": "categorical", "family": "source"},
            {"name": "bogus_signal_count", "kind": "numeric", "family": "bogus"},
        ]
    )
    n = 400
    counts = rng.poisson(1.0, size=(n, 2)).astype(float)
    frame = pd.DataFrame(
        {
            "n_pricing_page_visit_30d": counts[:, 0],
            "n_pricing_page_visit_all": counts[:, 0] + counts[:, 1],
            "days_since_pricing_page_visit": np.where(rng.random(n) < 0.3, np.nan, rng.integers(0, 90, n)),
            "n_unsubscribe_all": rng.integers(0, 2, n).astype(float),
            "n_demo_request_30d": rng.integers(0, 3, n).astype(float),
            "seniority": pd.Categorical(rng.choice(["vp", "manager", "unknown", None], n)),
            "icp_match": rng.integers(0, 2, n).astype(float),
            "employee_count": np.where(rng.random(n) < 0.2, np.nan, rng.integers(1, 5000, n)),
            "lead_source": pd.Categorical(rng.choice(["referral", "paid_search", "partner"], n)),
            "bogus_signal_count": rng.integers(0, 3, n).astype(float),
        }
    )
    contrib = rng.normal(size=(n, len(features) + 1))
    contrib[: n // 4, 5] = 0.0  # ties and zero contributions too
    for k in (1, 3, 10):
        assert top_reasons(contrib, frame, features, k) == _row_by_row(contrib, frame, features, k)
    positive, negative = explain(contrib, frame, features, 3)
    assert [[r.text for r in row] for row in positive] == top_reasons(contrib, frame, features, 3)[0]
    assert all(r.sign == -1 and r.contribution < 0 for row in negative for r in row)


def test_account_readiness_reads_as_sentences() -> None:
    assert describe("account_intent_decay_7d", 1.52) == (
        "1.5 recent pricing visits or demo requests across the company (half-life 7 days)"
    )
    assert describe("account_intent_decay_7d", 0.98) == (
        "1 recent pricing visit or demo request across the company (half-life 7 days)"
    )
    assert describe("account_intent_decay_30d", 0.01) == "no recent pricing visits or demo requests across the company"
    assert describe("account_intent_change_14d", 1) == (
        "pricing visits or demo requests across the company rising: 1 more in the last 14 days than in the 14 before"
    )
    assert describe("account_engaged_contacts_30d", 1) == "1 contact at the company engaged in the last 30 days"
    assert (
        describe("account_intent_contacts_7d", 3) == "3 contacts at the company showed buying intent in the last 7 days"
    )
    assert describe("account_engaged_contacts_change_14d", -1) == (
        "1 fewer contact at the company engaged in the last 14 days than in the 14 before"
    )
    assert describe("account_other_sql_30d", 2) == "2 other contacts at the company reached SQL in the last 30 days"
    assert describe("days_since_account_other_sql", math.nan) == "no colleague at the company has reached SQL yet"
    assert describe("days_since_account_other_sql", 12.2) == "a colleague at the company reached SQL 12 days ago"
    assert describe("account_open_contacts", 1) == "1 open contact at the company, this one included"
    assert (
        describe("days_since_account_intent", 3.2) == "latest pricing visits or demo requests at the company 3 days ago"
    )
    assert (
        describe("days_since_account_engagement", math.nan)
        == "no clicks, visits, downloads and forms at the company yet"
    )


def test_conform_gives_text_or_none_for_string_inputs_whatever_the_column_type() -> None:
    """Categoricals are turned into text level by level, not row by row: the same values as str() of each row."""
    from mlflow.types import ColSpec, DataType, Schema

    from pipelines.registry.model import conform

    schema = Schema([ColSpec(DataType.string, "seniority"), ColSpec(DataType.string, "campaign_id")])
    frame = pd.DataFrame(
        {
            "seniority": pd.Categorical(["vp", None, "manager", "vp"], categories=["manager", "vp", "unused"]),
            "campaign_id": pd.Series([3, None, 12, 3], dtype=object),
            "lead_id": [1, 2, 3, 4],  # not a feature: dropped
        }
    )

    got = conform(frame, schema)

    assert list(got.columns) == ["seniority", "campaign_id"]
    assert got["seniority"].tolist() == ["vp", None, "manager", "vp"]
    assert got["campaign_id"].tolist() == ["3", None, "12", "3"]
    assert got["seniority"].dtype == object
