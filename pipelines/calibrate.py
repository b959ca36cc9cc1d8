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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

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
    read_json,
    row_weights,
    write_json,
)

log = logging.getLogger(__name__)

CALIBRATOR_FILE: Final = "calibrator.json"
THRESHOLDS_FILE: Final = "thresholds.json"
STAGES: Final[tuple[str, ...]] = ("MQL", "SAL", "SQL")
NO_STAGE: Final = "none"
#: Grade -> the stage whose threshold the probability must reach (D: none of them).
GRADES: Final[dict[str, str | None]] = {"A": "SQL", "B": "SAL", "C": "MQL", "D": None}
_EPS: Final = 1e-6


# ----------------------------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------------------------

def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Calibrator:
    """Raw score -> probability: centred isotonic knots (linear between them, flat beyond) or Platt scaling."""

    method: Literal["isotonic", "platt"]
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw model scores."""
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            return np.interp(raw, self.knots_x, self.knots_y)
        return 1.0 / (1.0 + np.exp(-(self.slope * _logit(raw) + self.intercept)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (no pickle: readable, diffable, safe to load)."""
        if self.method == "isotonic":
            return {"method": "isotonic", "knots_x": list(self.knots_x), "knots_y": list(self.knots_y)}
        return {"method": "platt", "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        """Inverse of `to_dict`."""
        if data["method"] == "isotonic":
            return cls("isotonic", tuple(map(float, data["knots_x"])), tuple(map(float, data["knots_y"])))
        return cls("platt", slope=float(data["slope"]), intercept=float(data["intercept"]))


def centred_knots(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred isotonic regression: each plateau of the step function collapses to its midpoint, and the curve runs
    linearly between midpoints (flat only beyond the first and last ones).

    Plain isotonic regression maps whole ranges of raw scores to one value, which ties leads the model had ranked
    apart (lower AUC, lumpy volumes at a threshold); the centred curve is strictly increasing yet stays calibrated.
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
    return knots_x[keep], knots_y[keep]


def fit_calibrator(raw: np.ndarray, y: np.ndarray, method: Literal["isotonic", "platt"],
                   weight: np.ndarray | None = None) -> Calibrator:
    """Fit isotonic regression (monotone, non-parametric) or Platt scaling (logistic on the raw score's logit),
    each row counting `weight` open-lead weeks."""
    raw, y = np.asarray(raw, dtype=float), np.asarray(y, dtype=float)
    if len(np.unique(y)) < 2:
        raise ModelInputError("the calibration slice needs both converted and unconverted rows")
    if method == "isotonic":
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y, sample_weight=weight)
        knots_x, knots_y = centred_knots(iso.X_thresholds_, iso.y_thresholds_)
        return Calibrator("isotonic", tuple(map(float, knots_x)), tuple(map(float, knots_y)))
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(raw)[:, None], y, sample_weight=weight)
    return Calibrator("platt", slope=float(lr.coef_[0, 0]), intercept=float(lr.intercept_[0]))


# ----------------------------------------------------------------------------------------------------------------
# Thresholds
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    """Per-stage thresholds on the calibrated probability, globally and optionally per segment."""

    target_stage: str
    horizon_days: int
    global_thresholds: dict[str, float]
    segment_column: str | None = None
    segment_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    def matrix(self, n: int, segments: np.ndarray | pd.Series | None = None) -> np.ndarray:
        """(n, 3) thresholds for MQL, SAL, SQL of each row (its segment's when known, else the global ones)."""
        out = np.tile(np.array([self.global_thresholds[s] for s in STAGES], dtype=float), (n, 1))
        if self.segment_column and self.segment_thresholds and segments is not None:
            values = pd.Series(np.asarray(segments, dtype=object)).astype("string").fillna("")
            for value, per_stage in self.segment_thresholds.items():
                rows = (values == value).to_numpy()
                if rows.any():
                    out[rows] = [per_stage[s] for s in STAGES]
        return out

    def stage_of(self, prob: np.ndarray, segments: np.ndarray | pd.Series | None = None) -> np.ndarray:
        """The highest stage whose threshold each probability reaches, else "none" (nurture)."""
        prob = np.asarray(prob, dtype=float)
        reached = prob[:, None] >= self.matrix(len(prob), segments)
        level = reached.sum(axis=1)  # thresholds are ordered, so reached stages form a prefix
        names = np.array([NO_STAGE, *STAGES], dtype=object)
        return names[level]

    def grade_of(self, prob: np.ndarray, segments: np.ndarray | pd.Series | None = None) -> np.ndarray:
        """Grade A (SQL threshold reached), B (SAL), C (MQL) or D (below MQL)."""
        stage = self.stage_of(prob, segments)
        grade_of_stage = {stage_name or NO_STAGE: grade for grade, stage_name in GRADES.items()}
        return np.array([grade_of_stage[s] for s in stage], dtype=object)

    def to_dict(self) -> dict[str, Any]:
        """JSON form of models/thresholds.json (thresholds, the grade bands, and how they were chosen)."""
        return {
            "score": f"calibrated probability of reaching {self.target_stage} within {self.horizon_days} days",
            "target_stage": self.target_stage,
            "horizon_days": self.horizon_days,
            "stages": list(STAGES),
            "rule": "predicted stage = the highest stage whose threshold the probability reaches, else 'none'",
            "grades": {g: (f"probability >= the {s} threshold" if s else "below the MQL threshold (nurture)")
                       for g, s in GRADES.items()},
            "thresholds": self.global_thresholds,
            "segment_column": self.segment_column,
            "segment_thresholds": self.segment_thresholds,
            **self.report,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        """Read models/thresholds.json back (what nightly scoring does)."""
        report_keys = {"policies", "calibration_slice", "segments"}
        return cls(
            target_stage=data["target_stage"], horizon_days=int(data["horizon_days"]),
            global_thresholds={s: _from_json(data["thresholds"][s]) for s in STAGES},
            segment_column=data.get("segment_column"),
            segment_thresholds={v: {s: _from_json(t[s]) for s in STAGES}
                                for v, t in (data.get("segment_thresholds") or {}).items()},
            report={k: v for k, v in data.items() if k in report_keys},
        )


def _from_json(value: float | None) -> float:
    """null in JSON means "unreachable" (no lead is picked)."""
    return float("inf") if value is None else float(value)


def volume_threshold(prob: np.ndarray, k: float) -> float:
    """The threshold that picks the top k rows (the k-th largest probability); inf when k < 1."""
    count = round(k)
    if count < 1 or len(prob) == 0:
        return float("inf")
    ordered = np.sort(np.asarray(prob, dtype=float))[::-1]
    return float(ordered[min(count, len(ordered)) - 1])


def precision_threshold(prob: np.ndarray, y: np.ndarray, min_precision: float) -> float:
    """The lowest threshold whose picked rows (prob >= it) convert at a rate >= min_precision; inf when none does."""
    prob, y = np.asarray(prob, dtype=float), np.asarray(y, dtype=float)
    order = np.argsort(-prob, kind="stable")
    p_sorted, hits = prob[order], np.cumsum(y[order])
    ends = np.flatnonzero(np.r_[p_sorted[1:] != p_sorted[:-1], True])  # last row of each tie group
    precision = hits[ends] / (ends + 1)
    ok = np.flatnonzero(precision >= min_precision)
    return float(p_sorted[ends[ok[-1]]]) if len(ok) else float("inf")


def policy_threshold(policy: StagePolicy, prob: np.ndarray, y: np.ndarray, rule_mql: np.ndarray | None,
                     n_snapshots: float, cadence_days: int) -> float:
    """One stage's threshold on these rows. `n_snapshots` counts snapshot dates (scaled by the slice's share)."""
    if policy.policy == "capacity":
        assert policy.leads_per_week is not None
        return volume_threshold(prob, policy.leads_per_week * cadence_days / 7 * n_snapshots)
    if policy.policy == "match_rules":
        if rule_mql is None:
            raise ModelInputError("policy match_rules needs the rules stage's scores (--rules)")
        return volume_threshold(prob, float(np.sum(rule_mql)))
    assert policy.min_precision is not None
    return precision_threshold(prob, y, policy.min_precision)


def _ordered(thresholds: dict[str, float], where: str) -> dict[str, float]:
    """Make MQL <= SAL <= SQL (a higher stage can never be easier to reach), warning when a policy is overruled."""
    out, floor = {}, -np.inf
    for stage in STAGES:
        value = thresholds[stage]
        if value < floor:
            log.warning("%s: the %s threshold %.4g is below the lower stage's %.4g; raised to it", where, stage,
                        value, floor)
            value = floor
        out[stage] = value
        floor = value
    return out


def fit_thresholds(prob: np.ndarray, y: np.ndarray, cluster_id: np.ndarray, snapshot_at: pd.Series,
                   rule_mql: np.ndarray | None, segments: pd.Series | None, params: CalibrateParams,
                   target_stage: str, horizon_days: int, cadence_days: int, snapshot_share: float, seed: int
                   ) -> Thresholds:
    """Per-stage thresholds on the calibration slice, with their precision, recall and volume (bootstrap CIs).

    `snapshot_share` is the slice's share of the open leads at its snapshot dates (1 for a time split; the
    calibration share for a single-snapshot random split) so capacity volumes refer to the whole team's list.
    """
    prob, y = np.asarray(prob, dtype=float), np.asarray(y)
    n_snapshots = pd.to_datetime(snapshot_at, utc=True).nunique() * snapshot_share
    policies = {s: getattr(params.thresholds, s) for s in STAGES}
    global_t = _ordered({s: policy_threshold(p, prob, y, rule_mql, n_snapshots, cadence_days)
                         for s, p in policies.items()}, "global")

    segment_t: dict[str, dict[str, float]] = {}
    segment_report: dict[str, Any] = {}
    if params.segment_column is not None:
        if segments is None:
            raise ModelInputError(f"calibrate.segment_column {params.segment_column!r} is not a feature column")
        values = pd.Series(np.asarray(segments, dtype=object)).astype("string").fillna("")
        for value in sorted(v for v in values.unique() if v):
            rows = (values == value).to_numpy()
            positives = int(y[rows].sum())
            weight = positives / (positives + params.segment_k)
            share = rows.sum() / len(rows)
            own = {s: policy_threshold(p, prob[rows], y[rows], None if rule_mql is None else rule_mql[rows],
                                       n_snapshots * share, cadence_days) for s, p in policies.items()}
            shrunk = {s: (weight * own[s] + (1 - weight) * global_t[s]) if np.isfinite(own[s]) and np.isfinite(
                global_t[s]) else global_t[s] for s in STAGES}
            segment_t[value] = _ordered(shrunk, f"segment {value}")
            segment_report[value] = {"rows": int(rows.sum()), "positives": positives, "weight": weight,
                                     "unshrunk": own}

    thresholds = Thresholds(target_stage=target_stage, horizon_days=horizon_days, global_thresholds=global_t,
                            segment_column=params.segment_column, segment_thresholds=segment_t)
    stats = stage_statistics(thresholds, prob, y, cluster_id, snapshot_at, segments, cadence_days, snapshot_share,
                             params.bootstrap, params.ci_level, seed)
    report = {
        "policies": {s: p.model_dump(exclude_none=True) for s, p in policies.items()},
        "calibration_slice": stats,
        "segments": {"k": params.segment_k, "per_segment": segment_report} if segment_report else {},
    }
    return Thresholds(target_stage=target_stage, horizon_days=horizon_days, global_thresholds=global_t,
                      segment_column=params.segment_column, segment_thresholds=segment_t, report=report)


def stage_statistics(thresholds: Thresholds, prob: np.ndarray, y: np.ndarray, cluster_id: np.ndarray,
                     snapshot_at: pd.Series, segments: pd.Series | None, cadence_days: int, snapshot_share: float,
                     bootstrap: int, ci_level: float, seed: int) -> dict[str, dict[str, Any]]:
    """For each stage: threshold, leads per week picked (at or above it), precision and recall with bootstrap
    CIs resampling `cluster_id` (accounts, `modeling.cluster_ids`), and expected vs observed conversions per week."""
    prob, y = np.asarray(prob, dtype=float), np.asarray(y)
    limits = thresholds.matrix(len(prob), segments)
    weeks = pd.to_datetime(snapshot_at, utc=True).nunique() * snapshot_share * cadence_days / 7
    boot = ClusterBootstrap(np.asarray(cluster_id), seed)
    out: dict[str, dict[str, Any]] = {}
    for j, stage in enumerate(STAGES):
        picked = prob >= limits[:, j]
        precision, recall = precision_recall(y, picked)

        def statistic(idx: np.ndarray, picked: np.ndarray = picked) -> dict[str, float]:
            p, r = precision_recall(y[idx], picked[idx])
            return {"precision": p, "recall": r}

        ci = boot.intervals(statistic, bootstrap, ci_level)
        out[stage] = {
            "threshold": thresholds.global_thresholds[stage],
            "leads_per_week": float(picked.sum() / weeks) if weeks else float("nan"),
            "precision": precision, "precision_ci": list(ci.get("precision", (np.nan, np.nan))),
            "recall": recall, "recall_ci": list(ci.get("recall", (np.nan, np.nan))),
            "expected_conversions_per_week": float(prob[picked].sum() / weeks) if weeks else float("nan"),
            "observed_conversions_per_week": float(y[picked].sum() / weeks) if weeks else float("nan"),
        }
    return out


# ----------------------------------------------------------------------------------------------------------------
# I/O
# ----------------------------------------------------------------------------------------------------------------

def save_calibrator(calibrator: Calibrator, path: Path) -> None:
    """Write models/calibrator.json atomically."""
    write_json(path, calibrator.to_dict())


def load_calibrator(path: Path) -> Calibrator:
    """Read models/calibrator.json."""
    return Calibrator.from_dict(read_json(path, "calibrator"))


def save_thresholds(thresholds: Thresholds, path: Path) -> None:
    """Write models/thresholds.json atomically (an unreachable threshold, inf, is written as null)."""
    write_json(path, thresholds.to_dict())


def load_thresholds(path: Path) -> Thresholds:
    """Read models/thresholds.json: the one artifact scoring uses to assign stages and grades."""
    return Thresholds.from_dict(read_json(path, "thresholds"))


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


def run_calibrate(params: Params, features_dir: Path, model_dir: Path, rules_path: Path | None
                  ) -> tuple[Calibrator, Thresholds]:
    """Entry point of the calibrate stage: calibrator and thresholds of the procedure's model on the calibration
    slice (what the evaluate stage tests), then of the production model on the latest weeks (what is registered)."""
    from pipelines.train import PRODUCTION_DIR, load_booster, load_split

    model_dir = Path(model_dir)
    frame, _ = read_features(features_dir)
    split = load_split(model_dir)
    rules = read_rule_scores(rules_path) if rules_path is not None else None
    slices = assign_slices(frame, split)
    calibrator, thresholds = calibrate_rows(params, frame, slices, load_booster(model_dir), rules, "calibration slice")
    save_calibrator(calibrator, model_dir / CALIBRATOR_FILE)
    save_thresholds(thresholds, model_dir / THRESHOLDS_FILE)
    production = production_slices(frame, split)
    prod_calibrator, prod_thresholds = calibrate_rows(params, frame, production,
                                                      load_booster(model_dir / PRODUCTION_DIR), rules,
                                                      "latest weeks (production model)")
    save_calibrator(prod_calibrator, model_dir / PRODUCTION_DIR / CALIBRATOR_FILE)
    save_thresholds(prod_thresholds, model_dir / PRODUCTION_DIR / THRESHOLDS_FILE)
    return calibrator, thresholds


def calibrate_rows(params: Params, frame: pd.DataFrame, slices: np.ndarray, booster: Any, rules: pd.DataFrame | None,
                   what: str) -> tuple[Calibrator, Thresholds]:
    """Calibrator and thresholds of `booster` fitted on the rows whose slice is "calibration"."""
    from pipelines.train import booster_predict

    rows = slices == "calibration"
    if not rows.any():
        raise ModelInputError(f"no feature rows fall in the {what} of models/split.json (stale split?)")
    cal = frame.loc[rows].reset_index(drop=True)
    raw = booster_predict(booster, cal)
    y, w = cal[LABEL].to_numpy(), row_weights(cal)
    calibrator = fit_calibrator(raw, y, params.calibrate.method, w)
    prob = calibrator.apply(raw)
    log.info("calibration (%s) on the %s, %s rows: mean raw %.4f, mean calibrated %.4f, observed rate %.4f",
             params.calibrate.method, what, f"{len(cal):,}", np.average(raw, weights=w), np.average(prob, weights=w),
             np.average(y, weights=w))

    rule_mql = None
    if rules is not None:
        rule_mql = align_rows(cal, rules, ["rule_mql"], "rule scores")["rule_mql"].to_numpy(dtype=bool)
    column = params.calibrate.segment_column
    if column is not None and column not in cal.columns:
        raise ModelInputError(f"calibrate.segment_column {column!r} is not a feature column")
    thresholds = fit_thresholds(
        prob, y, cluster_ids(cal), cal["snapshot_at"], rule_mql, cal[column] if column else None,
        params.calibrate, params.features.target_stage, params.features.horizon_days, params.features.cadence_days,
        slice_share(slices, frame["snapshot_at"], "calibration"), params.base.seed,
    )
    for stage, s in thresholds.report["calibration_slice"].items():
        log.info("%s: %s threshold %.4f: %.0f leads/week, precision %.3f, recall %.3f", what, stage, s["threshold"],
                 s["leads_per_week"], s["precision"], s["recall"])
    return calibrator, thresholds
