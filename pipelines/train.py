"""The train stage: out-of-time split, LightGBM propensity model and its logistic-regression baseline.

Two LightGBM models come out. The procedure's model (models/booster.txt) is fitted on the whole train period with
the number of rounds (and, with `train.tune_trials`, the hyper-parameters) chosen by purged expanding-window
cross-validation inside it (`pipelines.tuning`); the calibrate and evaluate stages measure it out of time. The
production model (models/production/booster.txt) is the same procedure refitted, with the same number of rounds, on
every labelled week up to a gap before the latest weeks, which the calibrate stage recalibrates it on: that is what
is registered.

`train_models` is the pure core (feature frame + typed params in, fitted models and a report out); `run_train`
reads the features stage's output and writes models/booster.txt (LightGBM text model, which carries its own
category levels), models/baselines/logreg.joblib, models/split.json and models/train_report.json, plus
metrics/train.json for `dvc metrics show`. The rule score needs no training: the evaluate stage scores it on the
same test rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from pipelines.artifacts import save_models
from pipelines.config import Params, TrainParams
from pipelines.features.spec import FeatureSpec
from pipelines.modeling import (
    GAP_BEFORE_CALIBRATION,
    GAP_BEFORE_TEST,
    LABEL,
    ColdStartError,
    SplitPlan,
    assign_slices,
    model_features,
    monotone_directions,
    plan_split,
    production_slices,
    read_features,
    read_json,
    row_weights,
    write_json,
)
from pipelines.tuning import TUNED, cross_validate, purged_folds, tune

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """The fitted models, the split they were fitted on and a JSON-ready report."""

    booster: lgb.Booster  # the out-of-time procedure's model: calibrated, thresholded and tested
    production: lgb.Booster  # the model that is registered: refitted on every labelled week
    logreg: Pipeline
    split: SplitPlan
    features: list[FeatureSpec]
    report: dict[str, Any]


def check_positives(count: int, needed: int, where: str) -> None:
    """ColdStartError unless `count` >= `needed` (the message says both numbers and the param to change)."""
    if count < needed:
        raise ColdStartError(
            f"cannot train: {where} holds {count:,} positive example(s) (leads reaching the target stage within the "
            f"horizon); at least {needed:,} are needed (train.min_positives). Collect more history, or lower "
            f"train.min_positives knowing the model will be unreliable."
        )


def lgb_params(params: TrainParams, seed: int, monotone: list[int] | None) -> dict[str, Any]:
    """LightGBM's parameter dict from the typed params (deterministic, quiet)."""
    out: dict[str, Any] = {
        "objective": "binary",
        "metric": ["binary_logloss", "auc"],
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_child_samples": params.min_child_samples,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": params.bagging_freq,
        "lambda_l2": params.lambda_l2,
        "cat_smooth": params.cat_smooth,
        "num_threads": params.num_threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    if monotone and any(monotone):
        out["monotone_constraints"] = monotone
        out["monotone_constraints_method"] = "advanced"
    return out


def build_logreg(features: list[FeatureSpec], params: TrainParams, seed: int) -> Pipeline:
    """Baseline on the same features: impute (with missing flags), asinh counts, scale; one-hot the categoricals."""
    numeric = [f.name for f in features if f.kind == "numeric"]
    categorical = [f.name for f in features if f.kind == "categorical"]
    numeric_steps = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        FunctionTransformer(np.arcsinh, feature_names_out="one-to-one"),  # tames heavy-tailed counts and sizes
        StandardScaler(),
    )
    categorical_steps = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing", keep_empty_features=True),
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=50, sparse_output=False),
    )
    columns = ColumnTransformer([("numeric", numeric_steps, numeric), ("categorical", categorical_steps, categorical)])
    model = LogisticRegression(C=params.logreg_c, max_iter=params.logreg_max_iter, random_state=seed)
    return Pipeline([("columns", columns), ("model", model)])


def _as_object(frame: pd.DataFrame, features: list[FeatureSpec]) -> pd.DataFrame:
    """Categoricals as object strings for the sklearn baseline (its imputer and encoder want plain values)."""
    out = frame[[f.name for f in features]].copy()
    for f in features:
        if f.kind == "categorical":
            out[f.name] = out[f.name].astype(object).where(out[f.name].notna(), np.nan)
    return out


def logreg_predict(model: Pipeline, frame: pd.DataFrame, features: list[FeatureSpec]) -> np.ndarray:
    """P(label = 1) from the logistic-regression baseline."""
    probability: np.ndarray = model.predict_proba(_as_object(frame, features))[:, 1]
    return probability


