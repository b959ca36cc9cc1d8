"""Honest yardsticks in the evaluate core: standard rule baselines chosen without the test labels, the observable
ceiling, and intervals that resample accounts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.calibrated import Thresholds
from pipelines.config import EvaluateParams
from pipelines.evaluate import (
    BEST_RULE_NOTE,
    RuleBaseline,
    ScoredRows,
    best_rule,
    capture_at_rule_volume,
    evaluate_scores,
    matched_threshold,
    rule_baseline,
)

PARAMS = EvaluateParams(
    ece_bins=10, ece_strategy="quantile", top_deciles=(1,), bootstrap=30, ci_level=0.9, curve_points=20
)
THRESHOLDS = Thresholds("SQL", 30, {"MQL": 0.05, "SAL": 0.1, "SQL": 0.3})


def test_matched_threshold_marks_the_target_volume_among_gated_rows_with_weights() -> None:
    score = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0])
    gates = np.array([True, False, True, True, True, True])
    w = np.array([1.0, 1.0, 4.0, 1.0, 1.0, 1.0])
    # gated rows by score: 9 (w 1), 7 (w 4), 6 (w 1): a volume of 5 lead-weeks stops at 7, of 6 at 6
    assert matched_threshold(score, gates, 5.0, w) == 7.0
    assert matched_threshold(score, gates, 6.0, w) == 6.0
    assert matched_threshold(score, gates, 0.0, w) == np.inf
    assert matched_threshold(score, gates, 100.0, w) == 4.0  # more than there is: every gated row


def test_match_volume_threshold_comes_from_the_calibration_rows_and_keeps_the_gates() -> None:
    cal_score = np.arange(10, dtype=float)
    cal = (cal_score, np.zeros(10, dtype=bool), np.ones(10, dtype=bool))
    test_score = np.array([9.5, 7.0, 6.9, 8.0])
    test_gates = np.array([True, True, True, False])
    v = rule_baseline(
        "match_volume",
        "derived",
        cal,
        np.r_[np.zeros(7), np.ones(3)],
        None,
        3.0,
        (test_score, np.zeros(4, dtype=bool), test_gates),
    )
    assert v.threshold == 7.0  # the top 3 calibration rows: 9, 8, 7
    assert v.mql.tolist() == [True, True, False, False]  # 8.0 fails its gate
    assert v.calibration_roc_auc == pytest.approx(1.0)
    own = rule_baseline(
        "own",
        "file",
        cal,
        np.r_[np.zeros(7), np.ones(3)],
        None,
        3.0,
        (test_score, np.array([False, False, True, True]), test_gates),
    )
    assert own.threshold is None and own.mql.tolist() == [False, False, True, True]


def _baseline(score: np.ndarray, mql: np.ndarray, cal_auc: float) -> RuleBaseline:
    return RuleBaseline(
        score=score, mql=mql, source="x", threshold_policy="own", threshold=None, calibration_roc_auc=cal_auc
    )


@pytest.fixture
def rows() -> ScoredRows:
    """300 leads in 60 accounts over 8 weeks; the account's state drives conversion (leads of one account
    correlate)."""
    rng = np.random.default_rng(3)
    n_leads, n_weeks = 300, 8
    account_of_lead = rng.integers(0, 60, n_leads)
    account_effect = rng.beta(1, 12, 60)
    lead = np.tile(np.arange(n_leads), n_weeks)
    truth = account_effect[account_of_lead][lead]
    y = (rng.random(len(lead)) < truth).astype(int)
    prob = np.clip(truth * rng.lognormal(0, 0.3, len(lead)), 0, 1)
    at = pd.Series(np.repeat(pd.date_range("2026-06-01", periods=n_weeks, freq="7D", tz="UTC"), n_leads))
    good = truth + rng.normal(0, 0.02, len(lead))  # a strong rule on the test rows
    weak = rng.random(len(lead))  # a useless one
    variants = {
        "history": _baseline(rng.random(len(lead)), rng.random(len(lead)) < 0.1, 0.60),
        # "weak" looked best on the calibration slice; "good" is better on the test rows: the pick must be "weak"
        "weak": _baseline(weak, weak > 0.9, 0.80),
        "good": _baseline(good, good > np.quantile(good, 0.9), 0.70),
    }
    return ScoredRows(
        lead_id=lead,
        snapshot_at=at,
        y=y,
        prob=prob,
        raw=prob,
        logreg=np.sqrt(prob),
        rule_score=variants["history"].score,
        rule_mql=variants["history"].mql,
        oracle=truth,
        cluster=account_of_lead[lead],
        rule_variants=variants,
        observable=np.sqrt(truth) * 0.3,
    )


def test_best_rule_is_picked_on_the_calibration_slice_not_on_the_test_labels(rows: ScoredRows) -> None:
    assert best_rule(rows.rule_variants) == "weak"
    m = evaluate_scores(rows, THRESHOLDS, PARAMS, cadence_days=7, snapshot_share=1.0, seed=0).metrics
    assert m["best_rule"] == "weak" and m["best_rule_selected_by"] == BEST_RULE_NOTE
    table = m["rule_variants"]
    assert set(table) == {"history", "weak", "good"}
    assert table["good"]["roc_auc"] > table["weak"]["roc_auc"]  # better on test, still not picked
    snapshot = pd.factorize(rows.snapshot_at, sort=True)[0]
    expected = capture_at_rule_volume(rows.y, rows.prob, rows.rule_variants["weak"].mql, snapshot)
    assert m["sql_capture_ratio_vs_best_rule"] == pytest.approx(expected["sql_capture_ratio_vs_rules"])
    assert table["weak"]["model_sql_capture_ratio"] == pytest.approx(m["sql_capture_ratio_vs_best_rule"])
    assert m["sql_capture_ratio_vs_best_rule_ci_low"] <= m["sql_capture_ratio_vs_best_rule"]
    for name, v in rows.rule_variants.items():  # MQL volume: lead-weeks per week
        assert table[name]["mql_leads_per_week"] == pytest.approx(v.mql.sum() / 8)
    assert {
        "model_sql_capture_ratio",
        "logreg_sql_capture_ratio",
        "oracle_sql_capture_ratio",
        "observable_ceiling_sql_capture_ratio",
    } <= set(table["good"])


def test_observable_ceiling_figures(rows: ScoredRows) -> None:
    m = evaluate_scores(rows, THRESHOLDS, PARAMS, cadence_days=7, snapshot_share=1.0, seed=0).metrics
    assert m["observable_ceiling_roc_auc"] == pytest.approx(m["oracle_roc_auc"])  # a monotone map of the truth
    assert m["roc_auc_vs_observable_ceiling"] == pytest.approx(m["roc_auc"] / m["observable_ceiling_roc_auc"])
    assert isinstance(m["observable_ceiling_pr_auc"], float)
    assert "roc_auc_vs_observable_ceiling_ci_low" in m
    without = evaluate_scores(
        ScoredRows(**{**rows.__dict__, "observable": None}), THRESHOLDS, PARAMS, 7, 1.0, 0
    ).metrics
    assert "observable_ceiling_roc_auc" not in without


def test_intervals_resample_accounts_and_are_wider_than_lead_intervals(rows: ScoredRows) -> None:
    m = evaluate_scores(rows, THRESHOLDS, PARAMS, cadence_days=7, snapshot_share=1.0, seed=0).metrics
    assert m["bootstrap"]["unit"] == "accounts" and m["bootstrap"]["clusters"] == len(np.unique(rows.cluster))
    widths = m["bootstrap"]["roc_auc_ci_width"]
    # leads of one account share its state: resampling accounts widens the interval
    assert widths["rows"] < widths["leads"] < widths["accounts"]
    assert m["roc_auc_ci_high"] - m["roc_auc_ci_low"] == pytest.approx(widths["accounts"])
    assert m["test"]["accounts"] == len(np.unique(rows.cluster))
    by_lead = evaluate_scores(ScoredRows(**{**rows.__dict__, "cluster": None}), THRESHOLDS, PARAMS, 7, 1.0, 0).metrics
    assert by_lead["bootstrap"]["unit"] == "leads"
    assert by_lead["roc_auc_ci_high"] - by_lead["roc_auc_ci_low"] == pytest.approx(widths["leads"])
