"""Round selection and tuning of LightGBM by purged expanding-window cross-validation over the train period.

Why not one early-stopping slice at the end of the train period: on a CRM of a few thousand leads it holds a few
dozen positives, early stopping then ends at round 1 (a constant model), and the gap before it throws positives
away. Here the whole train period is cut by snapshot date into `cv_folds` + 1 blocks of equal open-lead weeks; fold
k trains on the blocks before block k and is validated on block k, and the rows whose label window (t, t + gap]
reaches into block k are purged from its training rows (so no outcome is shared). The number of rounds is the mean
of the folds' early-stopped rounds, never below `min_rounds`; the final model is then fitted on the whole train
period with that many rounds. With one snapshot date (leads-only exports) the folds are stratified by label.

Tuning (Optuna's seeded TPE sampler, one thread) scores a small space by the same folds' mean validation ROC-AUC,
on a hashed sample of leads when the train period is large; the configured parameters are always the first trial,
so the tuned set is never worse than them on the folds. Pure compute: frames and typed params in, results out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from pipelines.config import TrainParams
from pipelines.modeling import LABEL, roc_auc, row_weights, weights_or_ones

log = logging.getLogger(__name__)

#: The tuned hyper-parameters (the rest of `train:` is kept as configured).
TUNED: tuple[str, ...] = ("num_leaves", "min_child_samples", "lambda_l2", "feature_fraction", "learning_rate")


@dataclass(frozen=True)
class Fold:
    """One purged fold: row positions to train and validate on, and what the purge dropped."""

    train: np.ndarray
    valid: np.ndarray
    valid_first: str
    valid_last: str
    purged_rows: int
    purged_positives: int

    def report(self, y: np.ndarray) -> dict[str, Any]:
        """JSON-ready counts of the fold."""
        return {
            "valid": [self.valid_first, self.valid_last],
            "train_rows": len(self.train),
            "train_positives": int(y[self.train].sum()),
            "valid_rows": len(self.valid),
            "valid_positives": int(y[self.valid].sum()),
            "purged_rows": self.purged_rows,
            "purged_positives": self.purged_positives,
        }


def purged_folds(
    snapshot_at: pd.Series, y: np.ndarray, weight: np.ndarray | None, n_folds: int, gap_days: int, seed: int
) -> list[Fold]:
    """Expanding-window folds by snapshot date, each fold's training rows purged of label windows reaching its
    validation block; stratified folds when every row has the same snapshot date. Folds whose training or
    validation rows hold a single class are left out (they can neither early-stop nor be scored)."""
    y = np.asarray(y, dtype=np.int8)
    day = pd.DatetimeIndex(pd.to_datetime(snapshot_at, utc=True)).tz_localize(None).as_unit("ns").to_numpy()
    dates, inverse = np.unique(day, return_inverse=True)
    folds: list[Fold] = []
    if len(dates) == 1:
        from sklearn.model_selection import StratifiedKFold

        if np.bincount(y, minlength=2).min() < n_folds:
            return []
        first = pd.Timestamp(dates[0]).isoformat()
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for train, valid in splitter.split(np.zeros(len(y)), y):
            folds.append(Fold(train, valid, first, first, 0, 0))
    else:
        counts = np.bincount(inverse, weights=weights_or_ones(weight, len(y)), minlength=len(dates))
        cum = np.cumsum(counts) / counts.sum()
        starts = np.searchsorted(cum, np.arange(1, n_folds + 1) / (n_folds + 1), side="right")
        ends = np.r_[starts[1:], len(dates)]
        gap = np.timedelta64(gap_days, "D")
        for lo, hi in zip(starts, ends, strict=True):
            if lo >= hi or lo == 0:
                continue
            before = inverse < lo
            train_mask = before & (day + gap < dates[lo])
            valid = np.flatnonzero((inverse >= lo) & (inverse < hi))
            purged = before & ~train_mask
            folds.append(
                Fold(
                    np.flatnonzero(train_mask),
                    valid,
                    pd.Timestamp(dates[lo]).isoformat(),
                    pd.Timestamp(dates[hi - 1]).isoformat(),
                    int(purged.sum()),
                    int(y[purged].sum()),
                )
            )
    kept = [f for f in folds if 0 < y[f.train].sum() < len(f.train) and 0 < y[f.valid].sum() < len(f.valid)]
    if len(kept) < len(folds):
        log.warning("%d of %d CV fold(s) hold a single class and are left out", len(folds) - len(kept), len(folds))
    return kept


@dataclass(frozen=True)
class CVResult:
    """What the folds say: the chosen round count and each fold's early-stopped rounds and validation figures."""

    rounds: int
    fold_rounds: list[int]
    fold_roc_auc: list[float]
    oof: np.ndarray  # each validated row's prediction at its fold's best round (NaN: never validated)
    folds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mean_roc_auc(self) -> float:
        """Mean validation ROC-AUC over the folds (NaN without folds)."""
        finite = [a for a in self.fold_roc_auc if np.isfinite(a)]
        return float(np.mean(finite)) if finite else float("nan")


