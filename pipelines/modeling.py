"""Shared helpers of the model stages (train, calibrate, evaluate): one place for each job.

- reading the feature snapshots and their feature list, and the model's view of them (`FeatureSpec`);
- the out-of-time split (`plan_split`, `assign_slices`): train | gap | calibration | gap | test by snapshot date,
  every gap at least the label horizon so that no label window of an earlier slice reaches the later slice;
- the metric helpers sklearn lacks (reliability table and ECE with its counts, lift and capture, top-k per
  snapshot) and a bootstrap that resamples *accounts* (clusters), not rows: a lead contributes many snapshot rows
  and leads of one account share its buying state;
- JSON and CSV writes (atomic, through `pipelines.atomic`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_path
from pipelines.config import TrainParams
from pipelines.errors import BadInputError
from pipelines.features.directions import monotone_direction
from pipelines.features.spec import ACCOUNT, FEATURE_LIST_FILE, SNAPSHOTS_FILE, WEIGHT, FeatureSpec

log = logging.getLogger(__name__)

KEY_COLUMNS: Final[tuple[str, str]] = ("lead_id", "snapshot_at")
LABEL: Final = "label"
SliceName = Literal["fit", "calibration", "test", "gap"]
#: Row and positive counts of each gap (the rows no slice uses), beside their sum "gap", in `SplitPlan.rows`.
GAP_BEFORE_CALIBRATION: Final = "gap_before_calibration"
GAP_BEFORE_TEST: Final = "gap_before_test"


class ModelInputError(BadInputError):
    """A model stage's input is missing or unusable (files, columns, too little history): the CLI exits with 2."""


class ColdStartError(ModelInputError):
    """Too few positive examples to train a model; the message says how many there are and how many are needed."""


# ----------------------------------------------------------------------------------------------------------------
# Reading features
# ----------------------------------------------------------------------------------------------------------------


def read_feature_list(path: Path) -> list[FeatureSpec]:
    """The features stage's feature_list.json (a list of {name, kind, family})."""
    if not path.exists():
        raise ModelInputError(f"feature list {path} not found (run the features stage first)")
    try:
        raw = json.loads(path.read_text())
        infos = [FeatureSpec(name=str(r["name"]), kind=str(r["kind"]), family=str(r.get("family", ""))) for r in raw]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelInputError(f"feature list {path} must be a JSON list of {{name, kind, family}}: {exc}") from None
    bad = sorted({i.kind for i in infos} - {"numeric", "categorical"})
    if bad:
        raise ModelInputError(f"feature list {path}: unknown kind(s) {bad} (numeric or categorical)")
    return infos


