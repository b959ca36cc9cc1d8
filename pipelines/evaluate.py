"""The evaluate stage: every headline figure on the out-of-time test slice, beside the baselines and the oracle.

`evaluate_scores` is the pure core: the test rows' labels and scores (calibrated model, raw model, logistic
regression, rule score and rule MQL flag, and the oracle when the demo's ground truth is there) in, a metrics dict
and plot tables out. `run_evaluate` loads the models and inputs and writes metrics/evaluate.json (for
`dvc metrics show`) and plots/*.csv (for `dvc plots show`).

Conventions:
- ROC-AUC, PR-AUC (average precision), log loss, Brier and ECE are on rows (one row = one open lead at one
  snapshot); ECE uses the bins of params `evaluate.ece_bins` / `ece_strategy` (quantile = equal-mass).
- Lift and capture of the top deciles pool all test rows.
- Equal-volume comparison with the rules: at each snapshot, k = the rule MQLs among the open leads then; the
  model picks its top k at that snapshot. `sql_capture_ratio_vs_rules` = conversions among the model's picks /
  conversions among the rule MQLs, summed over snapshots.
- Confidence intervals resample *leads* with replacement (all of a lead's snapshot rows together), because rows
  of one lead are strongly correlated; resampling rows would make the intervals too narrow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss, roc_curve

from pipelines.calibrate import (
    CALIBRATOR_FILE,
    STAGES,
    THRESHOLDS_FILE,
    Thresholds,
    load_calibrator,
    load_thresholds,
    read_rule_scores,
    slice_share,
    stage_statistics,
)
from pipelines.config import EvaluateParams, Params
from pipelines.modeling import (
    LABEL,
    LeadBootstrap,
    ModelInputError,
    align_rows,
    assign_slices,
    average_precision,
    expected_calibration_error,
    lift_and_capture,
    precision_recall,
    read_features,
    reliability_table,
    roc_auc,
    row_weights,
    top_k_per_group,
    weighted_quantiles,
    weights_or_ones,
    write_csv,
    write_json,
)

log = logging.getLogger(__name__)

METRICS_FILE: Final = "evaluate.json"
#: Plot tables written under the plots folder (each a CSV that dvc.yaml's top-level `plots:` refers to).
PLOT_FILES: Final[tuple[str, ...]] = (
    "roc.csv", "pr.csv", "calibration.csv", "calibration_raw.csv", "gains.csv", "threshold_tradeoff.csv",
    "observed_expected.csv",
)


@dataclass(frozen=True)
class ScoredRows:
    """The test rows with their label and every score, aligned."""

    lead_id: np.ndarray
    snapshot_at: pd.Series
    y: np.ndarray
    prob: np.ndarray                 # calibrated model probability (what scoring uses)
    raw: np.ndarray                  # the booster's raw probability
    logreg: np.ndarray               # logistic-regression baseline
    rule_score: np.ndarray
    rule_mql: np.ndarray
    oracle: np.ndarray | None = None  # Bayes-optimal probability (demo ground truth), when available
    segments: pd.Series | None = None
    weight: np.ndarray | None = None  # open-lead weeks per row (sampled long-open leads weigh more); None: ones
    lead_age_days: np.ndarray | None = None  # the lead's age at the snapshot, for the metrics by age band


@dataclass(frozen=True)
class Evaluation:
    """Metrics (JSON-ready) and plot tables (file name -> frame)."""

    metrics: dict[str, Any]
    plots: dict[str, pd.DataFrame]


def _auc(y: np.ndarray, s: np.ndarray, w: np.ndarray | None = None) -> float:
    return roc_auc(y, s, w)


def _ap(y: np.ndarray, s: np.ndarray, w: np.ndarray | None = None) -> float:
    return average_precision(y, s, w) if 0 < np.sum(y) < len(y) else float("nan")


def probability_metrics(y: np.ndarray, p: np.ndarray, params: EvaluateParams, w: np.ndarray | None = None
                        ) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier and ECE of probabilities (rows weighted by open-lead weeks)."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    return {
        "roc_auc": _auc(y, p, w),
        "pr_auc": _ap(y, p, w),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1], sample_weight=w)),
        "brier": float(brier_score_loss(y, p, sample_weight=w)),
        "ece": expected_calibration_error(y, p, params.ece_bins, params.ece_strategy, w),
    }


def capture_at_rule_volume(y: np.ndarray, score: np.ndarray, rule_mql: np.ndarray, snapshot_code: np.ndarray,
                           w: np.ndarray | None = None) -> dict[str, float]:
    """Model top-k per snapshot (k = rule MQLs at that snapshot) vs the rule MQLs: conversions each captures.

    `snapshot_code` numbers the snapshot dates 0..S-1 (e.g. from `pd.factorize`); k and conversions count
    open-lead weeks (`w`).
    """
    w = weights_or_ones(w, len(y))
    k = np.bincount(snapshot_code, weights=rule_mql.astype(float) * w)
    picked = top_k_per_group(score, snapshot_code, k, w)
    model_hits, rule_hits = float((y * w)[picked].sum()), float((y * w)[rule_mql].sum())
    model_p, model_r = precision_recall(y, picked, w)
    rule_p, rule_r = precision_recall(y, rule_mql, w)
    return {
        "sql_capture_ratio_vs_rules": model_hits / rule_hits if rule_hits else float("nan"),
        "model_precision_at_rule_volume": model_p, "model_recall_at_rule_volume": model_r,
        "rule_mql_precision": rule_p, "rule_mql_recall": rule_r,
        "model_conversions_at_rule_volume": model_hits, "rule_mql_conversions": rule_hits,
    }


def _lift_block(y: np.ndarray, scores: dict[str, np.ndarray], deciles: tuple[int, ...], w: np.ndarray | None
                ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, s in scores.items():
        for d in deciles:
            lift, capture = lift_and_capture(y, s, d / 10, w)
            out.setdefault(name, {})[f"top{d}0pct_lift"] = lift
            out[name][f"top{d}0pct_capture"] = capture
    return out


def _roc_table(y: np.ndarray, scores: dict[str, np.ndarray], points: int, w: np.ndarray | None = None
               ) -> pd.DataFrame:
    grid = np.linspace(0.0, 1.0, points)
    table = {"fpr": grid}
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s, sample_weight=w)
        table[name] = np.interp(grid, fpr, tpr)
    return pd.DataFrame(table)


def _pr_table(y: np.ndarray, scores: dict[str, np.ndarray], points: int, w: np.ndarray | None = None
              ) -> pd.DataFrame:
    """Interpolated precision (the best precision at recall >= r) on a common recall grid."""
    grid = np.linspace(0.0, 1.0, points)
    table = {"recall": grid}
    w = weights_or_ones(w, len(y))
    for name, s in scores.items():
        order = np.argsort(-s, kind="stable")
        hits = np.cumsum((y * w)[order])
        ends = np.flatnonzero(np.r_[s[order][1:] != s[order][:-1], True])
        recall, precision = hits[ends] / max(float((y * w).sum()), 1.0), hits[ends] / np.cumsum(w[order])[ends]
        best_after = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, grid, side="left")
        table[name] = np.where(idx < len(recall), best_after[np.minimum(idx, len(recall) - 1)], np.nan)
    return pd.DataFrame(table)


def gains_table(y: np.ndarray, scores: dict[str, np.ndarray], points: int, w: np.ndarray | None = None
                ) -> pd.DataFrame:
    """Share of conversions captured by the top share of open-lead weeks, for each score (random = the diagonal)."""
    grid = np.linspace(0.0, 1.0, points)
    table = {"share_of_leads": grid, "random": grid}
    w = weights_or_ones(w, len(y))
    total = max(float((y * w).sum()), 1.0)
    for name, s in scores.items():
        order = np.argsort(-s, kind="stable")
        share = np.r_[0.0, np.cumsum(w[order])] / w.sum()
        captured = np.r_[0.0, np.cumsum((y * w)[order]) / total]
        table[name] = captured[np.minimum(np.searchsorted(share, grid - 1e-12, side="left"), len(s))]
    return pd.DataFrame(table)


def tradeoff_table(y: np.ndarray, prob: np.ndarray, weeks: float, points: int, w: np.ndarray | None = None
                   ) -> pd.DataFrame:
    """For thresholds across the score range: leads per week picked vs expected and observed conversions."""
    w = weights_or_ones(w, len(y))
    cuts = np.unique(weighted_quantiles(prob, w, np.linspace(0.0, 1.0, points)))[::-1]
    order = np.argsort(-prob, kind="stable")
    p_sorted = prob[order]
    n_picked = np.searchsorted(-p_sorted, -cuts, side="right")
    picked = np.r_[0.0, np.cumsum(w[order])][n_picked]
    expected = np.r_[0.0, np.cumsum(p_sorted * w[order])][n_picked]
    observed = np.r_[0.0, np.cumsum((y * w)[order])][n_picked]
    return pd.DataFrame({
        "threshold": cuts, "leads_per_week": picked / weeks,
        "expected_sqls_per_week": expected / weeks, "observed_sqls_per_week": observed / weeks,
    })


#: Lead-age bands (days at the snapshot) of the metrics by age: upper bounds, inclusive; the last is open-ended.
AGE_BANDS: Final[tuple[tuple[str, float], ...]] = (
    ("0-30d", 30), ("31-90d", 90), ("91-180d", 180), ("181-365d", 365), ("over_365d", float("inf")),
)


def observed_expected_by_week(y: np.ndarray, prob: np.ndarray, snapshot_at: pd.Series, w: np.ndarray | None
                              ) -> pd.DataFrame:
    """Per snapshot date: open-lead weeks, observed and expected conversions and their ratio (calibration in time)."""
    w = weights_or_ones(w, len(y))
    at = pd.to_datetime(snapshot_at, utc=True).reset_index(drop=True)
    table = pd.DataFrame({"snapshot_at": at, "lead_weeks": w, "observed": y * w, "expected": prob * w})
    weekly = table.groupby("snapshot_at", sort=True).sum().reset_index()
    weekly["obs_exp_ratio"] = weekly["observed"] / weekly["expected"]
    weekly["snapshot_at"] = weekly["snapshot_at"].dt.strftime("%Y-%m-%d")
    return weekly


def metrics_by_age(y: np.ndarray, prob: np.ndarray, age_days: np.ndarray, params: EvaluateParams,
                   w: np.ndarray | None) -> dict[str, dict[str, float]]:
    """The headline figures per lead-age band: does the model hold for the old open leads nightly scoring scores?"""
    w = weights_or_ones(w, len(y))
    out: dict[str, dict[str, float]] = {}
    lower = -np.inf
    for name, upper in AGE_BANDS:
        rows = (age_days > lower) & (age_days <= upper)
        lower = upper
        if not rows.any():
            continue
        yi, pi, wi = y[rows], prob[rows], w[rows]
        expected = float((pi * wi).sum())
        out[name] = {
            "rows": int(rows.sum()), "lead_weeks": float(wi.sum()), "positive_lead_weeks": float((yi * wi).sum()),
            "share_of_lead_weeks": float(wi.sum() / w.sum()),
            "roc_auc": _auc(yi, pi, wi) if 0 < yi.sum() < len(yi) else float("nan"),
            "ece": expected_calibration_error(yi, pi, params.ece_bins, params.ece_strategy, wi),
            "obs_exp_ratio": float((yi * wi).sum()) / expected if expected > 0 else float("nan"),
        }
    return out


def evaluate_scores(rows: ScoredRows, thresholds: Thresholds, params: EvaluateParams, cadence_days: int,
                    snapshot_share: float, seed: int) -> Evaluation:
    """All test-slice figures (with lead-bootstrap CIs on the headline ones) and the plot tables.

    Every figure counts open-lead weeks: a row weighs `rows.weight` (sampled long-open leads weigh more), so the
    figures describe the whole population that nightly scoring scores.
    """
    y = np.asarray(rows.y, dtype=np.int64)
    w = weights_or_ones(rows.weight, len(y))
    snapshot, dates = pd.factorize(pd.to_datetime(rows.snapshot_at, utc=True), sort=True)
    weeks = len(dates) * snapshot_share * cadence_days / 7
    oracle = rows.oracle
    model = probability_metrics(y, rows.prob, params, w)
    equal_volume = capture_at_rule_volume(y, rows.prob, rows.rule_mql, snapshot, w)
    weekly = observed_expected_by_week(y, rows.prob, rows.snapshot_at, w)
    metrics: dict[str, Any] = {
        **model,
        "roc_auc_raw": _auc(y, rows.raw, w),
        "sql_capture_ratio_vs_rules": equal_volume["sql_capture_ratio_vs_rules"],
        "obs_exp_ratio": float((y * w).sum() / (rows.prob * w).sum()),
        "obs_exp_ratio_min": float(weekly["obs_exp_ratio"].min()),
        "obs_exp_ratio_max": float(weekly["obs_exp_ratio"].max()),
    }
    if oracle is not None:
        metrics["oracle_roc_auc"] = _auc(y, oracle, w)
        metrics["oracle_brier"] = float(brier_score_loss(y, oracle, sample_weight=w))
        metrics["oracle_pr_auc"] = _ap(y, oracle, w)
        metrics["roc_auc_vs_oracle"] = metrics["roc_auc"] / metrics["oracle_roc_auc"]
        metrics["oracle_sql_capture_ratio_vs_rules"] = capture_at_rule_volume(
            y, oracle, rows.rule_mql, snapshot, w)["sql_capture_ratio_vs_rules"]

    def statistic(idx: np.ndarray) -> dict[str, float]:
        yi, wi = y[idx], w[idx]
        out = {"roc_auc": _auc(yi, rows.prob[idx], wi), "pr_auc": _ap(yi, rows.prob[idx], wi),
               "brier": float(brier_score_loss(yi, rows.prob[idx], sample_weight=wi)),
               "ece": expected_calibration_error(yi, rows.prob[idx], params.ece_bins, params.ece_strategy, wi),
               "sql_capture_ratio_vs_rules": capture_at_rule_volume(
                   yi, rows.prob[idx], rows.rule_mql[idx], snapshot[idx], wi)["sql_capture_ratio_vs_rules"]}
        if oracle is not None:
            out["roc_auc_vs_oracle"] = out["roc_auc"] / _auc(yi, oracle[idx], wi)
        return out

    boot = LeadBootstrap(rows.lead_id, seed)
    for name, (lo, hi) in boot.intervals(statistic, params.bootstrap, params.ci_level).items():
        metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = lo, hi

    scores = {"model": rows.prob, "logreg": rows.logreg, "rules": rows.rule_score}
    if oracle is not None:
        scores["oracle"] = oracle
    metrics["logreg"] = {**probability_metrics(y, rows.logreg, params, w), "sql_capture_ratio_vs_rules":
                         capture_at_rule_volume(y, rows.logreg, rows.rule_mql, snapshot, w)[
                             "sql_capture_ratio_vs_rules"]}
    metrics["rules"] = {"roc_auc": _auc(y, rows.rule_score, w), "pr_auc": _ap(y, rows.rule_score, w),
                        "mql_leads_per_week": float((rows.rule_mql * w).sum() / weeks)}
    metrics["equal_volume"] = equal_volume
    metrics["lift"] = _lift_block(y, scores, params.top_deciles, w)
    metrics["stages"] = stage_statistics(thresholds, rows.prob, y, rows.lead_id, rows.snapshot_at, rows.segments,
                                         cadence_days, snapshot_share, params.bootstrap, params.ci_level, seed)
    limits = thresholds.matrix(len(y), rows.segments)
    for j, stage in enumerate(STAGES):  # the rule score at the same volume, snapshot by snapshot
        picked = rows.prob >= limits[:, j]
        k = np.bincount(snapshot, weights=picked * w, minlength=len(dates))
        rule_p, rule_r = precision_recall(y, top_k_per_group(rows.rule_score, snapshot, k, w), w)
        metrics["stages"][stage]["rules_precision_at_equal_volume"] = rule_p
        metrics["stages"][stage]["rules_recall_at_equal_volume"] = rule_r
    if rows.lead_age_days is not None:
        metrics["by_lead_age"] = metrics_by_age(y, rows.prob, np.asarray(rows.lead_age_days, dtype=float), params, w)
    metrics["test"] = {"rows": len(y), "lead_weeks": float(w.sum()), "leads": len(np.unique(rows.lead_id)),
                       "positives": int(y.sum()), "positive_lead_weeks": float((y * w).sum()),
                       "snapshots": len(dates), "base_rate": float((y * w).sum() / w.sum())}

    calibration = reliability_table(y, rows.prob, params.ece_bins, params.ece_strategy, w)
    calibration["perfect"] = calibration["mean_predicted"]
    plots = {
        "roc.csv": _roc_table(y, scores, params.curve_points, w),
        "pr.csv": _pr_table(y, scores, params.curve_points, w),
        "calibration.csv": calibration,
        "calibration_raw.csv": reliability_table(y, rows.raw, params.ece_bins, params.ece_strategy, w),
        "gains.csv": gains_table(y, scores, params.curve_points, w),
        "threshold_tradeoff.csv": tradeoff_table(y, np.asarray(rows.prob, dtype=float), weeks, params.curve_points,
                                                 w),
        "observed_expected.csv": weekly,
    }
    return Evaluation(metrics=metrics, plots=plots)


def oracle_for(truth_path: Path | None, rows: pd.DataFrame, horizon_days: int) -> np.ndarray | None:
    """The demo oracle's probability for the rows, or None when there is no ground-truth file."""
    if truth_path is None or not Path(truth_path).exists():
        if truth_path is not None:
            log.info("no ground truth at %s: oracle metrics omitted", truth_path)
        return None
    from pipelines.crm.demo import oracle_probability, read_truth

    return np.asarray(oracle_probability(read_truth(Path(truth_path)), rows[["lead_id", "snapshot_at"]],
                                         horizon_days), dtype=float)


