"""Evaluate core: the metric keys a reader looks for, the equal-volume comparison, and the plot tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.calibrate import previous_values
from pipelines.calibrated import Thresholds
from pipelines.config import EvaluateParams
from pipelines.evaluate import PLOT_FILES, ScoredRows, capture_at_rule_volume, evaluate_scores

PARAMS = EvaluateParams(
    ece_bins=10, ece_strategy="quantile", top_deciles=(1, 2), bootstrap=10, ci_level=0.9, curve_points=20
)


def test_capture_ratio_compares_conversions_at_the_rule_volume_per_snapshot() -> None:
    # two snapshots; rules pick 2 then 1 leads; the model's top 2 / top 1 at each snapshot
    y = np.array([1, 0, 0, 1, 0, 1, 0])
    score = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.6, 0.1])
    rule_mql = np.array([False, True, True, False, False, False, True])
    snapshot = np.array([0, 0, 0, 0, 1, 1, 1])

    out = capture_at_rule_volume(y, score, rule_mql, snapshot)

    # model: snapshot 0 picks rows 0, 1 (1 conversion), snapshot 1 picks row 5 (1) -> 2; rules: rows 1, 2, 6 -> 0
    assert out["model_conversions_at_rule_volume"] == 2 and out["rule_mql_conversions"] == 0
    assert np.isnan(out["sql_capture_ratio_vs_rules"])
    rule_mql[0] = True  # now the rules also catch row 0 and pick 3 at snapshot 0
    out = capture_at_rule_volume(y, score, rule_mql, snapshot)
    assert out["sql_capture_ratio_vs_rules"] == pytest.approx(3 / 1)


@pytest.fixture
def rows() -> ScoredRows:
    rng = np.random.default_rng(7)
    n_leads, n_weeks = 300, 8
    lead = np.tile(np.arange(n_leads), n_weeks)
    truth = rng.beta(1, 15, size=n_leads)[lead]
    y = (rng.random(len(lead)) < truth).astype(int)
    prob = np.clip(truth * rng.lognormal(0, 0.3, len(lead)), 0, 1)
    at = pd.Series(np.repeat(pd.date_range("2026-06-01", periods=n_weeks, freq="7D", tz="UTC"), n_leads))
    return ScoredRows(
        lead_id=lead,
        snapshot_at=at,
        y=y,
        prob=prob,
        raw=prob,
        logreg=np.sqrt(prob),
        rule_score=rng.random(len(lead)) + truth,
        rule_mql=rng.random(len(lead)) < 0.1,
        oracle=truth,
    )


def test_headline_keys_and_intervals(rows: ScoredRows) -> None:
    thresholds = Thresholds("SQL", 30, {"MQL": 0.05, "SAL": 0.1, "SQL": 0.3})
    result = evaluate_scores(rows, thresholds, PARAMS, cadence_days=7, snapshot_share=1.0, seed=0)
    m = result.metrics

    for key in (
        "roc_auc",
        "oracle_roc_auc",
        "ece",
        "brier",
        "oracle_brier",
        "sql_capture_ratio_vs_rules",
        "pr_auc",
        "log_loss",
        "roc_auc_vs_oracle",
    ):
        assert isinstance(m[key], float), key
    assert m["roc_auc_ci_low"] <= m["roc_auc"] <= m["roc_auc_ci_high"]
    assert m["oracle_roc_auc"] > m["rules"]["roc_auc"]
    assert set(m["stages"]) == {"MQL", "SAL", "SQL"}
    assert set(m["lift"]["model"]) == {"top10pct_lift", "top10pct_capture", "top20pct_lift", "top20pct_capture"}
    assert m["test"]["snapshots"] == 8 and m["test"]["leads"] == 300
    assert set(result.plots) == set(PLOT_FILES)
    assert list(result.plots["roc.csv"].columns) == ["fpr", "model", "logreg", "rules", "oracle"]
    tradeoff = result.plots["threshold_tradeoff.csv"]
    assert tradeoff["leads_per_week"].is_monotonic_increasing
    assert (tradeoff["expected_sqls_per_week"] <= tradeoff["leads_per_week"] + 1e-9).all()


def test_without_ground_truth_the_oracle_figures_are_omitted(rows: ScoredRows) -> None:
    no_truth = ScoredRows(**{**rows.__dict__, "oracle": None})
    result = evaluate_scores(no_truth, Thresholds("SQL", 30, {"MQL": 0.05, "SAL": 0.1, "SQL": 0.3}), PARAMS, 7, 1.0, 0)

    assert not any(k.startswith("oracle") for k in result.metrics)
    assert "oracle" not in result.plots["roc.csv"].columns


def test_observed_vs_expected_per_week_and_metrics_by_lead_age(rows: ScoredRows) -> None:
    ages = np.tile(np.array([10.0, 100.0, 400.0]).repeat(100), 8)
    # the model under-predicts the oldest leads by half: observed / expected 2 there
    prob = np.where(ages > 365, rows.prob / 2, rows.prob)
    scored = ScoredRows(**{**rows.__dict__, "prob": prob, "lead_age_days": ages})
    m = evaluate_scores(scored, Thresholds("SQL", 30, {"MQL": 0.05, "SAL": 0.1, "SQL": 0.3}), PARAMS, 7, 1.0, 0).metrics

    weekly = evaluate_scores(
        scored, Thresholds("SQL", 30, {"MQL": 0.05, "SAL": 0.1, "SQL": 0.3}), PARAMS, 7, 1.0, 0
    ).plots["observed_expected.csv"]
    assert len(weekly) == 8
    assert m["obs_exp_ratio_min"] == pytest.approx(weekly["obs_exp_ratio"].min())
    assert m["obs_exp_ratio_max"] == pytest.approx(weekly["obs_exp_ratio"].max())
    assert weekly["observed"].sum() == pytest.approx(rows.y.sum())
    bands = m["by_lead_age"]
    assert set(bands) == {"0-30d", "91-180d", "over_365d"}
    assert bands["over_365d"]["obs_exp_ratio"] > 1.5 > bands["0-30d"]["obs_exp_ratio"]
    assert sum(b["share_of_lead_weeks"] for b in bands.values()) == pytest.approx(1.0)


def test_weights_make_the_figures_those_of_the_repeated_rows(rows: ScoredRows) -> None:
    """A sampled long-open lead's row of weight 4 counts as the 4 weeks it stands for."""
    weight = np.where(rows.lead_id % 4 == 0, 4.0, 1.0)
    weighted = ScoredRows(**{**rows.__dict__, "weight": weight})
    repeat = np.repeat(np.arange(len(rows.y)), weight.astype(int))
    repeated = ScoredRows(
        lead_id=rows.lead_id[repeat] * 10 + np.concatenate([np.arange(int(k)) for k in weight]),
        snapshot_at=rows.snapshot_at.iloc[repeat].reset_index(drop=True),
        y=rows.y[repeat],
        prob=rows.prob[repeat],
        raw=rows.raw[repeat],
        logreg=rows.logreg[repeat],
        rule_score=rows.rule_score[repeat],
        rule_mql=rows.rule_mql[repeat],
        oracle=rows.oracle[repeat] if rows.oracle is not None else None,
    )
    thresholds = Thresholds("SQL", 30, {"MQL": 0.05, "SAL": 0.1, "SQL": 0.3})
    a = evaluate_scores(weighted, thresholds, PARAMS, 7, 1.0, 0).metrics
    b = evaluate_scores(repeated, thresholds, PARAMS, 7, 1.0, 0).metrics

    for key in ("roc_auc", "pr_auc", "brier", "ece", "obs_exp_ratio", "oracle_roc_auc"):
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    assert a["sql_capture_ratio_vs_rules"] == pytest.approx(b["sql_capture_ratio_vs_rules"], rel=0.05)
    assert a["test"]["lead_weeks"] == pytest.approx(b["test"]["rows"])


