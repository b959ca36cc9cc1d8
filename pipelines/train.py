"""The train stage: out-of-time split, LightGBM propensity model and its logistic-regression baseline.

Two LightGBM models come out. The procedure's model (models/booster.txt) is fitted on the train period with early
stopping; the calibrate and evaluate stages measure it out of time. The production model
(models/production/booster.txt) is the same procedure refitted, with the same number of rounds, on every labelled
week up to a gap before the latest weeks, which the calibrate stage recalibrates it on: that is what is registered.

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

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from pipelines.config import Params, TrainParams
from pipelines.modeling import (
    LABEL,
    ColdStartError,
    FeatureSpec,
    ModelInputError,
    SplitPlan,
    assign_slices,
    atomic_path,
    model_features,
    monotone_directions,
    plan_split,
    production_slices,
    read_features,
    read_json,
    row_weights,
    write_json,
)

log = logging.getLogger(__name__)

BOOSTER_FILE = "booster.txt"
#: Subfolder of models/ holding what is registered: the refitted booster, its calibrator and thresholds.
PRODUCTION_DIR = "production"
LOGREG_FILE = "baselines/logreg.joblib"
SPLIT_FILE = "split.json"
REPORT_FILE = "train_report.json"


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
    return model.predict_proba(_as_object(frame, features))[:, 1]


def booster_predict(booster: lgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """Raw (uncalibrated) LightGBM probability; the booster re-imposes its own category levels."""
    return np.asarray(booster.predict(frame[booster.feature_name()]), dtype=float)


def fit_lightgbm(
    frame: pd.DataFrame,
    features: list[FeatureSpec],
    fit: np.ndarray,
    valid: np.ndarray,
    params: TrainParams,
    seed: int,
    refit_rows: np.ndarray | None = None,
) -> tuple[lgb.Booster, int, dict[str, float]]:
    """Boost on `fit` rows with early stopping on `valid` rows; optionally refit on `refit_rows` with as many rounds.

    Returns the booster, the early-stopped round count and the validation figures of the early-stopped model.
    """
    names = [f.name for f in features]
    monotone = monotone_directions(features) if params.monotone_engagement else None
    config = lgb_params(params, seed, monotone)
    y, w = frame[LABEL].to_numpy(), row_weights(frame)
    fit_set = lgb.Dataset(
        frame.loc[fit, names], label=y[fit], weight=w[fit], categorical_feature="auto", free_raw_data=False
    )
    valid_set = lgb.Dataset(frame.loc[valid, names], label=y[valid], weight=w[valid], reference=fit_set)
    booster = lgb.train(
        config,
        fit_set,
        num_boost_round=params.max_rounds,
        valid_sets=[valid_set],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(params.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    best = int(booster.best_iteration or params.max_rounds)
    valid_raw = np.asarray(booster.predict(frame.loc[valid, names], num_iteration=best))
    metrics = {
        "roc_auc": float(roc_auc_score(y[valid], valid_raw, sample_weight=w[valid])),
        "log_loss": float(log_loss(y[valid], valid_raw, labels=[0, 1], sample_weight=w[valid])),
    }
    log.info("LightGBM: best iteration %d of %d, validation ROC-AUC %.4f", best, params.max_rounds, metrics["roc_auc"])
    if refit_rows is not None:
        booster = refit_lightgbm(frame, features, refit_rows, params, seed, best)
    return booster, best, metrics


def refit_lightgbm(
    frame: pd.DataFrame, features: list[FeatureSpec], rows: np.ndarray, params: TrainParams, seed: int, rounds: int
) -> lgb.Booster:
    """LightGBM on `rows` (weighted) for a fixed number of rounds, with the same settings as the early-stopped fit."""
    names = [f.name for f in features]
    monotone = monotone_directions(features) if params.monotone_engagement else None
    data = lgb.Dataset(
        frame.loc[rows, names],
        label=frame[LABEL].to_numpy()[rows],
        weight=row_weights(frame)[rows],
        categorical_feature="auto",
    )
    return lgb.train(lgb_params(params, seed, monotone), data, num_boost_round=rounds)


def train_models(
    frame: pd.DataFrame, infos: list[FeatureSpec], params: TrainParams, horizon_days: int, seed: int
) -> TrainResult:
    """Split out of time, early-stop LightGBM on the gapped end of the train period, fit the baseline."""
    check_positives(int(frame[LABEL].sum()), params.min_positives, "the whole feature set")
    features = model_features(infos, params.exclude_features)
    names = [f.name for f in features]
    plan = plan_split(
        frame["snapshot_at"], frame[LABEL], frame["lead_id"], params, horizon_days, seed, row_weights(frame)
    )
    slices = assign_slices(frame, plan)
    fit, valid = slices == "fit", slices == "valid"
    # the train period: fit, valid and the gap between them (its labels end before the calibration slice too)
    valid_end = pd.Timestamp(plan.boundaries["valid"][1])
    train = fit | valid | ((slices == "gap") & (pd.to_datetime(frame["snapshot_at"], utc=True) <= valid_end).to_numpy())
    period = f"{plan.boundaries['fit'][0][:10]} to {plan.boundaries['valid'][1][:10]}"
    check_positives(int(frame.loc[train, LABEL].sum()), params.min_positives, f"the train slice (snapshots {period})")
    for name in ("valid", "calibration", "test"):
        if plan.positives[name] == 0:
            raise ColdStartError(f"cannot train: the {name} slice holds no positive example; need more history")
    log.info(
        "split (%s): %s",
        plan.kind,
        ", ".join(
            f"{k} {plan.rows[k]:,} rows / {plan.positives[k]:,} pos" for k in ("fit", "valid", "calibration", "test")
        ),
    )

    y, w = frame[LABEL].to_numpy(), row_weights(frame)
    started = time.perf_counter()
    booster, best, valid_metrics = fit_lightgbm(
        frame, features, fit, valid, params, seed, refit_rows=train if params.refit_full_train else None
    )
    lgb_seconds = time.perf_counter() - started

    # the registered model: the same procedure refitted on every labelled week up to a gap before the latest ones
    # (which the calibrate stage recalibrates it on); the out-of-time test above measures the procedure
    started = time.perf_counter()
    refit = production_slices(frame, plan) == "fit"
    production = refit_lightgbm(frame, features, refit, params, seed, best)
    production_seconds = time.perf_counter() - started
    log.info(
        "production LightGBM: %d rounds on %s rows (%s open-lead weeks, %s positive rows) up to %s",
        best,
        f"{int(refit.sum()):,}",
        f"{float(w[refit].sum()):,.0f}",
        f"{int(y[refit].sum()):,}",
        (plan.production or {}).get("fit", ("", "-"))[1][:10],
    )

    started = time.perf_counter()
    logreg = build_logreg(features, params, seed)
    logreg.fit(_as_object(frame.loc[fit], features), y[fit], model__sample_weight=w[fit])
    logreg_valid = logreg_predict(logreg, frame.loc[valid], features)
    logreg_metrics = {
        "roc_auc": float(roc_auc_score(y[valid], logreg_valid, sample_weight=w[valid])),
        "log_loss": float(log_loss(y[valid], logreg_valid, labels=[0, 1], sample_weight=w[valid])),
    }
    if params.refit_full_train:
        logreg.fit(_as_object(frame.loc[train], features), y[train], model__sample_weight=w[train])
    log.info("logistic regression: validation AUC %.4f", logreg_metrics["roc_auc"])

    directions = monotone_directions(features) if params.monotone_engagement else [0] * len(features)
    importance = pd.Series(booster.feature_importance("gain"), index=booster.feature_name())
    report = {
        "split": plan.to_dict(),
        "best_iteration": best,
        "refit_full_train": params.refit_full_train,
        "train_period": {
            "rows": int(train.sum()),
            "positives": int(y[train].sum()),
            "lead_weeks": float(w[train].sum()),
        },
        "production": {
            "rows": int(refit.sum()),
            "positives": int(y[refit].sum()),
            "lead_weeks": float(w[refit].sum()),
            "rounds": best,
            "fit": list((plan.production or {}).get("fit", ("", ""))),
            "calibration": list((plan.production or {}).get("calibration", ("", ""))),
        },
        "validation": {"lightgbm": valid_metrics, "logreg": logreg_metrics},
        "monotone_increasing": [f.name for f, m in zip(features, directions, strict=True) if m > 0],
        "monotone_decreasing": [f.name for f, m in zip(features, directions, strict=True) if m < 0],
        "features": names,
        "top_features_by_gain": {k: float(v) for k, v in importance.sort_values(ascending=False).head(20).items()},
        "seconds": {
            "lightgbm": round(lgb_seconds, 1),
            "production": round(production_seconds, 1),
            "logreg": round(time.perf_counter() - started, 1),
        },
    }
    return TrainResult(
        booster=booster, production=production, logreg=logreg, split=plan, features=features, report=report
    )


def train_metrics(result: TrainResult) -> dict[str, Any]:
    """The small metrics file of the train stage (validation slice figures, not the headline test figures)."""
    return {
        "valid_roc_auc": result.report["validation"]["lightgbm"]["roc_auc"],
        "valid_log_loss": result.report["validation"]["lightgbm"]["log_loss"],
        "valid_roc_auc_logreg": result.report["validation"]["logreg"]["roc_auc"],
        "best_iteration": result.report["best_iteration"],
        "train_rows": result.report["train_period"]["rows"],
        "train_positives": result.report["train_period"]["positives"],
    }


def save_models(result: TrainResult, out_dir: Path) -> None:
    """Write booster, baseline, split and report atomically (each file replaced only once written)."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / BOOSTER_FILE) as tmp:
        result.booster.save_model(tmp, num_iteration=result.booster.best_iteration or None)
    with atomic_path(out_dir / PRODUCTION_DIR / BOOSTER_FILE) as tmp:
        result.production.save_model(tmp)
    with atomic_path(out_dir / LOGREG_FILE) as tmp:
        joblib.dump({"model": result.logreg, "features": result.features}, tmp)
    write_json(out_dir / SPLIT_FILE, result.split.to_dict())
    write_json(out_dir / REPORT_FILE, result.report)


def load_booster(model_dir: Path) -> lgb.Booster:
    """The saved LightGBM model (ModelInputError when the train stage has not run)."""
    path = Path(model_dir) / BOOSTER_FILE
    if not path.exists():
        raise ModelInputError(f"model {path} not found (run the train stage first)")
    return lgb.Booster(model_file=str(path))


def load_logreg(model_dir: Path) -> tuple[Pipeline, list[FeatureSpec]]:
    """The saved baseline and the features it reads."""
    path = Path(model_dir) / LOGREG_FILE
    if not path.exists():
        raise ModelInputError(f"baseline {path} not found (run the train stage first)")
    saved = joblib.load(path)
    return saved["model"], saved["features"]


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


def load_split(model_dir: Path) -> SplitPlan:
    """The split the models were trained with."""
    return SplitPlan.from_dict(read_json(Path(model_dir) / SPLIT_FILE, "split"))


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