def cross_validate(
    frame: pd.DataFrame,
    names: Sequence[str],
    folds: Sequence[Fold],
    config: Mapping[str, Any],
    params: TrainParams,
) -> CVResult:
    """Early-stop LightGBM (`config`, LightGBM's dict) on each fold; rounds = mean early-stopped round, floored at
    `params.min_rounds` and capped at `params.max_rounds`. Without folds: `min_rounds` (and the log says why)."""
    y, w = frame[LABEL].to_numpy(), row_weights(frame)
    x = frame[list(names)]
    oof = np.full(len(frame), np.nan)
    fold_rounds: list[int] = []
    fold_auc: list[float] = []
    reports: list[dict[str, Any]] = []
    for fold in folds:
        fit_set = lgb.Dataset(x.iloc[fold.train], label=y[fold.train], weight=w[fold.train], categorical_feature="auto")
        valid_set = lgb.Dataset(x.iloc[fold.valid], label=y[fold.valid], weight=w[fold.valid], reference=fit_set)
        booster = lgb.train(
            dict(config),
            fit_set,
            num_boost_round=params.max_rounds,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(params.early_stopping_rounds, first_metric_only=True, verbose=False)],
        )
        best = int(booster.best_iteration or booster.current_iteration())
        pred = np.asarray(booster.predict(x.iloc[fold.valid], num_iteration=best), dtype=float)
        oof[fold.valid] = pred
        auc = roc_auc(y[fold.valid], pred, w[fold.valid])
        fold_rounds.append(best)
        fold_auc.append(auc)
        reports.append({**fold.report(y), "best_round": best, "roc_auc": auc})
    if fold_rounds:
        rounds = round(float(np.mean(fold_rounds)))
    else:
        log.warning("no usable CV fold (too few positives): %d rounds (train.min_rounds)", params.min_rounds)
        rounds = params.min_rounds
    rounds = min(max(rounds, params.min_rounds), params.max_rounds)
    return CVResult(rounds, fold_rounds, fold_auc, oof, reports)


def sample_leads(lead_id: pd.Series, n_leads: int | None) -> np.ndarray:
    """Mask of the rows of the `n_leads` leads with the smallest hash of their id (all rows when None or fewer
    leads): a fixed sample that keeps a lead's rows together and barely moves when leads are added."""
    ids = pd.unique(np.asarray(lead_id, dtype=np.int64))
    if n_leads is None or len(ids) <= n_leads:
        return np.ones(len(lead_id), dtype=bool)
    hashes = pd.util.hash_array(ids)
    keep = ids[np.argsort(hashes, kind="stable")[:n_leads]]
    return np.isin(np.asarray(lead_id, dtype=np.int64), keep)


@dataclass(frozen=True)
class TuneResult:
    """The chosen values of `TUNED` (for all rows), the trials and what they cost."""

    best: dict[str, Any]
    trials: list[dict[str, Any]]
    sample_rows: int
    sample_leads: int
    scale: float  # all rows / sample rows: min_child_samples and lambda_l2 are scaled by it
    seconds: float
    accepted: bool = False  # the best trial beat the configured values by train.tune_min_gain (else they are kept)


