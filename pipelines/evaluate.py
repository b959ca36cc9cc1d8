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
- Standard rule baselines (`rules.variants`: decayed, windowed, the four-part rule) are compared like the history's
  rule; the *best* is picked by ROC-AUC on the calibration slice (never on the test labels), and
  `sql_capture_ratio_vs_best_rule` is the headline comparison.
- The demo's yardsticks: the oracle (knows the latent market state) and the observable ceiling (filters that state
  from the CRM's records, `pipelines.crm.truth`).
- Confidence intervals resample *accounts* with replacement (all snapshot rows of all the account's leads together;
  a lead without an account on its own), because rows of one lead, and leads of one account (its buying state),
  are correlated; resampling rows or leads would make the intervals too narrow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss, roc_curve

from pipelines.artifacts import (
    CALIBRATOR_FILE,
    THRESHOLDS_FILE,
    load_booster,
    load_calibrator,
    load_logreg,
    load_split,
    load_thresholds,
)
from pipelines.calibrate import (
    add_delivery,
    policy_target,
    previous_snapshot_rows,
    previous_values,
    read_rule_scores,
    slice_share,
    stage_statistics,
)
from pipelines.calibrated import THRESHOLD_STAGES, Thresholds
from pipelines.config import HISTORY_RULE, EvaluateParams, Params, StagePolicy
from pipelines.features.spec import ACCOUNT
from pipelines.modeling import (
    LABEL,
    ClusterBootstrap,
    ModelInputError,
    align_rows,
    assign_slices,
    average_precision,
    cluster_ids,
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
    "roc.csv",
    "pr.csv",
    "calibration.csv",
    "calibration_raw.csv",
    "gains.csv",
    "threshold_tradeoff.csv",
    "observed_expected.csv",
)


#: Each stage's own outcome column in the feature rows (pipelines.features.snapshots.STAGE_OUTCOMES).
OUTCOME_COLUMNS: Final[tuple[str, ...]] = tuple(f"reached_{stage}" for stage in THRESHOLD_STAGES)


@dataclass(frozen=True)
class RuleBaseline:
    """A standard rule on the test rows, its MQLs decided without the test labels (own threshold and gates, or a
    threshold matching the history rule's MQL volume on the calibration slice)."""

    score: np.ndarray  # test rows
    mql: np.ndarray  # test rows
    source: str  # rules.file, a file, or the transformation of rules.file
    threshold_policy: str  # own | match_volume
    threshold: float | None  # the matched threshold (match_volume), None for own
    calibration_roc_auc: float  # the selection criterion: ROC-AUC of the score on the calibration slice


def matched_threshold(score: np.ndarray, gates: np.ndarray, target: float, w: np.ndarray | None = None) -> float:
    """The score threshold at which the gated rows at or above it weigh `target` lead-weeks (ties: the whole tie is
    in, so the volume can be a little above the target); +inf when `target` is 0, the lowest score when it is
    more than the gated rows hold."""
    w = weights_or_ones(w, len(score))
    s, g = np.asarray(score, dtype=float), np.asarray(gates, dtype=bool)
    if target <= 0 or not g.any():
        return float("inf")
    order = np.argsort(-s[g], kind="stable")
    cum = np.cumsum(w[g][order])
    at = min(int(np.searchsorted(cum, target - 1e-9, side="left")), len(cum) - 1)
    return float(s[g][order][at])