def test_each_stage_is_judged_on_its_own_outcome_and_on_what_it_delivers(rows: ScoredRows) -> None:
    rng = np.random.default_rng(3)
    y = np.asarray(rows.y)
    reached_sal = np.maximum(y, rng.random(len(y)) < 0.2).astype(np.int8)  # SAL or later: every SQL and more
    reached_mql = np.maximum(reached_sal, rng.random(len(y)) < 0.2).astype(np.int8)
    prev_prob = previous_values(rows.lead_id, rows.snapshot_at, rows.prob, 7)
    prev_rule = previous_values(rows.lead_id, rows.snapshot_at, rows.rule_mql, 7)
    policies = {
        "MQL": {"policy": "match_rules"},
        "SAL": {"policy": "capacity", "leads_per_week": 40},
        "SQL": {"policy": "precision", "min_precision": 0.2},
    }
    thresholds = Thresholds(
        "SQL", 30, {"MQL": 0.05, "SAL": 0.1, "SQL": 0.3}, report={"policies": policies, "volume": "new"}
    )
    scored = ScoredRows(
        **{
            **rows.__dict__,
            "prev_prob": prev_prob,
            "prev_rule_mql": prev_rule,
            "outcomes": {"reached_MQL": reached_mql, "reached_SAL": reached_sal, "reached_SQL": y},
        }
    )

    stages = evaluate_scores(scored, thresholds, PARAMS, 7, 1.0, 0).metrics["stages"]

    weeks = 8
    picked = rows.prob >= 0.1
    assert stages["SAL"]["precision_own"] == pytest.approx(reached_sal[picked].mean())
    assert stages["SAL"]["precision"] == pytest.approx(y[picked].mean())
    assert stages["SQL"]["precision_own"] == stages["SQL"]["precision"]  # the target is SQL
    assert stages["MQL"]["precision_own"] > stages["MQL"]["precision"]
    new_sal = picked & ~(prev_prob >= 0.1)
    assert stages["SAL"]["new_per_week"] == pytest.approx(new_sal.sum() / weeks)
    assert stages["SAL"]["delivered_per_week"] == stages["SAL"]["new_per_week"]
    assert stages["SAL"]["target_per_week"] == 40
    assert stages["SAL"]["leads_per_week"] == pytest.approx(picked.sum() / weeks)
    new_rule = rows.rule_mql & ~(prev_rule >= 0.5)
    assert stages["MQL"]["target_per_week"] == pytest.approx(new_rule.sum() / weeks)
    assert stages["SQL"]["target_per_week"] is None and stages["SQL"]["delivered_per_week"] >= 0


def test_row_weights_weigh_the_stage_figures(rows: ScoredRows) -> None:
    thresholds = Thresholds("SQL", 30, {"MQL": 0.05, "SAL": 0.1, "SQL": 0.3})
    weight = np.where(np.asarray(rows.lead_id) % 2 == 0, 3.0, 1.0)
    plain = evaluate_scores(rows, thresholds, PARAMS, 7, 1.0, 0).metrics["stages"]["SAL"]
    weighted = evaluate_scores(
        ScoredRows(**{**rows.__dict__, "weight": weight}), thresholds, PARAMS, 7, 1.0, 0
    ).metrics["stages"]["SAL"]

    picked = rows.prob >= 0.1
    assert weighted["leads_per_week"] == pytest.approx(weight[picked].sum() / 8)
    assert weighted["leads_per_week"] > plain["leads_per_week"]
    assert weighted["precision"] == pytest.approx((weight * rows.y)[picked].sum() / weight[picked].sum())