def tune(
    frame: pd.DataFrame,
    names: Sequence[str],
    params: TrainParams,
    lgb_config: Callable[[TrainParams], dict[str, Any]],
    gap_days: int,
    seed: int,
) -> TuneResult:
    """Optuna over `TUNED`, each trial scored by the purged folds' mean validation ROC-AUC on a hashed lead sample
    (`train.tune_sample_leads`). `lgb_config(params)` is LightGBM's dict for a TrainParams. The configured values
    are the first trial and stay unless the best beats them by `train.tune_min_gain`. The sample's best count-like
    values (min_child_samples, lambda_l2, which act against a leaf's row and hessian sums) are scaled to the whole
    train period by its share of rows."""
    import optuna

    started = time.perf_counter()
    keep = sample_leads(frame["lead_id"], params.tune_sample_leads)
    rows = frame.loc[keep].reset_index(drop=True)
    y = rows[LABEL].to_numpy()
    folds = purged_folds(rows["snapshot_at"], y, row_weights(rows), params.cv_folds, gap_days, seed)
    scale = len(frame) / max(len(rows), 1)
    first = {k: getattr(params, k) for k in TUNED}
    if not folds:
        log.warning("tuning skipped: the sample's CV folds hold a single class")
        return TuneResult(first, [], len(rows), int(rows["lead_id"].nunique()), 1.0, time.perf_counter() - started)
    fold_rows = min(len(f.train) for f in folds)
    leaf_max = int(max(10, min(2000, fold_rows // 20)))
    tuning = params.model_copy(update={"max_rounds": params.tune_max_rounds})
    unclipped = {
        "num_leaves": params.num_leaves,
        "min_child_samples": round(params.min_child_samples / scale),
        "lambda_l2": params.lambda_l2 / scale,
        "feature_fraction": params.feature_fraction,
        "learning_rate": params.learning_rate,
    }
    enqueued = {
        "num_leaves": int(np.clip(params.num_leaves, 4, 64)),
        "min_child_samples": int(np.clip(round(params.min_child_samples / scale), 5, leaf_max)),
        "lambda_l2": float(np.clip(params.lambda_l2 / scale, 1e-3, 100.0)),
        "feature_fraction": float(np.clip(params.feature_fraction, 0.5, 1.0)),
        "learning_rate": float(np.clip(params.learning_rate, 0.02, 0.2)),
    }

    def objective(trial: optuna.Trial) -> float:
        values = {
            "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, leaf_max, log=True),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 100.0, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        }
        result = cross_validate(rows, names, folds, lgb_config(tuning.model_copy(update=values)), tuning)
        trial.set_user_attr("rounds", result.rounds)
        score = result.mean_roc_auc
        return score if np.isfinite(score) else 0.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(enqueued)
    study.optimize(objective, n_trials=params.tune_trials, timeout=params.tune_timeout_seconds, n_jobs=1)
    done = [t for t in study.trials if t.value is not None]
    if len(done) < params.tune_trials:
        log.warning(
            "tuning stopped by train.tune_timeout_seconds after %d of %d trials (results depend on machine speed)",
            len(done),
            params.tune_trials,
        )
    baseline = done[0].value if done and done[0].value is not None else float("-inf")
    accepted = study.best_value >= baseline + params.tune_min_gain

    def back(name: str, value: Any) -> Any:  # a sample's value for the whole train period
        if name == "min_child_samples":
            return max(1, round(float(value) * scale))
        return float(value * scale) if name == "lambda_l2" else value

    if accepted:
        best = {k: back(k, v) for k, v in study.best_params.items()}
    else:  # the configured values, except those outside the search space (clipped into it for trial 0)
        best = {k: first[k] if enqueued[k] == unclipped[k] else back(k, enqueued[k]) for k in TUNED}
    trials = [{"number": t.number, "roc_auc": t.value, "rounds": t.user_attrs.get("rounds"), **t.params} for t in done]
    seconds = time.perf_counter() - started
    log.info(
        "tuning: %d trials on %s rows of %s leads in %.0f s; best fold ROC-AUC %.4f, configured %.4f: %s %s",
        len(done),
        f"{len(rows):,}",
        f"{rows['lead_id'].nunique():,}",
        seconds,
        study.best_value,
        baseline,
        "tuned" if accepted else f"configured values kept (gain below train.tune_min_gain {params.tune_min_gain})",
        ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items()),
    )
    return TuneResult(best, trials, len(rows), int(rows["lead_id"].nunique()), scale, seconds, accepted)