#: What a single-snapshot (leads-only) evaluation is, written into its metrics.
RANDOM_SPLIT_NOTE = ("stratified random split by lead: the data has a single snapshot (leads-only, no dates), so "
                     "this is NOT an out-of-time test; expect live performance to be lower")


def read_test_slice(features_dir: Path, model_dir: Path) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, Any]:
    """(every feature row, its slice name, the out-of-time test rows, the split plan) under models/split.json."""
    from pipelines.train import load_split

    frame, _ = read_features(features_dir)
    split = load_split(Path(model_dir))
    slices = assign_slices(frame, split)
    test = frame.loc[slices == "test"].reset_index(drop=True)
    if test.empty:
        raise ModelInputError("no feature rows fall in the test slice of models/split.json (stale split?)")
    return frame, slices, test, split


def run_evaluate(params: Params, features_dir: Path, model_dir: Path, rules_path: Path, truth_path: Path | None,
                 metrics_dir: Path, plots_dir: Path) -> Evaluation:
    """Entry point of the evaluate stage: score the test slice with every model and write metrics and plots."""
    from pipelines.train import booster_predict, load_booster, load_logreg, logreg_predict

    model_dir = Path(model_dir)
    frame, slices, test, split = read_test_slice(features_dir, model_dir)
    booster = load_booster(model_dir)
    calibrator = load_calibrator(model_dir / CALIBRATOR_FILE)
    thresholds = load_thresholds(model_dir / THRESHOLDS_FILE)
    logreg, logreg_features = load_logreg(model_dir)
    rules = align_rows(test, read_rule_scores(rules_path), ["rule_score", "rule_mql"], "rule scores")
    raw = booster_predict(booster, test)
    column = thresholds.segment_column
    rows = ScoredRows(
        lead_id=test["lead_id"].to_numpy(), snapshot_at=test["snapshot_at"], y=test[LABEL].to_numpy(),
        prob=calibrator.apply(raw), raw=raw, logreg=logreg_predict(logreg, test, logreg_features),
        rule_score=rules["rule_score"].to_numpy(dtype=float), rule_mql=rules["rule_mql"].to_numpy(dtype=bool),
        oracle=oracle_for(truth_path, test, params.features.horizon_days),
        segments=test[column] if column and column in test.columns else None,
        weight=row_weights(test),
        lead_age_days=test["lead_age_days"].to_numpy(dtype=float) if "lead_age_days" in test.columns else None,
    )
    result = evaluate_scores(rows, thresholds, params.evaluate, params.features.cadence_days,
                             slice_share(slices, frame["snapshot_at"], "test"), params.base.seed)
    if split.kind == "random":  # leads-only data: say so in the metrics themselves (time splits keep their keys)
        result.metrics["split"] = RANDOM_SPLIT_NOTE
    elif split.note is not None:  # dated leads with a flag: an out-of-time split by creation date
        result.metrics["split"] = split.note
    write_json(Path(metrics_dir) / METRICS_FILE, result.metrics)
    for name, table in result.plots.items():
        write_csv(Path(plots_dir) / name, table)
    _log_headline(result.metrics)
    return result


def _log_headline(m: dict[str, Any]) -> None:
    fmt: Callable[[str], str] = lambda k: f"{m[k]:.4f}" if isinstance(m.get(k), float) else "n/a"  # noqa: E731
    log.info("test: ROC-AUC %s (oracle %s, ratio %s), PR-AUC %s, Brier %s (oracle %s), ECE %s, "
             "SQL capture vs rules at equal volume %s", fmt("roc_auc"), fmt("oracle_roc_auc"),
             fmt("roc_auc_vs_oracle"), fmt("pr_auc"), fmt("brier"), fmt("oracle_brier"), fmt("ece"),
             fmt("sql_capture_ratio_vs_rules"))
    for stage in STAGES:
        s = m["stages"][stage]
        log.info("%s: %.0f leads/week, precision %.3f, recall %.3f", stage, s["leads_per_week"], s["precision"],
                 s["recall"])
