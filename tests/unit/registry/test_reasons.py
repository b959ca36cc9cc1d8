"""Reason codes: business words per feature value, one group per activity type or family, top-k by SHAP sums."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipelines.registry.reasons import describe, reason_features, reason_group, top_reasons


def test_feature_values_read_as_business_words() -> None:
    assert describe("n_pricing_page_visit_30d", 3.0) == "visited the pricing page 3 times in the last 30 days"
    assert describe("n_pricing_page_visit_7d", 1) == "visited the pricing page once in the last 7 days"
    assert describe("n_demo_request_all", 0) == "no demo requests in total"
    assert describe("seniority", "vp") == "VP-level title"
    assert describe("seniority", "intern_student") == "intern or student title"
    assert describe("lead_age_days", 38.7) == "lead is 39 days old"
    assert describe("icp_match", 0.0) == "company outside the ideal profile"
    assert describe("icp_match", 1) == "company in the ideal profile"
    assert describe("days_since_pricing_page_visit", math.nan) == "no pricing page visits yet"
    assert describe("days_since_pricing_page_visit", 1.1) == "last pricing page visit 1 day ago"
    assert describe("account_other_high_intent_30d", 0) == (
        "no pricing visits or demo requests by colleagues at the company in the last 30 days")
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
    features = reason_features([
        {"name": "n_pricing_page_visit_30d", "kind": "numeric", "family": "engagement"},
        {"name": "n_pricing_page_visit_all", "kind": "numeric", "family": "engagement"},
        {"name": "seniority", "kind": "categorical", "family": "title"},
        {"name": "icp_match", "kind": "numeric", "family": "fit"},
        {"name": "bogus_signal_count", "kind": "numeric", "family": "bogus"},
    ])
    frame = pd.DataFrame({"n_pricing_page_visit_30d": [3.0, 0.0], "n_pricing_page_visit_all": [5.0, 0.0],
                          "seniority": ["vp", "individual"], "icp_match": [0.0, 1.0], "bogus_signal_count": [0.0, 2.0]})
    contrib = np.array([
        [0.6, 0.3, 0.4, -0.5, 0.05, -2.0],    # last column: bias, ignored
        [-0.2, -0.1, -0.3, 0.2, -0.9, -2.0],
    ])

    positive, negative = top_reasons(contrib, frame, features, k=2)

    assert positive[0] == ["visited the pricing page 3 times in the last 30 days", "VP-level title"]
    assert negative[0] == ["company outside the ideal profile"]
    assert positive[1] == ["company in the ideal profile"]
    assert negative[1] == ["contact details look fake or incomplete (2 warning signs)",
                           "no pricing page visits in the last 30 days"]