def rule_baseline(
    policy: str,
    source: str,
    cal: tuple[np.ndarray, np.ndarray, np.ndarray],
    cal_y: np.ndarray,
    cal_w: np.ndarray | None,
    target_volume: float,
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> RuleBaseline:
    """One variant's test-row MQLs from its (score, own MQL, gates) on the calibration and test rows.

    `own`: the file's own threshold and gates. `match_volume`: the threshold that marks `target_volume` lead-weeks
    (the history rule's MQLs on the calibration slice) among the gated calibration rows, applied to the test rows.
    Only the calibration slice is used, never the test labels.
    """
    cal_score, _, cal_gates = cal
    test_score, test_own, test_gates = (np.asarray(a) for a in test)
    threshold = None
    mql = test_own.astype(bool)
    if policy == "match_volume":
        threshold = matched_threshold(cal_score, cal_gates, target_volume, cal_w)
        mql = (test_score.astype(float) >= threshold) & test_gates.astype(bool)
    elif policy != "own":
        raise ValueError(f"threshold policy must be own or match_volume, not {policy!r}")
    return RuleBaseline(
        score=test_score.astype(float),
        mql=mql,
        source=source,
        threshold_policy=policy,
        threshold=threshold,
        calibration_roc_auc=roc_auc(np.asarray(cal_y), cal_score, cal_w),
    )


def best_rule(variants: Mapping[str, RuleBaseline]) -> str:
    """The best standard rule: the highest ROC-AUC of its score on the calibration slice (ties: the first given).

    Chosen before the test slice is looked at, so the headline comparison with it is not tuned on the test labels.
    """
    aucs = {name: v.calibration_roc_auc for name, v in variants.items()}
    finite = {k: a for k, a in aucs.items() if np.isfinite(a)}
    return max(finite, key=finite.__getitem__) if finite else next(iter(variants))


#: Why the best rule is the best, written into the metrics.
BEST_RULE_NOTE: Final = "highest ROC-AUC of the rule score on the calibration slice (the test labels are not used)"


@dataclass(frozen=True)
class ScoredRows:
    """The test rows with their label and every score, aligned."""

    lead_id: np.ndarray
    snapshot_at: pd.Series
    y: np.ndarray
    prob: np.ndarray  # calibrated model probability (what scoring uses)
    raw: np.ndarray  # the booster's raw probability
    logreg: np.ndarray  # logistic-regression baseline
    rule_score: np.ndarray
    rule_mql: np.ndarray
    oracle: np.ndarray | None = None  # Bayes-optimal probability (demo ground truth), when available
    segments: pd.Series | None = None
    weight: np.ndarray | None = None  # open-lead weeks per row (sampled long-open leads weigh more); None: ones
    lead_age_days: np.ndarray | None = None  # the lead's age at the snapshot, for the metrics by age band
    prev_prob: np.ndarray | None = None  # probability at the lead's previous snapshot (NaN: no row then)
    prev_rule_mql: np.ndarray | None = None  # rule MQL flag there (NaN: no row then)
    outcomes: dict[str, np.ndarray] | None = None  # reached_<stage>: each stage's own outcome within the horizon
    cluster: np.ndarray | None = None  # bootstrap cluster per row (the lead's account, `cluster_ids`); None: leads
    rule_variants: Mapping[str, RuleBaseline] | None = None  # every standard rule (the history's included)
    observable: np.ndarray | None = None  # the demo's observable ceiling (Bayes filter of the market state)


@dataclass(frozen=True)
class Evaluation:
    """Metrics (JSON-ready) and plot tables (file name -> frame)."""

    metrics: dict[str, Any]
    plots: dict[str, pd.DataFrame]


def _ap(y: np.ndarray, s: np.ndarray, w: np.ndarray | None = None) -> float:
    return average_precision(y, s, w) if 0 < np.sum(y) < len(y) else float("nan")


def probability_metrics(
    y: np.ndarray, p: np.ndarray, params: EvaluateParams, w: np.ndarray | None = None
) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier and ECE of probabilities (rows weighted by open-lead weeks)."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    return {
        "roc_auc": roc_auc(y, p, w),
        "pr_auc": _ap(y, p, w),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1], sample_weight=w)),
        "brier": float(brier_score_loss(y, p, sample_weight=w)),
        "ece": expected_calibration_error(y, p, params.ece_bins, params.ece_strategy, w),
    }


def capture_at_rule_volume(
    y: np.ndarray, score: np.ndarray, rule_mql: np.ndarray, snapshot_code: np.ndarray, w: np.ndarray | None = None
) -> dict[str, float]:
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
        "model_precision_at_rule_volume": model_p,
        "model_recall_at_rule_volume": model_r,
        "rule_mql_precision": rule_p,
        "rule_mql_recall": rule_r,
        "model_conversions_at_rule_volume": model_hits,
        "rule_mql_conversions": rule_hits,
    }


