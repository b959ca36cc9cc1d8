"""The calibrate stage: turn raw model scores into probabilities, then choose the per-stage thresholds.

Both are fitted on the calibration slice (after the train period, before the test slice, gapped on both sides),
so the test slice stays untouched for the evaluate stage. Outputs: models/calibrator.json (isotonic steps or
Platt coefficients, plain JSON) and models/thresholds.json, the one artifact nightly scoring reads to turn a
calibrated probability into a predicted stage and a grade:

- predicted stage = the highest of MQL < SAL < SQL whose threshold the probability reaches, else "none" (nurture);
- grade A = reaches the SQL threshold, B = SAL, C = MQL, D = below the MQL threshold.

Threshold policies (params `calibrate.thresholds.<stage>`): `capacity` (the team works `leads_per_week`),
`precision` (at least `min_precision` of the picked leads reach the target within the horizon: the lowest such
threshold, i.e. the largest list), `match_rules` (as many picked leads as rule MQLs at each snapshot). Volumes
come from the snapshot grid: leads per week = open leads at or above the threshold at a snapshot x 7 /
`features.cadence_days` (the list refreshed at each snapshot is worked until the next one).
Optional per-segment thresholds (e.g. per region) are shrunk toward the global one with weight n / (n + k),
n = the segment's positives in the calibration slice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from pipelines.artifacts import (
    CALIBRATOR_FILE,
    PRODUCTION_DIR,
    THRESHOLDS_FILE,
    load_booster,
    load_split,
    save_calibrator,
    save_thresholds,
)
from pipelines.calibrated import THRESHOLD_STAGES, Calibrator, Thresholds, logit
from pipelines.config import CalibrateParams, Params, StagePolicy
from pipelines.modeling import (
    LABEL,
    ClusterBootstrap,
    ModelInputError,
    align_rows,
    assign_slices,
    cluster_ids,
    precision_recall,
    production_slices,
    read_features,
    row_weights,
    weights_or_ones,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------------------------


def centred_knots(
    x: np.ndarray, y: np.ndarray, raw: np.ndarray | None = None, weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centred isotonic regression: each plateau of the step function collapses to its midpoint, and the curve runs
    linearly between midpoints (flat below the first one and beyond the largest raw score seen).

    Plain isotonic regression maps whole ranges of raw scores to one value, which ties leads the model had ranked
    apart (lower AUC, lumpy volumes at a threshold); the centred curve is strictly increasing yet stays calibrated.
    Past the last midpoint the curve keeps rising to the top plateau's upper end (the largest raw score), so the
    best leads of a night never tie at one probability (see `_top_rise`).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) == 0:
        return x, y
    new_plateau = np.r_[True, y[1:] != y[:-1]]
    lo = np.minimum.reduceat(x, np.flatnonzero(new_plateau))
    hi = np.maximum.reduceat(x, np.flatnonzero(new_plateau))
    centre, level = (lo + hi) / 2, y[new_plateau]
    knots_x = np.r_[x[0], centre, x[-1]]
    knots_y = np.r_[level[0], level, level[-1]]
    keep = np.r_[True, np.diff(knots_x) > 0]
    knots_x, knots_y = knots_x[keep], knots_y[keep]
    if len(knots_x) >= 2 and knots_x[-1] > knots_x[-2] and knots_y[-1] < 1.0:
        knots_y[-1] = min(1.0, knots_y[-2] + _top_rise(knots_x, knots_y, lo[-1], raw, weight))
    return knots_x, knots_y


def _top_rise(
    knots_x: np.ndarray, knots_y: np.ndarray, top_lo: float, raw: np.ndarray | None, weight: np.ndarray | None
) -> float:
    """How much the curve rises from the last midpoint to the largest raw score: small, and calibrated.

    The top plateau's rows [top_lo, max] have observed rate `level`; below its midpoint the centred curve gives them
    less (it interpolates from the plateau before), and a rise r over the upper half gives r x mean((raw - mid) /
    (max - mid)) back there: r is the one that makes the plateau's mean prediction equal `level`, but at most half
    the curve's last step, because the top plateau is the noisiest estimate (few rows, and the largest raw score is
    often an outlier that would make r huge). At least a negligible rise, so the order holds even without rows.
    """
    mid, top, level = knots_x[-2], knots_x[-1], knots_y[-2]
    floor = 1e-6 * max(level, 1e-6)
    if raw is None or len(knots_y) < 3:
        return float(floor)
    raw = np.asarray(raw, dtype=float)
    w = np.ones(len(raw)) if weight is None else np.asarray(weight, dtype=float)
    lower = (raw >= top_lo) & (raw < mid)
    upper = raw >= mid
    deficit = float(np.sum(w[lower] * (level - np.interp(raw[lower], knots_x[:-1], knots_y[:-1]))))
    lift = float(np.sum(w[upper] * (raw[upper] - mid) / (top - mid)))
    calibrated = deficit / lift if lift > 0 else 0.0
    return float(max(min(calibrated, (level - knots_y[-3]) / 2), floor))


def fit_calibrator(
    raw: np.ndarray, y: np.ndarray, method: Literal["isotonic", "platt"], weight: np.ndarray | None = None
) -> Calibrator:
    """Fit isotonic regression (monotone, non-parametric) or Platt scaling (logistic on the raw score's logit),
    each row counting `weight` open-lead weeks."""
    raw, y = np.asarray(raw, dtype=float), np.asarray(y, dtype=float)
    if len(np.unique(y)) < 2:
        raise ModelInputError("the calibration slice needs both converted and unconverted rows")
    if method == "isotonic":
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y, sample_weight=weight)
        knots_x, knots_y = centred_knots(iso.X_thresholds_, iso.y_thresholds_, raw, weight)
        return Calibrator("isotonic", tuple(map(float, knots_x)), tuple(map(float, knots_y)))
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(logit(raw)[:, None], y, sample_weight=weight)
    return Calibrator("platt", slope=float(lr.coef_[0, 0]), intercept=float(lr.intercept_[0]))


# ----------------------------------------------------------------------------------------------------------------
# Thresholds
# ----------------------------------------------------------------------------------------------------------------


class UnreachablePolicyError(ModelInputError):
    """A stage's threshold policy cannot be met on the calibration slice (exit 2): the message says what can."""


def previous_values(
    lead_id: np.ndarray, snapshot_at: pd.Series | np.ndarray, values: np.ndarray, cadence_days: int
) -> np.ndarray:
    """Each row's value at the same lead's previous snapshot (t - cadence_days); NaN when the lead had no row then.

    The state a new hand-off is measured against: a lead with no previous row (new, reopened) was on no list.
    """
    lead = np.asarray(lead_id)
    stamps = pd.DatetimeIndex(pd.to_datetime(pd.Series(snapshot_at).reset_index(drop=True), utc=True))
    ns = stamps.as_unit("ns").asi8
    order = np.lexsort((ns, lead))
    lead_s, ns_s = lead[order], ns[order]
    step = cadence_days * 86_400 * 1_000_000_000
    has = np.r_[False, (lead_s[1:] == lead_s[:-1]) & (ns_s[1:] - ns_s[:-1] == step)]
    sorted_values = np.asarray(values, dtype=float)[order]
    prev = np.full(len(order), np.nan)
    prev[has] = sorted_values[np.flatnonzero(has) - 1]
    out = np.empty(len(order))
    out[order] = prev
    return out


def new_on_list(picked: np.ndarray, prev_value: np.ndarray, limit: np.ndarray | float) -> np.ndarray:
    """Rows picked now whose previous snapshot was not at or above the limit (NaN: no previous row, so new)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(picked, dtype=bool) & ~(np.asarray(prev_value, dtype=float) >= limit)


def list_sizes(
    prob: np.ndarray, weight: np.ndarray | None = None, prev_prob: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(each distinct probability, highest first; the weighted rows a threshold there picks).

    Without `prev_prob` a threshold picks every row at or above it (the standing list); with it, only the rows whose
    previous snapshot was below it (new hand-offs), which is not monotone: a low threshold keeps leads on the list.
    """
    prob = np.asarray(prob, dtype=float)
    w = weights_or_ones(weight, len(prob))
    order = np.argsort(-prob, kind="stable")
    p_sorted = prob[order]
    ends = np.flatnonzero(np.r_[p_sorted[1:] != p_sorted[:-1], True])
    candidates, count = p_sorted[ends], np.cumsum(w[order])[ends]
    if prev_prob is not None:
        prev = np.asarray(prev_prob, dtype=float)
        has = ~np.isnan(prev)
        both = np.minimum(prev[has], prob[has])  # on the list at both snapshots for thresholds <= both
        idx = np.argsort(both, kind="stable")
        cum = np.r_[0.0, np.cumsum(w[has][idx])]
        count = count - (cum[-1] - cum[np.searchsorted(both[idx], candidates, side="left")])
    return candidates, count


def volume_threshold(
    prob: np.ndarray, k: float, weight: np.ndarray | None = None, prev_prob: np.ndarray | None = None
) -> float:
    """The highest threshold that picks about k weighted rows (new hand-offs when `prev_prob` is given), i.e. at
    least k - 1/2; inf when k < 1/2 or no threshold picks that many."""
    if k < 0.5 or len(prob) == 0:
        return float("inf")
    candidates, count = list_sizes(prob, weight, prev_prob)
    ok = np.flatnonzero(count >= k - 0.5)
    return float(candidates[ok[0]]) if len(ok) else float("inf")


def _precision_curve(
    prob: np.ndarray, y: np.ndarray, weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(each distinct probability, highest first; weighted rows at or above it; their precision)."""
    prob, y = np.asarray(prob, dtype=float), np.asarray(y, dtype=float)
    w = weights_or_ones(weight, len(prob))
    order = np.argsort(-prob, kind="stable")
    p_sorted = prob[order]
    ends = np.flatnonzero(np.r_[p_sorted[1:] != p_sorted[:-1], True])  # last row of each tie group
    rows, hits = np.cumsum(w[order])[ends], np.cumsum((w * y)[order])[ends]
    return p_sorted[ends], rows, hits / rows


def precision_threshold(
    prob: np.ndarray, y: np.ndarray, min_precision: float, weight: np.ndarray | None = None, min_rows: float = 1
) -> float:
    """The lowest threshold whose picked rows (prob >= it, at least `min_rows` of them) convert at a rate
    >= min_precision; inf when none does."""
    if len(prob) == 0:
        return float("inf")
    candidates, rows, precision = _precision_curve(prob, y, weight)
    ok = np.flatnonzero((precision >= min_precision) & (rows >= min_rows))
    return float(candidates[ok[-1]]) if len(ok) else float("inf")


def best_precision(prob: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, min_rows: float = 1) -> float:
    """The highest precision of any list of at least `min_rows` weighted rows (NaN when there are fewer rows)."""
    if len(prob) == 0:
        return float("nan")
    _, rows, precision = _precision_curve(prob, y, weight)
    long_enough = rows >= min_rows
    return float(precision[long_enough].max()) if long_enough.any() else float("nan")


def policy_target(
    policy: StagePolicy,
    weeks: float,
    rule_mql: np.ndarray | None = None,
    prev_rule_mql: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    volume: str = "standing",
) -> float | None:
    """What a stage promises per week: capacity's leads_per_week; match_rules' rule MQLs per week (those new at the
    snapshot when volume is `new`); None for precision, which promises a rate, not a volume."""
    if policy.policy == "capacity":
        return policy.leads_per_week
    if policy.policy == "match_rules":
        if rule_mql is None:
            raise ModelInputError("policy match_rules needs the rules stage's scores (--rules)")
        rule = np.asarray(rule_mql, dtype=bool)
        if volume == "new":
            if prev_rule_mql is None:
                raise ValueError("volume new needs the rule MQL flags of the previous snapshot")
            rule = new_on_list(rule, prev_rule_mql, 0.5)
        return float(np.sum(weights_or_ones(weight, len(rule))[rule]) / weeks) if weeks else float("nan")
    return None


def policy_threshold(
    policy: StagePolicy,
    prob: np.ndarray,
    y: np.ndarray,
    rule_mql: np.ndarray | None,
    n_snapshots: float,
    cadence_days: int,
    weight: np.ndarray | None = None,
    prev_prob: np.ndarray | None = None,
    prev_rule_mql: np.ndarray | None = None,
    volume: str = "standing",
    min_rows: float = 1,
) -> float:
    """One stage's threshold on these rows (inf when the policy cannot be met). `n_snapshots` counts snapshot dates
    (scaled by the slice's share); volume `new` counts rows not at or above the threshold at their previous
    snapshot (`prev_prob`, NaN for none)."""
    if policy.policy == "precision":
        assert policy.min_precision is not None
        return precision_threshold(prob, y, policy.min_precision, weight, min_rows)
    weeks = n_snapshots * cadence_days / 7
    target = policy_target(policy, weeks, rule_mql, prev_rule_mql, weight, volume)
    assert target is not None
    if volume == "new" and prev_prob is None:
        raise ValueError("volume new needs each row's probability at its previous snapshot")
    return volume_threshold(prob, target * weeks, weight, prev_prob if volume == "new" else None)


def unreachable_message(
    stage: str,
    policy: StagePolicy,
    prob: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    prev_prob: np.ndarray | None,
    weeks: float,
    target: float | None,
    volume: str,
    min_rows: float,
) -> str:
    """Why a stage's policy cannot be met on the calibration slice, and the range that can."""
    if policy.policy == "precision":
        best = best_precision(prob, y, weight, min_rows)
        if not np.isfinite(best):
            return (
                f"{stage}: min_precision {policy.min_precision:g} cannot be met: the calibration slice has "
                f"{float(np.sum(weight)):,.0f} lead-weeks, fewer than calibrate.precision_min_rows "
                f"{min_rows:,.0f}; lower precision_min_rows, or choose policy capacity"
            )
        reachable = np.floor(best * 1000) / 1000
        return (
            f"{stage}: min_precision {policy.min_precision:g} cannot be met: the highest precision of any list of "
            f"at least {min_rows:,.0f} lead-weeks on the calibration slice is {best:.3f}; choose min_precision <= "
            f"{reachable:.3f}, or policy capacity"
        )
    what = "new hand-offs" if volume == "new" else "leads on the list"
    _, count = list_sizes(prob, weight, prev_prob if volume == "new" else None)
    most = float(count.max()) / weeks if len(count) and weeks else 0.0
    promised = (
        f"capacity {policy.leads_per_week:g}"
        if policy.policy == "capacity"
        else f"match_rules ({target:.1f} rule MQLs)"
    )
    hint = "choose leads_per_week" if policy.policy == "capacity" else "use policy capacity with leads_per_week"
    return (
        f"{stage}: {promised} {what} per week cannot be met: on the calibration slice ({weeks:.1f} weeks) a "
        f"threshold gives at least one lead ({1 / weeks:.2g} per week) and at most {most:.1f} {what} per week; "
        f"{hint} between those" + (", or calibrate.volume standing" if volume == "new" else "")
    )


def _ordered(thresholds: dict[str, float], where: str) -> dict[str, float]:
    """Make MQL <= SAL <= SQL (a higher stage can never be easier to reach), warning when a policy is overruled."""
    out, floor = {}, -np.inf
    for stage in THRESHOLD_STAGES:
        value = thresholds[stage]
        if value < floor:
            log.warning(
                "%s: the %s threshold %.4g is below the lower stage's %.4g; raised to it", where, stage, value, floor
            )
            value = floor
        out[stage] = value
        floor = value
    return out


def _take(values: Any, rows: np.ndarray) -> Any:
    """Rows of an array or Series (index reset), None passing through."""
    if values is None:
        return None
    if isinstance(values, pd.Series):
        return values.iloc[rows].reset_index(drop=True)
    return np.asarray(values)[rows]


def fit_thresholds(
    prob: np.ndarray,
    y: np.ndarray,
    lead_id: np.ndarray,
    snapshot_at: pd.Series,
    rule_mql: np.ndarray | None,
    segments: pd.Series | None,
    params: CalibrateParams,
    target_stage: str,
    horizon_days: int,
    cadence_days: int,
    snapshot_share: float,
    seed: int,
    weight: np.ndarray | None = None,
    counted: np.ndarray | None = None,
    cluster_id: np.ndarray | None = None,
) -> Thresholds:
    """Per-stage thresholds on the calibration slice, with their precision, recall and volume (bootstrap CIs).

    `snapshot_share` is the slice's share of the open leads at its snapshot dates (1 for a time split; the
    calibration share for a single-snapshot random split) so capacity volumes refer to the whole team's list.
    `counted` marks the slice's rows; the others (the snapshot just before it) only give the previous state that
    new hand-offs are measured against. `weight`: per-row weights (rows of a sampled population weighted back).
    `cluster_id`: the bootstrap clusters of the intervals (accounts, `modeling.cluster_ids`; default: the leads).
    A global policy that cannot be met raises UnreachablePolicyError; a segment's falls back to the global one.
    """
    prob, y = np.asarray(prob, dtype=float), np.asarray(y)
    counted = np.ones(len(prob), dtype=bool) if counted is None else np.asarray(counted, dtype=bool)
    prev_prob = previous_values(lead_id, snapshot_at, prob, cadence_days)
    prev_rule = None if rule_mql is None else previous_values(lead_id, snapshot_at, rule_mql, cadence_days)
    rows = np.flatnonzero(counted)
    cluster = np.asarray(lead_id) if cluster_id is None else np.asarray(cluster_id)
    prob, y, cluster, snapshot_at, rule_mql, segments, prev_prob, prev_rule = (
        _take(v, rows) for v in (prob, y, cluster, snapshot_at, rule_mql, segments, prev_prob, prev_rule)
    )
    w = weights_or_ones(None if weight is None else _take(weight, rows), len(prob))
    volume, min_rows = params.volume, params.precision_min_rows
    n_snapshots = pd.to_datetime(snapshot_at, utc=True).nunique() * snapshot_share
    weeks = n_snapshots * cadence_days / 7
    policies = {s: getattr(params.thresholds, s) for s in THRESHOLD_STAGES}

    def threshold(p: StagePolicy, rows: np.ndarray | slice, share: float) -> float:
        return policy_threshold(
            p,
            prob[rows],
            y[rows],
            None if rule_mql is None else rule_mql[rows],
            n_snapshots * share,
            cadence_days,
            w[rows],
            prev_prob[rows],
            None if prev_rule is None else prev_rule[rows],
            volume,
            min_rows,
        )

    targets = {s: policy_target(p, weeks, rule_mql, prev_rule, w, volume) for s, p in policies.items()}
    raw_t = {}
    for stage, policy in policies.items():
        raw_t[stage] = threshold(policy, slice(None), 1.0)
        if not np.isfinite(raw_t[stage]):
            raise UnreachablePolicyError(
                unreachable_message(stage, policy, prob, y, w, prev_prob, weeks, targets[stage], volume, min_rows)
            )
    global_t = _ordered(raw_t, "global")

    segment_t: dict[str, dict[str, float]] = {}
    segment_report: dict[str, Any] = {}
    if params.segment_column is not None:
        if segments is None:
            raise ModelInputError(f"calibrate.segment_column {params.segment_column!r} is not a feature column")
        values = pd.Series(np.asarray(segments, dtype=object)).astype("string").fillna("")
        for value in sorted(v for v in values.unique() if v):
            in_segment = (values == value).to_numpy()
            positives = int(y[in_segment].sum())
            seg_weight = positives / (positives + params.segment_k)
            share = float(w[in_segment].sum() / w.sum())
            own = {s: threshold(p, in_segment, share) for s, p in policies.items()}
            shrunk = {
                s: (seg_weight * own[s] + (1 - seg_weight) * global_t[s]) if np.isfinite(own[s]) else global_t[s]
                for s in THRESHOLD_STAGES
            }
            segment_t[value] = _ordered(shrunk, f"segment {value}")
            segment_report[value] = {
                "rows": int(in_segment.sum()),
                "positives": positives,
                "weight": seg_weight,
                "unshrunk": own,
            }

    thresholds = Thresholds(
        target_stage=target_stage,
        horizon_days=horizon_days,
        global_thresholds=global_t,
        segment_column=params.segment_column,
        segment_thresholds=segment_t,
    )
    stats = stage_statistics(
        thresholds,
        prob,
        y,
        cluster,
        snapshot_at,
        segments,
        cadence_days,
        snapshot_share,
        params.bootstrap,
        params.ci_level,
        seed,
        weight=w,
        prev_prob=prev_prob,
    )
    add_delivery(stats, targets, volume)
    report = {
        "policies": {s: p.model_dump(exclude_none=True) for s, p in policies.items()},
        "volume": volume,
        "precision_min_rows": min_rows,
        "calibration_slice": stats,
        "segments": {"k": params.segment_k, "per_segment": segment_report} if segment_report else {},
    }
    return Thresholds(
        target_stage=target_stage,
        horizon_days=horizon_days,
        global_thresholds=global_t,
        segment_column=params.segment_column,
        segment_thresholds=segment_t,
        report=report,
    )


def add_delivery(stats: dict[str, dict[str, Any]], targets: Mapping[str, float | None], volume: str) -> None:
    """Per stage, what its policy promises a week and what the list delivers (new hand-offs or the standing list)."""
    for stage, target in targets.items():
        delivered = stats[stage]["new_per_week" if volume == "new" else "leads_per_week"]
        stats[stage]["target_per_week"] = target
        stats[stage]["delivered_per_week"] = delivered
        stats[stage]["delivered_vs_target"] = delivered / target if target else None


def stage_statistics(
    thresholds: Thresholds,
    prob: np.ndarray,
    y: np.ndarray,
    cluster_id: np.ndarray,
    snapshot_at: pd.Series,
    segments: pd.Series | None,
    cadence_days: int,
    snapshot_share: float,
    bootstrap: int,
    ci_level: float,
    seed: int,
    weight: np.ndarray | None = None,
    prev_prob: np.ndarray | None = None,
    outcomes: Mapping[str, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """For each stage: threshold, leads per week on the list (at or above it) and, with `prev_prob`, new hand-offs
    per week (not at or above it at the previous snapshot), precision and recall on the target with bootstrap CIs
    resampling `cluster_id` (accounts, `modeling.cluster_ids`), precision on the stage's own outcome
    (`outcomes["reached_<stage>"]`, when given), and expected vs observed conversions per week. Sums are weighted
    by `weight` (default ones)."""
    prob, y = np.asarray(prob, dtype=float), np.asarray(y, dtype=float)
    w = weights_or_ones(weight, len(prob))
    limits = thresholds.matrix(len(prob), segments)
    weeks = pd.to_datetime(snapshot_at, utc=True).nunique() * snapshot_share * cadence_days / 7
    per_week: Callable[[float], float] = lambda total: float(total / weeks) if weeks else float("nan")  # noqa: E731
    boot = ClusterBootstrap(np.asarray(cluster_id), seed)
    out: dict[str, dict[str, Any]] = {}
    for j, stage in enumerate(THRESHOLD_STAGES):
        picked = prob >= limits[:, j]
        own = None if outcomes is None else outcomes.get(f"reached_{stage}")
        own_y = None if own is None else np.asarray(own, dtype=float)
        precision, recall = precision_recall(y, picked, w)

        def statistic(
            idx: np.ndarray, picked: np.ndarray = picked, own_y: np.ndarray | None = own_y
        ) -> dict[str, float]:
            p, r = precision_recall(y[idx], picked[idx], w[idx])
            stats = {"precision": p, "recall": r}
            if own_y is not None:
                stats["precision_own"] = precision_recall(own_y[idx], picked[idx], w[idx])[0]
            return stats

        ci = boot.intervals(statistic, bootstrap, ci_level)
        out[stage] = {
            "threshold": thresholds.global_thresholds[stage],
            "leads_per_week": per_week(np.sum(w[picked])),
            "precision": precision,
            "precision_ci": list(ci.get("precision", (np.nan, np.nan))),
            "recall": recall,
            "recall_ci": list(ci.get("recall", (np.nan, np.nan))),
            "expected_conversions_per_week": per_week(np.sum((w * prob)[picked])),
            "observed_conversions_per_week": per_week(np.sum((w * y)[picked])),
        }
        if prev_prob is not None:
            out[stage]["new_per_week"] = per_week(np.sum(w[new_on_list(picked, prev_prob, limits[:, j])]))
        if own_y is not None:
            out[stage]["own_outcome"] = f"reached_{stage}"
            out[stage]["precision_own"] = precision_recall(own_y, picked, w)[0]
            out[stage]["precision_own_ci"] = list(ci.get("precision_own", (np.nan, np.nan)))
    return out


# ----------------------------------------------------------------------------------------------------------------
# I/O
# ----------------------------------------------------------------------------------------------------------------


def read_rule_scores(path: Path) -> pd.DataFrame:
    """The rules stage's (lead_id, snapshot_at, rule_score, rule_mql)."""
    path = Path(path)
    if not path.exists():
        raise ModelInputError(f"rule scores {path} not found (run the rules stage first)")
    try:
        return pd.read_parquet(path, columns=["lead_id", "snapshot_at", "rule_score", "rule_mql"])
    except (KeyError, ValueError) as exc:
        raise ModelInputError(f"rule scores {path} need lead_id, snapshot_at, rule_score, rule_mql: {exc}") from None


def slice_share(slices: np.ndarray, snapshot_at: pd.Series, name: str) -> float:
    """The slice's share of all rows at the snapshot dates it covers (1.0 for a time split)."""
    at = pd.to_datetime(snapshot_at, utc=True)
    inside = slices == name
    covered = at.isin(at[inside].unique()).to_numpy()
    return float(inside.sum() / covered.sum()) if covered.any() else 1.0


def previous_snapshot_rows(snapshot_at: pd.Series, rows: np.ndarray, cadence_days: int) -> np.ndarray:
    """Rows at the snapshot date just before a slice's first one: the state its first week's hand-offs are new to."""
    at = pd.to_datetime(snapshot_at, utc=True)
    first = at[np.asarray(rows, dtype=bool)].min()
    return (at == first - pd.Timedelta(days=cadence_days)).to_numpy()


def run_calibrate(
    params: Params, features_dir: Path, model_dir: Path, rules_path: Path | None
) -> tuple[Calibrator, Thresholds]:
    """Entry point of the calibrate stage: calibrator and thresholds of the procedure's model on the calibration
    slice (what the evaluate stage tests), then of the production model on the latest weeks (what is registered)."""

    model_dir = Path(model_dir)
    frame, _ = read_features(features_dir)
    split = load_split(model_dir)
    rules = read_rule_scores(rules_path) if rules_path is not None else None
    slices = assign_slices(frame, split)
    calibrator, thresholds = calibrate_rows(params, frame, slices, load_booster(model_dir), rules, "calibration slice")
    save_calibrator(calibrator, model_dir / CALIBRATOR_FILE)
    save_thresholds(thresholds, model_dir / THRESHOLDS_FILE)
    production = production_slices(frame, split)
    prod_calibrator, prod_thresholds = calibrate_rows(
        params, frame, production, load_booster(model_dir / PRODUCTION_DIR), rules, "latest weeks (production model)"
    )
    save_calibrator(prod_calibrator, model_dir / PRODUCTION_DIR / CALIBRATOR_FILE)
    save_thresholds(prod_thresholds, model_dir / PRODUCTION_DIR / THRESHOLDS_FILE)
    return calibrator, thresholds


def calibrate_rows(
    params: Params, frame: pd.DataFrame, slices: np.ndarray, booster: Any, rules: pd.DataFrame | None, what: str
) -> tuple[Calibrator, Thresholds]:
    """Calibrator and thresholds of `booster` fitted on the rows whose slice is "calibration"."""
    from pipelines.train import booster_predict

    rows = slices == "calibration"
    if not rows.any():
        raise ModelInputError(f"no feature rows fall in the {what} of models/split.json (stale split?)")
    context = rows | previous_snapshot_rows(frame["snapshot_at"], rows, params.features.cadence_days)
    cal = frame.loc[context].reset_index(drop=True)
    counted = rows[context]
    raw = booster_predict(booster, cal)
    y, w = cal[LABEL].to_numpy(), row_weights(cal)
    calibrator = fit_calibrator(raw[counted], y[counted], params.calibrate.method, w[counted])
    prob = calibrator.apply(raw)
    log.info(
        "calibration (%s) on the %s, %s rows: mean raw %.4f, mean calibrated %.4f, observed rate %.4f",
        params.calibrate.method,
        what,
        f"{int(counted.sum()):,}",
        np.average(raw[counted], weights=w[counted]),
        np.average(prob[counted], weights=w[counted]),
        np.average(y[counted], weights=w[counted]),
    )

    rule_mql = None
    if rules is not None:
        rule_mql = align_rows(cal, rules, ["rule_mql"], "rule scores")["rule_mql"].to_numpy(dtype=bool)
    column = params.calibrate.segment_column
    if column is not None and column not in cal.columns:
        raise ModelInputError(f"calibrate.segment_column {column!r} is not a feature column")
    thresholds = fit_thresholds(
        prob,
        y,
        cal["lead_id"].to_numpy(),
        cal["snapshot_at"],
        rule_mql,
        cal[column] if column else None,
        params.calibrate,
        params.features.target_stage,
        params.features.horizon_days,
        params.features.cadence_days,
        slice_share(slices, frame["snapshot_at"], "calibration"),
        params.base.seed,
        weight=row_weights(cal),
        counted=counted,
        cluster_id=cluster_ids(cal),
    )
    for stage, s in thresholds.report["calibration_slice"].items():
        log.info(
            "%s: %s threshold %.4f: %.0f leads/week on the list, %.0f new a week (target %s), precision %.3f, "
            "recall %.3f",
            what,
            stage,
            s["threshold"],
            s["leads_per_week"],
            s["new_per_week"],
            "-" if s["target_per_week"] is None else f"{s['target_per_week']:.0f}",
            s["precision"],
            s["recall"],
        )
    return calibrator, thresholds
