"""Tiny synthetic feature frames for the model stages' unit tests (no CRM needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.config import TrainParams
from pipelines.modeling import FeatureSpec

FEATURES: list[FeatureSpec] = [
    FeatureSpec("fit_score", "numeric", "fit"),
    FeatureSpec("n_email_click_7d", "numeric", "engagement"),
    FeatureSpec("n_unsubscribe_all", "numeric", "engagement"),
    FeatureSpec("region", "categorical", "fit"),
]


def weekly_frame(
    n_leads: int = 60, n_weeks: int = 60, seed: int = 0, positive_rate: float = 0.1, start: str = "2025-01-06"
) -> pd.DataFrame:
    """Every lead at every Monday: label driven by fit_score and clicks, so a model can learn something."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=n_weeks, freq="7D", tz="UTC")
    lead = np.repeat(np.arange(1, n_leads + 1), n_weeks)
    at = np.tile(dates, n_leads)
    fit = rng.normal(size=len(lead))
    clicks = rng.poisson(1.0, size=len(lead))
    logit = np.log(positive_rate / (1 - positive_rate)) + 1.5 * fit + 0.5 * clicks - 0.5
    label = (rng.random(len(lead)) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    frame = pd.DataFrame(
        {
            "lead_id": lead.astype(np.int64),
            "snapshot_at": pd.Series(at).astype("datetime64[ns, UTC]"),
            "label": label,
            "fit_score": fit.astype(np.float32),
            "n_email_click_7d": clicks.astype(np.int32),
            "n_unsubscribe_all": rng.binomial(1, 0.05, size=len(lead)).astype(np.int32),
            "region": pd.Categorical(
                rng.choice(["NA", "EMEA", "APAC"], size=len(lead)), categories=["NA", "EMEA", "APAC"]
            ),
        }
    )
    return frame.sort_values(["snapshot_at", "lead_id"], ignore_index=True)


def train_params(**overrides: object) -> TrainParams:
    """Small, fast training params (a handful of rounds)."""
    values: dict[str, object] = {
        "test_fraction": 0.2,
        "calibration_fraction": 0.15,
        "min_positives": 10,
        "exclude_features": (),
        "monotone_engagement": True,
        "learning_rate": 0.2,
        "num_leaves": 4,
        "min_child_samples": 10,
        "feature_fraction": 1.0,
        "bagging_fraction": 1.0,
        "bagging_freq": 0,
        "lambda_l2": 0.0,
        "cat_smooth": 10.0,
        "max_rounds": 20,
        "min_rounds": 5,
        "early_stopping_rounds": 5,
        "cv_folds": 3,
        "tune_trials": 0,
        "tune_timeout_seconds": None,
        "tune_sample_leads": None,
        "tune_max_rounds": 20,
        "tune_min_gain": 0.0,
        "num_threads": 1,
        "logreg_c": 1.0,
        "logreg_max_iter": 100,
    }
    values.update(overrides)
    return TrainParams.model_validate(values)