def _lift_block(
    y: np.ndarray, scores: dict[str, np.ndarray], deciles: tuple[int, ...], w: np.ndarray | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, s in scores.items():
        for d in deciles:
            lift, capture = lift_and_capture(y, s, d / 10, w)
            out.setdefault(name, {})[f"top{d}0pct_lift"] = lift
            out[name][f"top{d}0pct_capture"] = capture
    return out


def _roc_table(y: np.ndarray, scores: dict[str, np.ndarray], points: int, w: np.ndarray | None = None) -> pd.DataFrame:
    grid = np.linspace(0.0, 1.0, points)
    table = {"fpr": grid}
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s, sample_weight=w)
        table[name] = np.interp(grid, fpr, tpr)
    return pd.DataFrame(table)


def _pr_table(y: np.ndarray, scores: dict[str, np.ndarray], points: int, w: np.ndarray | None = None) -> pd.DataFrame:
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


def gains_table(y: np.ndarray, scores: dict[str, np.ndarray], points: int, w: np.ndarray | None = None) -> pd.DataFrame:
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


def tradeoff_table(
    y: np.ndarray, prob: np.ndarray, weeks: float, points: int, w: np.ndarray | None = None
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
    return pd.DataFrame(
        {
            "threshold": cuts,
            "leads_per_week": picked / weeks,
            "expected_sqls_per_week": expected / weeks,
            "observed_sqls_per_week": observed / weeks,
        }
    )


#: Lead-age bands (days at the snapshot) of the metrics by age: upper bounds, inclusive; the last is open-ended.
AGE_BANDS: Final[tuple[tuple[str, float], ...]] = (
    ("0-30d", 30),
    ("31-90d", 90),
    ("91-180d", 180),
    ("181-365d", 365),
    ("over_365d", float("inf")),
)


def observed_expected_by_week(
    y: np.ndarray, prob: np.ndarray, snapshot_at: pd.Series, w: np.ndarray | None
) -> pd.DataFrame:
    """Per snapshot date: open-lead weeks, observed and expected conversions and their ratio (calibration in time)."""
    w = weights_or_ones(w, len(y))
    at = pd.to_datetime(snapshot_at, utc=True).reset_index(drop=True)
    table = pd.DataFrame({"snapshot_at": at, "lead_weeks": w, "observed": y * w, "expected": prob * w})
    weekly = table.groupby("snapshot_at", sort=True).sum().reset_index()
    weekly["obs_exp_ratio"] = weekly["observed"] / weekly["expected"]
    weekly["snapshot_at"] = weekly["snapshot_at"].dt.strftime("%Y-%m-%d")
    return weekly


def metrics_by_age(
    y: np.ndarray, prob: np.ndarray, age_days: np.ndarray, params: EvaluateParams, w: np.ndarray | None
) -> dict[str, dict[str, float]]:
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
            "rows": int(rows.sum()),
            "lead_weeks": float(wi.sum()),
            "positive_lead_weeks": float((yi * wi).sum()),
            "share_of_lead_weeks": float(wi.sum() / w.sum()),
            "roc_auc": roc_auc(yi, pi, wi) if 0 < yi.sum() < len(yi) else float("nan"),
            "ece": expected_calibration_error(yi, pi, params.ece_bins, params.ece_strategy, wi),
            "obs_exp_ratio": float((yi * wi).sum()) / expected if expected > 0 else float("nan"),
        }
    return out


