"""What the register stage reads from the upstream stages (through `pipelines.artifacts`): where they wrote,
the gate's test rows, and the drift reference built from the production model's calibration weeks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.artifacts import (
    CALIBRATOR_FILE,
    PRODUCTION_DIR,
    THRESHOLDS_FILE,
    load_booster,
    load_calibrator,
    load_split,
    load_thresholds,
)
from pipelines.drift import DriftReference, build_reference
from pipelines.modeling import LABEL, assign_slices, production_slices, read_features, row_weights
from pipelines.registry.model import ScoringSpec, category_levels, score_frame
from pipelines.registry.server import RegistryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterInputs:
    """Where the upstream stages wrote their artifacts, and the dvc.lock that records their hashes."""

    features_dir: Path
    models_dir: Path
    metrics_dir: Path
    plots_dir: Path
    lock_path: Path = Path("dvc.lock")


def gate_rows(features_dir: Path, models_dir: Path) -> pd.DataFrame:
    """The out-of-time test slice of the current features under the current split (the gate's rows)."""

    frame, _ = read_features(features_dir)
    rows: pd.DataFrame = frame.loc[assign_slices(frame, load_split(models_dir)) == "test"].reset_index(drop=True)
    if rows.empty or not 0 < int(rows[LABEL].sum()) < len(rows):
        raise RegistryError("the test slice is empty or holds one class only: the gate cannot compare models")
    return rows


def training_reference(
    features_dir: Path, models_dir: Path, spec: ScoringSpec, top_features: int, n_bins: int
) -> DriftReference:
    """Bins of the calibrated score and the most important features (by gain) over the latest labelled weeks, the
    rows the production model was calibrated and thresholded on (weighted: the whole open population then)."""

    production = models_dir / PRODUCTION_DIR
    booster = load_booster(production)
    frame, _ = read_features(features_dir)
    slices = production_slices(frame, load_split(models_dir))
    rows = frame.loc[slices == "calibration"].reset_index(drop=True)
    if rows.empty:
        raise RegistryError("the production calibration weeks are empty: no drift reference can be built")
    calibrator = load_calibrator(production / CALIBRATOR_FILE)
    thresholds = load_thresholds(production / THRESHOLDS_FILE)
    score = score_frame(booster, calibrator, thresholds, spec, rows, 0)["probability"].to_numpy(dtype=float)
    gain = booster.feature_importance("gain")
    ranked = [spec.features[i] for i in np.argsort(-gain, kind="stable") if gain[i] > 0][:top_features]
    kinds = {f.name: f.kind for f in ranked}
    levels = {name: [str(v) for v in values] for name, values in category_levels(booster, spec).items()}
    first, last = rows["snapshot_at"].min(), rows["snapshot_at"].max()
    return build_reference(
        rows,
        score,
        kinds,
        n_bins,
        source=f"latest labelled weeks {first:%Y-%m-%d}..{last:%Y-%m-%d}: {len(rows):,} rows",
        levels={k: v for k, v in levels.items() if k in kinds},
        weight=row_weights(rows),
    )
