"""The model artifacts on disk, one place that names, loads and saves each of them (atomically).

`models/` holds the evaluation model (booster.txt, baselines/logreg.joblib, split.json, train_report.json,
calibrator.json, thresholds.json) and `models/production/` the model that is registered (booster, calibrator,
thresholds). Stages read and write them only through here, so a file's name and format live in one module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

import joblib
import lightgbm as lgb
from sklearn.pipeline import Pipeline

from pipelines.atomic import atomic_path
from pipelines.calibrated import Calibrator, Thresholds
from pipelines.features.spec import FeatureSpec
from pipelines.modeling import ModelInputError, SplitPlan, read_json, write_json

if TYPE_CHECKING:
    from pipelines.train import TrainResult

BOOSTER_FILE: Final = "booster.txt"
#: The model trained on the latest weeks (what is registered), beside the evaluation model.
PRODUCTION_DIR: Final = "production"
LOGREG_FILE: Final = "baselines/logreg.joblib"
SPLIT_FILE: Final = "split.json"
REPORT_FILE: Final = "train_report.json"
CALIBRATOR_FILE: Final = "calibrator.json"
THRESHOLDS_FILE: Final = "thresholds.json"


def save_models(result: TrainResult, out_dir: Path) -> None:
    """Write booster, baseline, split and report atomically (each file replaced only once written)."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / BOOSTER_FILE) as tmp:
        result.booster.save_model(tmp)
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


def load_split(model_dir: Path) -> SplitPlan:
    """The split the models were trained with."""
    return SplitPlan.from_dict(read_json(Path(model_dir) / SPLIT_FILE, "split"))


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