def rule_variant_table(
    y: np.ndarray,
    w: np.ndarray,
    snapshot: np.ndarray,
    weeks: float,
    variants: Mapping[str, RuleBaseline],
    scores: Mapping[str, np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Per standard rule: where it comes from, its threshold, calibration-slice ROC-AUC (the selection criterion),
    test ROC-AUC and PR-AUC, MQL lead-weeks per week and precision, and each score's SQL capture at its volume."""
    out: dict[str, dict[str, Any]] = {}
    for name, v in variants.items():
        precision, recall = precision_recall(y, v.mql, w)
        out[name] = {
            "source": v.source,
            "threshold_policy": v.threshold_policy,
            "threshold": v.threshold,
            "calibration_roc_auc": v.calibration_roc_auc,
            "roc_auc": roc_auc(y, v.score, w),
            "pr_auc": _ap(y, v.score, w),
            "mql_leads_per_week": float((v.mql * w).sum() / weeks) if weeks else float("nan"),
            "mql_precision": precision,
            "mql_recall": recall,
            **{
                f"{s}_sql_capture_ratio": capture_at_rule_volume(y, p, v.mql, snapshot, w)["sql_capture_ratio_vs_rules"]
                for s, p in scores.items()
            },
        }
    return out


def evaluate_scores(
    rows: ScoredRows,
    thresholds: Thresholds,
    params: EvaluateParams,
    cadence_days: int,
    snapshot_share: float,
    seed: int,
) -> Evaluation:
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
        "roc_auc_raw": roc_auc(y, rows.raw, w),
        "sql_capture_ratio_vs_rules": equal_volume["sql_capture_ratio_vs_rules"],
        "obs_exp_ratio": float((y * w).sum() / (rows.prob * w).sum()),
        "obs_exp_ratio_min": float(weekly["obs_exp_ratio"].min()),
        "obs_exp_ratio_max": float(weekly["obs_exp_ratio"].max()),
    }
    if oracle is not None:
        metrics["oracle_roc_auc"] = roc_auc(y, oracle, w)
        metrics["oracle_brier"] = float(brier_score_loss(y, oracle, sample_weight=w))
        metrics["oracle_pr_auc"] = _ap(y, oracle, w)
        metrics["roc_auc_vs_oracle"] = metrics["roc_auc"] / metrics["oracle_roc_auc"]
        metrics["oracle_sql_capture_ratio_vs_rules"] = capture_at_rule_volume(y, oracle, rows.rule_mql, snapshot, w)[
            "sql_capture_ratio_vs_rules"
        ]
    observable = rows.observable
    if observable is not None:
        metrics["observable_ceiling_roc_auc"] = roc_auc(y, observable, w)
        metrics["observable_ceiling_pr_auc"] = _ap(y, observable, w)
        metrics["observable_ceiling_brier"] = float(brier_score_loss(y, observable, sample_weight=w))
        metrics["roc_auc_vs_observable_ceiling"] = metrics["roc_auc"] / metrics["observable_ceiling_roc_auc"]
        metrics["observable_ceiling_sql_capture_ratio_vs_rules"] = capture_at_rule_volume(
            y, observable, rows.rule_mql, snapshot, w
        )["sql_capture_ratio_vs_rules"]
    variants = dict(rows.rule_variants or {})
    best = best_rule(variants) if variants else None
    best_mql = variants[best].mql if best is not None else None
    if best is not None:
        metrics["best_rule"] = best
        metrics["best_rule_selected_by"] = BEST_RULE_NOTE
        metrics["best_rule_roc_auc"] = roc_auc(y, variants[best].score, w)
        metrics["sql_capture_ratio_vs_best_rule"] = capture_at_rule_volume(
            y, rows.prob, variants[best].mql, snapshot, w
        )["sql_capture_ratio_vs_rules"]
        metrics["rule_variants"] = rule_variant_table(
            y,
            w,
            snapshot,
            weeks,
            variants,
            {
                "model": rows.prob,
                "logreg": rows.logreg,
                **({"oracle": oracle} if oracle is not None else {}),
                **({"observable_ceiling": observable} if observable is not None else {}),
            },
        )

    def statistic(idx: np.ndarray) -> dict[str, float]:
        yi, wi = y[idx], w[idx]
        out = {
            "roc_auc": roc_auc(yi, rows.prob[idx], wi),
            "pr_auc": _ap(yi, rows.prob[idx], wi),
            "brier": float(brier_score_loss(yi, rows.prob[idx], sample_weight=wi)),
            "ece": expected_calibration_error(yi, rows.prob[idx], params.ece_bins, params.ece_strategy, wi),
            "sql_capture_ratio_vs_rules": capture_at_rule_volume(
                yi, rows.prob[idx], rows.rule_mql[idx], snapshot[idx], wi
            )["sql_capture_ratio_vs_rules"],
        }
        if oracle is not None:
            out["roc_auc_vs_oracle"] = out["roc_auc"] / roc_auc(yi, oracle[idx], wi)
        if observable is not None:
            out["roc_auc_vs_observable_ceiling"] = out["roc_auc"] / roc_auc(yi, observable[idx], wi)
        if best_mql is not None:
            out["sql_capture_ratio_vs_best_rule"] = capture_at_rule_volume(
                yi, rows.prob[idx], best_mql[idx], snapshot[idx], wi
            )["sql_capture_ratio_vs_rules"]
        return out

    clusters = rows.cluster if rows.cluster is not None else rows.lead_id
    boot = ClusterBootstrap(clusters, seed)
    for name, (lo, hi) in boot.intervals(statistic, params.bootstrap, params.ci_level).items():
        metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = lo, hi
    metrics["bootstrap"] = {
        "unit": "accounts" if rows.cluster is not None else "leads",
        "clusters": boot.clusters,
        "resamples": params.bootstrap,
        "ci_level": params.ci_level,
    }
    if rows.cluster is not None and params.bootstrap > 0:  # how much wider resampling accounts makes the AUC interval
        widths = {}
        for unit, ids in (("rows", np.arange(len(y))), ("leads", rows.lead_id), ("accounts", clusters)):
            lo, hi = ClusterBootstrap(ids, seed).intervals(
                lambda idx: {"auc": roc_auc(y[idx], rows.prob[idx], w[idx])}, params.bootstrap, params.ci_level
            )["auc"]
            widths[unit] = hi - lo
        metrics["bootstrap"]["roc_auc_ci_width"] = widths

    scores = {"model": rows.prob, "logreg": rows.logreg, "rules": rows.rule_score}
    if oracle is not None:
        scores["oracle"] = oracle
    if observable is not None:
        scores["observable_ceiling"] = observable
    metrics["logreg"] = {
        **probability_metrics(y, rows.logreg, params, w),
        "sql_capture_ratio_vs_rules": capture_at_rule_volume(y, rows.logreg, rows.rule_mql, snapshot, w)[
            "sql_capture_ratio_vs_rules"
        ],
    }
    metrics["rules"] = {
        "roc_auc": roc_auc(y, rows.rule_score, w),
        "pr_auc": _ap(y, rows.rule_score, w),
        "mql_leads_per_week": float((rows.rule_mql * w).sum() / weeks),
    }
    metrics["equal_volume"] = equal_volume
    metrics["lift"] = _lift_block(y, scores, params.top_deciles, w)
    metrics["stages"] = stage_statistics(
        thresholds,
        rows.prob,
        y,
        clusters,
        rows.snapshot_at,
        rows.segments,
        cadence_days,
        snapshot_share,
        params.bootstrap,
        params.ci_level,
        seed,
        weight=rows.weight,
        prev_prob=rows.prev_prob,
        outcomes=rows.outcomes,
    )
    add_delivery(metrics["stages"], stage_targets(thresholds, rows, weeks), _volume(thresholds, rows))
    limits = thresholds.matrix(len(y), rows.segments)
    for j, stage in enumerate(THRESHOLD_STAGES):  # the rule score at the same volume, snapshot by snapshot
        picked = rows.prob >= limits[:, j]
        k = np.bincount(snapshot, weights=picked * w, minlength=len(dates))
        rule_p, rule_r = precision_recall(y, top_k_per_group(rows.rule_score, snapshot, k, w), w)
        metrics["stages"][stage]["rules_precision_at_equal_volume"] = rule_p
        metrics["stages"][stage]["rules_recall_at_equal_volume"] = rule_r
    if rows.lead_age_days is not None:
        metrics["by_lead_age"] = metrics_by_age(y, rows.prob, np.asarray(rows.lead_age_days, dtype=float), params, w)
    metrics["test"] = {
        "rows": len(y),
        "lead_weeks": float(w.sum()),
        "leads": len(np.unique(rows.lead_id)),
        "accounts": len(np.unique(clusters)) if rows.cluster is not None else None,
        "positive_leads": len(np.unique(rows.lead_id[y == 1])),
        "positives": int(y.sum()),
        "positive_rows": int(y.sum()),
        "positive_lead_weeks": float((y * w).sum()),
        "snapshots": len(dates),
        "base_rate": float((y * w).sum() / w.sum()),
    }

    calibration = reliability_table(y, rows.prob, params.ece_bins, params.ece_strategy, w)
    calibration["perfect"] = calibration["mean_predicted"]
    plots = {
        "roc.csv": _roc_table(y, scores, params.curve_points, w),
        "pr.csv": _pr_table(y, scores, params.curve_points, w),
        "calibration.csv": calibration,
        "calibration_raw.csv": reliability_table(y, rows.raw, params.ece_bins, params.ece_strategy, w),
        "gains.csv": gains_table(y, scores, params.curve_points, w),
        "threshold_tradeoff.csv": tradeoff_table(y, np.asarray(rows.prob, dtype=float), weeks, params.curve_points, w),
        "observed_expected.csv": weekly,
    }
    return Evaluation(metrics=metrics, plots=plots)


def _volume(thresholds: Thresholds, rows: ScoredRows) -> str:
    """The volume the thresholds were fitted for (`standing` when the previous state is unknown)."""
    volume = str(thresholds.report.get("volume", "standing"))
    return volume if rows.prev_prob is not None else "standing"


def stage_targets(thresholds: Thresholds, rows: ScoredRows, weeks: float) -> dict[str, float | None]:
    """Each stage's promise per week on these rows (match_rules: the rule's MQLs here), from thresholds.json."""
    policies = thresholds.report.get("policies") or {}
    volume = _volume(thresholds, rows)
    return {
        stage: policy_target(
            StagePolicy.model_validate(policies[stage]), weeks, rows.rule_mql, rows.prev_rule_mql, rows.weight, volume
        )
        if stage in policies
        else None
        for stage in THRESHOLD_STAGES
    }


def with_previous(
    rows: pd.DataFrame, context: pd.DataFrame, values: np.ndarray, context_values: np.ndarray, cadence_days: int
) -> np.ndarray:
    """`values` at each row's previous snapshot, looked up among the rows and the snapshot before them."""
    lead = np.r_[rows["lead_id"].to_numpy(), context["lead_id"].to_numpy()]
    at = pd.concat([rows["snapshot_at"], context["snapshot_at"]], ignore_index=True)
    both = np.r_[np.asarray(values, dtype=float), np.asarray(context_values, dtype=float)]
    return previous_values(lead, at, both, cadence_days)[: len(rows)]


def oracle_for(
    truth_path: Path | None, rows: pd.DataFrame, horizon_days: int, raw_dir: Path | None = None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The demo oracle's probability for the rows and the observable ceiling's (the latter only with the CRM
    snapshot at `raw_dir`); (None, None) when there is no ground-truth file."""
    if truth_path is None or not Path(truth_path).exists():
        if truth_path is not None:
            log.info("no ground truth at %s: oracle metrics omitted", truth_path)
        return None, None
    from pipelines.crm.truth import OBSERVABLE_COLUMNS, observable_probability, oracle_probability, read_truth

    truth = read_truth(Path(truth_path))
    keys = rows[["lead_id", "snapshot_at"]]
    oracle = np.asarray(oracle_probability(truth, keys, horizon_days), dtype=float)
    if raw_dir is None:
        return oracle, None
    from pipelines.extract import read_snapshot

    tables, _ = read_snapshot(Path(raw_dir), OBSERVABLE_COLUMNS, {"activities": ("activity_type",)})
    return oracle, np.asarray(observable_probability(truth, tables, keys, horizon_days), dtype=float)


def _three(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A variant's (score, own MQL, gates) columns as arrays."""
    score, mql, gates = columns
    return frame[score].to_numpy(), frame[mql].to_numpy(), frame[gates].to_numpy()


def rule_baselines(
    params: Params,
    variants_path: Path,
    cal: pd.DataFrame,
    test: pd.DataFrame,
    rule_cal: pd.DataFrame,
    rule_test: pd.DataFrame,
) -> dict[str, RuleBaseline]:
    """The history's rule and every `rules.variants` entry on the test rows, thresholds fixed on the calibration
    slice (`rule_baseline`)."""
    from pipelines.rules import VARIANT_SUFFIXES

    table = pd.read_parquet(variants_path)
    cal_w, cal_y = row_weights(cal), cal[LABEL].to_numpy()
    history_cal = rule_cal["rule_mql"].to_numpy(dtype=bool)
    target = float((history_cal * cal_w).sum())
    out = {
        HISTORY_RULE: rule_baseline(
            "own",
            f"rules.file ({params.rules.file})",
            (rule_cal["rule_score"].to_numpy(dtype=float), history_cal, np.ones(len(cal), dtype=bool)),
            cal_y,
            cal_w,
            target,
            (
                rule_test["rule_score"].to_numpy(dtype=float),
                rule_test["rule_mql"].to_numpy(dtype=bool),
                np.ones(len(test), dtype=bool),
            ),
        )
    }
    for name, variant in params.rules.variants.items():
        columns = [f"{name}{suffix}" for suffix in VARIANT_SUFFIXES]
        if not set(columns) <= set(table.columns):
            raise ModelInputError(f"rule variants {variants_path} lack {name!r} (rerun the rules stage)")
        c, t = (align_rows(frame, table, columns, "rule variants") for frame in (cal, test))
        source = (
            str(variant.file)
            if variant.file is not None
            else "rules.file with "
            + ", ".join(
                p
                for p in (
                    f"half_life_days {variant.half_life_days:g}" if variant.half_life_days else "",
                    f"within_days {variant.within_days:g}" if variant.within_days else "",
                )
                if p
            )
        )
        out[name] = rule_baseline(
            variant.threshold_policy,
            source,
            _three(c, columns),
            cal_y,
            cal_w,
            target,
            _three(t, columns),
        )
    return out


def validation_comparison(
    y: np.ndarray, w: np.ndarray | None, model: np.ndarray, logreg: np.ndarray, rule_aucs: Mapping[str, float]
) -> dict[str, Any]:
    """Does the model beat the best baseline before the test slice is looked at? ROC-AUC on the calibration slice
    (out of time for every model, the slice the best rule is picked on) of the booster, the logistic regression
    and each rule (`rule_aucs`: name -> its calibration ROC-AUC); the best baseline is the highest of them."""
    baselines = {"logreg": roc_auc(y, logreg, w), **{f"rule:{k}": float(v) for k, v in rule_aucs.items()}}
    finite = {k: v for k, v in baselines.items() if np.isfinite(v)}
    best = max(finite, key=finite.__getitem__) if finite else None
    model_auc = roc_auc(y, model, w)
    best_auc = finite[best] if best is not None else float("nan")
    return {
        "slice": "calibration",
        "model_roc_auc": model_auc,
        "logreg_roc_auc": baselines["logreg"],
        "rule_roc_auc": {k: float(v) for k, v in rule_aucs.items()},
        "best_baseline": best,
        "best_baseline_roc_auc": best_auc,
        "margin": model_auc - best_auc,
        "beats_best_baseline": bool(best is not None and model_auc > best_auc),
    }


#: What a single-snapshot (leads-only) evaluation is, written into its metrics.
RANDOM_SPLIT_NOTE = (
    "stratified random split by lead: the data has a single snapshot (leads-only, no dates), so "
    "this is NOT an out-of-time test; expect live performance to be lower"
)


def read_test_slice(features_dir: Path, model_dir: Path) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, Any]:
    """(every feature row, its slice name, the out-of-time test rows, the split plan) under models/split.json."""

    frame, _ = read_features(features_dir)
    split = load_split(Path(model_dir))
    slices = assign_slices(frame, split)
    test = frame.loc[slices == "test"].reset_index(drop=True)
    if test.empty:
        raise ModelInputError("no feature rows fall in the test slice of models/split.json (stale split?)")
    return frame, slices, test, split


def run_evaluate(
    params: Params,
    features_dir: Path,
    model_dir: Path,
    rules_path: Path,
    truth_path: Path | None,
    metrics_dir: Path,
    plots_dir: Path,
    variants_path: Path | None = None,
    raw_dir: Path | None = None,
) -> Evaluation:
    """Entry point of the evaluate stage: score the test slice with every model and write metrics and plots."""
    from pipelines.train import booster_predict, logreg_predict

    model_dir = Path(model_dir)
    frame, slices, test, split = read_test_slice(features_dir, model_dir)
    booster = load_booster(model_dir)
    calibrator = load_calibrator(model_dir / CALIBRATOR_FILE)
    thresholds = load_thresholds(model_dir / THRESHOLDS_FILE)
    logreg, logreg_features = load_logreg(model_dir)
    rule_scores = read_rule_scores(rules_path)
    rules = align_rows(test, rule_scores, ["rule_score", "rule_mql"], "rule scores")
    variants = None
    cal = frame.loc[slices == "calibration"].reset_index(drop=True)
    rule_cal = align_rows(cal, rule_scores, ["rule_score", "rule_mql"], "rule scores")
    if variants_path is not None:
        variants = rule_baselines(params, Path(variants_path), cal, test, rule_cal, rules)
    cal_y, cal_w = cal[LABEL].to_numpy(), row_weights(cal)
    validation = validation_comparison(
        cal_y,
        cal_w,
        booster_predict(booster, cal),
        logreg_predict(logreg, cal, logreg_features),
        {k: v.calibration_roc_auc for k, v in variants.items()}
        if variants
        else {HISTORY_RULE: roc_auc(cal_y, rule_cal["rule_score"].to_numpy(dtype=float), cal_w)},
    )
    oracle, observable = oracle_for(truth_path, test, params.features.horizon_days, raw_dir)
    raw = booster_predict(booster, test)
    cadence = params.features.cadence_days
    context = frame.loc[previous_snapshot_rows(frame["snapshot_at"], slices == "test", cadence)].reset_index(drop=True)
    context_prob = calibrator.apply(booster_predict(booster, context)) if len(context) else np.zeros(0)
    context_rule = (
        align_rows(context, rule_scores, ["rule_mql"], "rule scores")["rule_mql"].to_numpy(dtype=float)
        if len(context)
        else np.zeros(0)
    )
    column = thresholds.segment_column
    rows = ScoredRows(
        lead_id=test["lead_id"].to_numpy(),
        snapshot_at=test["snapshot_at"],
        y=test[LABEL].to_numpy(),
        prob=calibrator.apply(raw),
        raw=raw,
        logreg=logreg_predict(logreg, test, logreg_features),
        rule_score=rules["rule_score"].to_numpy(dtype=float),
        rule_mql=rules["rule_mql"].to_numpy(dtype=bool),
        oracle=oracle,
        segments=test[column] if column and column in test.columns else None,
        weight=row_weights(test),
        lead_age_days=test["lead_age_days"].to_numpy(dtype=float) if "lead_age_days" in test.columns else None,
        prev_prob=with_previous(test, context, calibrator.apply(raw), context_prob, cadence),
        prev_rule_mql=with_previous(test, context, rules["rule_mql"].to_numpy(dtype=float), context_rule, cadence),
        outcomes={c: test[c].to_numpy() for c in OUTCOME_COLUMNS if c in test.columns} or None,
        cluster=cluster_ids(test) if ACCOUNT in test.columns else None,
        rule_variants=variants,
        observable=observable,
    )
    result = evaluate_scores(
        rows,
        thresholds,
        params.evaluate,
        params.features.cadence_days,
        slice_share(slices, frame["snapshot_at"], "test"),
        params.base.seed,
    )
    result.metrics["validation"] = validation
    result.metrics["beats_best_baseline"] = validation["beats_best_baseline"]
    if not validation["beats_best_baseline"]:
        log.warning(
            "the model does NOT beat the best baseline on the calibration slice: ROC-AUC %.4f vs %s %.4f",
            validation["model_roc_auc"],
            validation["best_baseline"],
            validation["best_baseline_roc_auc"],
        )
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
    log.info(
        "test: ROC-AUC %s (oracle %s, ratio %s; observable ceiling %s, ratio %s), PR-AUC %s, Brier %s "
        "(oracle %s), ECE %s, SQL capture at equal volume vs the history's rule %s, vs the best rule (%s) %s",
        fmt("roc_auc"),
        fmt("oracle_roc_auc"),
        fmt("roc_auc_vs_oracle"),
        fmt("observable_ceiling_roc_auc"),
        fmt("roc_auc_vs_observable_ceiling"),
        fmt("pr_auc"),
        fmt("brier"),
        fmt("oracle_brier"),
        fmt("ece"),
        fmt("sql_capture_ratio_vs_rules"),
        m.get("best_rule", "n/a"),
        fmt("sql_capture_ratio_vs_best_rule"),
    )
    for name, v in m.get("rule_variants", {}).items():
        log.info(
            "rule %s: calibration ROC-AUC %.4f, test ROC-AUC %.4f, %.0f MQLs/week, model capture x%.2f",
            name,
            v["calibration_roc_auc"],
            v["roc_auc"],
            v["mql_leads_per_week"],
            v["model_sql_capture_ratio"],
        )
    for stage in THRESHOLD_STAGES:
        s = m["stages"][stage]
        log.info(
            "%s: %.0f leads/week on the list, %s new a week (target %s), precision %.3f (own outcome %s), recall %.3f",
            stage,
            s["leads_per_week"],
            _num(s.get("new_per_week")),
            _num(s.get("target_per_week")),
            s["precision"],
            _num(s.get("precision_own"), ".3f"),
            s["recall"],
        )


def _num(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)