def booster_predict(booster: lgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """Raw (uncalibrated) LightGBM probability; the booster re-imposes its own category levels."""
    return np.asarray(booster.predict(frame[booster.feature_name()]), dtype=float)


def refit_lightgbm(
    frame: pd.DataFrame, features: list[FeatureSpec], rows: np.ndarray, params: TrainParams, seed: int, rounds: int
) -> lgb.Booster:
    """LightGBM on `rows` (weighted) for a fixed number of rounds (the count the purged CV chose)."""
    names = [f.name for f in features]
    monotone = monotone_directions(features) if params.monotone_engagement else None
    data = lgb.Dataset(
        frame.loc[rows, names],
        label=frame[LABEL].to_numpy()[rows],
        weight=row_weights(frame)[rows],
        categorical_feature="auto",
    )
    return lgb.train(lgb_params(params, seed, monotone), data, num_boost_round=rounds)


def is_constant(booster: lgb.Booster, frame: pd.DataFrame) -> bool:
    """Whether the booster gives every row the same score (no tree split anything): a model that cannot rank."""
    pred = booster_predict(booster, frame)
    return bool(len(pred) == 0 or float(np.ptp(pred)) <= 1e-12)


def train_models(
    frame: pd.DataFrame, infos: list[FeatureSpec], params: TrainParams, horizon_days: int, seed: int
) -> TrainResult:
    """Split out of time; tune and choose the rounds by purged CV over the train period; fit LightGBM on the whole
    train period with those rounds, the production refit and the logistic-regression baseline."""
    check_positives(int(frame[LABEL].sum()), params.min_positives, "the whole feature set")
    features = model_features(infos, params.exclude_features)
    names = [f.name for f in features]
    plan = plan_split(
        frame["snapshot_at"], frame[LABEL], frame["lead_id"], params, horizon_days, seed, row_weights(frame)
    )
    slices = assign_slices(frame, plan)
    train = slices == "fit"
    period = f"{plan.boundaries['fit'][0][:10]} to {plan.boundaries['fit'][1][:10]}"
    check_positives(int(frame.loc[train, LABEL].sum()), params.min_positives, f"the train slice (snapshots {period})")
    for name in ("calibration", "test"):
        if plan.positives[name] == 0:
            raise ColdStartError(f"cannot train: the {name} slice holds no positive example; need more history")
    total_pos = max(int(frame[LABEL].sum()), 1)
    log.info(
        "split (%s): %s; the gaps drop %s of %s positive rows (%.0f%%)",
        plan.kind,
        ", ".join(f"{k} {plan.rows[k]:,} rows / {plan.positives[k]:,} pos" for k in ("fit", "calibration", "test")),
        f"{plan.positives['gap']:,}",
        f"{total_pos:,}",
        100 * plan.positives["gap"] / total_pos,
    )

    y, w = frame[LABEL].to_numpy(), row_weights(frame)
    monotone = monotone_directions(features) if params.monotone_engagement else None
    train_rows = frame.loc[train].reset_index(drop=True)
    cpu0, started = time.process_time(), time.perf_counter()
    tuned = None
    if params.tune_trials > 0:
        tuned = tune(train_rows, names, params, lambda p: lgb_params(p, seed, monotone), horizon_days, seed)
        params = params.model_copy(update=tuned.best)
    tune_seconds = time.perf_counter() - started

    started = time.perf_counter()
    folds = purged_folds(
        train_rows["snapshot_at"],
        train_rows[LABEL].to_numpy(),
        row_weights(train_rows),
        params.cv_folds,
        horizon_days,
        seed,
    )
    cv = cross_validate(train_rows, names, folds, lgb_params(params, seed, monotone), params)
    rounds = cv.rounds
    log.info(
        "purged CV (%d folds): rounds %s -> %d (floor train.min_rounds %d), fold ROC-AUC %s",
        len(folds),
        cv.fold_rounds,
        rounds,
        params.min_rounds,
        ", ".join(f"{a:.4f}" for a in cv.fold_roc_auc),
    )
    cv_seconds = time.perf_counter() - started

    started = time.perf_counter()
    booster = refit_lightgbm(frame, features, train, params, seed, rounds)
    lgb_seconds = time.perf_counter() - started
    constant = is_constant(booster, train_rows)
    if constant:
        log.warning("LightGBM is a constant model: no tree split the train rows (it cannot rank leads)")

    # the registered model: the same procedure refitted on every labelled week up to a gap before the latest ones
    # (which the calibrate stage recalibrates it on); the out-of-time test above measures the procedure
    started = time.perf_counter()
    refit = production_slices(frame, plan) == "fit"
    production = refit_lightgbm(frame, features, refit, params, seed, rounds)
    production_seconds = time.perf_counter() - started
    log.info(
        "production LightGBM: %d rounds on %s rows (%s open-lead weeks, %s positive rows) up to %s",
        rounds,
        f"{int(refit.sum()):,}",
        f"{float(w[refit].sum()):,.0f}",
        f"{int(y[refit].sum()):,}",
        (plan.production or {}).get("fit", ("", "-"))[1][:10],
    )

    started = time.perf_counter()
    logreg = build_logreg(features, params, seed)
    logreg.fit(_as_object(frame.loc[train], features), y[train], model__sample_weight=w[train])
    logreg_seconds = time.perf_counter() - started

    directions = monotone_directions(features) if params.monotone_engagement else [0] * len(features)
    importance = pd.Series(booster.feature_importance("gain"), index=booster.feature_name())
    report = {
        "split": plan.to_dict(),
        "rounds": rounds,
        "constant_model": constant,
        "cv": {
            "folds": len(folds),
            "fold_rounds": cv.fold_rounds,
            "fold_roc_auc": cv.fold_roc_auc,
            "mean_roc_auc": cv.mean_roc_auc,
            "min_rounds": params.min_rounds,
            "detail": cv.folds,
        },
        "gap_positives": {
            "before_calibration": plan.positives.get(GAP_BEFORE_CALIBRATION, 0),
            "before_test": plan.positives.get(GAP_BEFORE_TEST, 0),
            "total": plan.positives["gap"],
            "share_of_positives": plan.positives["gap"] / total_pos,
        },
        "hyperparameters": {k: getattr(params, k) for k in TUNED},
        "tuning": (
            {
                "trials": tuned.trials,
                "sample_rows": tuned.sample_rows,
                "sample_leads": tuned.sample_leads,
                "scale": tuned.scale,
                "accepted": tuned.accepted,
                "seconds": round(tuned.seconds, 1),
            }
            if tuned is not None
            else None
        ),
        "train_period": {
            "rows": int(train.sum()),
            "positives": int(y[train].sum()),
            "lead_weeks": float(w[train].sum()),
        },
        "production": {
            "rows": int(refit.sum()),
            "positives": int(y[refit].sum()),
            "lead_weeks": float(w[refit].sum()),
            "rounds": rounds,
            "fit": list((plan.production or {}).get("fit", ("", ""))),
            "calibration": list((plan.production or {}).get("calibration", ("", ""))),
        },
        "monotone_increasing": [f.name for f, m in zip(features, directions, strict=True) if m > 0],
        "monotone_decreasing": [f.name for f, m in zip(features, directions, strict=True) if m < 0],
        "features": names,
        "top_features_by_gain": {k: float(v) for k, v in importance.sort_values(ascending=False).head(20).items()},
        "seconds": {
            "tuning": round(tune_seconds, 1),
            "cv": round(cv_seconds, 1),
            "lightgbm": round(lgb_seconds, 1),
            "production": round(production_seconds, 1),
            "logreg": round(logreg_seconds, 1),
            "cpu": round(time.process_time() - cpu0, 1),
        },
    }
    return TrainResult(
        booster=booster, production=production, logreg=logreg, split=plan, features=features, report=report
    )


def train_metrics(result: TrainResult) -> dict[str, Any]:
    """The small metrics file of the train stage (cross-validation figures, not the headline test figures)."""
    r = result.report
    return {
        "cv_roc_auc": r["cv"]["mean_roc_auc"],
        "cv_fold_roc_auc": r["cv"]["fold_roc_auc"],
        "cv_fold_rounds": r["cv"]["fold_rounds"],
        "rounds": r["rounds"],
        "constant_model": r["constant_model"],
        "train_rows": r["train_period"]["rows"],
        "train_positives": r["train_period"]["positives"],
        "gap_positives": r["gap_positives"],
        "hyperparameters": r["hyperparameters"],
        "tuning_trials": len((r["tuning"] or {}).get("trials", [])),
        "seconds": r["seconds"],
    }


def dated_flag_note(maturation_days: int, summary: dict[str, Any]) -> str:
    """What the split of dated leads with a target flag (no conversion dates) is, for metrics and the model card."""
    if summary.get("order_column"):
        return (
            f"out-of-time split by row order (no dates; order column {summary['order_column']}): leads with a "
            "target flag, one row per lead; earlier rows train, later rows test, never a random split"
        )
    return (
        f"out-of-time split by lead creation date: dated leads with a target flag and no conversion dates, one row "
        f"per lead at its creation; slices separated by the label's {maturation_days}-day maturation window; "
        f"{int(summary.get('censored_leads', 0)):,} leads younger than that at the export left out as censored"
    )


def run_train(params: Params, features_dir: Path, out_dir: Path, metrics_path: Path | None) -> TrainResult:
    """Entry point of the train stage: read features, train, write models (and the train metrics)."""
    frame, infos = read_features(features_dir)
    log.info(
        "training on %s snapshot rows of %s leads (%s positive)",
        f"{len(frame):,}",
        f"{frame['lead_id'].nunique():,}",
        f"{int(frame[LABEL].sum()):,}",
    )
    summary_path = Path(features_dir) / "summary.json"
    summary = read_json(summary_path, "features summary") if summary_path.exists() else {}
    horizon = params.features.horizon_days
    if summary.get("dated_flag"):  # one row per lead at creation: the gaps are the label's maturation window
        horizon = int(summary["label_window_days"])
    result = train_models(frame, infos, params.train, horizon, params.base.seed)
    if summary.get("dated_flag") and result.split.kind == "time":
        result = replace(result, split=replace(result.split, note=dated_flag_note(horizon, summary)))
    save_models(result, out_dir)
    if metrics_path is not None:
        write_json(metrics_path, train_metrics(result))
    log.info("models written to %s", out_dir)
    return result
