"""A LightGBM model trained on a small demo CRM, and a helper that scores CRM edits through the real features."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from pipelines.config import FeaturesParams, Params, load_params
from pipelines.crm.demo import generate
from pipelines.features.build import build_features, feature_specs
from pipelines.features.snapshots import snapshot_grid
from pipelines.features.spec import FeatureSpec
from pipelines.modeling import prepare_frame
from pipelines.train import booster_predict, refit_lightgbm

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@dataclass(frozen=True)
class DemoModel:
    """The demo's tables and ground truth, its training frame, and the booster trained on it."""

    params: Params
    tables: dict[str, pd.DataFrame]
    truth: pd.DataFrame
    frame: pd.DataFrame
    features: list[FeatureSpec]
    booster: lgb.Booster

    @property
    def feature_params(self) -> FeaturesParams:
        return self.params.features

    def score(self, tables: dict[str, pd.DataFrame], rows: pd.DataFrame) -> np.ndarray:
        """Raw model probability of (lead_id, snapshot_at) rows, features built from `tables` as of each row."""
        built = build_features(tables, rows[["lead_id", "snapshot_at"]], self.feature_params)
        return booster_predict(self.booster, prepare_frame(built, self.features, need_label=False))


@pytest.fixture(scope="session")
def demo_model() -> DemoModel:
    """~100k snapshot rows of a 12,000-lead demo; the repo's params with a faster learning rate, 150 rounds."""
    params = load_params(REPO_PARAMS)
    demo = generate(
        params.demo_crm.model_copy(
            update={"leads": 12_000, "seed": 11, "end_date": date(2026, 11, 20), "history_days": 540}
        ),
        params.features.icp,
    )
    grid = snapshot_grid(demo.tables, params.features)
    features = feature_specs(params.features)
    frame = prepare_frame(build_features(demo.tables, grid, params.features), features)
    train = params.train.model_copy(update={"learning_rate": 0.1})
    rows = np.ones(len(frame), dtype=bool)  # behaviour, not out-of-time skill, is under test here
    booster = refit_lightgbm(frame, features, rows, train, params.base.seed, rounds=150)
    return DemoModel(
        params=params, tables=demo.tables, truth=demo.truth, frame=frame, features=features, booster=booster
    )


@pytest.fixture
def edit_tables(demo_model: DemoModel) -> Callable[[], dict[str, pd.DataFrame]]:
    """Fresh shallow copies of the demo tables that a test may edit."""
    return lambda: {name: table.copy() for name, table in demo_model.tables.items()}