def prepare_frame(frame: pd.DataFrame, features: Sequence[FeatureSpec], need_label: bool = True) -> pd.DataFrame:
    """Check keys, label and feature columns; categoricals as pandas category, snapshot_at as UTC timestamps."""
    needed = [*KEY_COLUMNS, *([LABEL] if need_label else []), *(f.name for f in features)]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ModelInputError(f"feature snapshots lack column(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    out = frame.copy(deep=False)
    at = pd.to_datetime(out["snapshot_at"], utc=True)
    out["snapshot_at"] = at
    for info in features:
        if info.kind == "categorical" and not isinstance(out[info.name].dtype, pd.CategoricalDtype):
            out[info.name] = out[info.name].astype("category")
    if need_label:
        label = out[LABEL]
        if label.isna().any() or not label.isin([0, 1]).all():
            raise ModelInputError("column 'label' must hold only 0 and 1")
        out[LABEL] = label.astype(np.int8)
    if WEIGHT in out.columns:  # absent (files written before rows were weighted): every row one open-lead week
        weight = pd.to_numeric(out[WEIGHT], errors="coerce")
        if weight.isna().any() or not (weight > 0).all():
            raise ModelInputError(f"column '{WEIGHT}' must hold positive numbers")
        out[WEIGHT] = weight.astype(float)
    return out


def row_weights(frame: pd.DataFrame) -> np.ndarray:
    """The open-lead weeks each row stands for (the `weight` column; ones when absent)."""
    if WEIGHT not in frame.columns:
        return np.ones(len(frame), dtype=float)
    return frame[WEIGHT].to_numpy(dtype=float)


def read_features(features_dir: Path) -> tuple[pd.DataFrame, list[FeatureSpec]]:
    """`<dir>/snapshots.parquet` and `<dir>/feature_list.json`, checked and typed for the models."""
    features_dir = Path(features_dir)
    infos = read_feature_list(features_dir / FEATURE_LIST_FILE)
    path = features_dir / SNAPSHOTS_FILE
    if not path.exists():
        raise ModelInputError(f"feature snapshots {path} not found (run the features stage first)")
    frame = pd.read_parquet(path)
    log.debug("read %s feature rows x %d columns from %s", f"{len(frame):,}", frame.shape[1], path)
    return prepare_frame(frame, infos), infos


def model_features(infos: Sequence[FeatureSpec], exclude: Sequence[str] = ()) -> list[FeatureSpec]:
    """The listed features minus `exclude` (each excluded name must be a listed feature: typos fail loudly)."""
    names = {f.name for f in infos}
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise ModelInputError(f"train.exclude_features names unknown feature(s) {unknown}")
    kept = [f for f in infos if f.name not in set(exclude)]
    if not kept:
        raise ModelInputError("no features left after train.exclude_features")
    return kept


def monotone_directions(features: Sequence[FeatureSpec]) -> list[int]:
    """LightGBM monotone constraints from the declared business directions (`pipelines.features.directions`).

    +1 for engagement counts, colleagues' buying signals, ideal-profile flags and recent activity, -1 for
    unsubscribes, bounces, bogus-lead signals and the days since the last engagement signal, 0 for the rest: one more
    demo request can never lower a lead's score (its counts, recent activity and recency all move the right way), one
    more unsubscribe never raise it, so the reasons (which use the same declaration) never explain the opposite.
    """
    return [monotone_direction(f.name, f.family, f.kind) for f in features]


def align_rows(frame: pd.DataFrame, other: pd.DataFrame, columns: Sequence[str], what: str) -> pd.DataFrame:
    """`other`'s `columns` for each (lead_id, snapshot_at) row of `frame`, in frame's order; every row must match."""
    right = other[[*KEY_COLUMNS, *columns]].copy(deep=False)
    right["snapshot_at"] = pd.to_datetime(right["snapshot_at"], utc=True).astype(frame["snapshot_at"].dtype)
    if right.duplicated(list(KEY_COLUMNS)).any():
        raise ModelInputError(f"{what}: duplicate (lead_id, snapshot_at) rows")
    merged = frame[list(KEY_COLUMNS)].merge(right, on=list(KEY_COLUMNS), how="left", indicator=True)
    absent = int((merged["_merge"] != "both").sum())
    if absent:
        raise ModelInputError(f"{what}: {absent:,} of {len(frame):,} snapshot rows have no match (is it stale?)")
    return merged[list(columns)].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# The split
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitPlan:
    """Where each slice lies: snapshot-date boundaries (kind "time") or lead ids (kind "random", one snapshot).

    Slices of a time split, oldest first: fit (the whole train period; the rounds are chosen by purged
    cross-validation inside it, `pipelines.tuning`), calibration, test. Between consecutive slices lies a gap of
    more than `gap_days`, so t + horizon of every row of an earlier slice is before the first snapshot of the next
    one; `rows` and `positives` count each gap (`gap_before_calibration`, `gap_before_test`) and their sum (`gap`).
    Plans written before the CV had a `valid` slice at the end of the train period: it still counts as train.
    """

    kind: Literal["time", "random"]
    gap_days: int
    boundaries: dict[str, tuple[str, str]]  # slice -> (first, last) snapshot date, ISO UTC
    rows: dict[str, int]
    positives: dict[str, int]
    leads: dict[str, list[int]] | None = None  # kind "random": lead ids per slice
    #: The registered (production) model's slices, after the out-of-time test has measured the procedure: "fit"
    #: (every labelled snapshot up to a gap before the latest weeks) and "calibration" (the latest complete weeks).
    #: Time split: (first, last) dates; random split: the slices of `leads` each production slice is made of.
    production: dict[str, tuple[str, str]] | None = None
    #: What the snapshot dates are when they are not weekly grid dates (dated leads with a flag: creation times).
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (boundaries as [first, last])."""
        out = asdict(self)
        out["boundaries"] = {k: list(v) for k, v in self.boundaries.items()}
        if self.leads is None:
            out.pop("leads")
        if self.note is None:
            out.pop("note")
        if self.production is None:
            out.pop("production")
        else:
            out["production"] = {k: list(v) for k, v in self.production.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitPlan:
        """Inverse of `to_dict`."""
        return cls(
            kind=data["kind"],
            gap_days=int(data["gap_days"]),
            boundaries={k: (v[0], v[1]) for k, v in data["boundaries"].items()},
            rows={k: int(v) for k, v in data["rows"].items()},
            positives={k: int(v) for k, v in data["positives"].items()},
            leads={k: [int(i) for i in v] for k, v in data["leads"].items()} if data.get("leads") else None,
            production={k: (v[0], v[1]) for k, v in data["production"].items()} if data.get("production") else None,
            note=data.get("note"),
        )


def _suffix_start(dates: np.ndarray, counts: np.ndarray, share: float) -> int:
    """Index into `dates` of the start of the shortest suffix holding at least `share` of the rows (>= 1 date)."""
    from_end = np.cumsum(counts[::-1])
    k = int(np.searchsorted(from_end, share * counts.sum(), side="left")) + 1
    return len(dates) - min(max(k, 1), len(dates))


def _last_before(dates: np.ndarray, start: np.datetime64, gap: np.timedelta64) -> int:
    """Index of the last date d with d + gap < start (-1 when there is none)."""
    return int(np.searchsorted(dates, start - gap, side="left")) - 1


def plan_split(
    snapshot_at: pd.Series,
    label: pd.Series,
    lead_id: pd.Series,
    params: TrainParams,
    horizon_days: int,
    seed: int,
    weight: np.ndarray | None = None,
) -> SplitPlan:
    """Out-of-time slices by snapshot date; a stratified random split by lead only when there is one snapshot date.

    Shares are of open-lead weeks (weighted rows: the latest dates go to test, those before to calibration, the rest
    is the train period); each of the two gaps drops the dates whose label window would reach into the next slice.
    No early-stopping slice is carved out of the train period (a third gap would throw away more positives, and on
    small data that slice starves): the rounds are chosen by purged CV within it.
    """
    at = pd.to_datetime(snapshot_at, utc=True)
    day_index = pd.DatetimeIndex(at).tz_convert("UTC").tz_localize(None).as_unit("ns")
    dates, inverse = np.unique(day_index.to_numpy(), return_inverse=True)
    counts = np.bincount(inverse, weights=weights_or_ones(weight, len(inverse)), minlength=len(dates))
    y = np.asarray(label, dtype=np.int8)
    if len(dates) == 1:
        return _random_plan(at, y, np.asarray(lead_id, dtype=np.int64), params, seed)
    gap = np.timedelta64(horizon_days, "D")
    span = f"{len(dates)} snapshot dates ({str(dates[0])[:10]} to {str(dates[-1])[:10]})"

    test_start = _suffix_start(dates, counts, params.test_fraction)
    cal_end = _last_before(dates, dates[test_start], gap)
    if cal_end < 0:
        raise ModelInputError(f"{span}: no room for a calibration slice {horizon_days}+ days before the test slice")
    cal_start = _suffix_start(
        dates[: cal_end + 1],
        counts[: cal_end + 1],
        params.calibration_fraction * counts.sum() / counts[: cal_end + 1].sum(),
    )
    train_end = _last_before(dates, dates[cal_start], gap)
    if train_end < 0:
        raise ModelInputError(f"{span}: no room for a train slice {horizon_days}+ days before the calibration slice")

    ranges = {
        "fit": (0, train_end),
        "calibration": (cal_start, cal_end),
        "test": (test_start, len(dates) - 1),
        GAP_BEFORE_CALIBRATION: (train_end + 1, cal_start - 1),
        GAP_BEFORE_TEST: (cal_end + 1, test_start - 1),
    }
    boundaries, rows, positives = {}, {}, {}
    date_of_row = np.searchsorted(dates, day_index.to_numpy())
    for name, (lo, hi) in ranges.items():
        inside = (date_of_row >= lo) & (date_of_row <= hi)
        if not name.startswith("gap"):
            boundaries[name] = (_iso(dates[lo]), _iso(dates[hi]))
        rows[name] = int(inside.sum())
        positives[name] = int(y[inside].sum())
    rows["gap"] = rows[GAP_BEFORE_CALIBRATION] + rows[GAP_BEFORE_TEST]
    positives["gap"] = positives[GAP_BEFORE_CALIBRATION] + positives[GAP_BEFORE_TEST]
    # the production model: refit on every labelled week up to a gap before the latest weeks, recalibrated on those
    recal_start = _suffix_start(dates, counts, params.calibration_fraction)
    refit_end = _last_before(dates, dates[recal_start], gap)
    if refit_end < 0:
        raise ModelInputError(f"{span}: no room for a refit period {horizon_days}+ days before the latest weeks")
    production = {
        "fit": (_iso(dates[0]), _iso(dates[refit_end])),
        "calibration": (_iso(dates[recal_start]), _iso(dates[-1])),
    }
    return SplitPlan(
        kind="time", gap_days=horizon_days, boundaries=boundaries, rows=rows, positives=positives, production=production
    )


def _iso(value: np.datetime64) -> str:
    return pd.Timestamp(value).tz_localize("UTC").isoformat()


def _random_plan(at: pd.Series, y: np.ndarray, lead_id: np.ndarray, params: TrainParams, seed: int) -> SplitPlan:
    """One snapshot date (no time to split on): stratified random slices of leads."""
    from sklearn.model_selection import train_test_split

    if len(np.unique(lead_id)) != len(lead_id):
        raise ModelInputError("a single snapshot date must hold each lead once")
    stratify = y if np.bincount(y, minlength=2).min() >= 4 else None
    rest, test = train_test_split(
        np.arange(len(y)), test_size=params.test_fraction, random_state=seed, stratify=stratify
    )
    cal_share = params.calibration_fraction / (1 - params.test_fraction)
    rest_strat = y[rest] if stratify is not None else None
    fit, cal = train_test_split(rest, test_size=cal_share, random_state=seed, stratify=rest_strat)
    day = _iso(pd.Timestamp(at.iloc[0]).tz_convert("UTC").tz_localize(None).to_datetime64())
    parts = {"fit": fit, "calibration": cal, "test": test}
    return SplitPlan(
        kind="random",
        gap_days=0,
        boundaries={k: (day, day) for k in parts},
        rows={k: len(v) for k, v in parts.items()} | {"gap": 0},
        positives={k: int(y[v].sum()) for k, v in parts.items()} | {"gap": 0},
        leads={k: sorted(lead_id[v].tolist()) for k, v in parts.items()},
        production={"fit": ("fit+test", ""), "calibration": ("calibration", "")},
    )


def production_slices(frame: pd.DataFrame, plan: SplitPlan) -> np.ndarray:
    """The production model's slice of each row: "fit", "calibration", or "gap" (rows it does not use).

    Plans written before production refits existed: the evaluation slices (fit + valid, calibration) stand in.
    """
    if plan.production is None:
        slices = assign_slices(frame, plan)
        return np.where(
            np.isin(slices, ("fit", "valid")), "fit", np.where(slices == "calibration", "calibration", "gap")
        ).astype(object)
    out = np.full(len(frame), "gap", dtype=object)
    if plan.kind == "random":
        slices = assign_slices(frame, plan)
        for name, (members, _) in plan.production.items():
            out[np.isin(slices, members.split("+"))] = name
        return out
    at = pd.to_datetime(frame["snapshot_at"], utc=True)
    for name, (first, last) in plan.production.items():
        out[((at >= pd.Timestamp(first)) & (at <= pd.Timestamp(last))).to_numpy()] = name
    return out


def assign_slices(frame: pd.DataFrame, plan: SplitPlan) -> np.ndarray:
    """The slice of each row of `frame` (fit, valid, calibration, test, or gap for rows no slice uses)."""
    out = np.full(len(frame), "gap", dtype=object)
    if plan.kind == "random":
        assert plan.leads is not None
        ids = frame["lead_id"].to_numpy()
        for name, leads in plan.leads.items():
            out[np.isin(ids, np.asarray(leads, dtype=np.int64))] = name
        return out
    at = pd.to_datetime(frame["snapshot_at"], utc=True)
    for name, (first, last) in plan.boundaries.items():
        out[((at >= pd.Timestamp(first)) & (at <= pd.Timestamp(last))).to_numpy()] = name
    return out


# ----------------------------------------------------------------------------------------------------------------
# Metrics sklearn does not have
# ----------------------------------------------------------------------------------------------------------------


def weights_or_ones(weight: np.ndarray | None, n: int) -> np.ndarray:
    """The rows' weights as float64 (ones when None): every metric below counts open-lead weeks, not rows."""
    if weight is None:
        return np.ones(n, dtype=float)
    out = np.asarray(weight, dtype=float)
    if out.shape != (n,):
        raise ValueError(f"weights of shape {out.shape} for {n} rows")
    return out


def weighted_quantiles(values: np.ndarray, weight: np.ndarray | None, q: np.ndarray) -> np.ndarray:
    """Quantiles of `values` with each row counting `weight` times (the inverse of the weighted CDF)."""
    values = np.asarray(values, dtype=float)
    w = weights_or_ones(weight, len(values))
    if weight is None:
        plain: np.ndarray = np.percentile(values, 100 * np.asarray(q))
        return plain
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(w[order])
    idx = np.searchsorted(cum, np.asarray(q) * cum[-1], side="left")
    weighted: np.ndarray = values[order][np.clip(idx, 0, len(values) - 1)]
    return weighted


def reliability_table(
    y: np.ndarray, p: np.ndarray, n_bins: int, strategy: str, weight: np.ndarray | None = None
) -> pd.DataFrame:
    """Per bin: rows (weighted), mean predicted probability, observed positive rate (non-empty bins only).

    strategy "quantile" = equal-mass bins (edges at quantiles of p), "uniform" = equal-width bins on [0, 1]; the
    same binning as `sklearn.calibration.calibration_curve`, with the counts ECE needs.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    w = weights_or_ones(weight, len(y))
    if strategy == "quantile":
        edges = weighted_quantiles(p, weight, np.linspace(0, 1, n_bins + 1))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"strategy must be quantile or uniform, not {strategy!r}")
    which = np.searchsorted(edges[1:-1], p, side="right")
    count = np.bincount(which, weights=w, minlength=n_bins)
    sum_p = np.bincount(which, weights=p * w, minlength=n_bins)
    sum_y = np.bincount(which, weights=y * w, minlength=n_bins)
    keep = count > 0
    return pd.DataFrame(
        {
            "bin": np.flatnonzero(keep),
            "rows": count[keep],
            "mean_predicted": sum_p[keep] / count[keep],
            "fraction_positive": sum_y[keep] / count[keep],
        }
    )


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, n_bins: int, strategy: str, weight: np.ndarray | None = None
) -> float:
    """ECE: the row-weighted mean |observed rate - mean predicted| over the bins of `reliability_table`."""
    table = reliability_table(y, p, n_bins, strategy, weight)
    if table.empty:
        return float("nan")
    gaps = (table["fraction_positive"] - table["mean_predicted"]).abs()
    return float((gaps * table["rows"]).sum() / table["rows"].sum())


def top_share_mask(p: np.ndarray, share: float, weight: np.ndarray | None = None) -> np.ndarray:
    """The top `share` of rows by p (ties broken by position; with weights, the top rows holding that share of
    the total weight)."""
    n = len(p)
    out = np.zeros(n, dtype=bool)
    order = np.argsort(-np.asarray(p), kind="stable")
    if weight is None:
        out[order[: round(share * n)]] = True
        return out
    w = weights_or_ones(weight, n)[order]
    before = np.cumsum(w) - w
    out[order[before < share * w.sum() - 1e-9]] = True
    return out


def lift_and_capture(
    y: np.ndarray, p: np.ndarray, share: float, weight: np.ndarray | None = None
) -> tuple[float, float]:
    """(lift, capture) of the top `share` of rows: their positive rate over the base rate, their share of positives."""
    y = np.asarray(y, dtype=float)
    w = weights_or_ones(weight, len(y))
    top = top_share_mask(p, share, weight)
    total = float((y * w).sum())
    if total == 0 or top.sum() == 0:
        return float("nan"), float("nan")
    capture = float((y * w)[top].sum() / total)
    return capture / float(w[top].sum() / w.sum()), capture


def top_k_per_group(
    scores: np.ndarray, group_codes: np.ndarray, k_per_group: np.ndarray, weight: np.ndarray | None = None
) -> np.ndarray:
    """Mask of the k highest-scoring rows within each group; groups are integer codes 0..G-1, k_per_group[g] each.

    Ties are broken by position. With weights, k counts weight (a row of weight 4 uses 4 of the k places; a row is
    picked while the weight ranked above it is below k). Used for "the model's top-k at each snapshot, k = the rule
    MQLs at it".
    """
    scores = np.asarray(scores, dtype=float)
    codes = np.asarray(group_codes, dtype=np.int64)
    k_per_group = np.asarray(k_per_group, dtype=float)
    order = np.lexsort((np.arange(len(scores)), -scores, codes))
    sorted_codes = codes[order]
    w = weights_or_ones(weight, len(scores))[order]
    cum = np.cumsum(w)
    starts = np.searchsorted(sorted_codes, np.arange(len(k_per_group)), side="left")
    group_before = np.r_[0.0, cum][starts]
    rank = cum - w - group_before[sorted_codes]
    out = np.zeros(len(scores), dtype=bool)
    out[order] = rank < k_per_group[sorted_codes] - 1e-9
    return out


def roc_auc(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """ROC-AUC by the rank-sum (Mann-Whitney) formula, ties counted half: equal to sklearn's (with sample weights
    too), several times faster (it runs inside bootstrap loops). NaN when only one class is present."""
    y = np.asarray(y, dtype=bool)
    if weight is None:
        from scipy.stats import rankdata

        n_pos = int(y.sum())
        n_neg = len(y) - n_pos
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        ranks = rankdata(np.asarray(score, dtype=float), method="average")
        return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    w = weights_or_ones(weight, len(y))
    w_pos, w_neg = float(w[y].sum()), float(w[~y].sum())
    if w_pos == 0 or w_neg == 0:
        return float("nan")
    score = np.asarray(score, dtype=float)
    order = np.argsort(score, kind="stable")
    s, pos, neg = score[order], (w * y)[order], (w * ~y)[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups
    pos_g, neg_g = np.add.reduceat(pos, starts), np.add.reduceat(neg, starts)
    neg_below = np.cumsum(neg_g) - neg_g
    return float((pos_g * (neg_below + 0.5 * neg_g)).sum() / (w_pos * w_neg))


def average_precision(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """PR-AUC as average precision (sum over thresholds of recall gain x precision), as sklearn defines it."""
    y = np.asarray(y, dtype=float)
    w = weights_or_ones(weight, len(y))
    total = float((y * w).sum())
    if total == 0:
        return float("nan")
    score = np.asarray(score, dtype=float)
    order = np.argsort(-score, kind="stable")
    ends = np.flatnonzero(np.r_[score[order][1:] != score[order][:-1], True])
    hits = np.cumsum((y * w)[order])[ends]
    precision = hits / np.cumsum(w[order])[ends]
    recall_gain = np.diff(np.r_[0.0, hits]) / total
    return float((recall_gain * precision).sum())


def precision_recall(y: np.ndarray, picked: np.ndarray, weight: np.ndarray | None = None) -> tuple[float, float]:
    """(precision, recall) of a picked set; NaN when nothing is picked or there are no positives."""
    y, picked = np.asarray(y, dtype=float), np.asarray(picked, dtype=bool)
    w = weights_or_ones(weight, len(y))
    hits = float((y * w)[picked].sum())
    chosen = float(w[picked].sum())
    positives = float((y * w).sum())
    precision = hits / chosen if chosen else float("nan")
    recall = hits / positives if positives else float("nan")
    return precision, recall


# ----------------------------------------------------------------------------------------------------------------
# Bootstrap over clusters (accounts)
# ----------------------------------------------------------------------------------------------------------------


def cluster_ids(frame: pd.DataFrame) -> np.ndarray:
    """The bootstrap cluster of each row: its lead's account (`account_id`), or the lead itself without an account.

    Leads of one account share its latent buying state (and its committee's signals), so their rows are correlated
    across leads too; resampling accounts keeps that dependence. Account ids are non-negative, so a lead without an
    account gets the negative id -1 - lead_id (its own cluster). Feature files written before the account was
    carried have no `account_id`: then every lead is its own cluster (and the log says so).
    """
    lead = frame["lead_id"].to_numpy(dtype=np.int64)
    if ACCOUNT not in frame.columns:
        log.warning("no '%s' column in the rows: bootstrap clusters are leads, not accounts", ACCOUNT)
        return -1 - lead
    account = pd.to_numeric(frame[ACCOUNT], errors="coerce").astype("Int64")
    return np.where(account.isna().to_numpy(), -1 - lead, account.to_numpy(dtype=np.int64, na_value=0))


class ClusterBootstrap:
    """Resamples of whole clusters (all their rows together), as row indices.

    A cluster is a lead (all its snapshot rows: the same person week after week) or, the default of every interval
    in this project, an account (all its leads' rows: they share the account's in-market state). Resampling rows,
    or leads when leads of one account are correlated, would understate the variance.
    """

    def __init__(self, cluster_id: np.ndarray, seed: int) -> None:
        codes, uniques = pd.factorize(np.asarray(cluster_id), sort=False)
        self._order = np.argsort(codes, kind="stable")
        self._counts = np.bincount(codes, minlength=len(uniques))
        self._starts = np.r_[0, np.cumsum(self._counts)[:-1]]
        self._n_leads = len(uniques)
        self._rng = np.random.default_rng(seed)

    @property
    def clusters(self) -> int:
        """How many clusters are resampled."""
        return self._n_leads

    def sample(self) -> np.ndarray:
        """Row indices of one resample (as many clusters as the original, drawn with replacement)."""
        draw = self._rng.integers(0, self._n_leads, self._n_leads)
        sizes = self._counts[draw]
        offsets = np.repeat(self._starts[draw] - np.r_[0, np.cumsum(sizes)[:-1]], sizes)
        return self._order[offsets + np.arange(int(sizes.sum()))]

    def intervals(
        self, statistic: Callable[[np.ndarray], Mapping[str, float]], n: int, level: float
    ) -> dict[str, tuple[float, float]]:
        """Percentile intervals of each statistic over `n` resamples (NaN resamples are skipped)."""
        if n <= 0:
            return {}
        draws: dict[str, list[float]] = {}
        for _ in range(n):
            for name, value in statistic(self.sample()).items():
                draws.setdefault(name, []).append(float(value))
        alpha = (1 - level) / 2
        out = {}
        for name, values in draws.items():
            arr = np.asarray(values)
            arr = arr[np.isfinite(arr)]
            out[name] = (
                (float(np.quantile(arr, alpha)), float(np.quantile(arr, 1 - alpha)))
                if len(arr)
                else (float("nan"), float("nan"))
            )
        return out


#: Resampling leads is the cluster bootstrap with lead ids as clusters (kept for callers without accounts).
LeadBootstrap = ClusterBootstrap


# ----------------------------------------------------------------------------------------------------------------
# Atomic outputs
# ----------------------------------------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def clean_json(value: object) -> object:
    """NaN and infinities become null (JSON has none); numpy scalars become Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json(path: Path, data: object) -> None:
    """Write JSON atomically (NaN written as null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean_json(data), indent=2, default=_json_default) + "\n")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Write a CSV atomically (plots data for DVC)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def read_json(path: Path, what: str) -> Any:
    """A JSON file another stage wrote; ModelInputError naming the stage to run when it is missing."""
    path = Path(path)
    if not path.exists():
        raise ModelInputError(f"{what} {path} not found (run the stage that writes it first)")
    return json.loads(path.read_text())
