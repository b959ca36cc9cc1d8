"""The one scoring model: an MLflow pyfunc that turns a lead's features into probability, stage, grade and reasons.

It packages everything scoring needs as artifacts: the LightGBM booster (text model, carrying its category
levels), the calibrator and the thresholds (read with the calibrate stage's loaders) and `scoring_spec.json`
(feature-list version, each feature's kind, family and reason group, target and horizon). Production loads it by
name alone: `mlflow.pyfunc.load_model("models:/<name>@champion").predict(features)`.

Input: one row per lead, the feature columns only (numeric as double, categorical as string; no keys, no personal
data); MLflow refuses input that breaks the signature (missing column, wrong type) before `predict` runs.
Output per lead: `probability` (calibrated), `stage` (MQL/SAL/SQL/none), `grade` (A-D), `reasons_positive` and
`reasons_negative` (business words). Param `top_reasons` (0: skip the SHAP reasons, e.g. for gate scoring); param
`variant`: `production` (default: the model refitted on every labelled week) or `evaluation` (the out-of-time
procedure's model, fitted before the test weeks: what the promotion gate compares on them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import lightgbm as lgb
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from pipelines.artifacts import load_calibrator, load_thresholds
from pipelines.calibrated import Calibrator, Thresholds
from pipelines.errors import BadInputError
from pipelines.registry.reasons import ReasonFeature, reason_features, top_reasons

SPEC_FILE: Final = "scoring_spec.json"
OUTPUT_COLUMNS: Final[tuple[str, ...]] = ("probability", "stage", "grade", "reasons_positive", "reasons_negative")
#: Artifact keys of the logged pyfunc model.
ARTIFACTS: Final[tuple[str, ...]] = ("booster", "calibrator", "thresholds", "spec")
#: Model metadata (MLmodel `metadata`) and model-version tag written at register: this project's scoring pyfunc.
MODEL_MARKER: Final = "leadscore_model"
MODEL_KIND: Final = "lead-scoring-pyfunc/1"
#: Optional artifact: the training population's bins (pipelines.drift.DriftReference) for nightly drift checks.
REFERENCE_ARTIFACT: Final = "drift_reference"
#: Optional artifacts: the out-of-time procedure's model (fitted before the test weeks), which the promotion gate
#: compares on the test rows, since the production model was refitted on them. Param `variant` selects it.
EVALUATION_ARTIFACTS: Final[dict[str, str]] = {
    "booster": "evaluation_booster",
    "calibrator": "evaluation_calibrator",
    "thresholds": "evaluation_thresholds",
}
VARIANTS: Final[tuple[str, ...]] = ("production", "evaluation")


class ScoringInputError(BadInputError):
    """Features handed to the scoring model do not match what it was trained on."""


@dataclass(frozen=True)
class ScoringSpec:
    """What the model expects and how it explains itself (scoring_spec.json)."""

    feature_list_version: str
    features: tuple[ReasonFeature, ...]
    target_stage: str
    horizon_days: int
    top_reasons: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "features": [asdict(f) for f in self.features]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoringSpec:
        """Inverse of `to_dict`."""
        return cls(
            feature_list_version=data["feature_list_version"],
            features=tuple(ReasonFeature(**f) for f in data["features"]),
            target_stage=data["target_stage"],
            horizon_days=int(data["horizon_days"]),
            top_reasons=int(data["top_reasons"]),
        )

    @property
    def names(self) -> list[str]:
        """Feature column names in the booster's order."""
        return [f.name for f in self.features]


def feature_list_version(feature_list: list[dict[str, Any]]) -> str:
    """A short content hash of the feature list (names, kinds, families): equal lists give equal versions."""
    canonical = json.dumps(feature_list, sort_keys=True, separators=(",", ":"))
    return "fl-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


def build_spec(
    booster: lgb.Booster, feature_list: list[dict[str, Any]], target_stage: str, horizon_days: int, top_reasons_k: int
) -> ScoringSpec:
    """The spec of a booster: its features (in its order) with kind and family from the features stage's list."""
    listed = {f["name"]: f for f in feature_list}
    missing = [n for n in booster.feature_name() if n not in listed]
    if missing:
        raise ScoringInputError(f"booster features {missing[:10]} are not in the feature list (stale features?)")
    features = reason_features([listed[n] for n in booster.feature_name()])
    return ScoringSpec(
        feature_list_version=feature_list_version(feature_list),
        features=tuple(features),
        target_stage=target_stage,
        horizon_days=horizon_days,
        top_reasons=top_reasons_k,
    )


def category_levels(booster: lgb.Booster, spec: ScoringSpec) -> dict[str, list[Any]]:
    """Categorical feature -> the category levels the booster was trained with (kept in the text model)."""
    cats = [f.name for f in spec.features if f.kind == "categorical"]
    levels = booster.pandas_categorical or []
    if len(levels) != len(cats):
        raise ScoringInputError(f"the booster holds {len(levels)} category lists for {len(cats)} categorical features")
    return dict(zip(cats, levels, strict=True))


def model_frame(frame: pd.DataFrame, spec: ScoringSpec, levels: dict[str, list[Any]]) -> pd.DataFrame:
    """The feature columns typed as at training: numeric float64, categorical with the training levels."""
    missing = [n for n in spec.names if n not in frame.columns]
    if missing:
        raise ScoringInputError(f"input lacks feature column(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    out: dict[str, pd.Series | pd.Categorical] = {}
    for f in spec.features:
        col = frame[f.name]
        if f.kind == "categorical":
            values = pd.Series(
                col.astype(object) if isinstance(col.dtype, pd.CategoricalDtype) else col, index=frame.index
            )
            known = levels[f.name]
            # levels unseen in training count as missing (stated explicitly: pandas 4 will refuse them)
            out[f.name] = pd.Categorical(values.where(values.isin(known)), categories=known)
        else:
            try:
                out[f.name] = pd.to_numeric(col, errors="raise").astype("float64")
            except (TypeError, ValueError) as exc:
                raise ScoringInputError(f"feature {f.name!r} must be numeric: {exc}") from None
    return pd.DataFrame(out, index=frame.index)


def score_frame(
    booster: lgb.Booster, calibrator: Calibrator, thresholds: Thresholds, spec: ScoringSpec, frame: pd.DataFrame, k: int
) -> pd.DataFrame:
    """Calibrated probability, predicted stage, grade and the top-k positive and negative reasons of each row."""
    x = model_frame(frame, spec, category_levels(booster, spec))
    raw = np.asarray(booster.predict(x), dtype=float)
    prob = calibrator.apply(raw)
    segments = None
    if thresholds.segment_column and thresholds.segment_column in frame.columns:
        segments = frame[thresholds.segment_column].astype(object)
    out = pd.DataFrame(
        {
            "probability": prob,
            "stage": thresholds.stage_of(prob, segments),
            "grade": thresholds.grade_of(prob, segments),
        },
        index=frame.index,
    )
    if k > 0 and len(x):
        contrib = np.asarray(booster.predict(x, pred_contrib=True), dtype=float)
        positive, negative = top_reasons(contrib, x, spec.features, k)
    else:
        positive, negative = [[] for _ in range(len(x))], [[] for _ in range(len(x))]
    out["reasons_positive"] = positive
    out["reasons_negative"] = negative
    return out.reset_index(drop=True)


class LeadScoringModel(PythonModel):
    """The registered pyfunc: load the artifacts once, then score feature frames (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        """Read booster, calibrator, thresholds and spec from the model's artifacts."""
        paths = context.artifacts
        self.booster = lgb.Booster(model_file=str(paths["booster"]))
        self.calibrator = load_calibrator(Path(paths["calibrator"]))
        self.thresholds = load_thresholds(Path(paths["thresholds"]))
        self.spec = ScoringSpec.from_dict(json.loads(Path(paths["spec"]).read_text()))
        self.evaluation: tuple[lgb.Booster, Calibrator, Thresholds] | None = None
        if all(key in paths for key in EVALUATION_ARTIFACTS.values()):  # absent in models registered before them
            self.evaluation = (
                lgb.Booster(model_file=str(paths[EVALUATION_ARTIFACTS["booster"]])),
                load_calibrator(Path(paths[EVALUATION_ARTIFACTS["calibrator"]])),
                load_thresholds(Path(paths[EVALUATION_ARTIFACTS["thresholds"]])),
            )
        # training-population bins for drift checks (pipelines.drift); absent in models registered before them
        self.reference_path = Path(paths[REFERENCE_ARTIFACT]) if REFERENCE_ARTIFACT in paths else None

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Score the rows: probability, stage, grade, reasons_positive, reasons_negative."""
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        k = int((params or {}).get("top_reasons", self.spec.top_reasons))
        variant = str((params or {}).get("variant", "production"))
        if variant not in VARIANTS:
            raise ScoringInputError(f"param variant must be one of {list(VARIANTS)}, not {variant!r}")
        if variant == "evaluation" and self.evaluation is not None:
            booster, calibrator, thresholds = self.evaluation
            return score_frame(booster, calibrator, thresholds, self.spec, model_input, k)
        return score_frame(self.booster, self.calibrator, self.thresholds, self.spec, model_input, k)


def input_schema(spec: ScoringSpec) -> Any:
    """The model's input schema: numeric features as double, categorical as string, every column required."""
    from mlflow.types import ColSpec, DataType, Schema

    return Schema(
        [
            ColSpec(DataType.string if f.kind == "categorical" else DataType.double, f.name, required=True)
            for f in spec.features
        ]
    )


def conform(frame: pd.DataFrame, schema: Any) -> pd.DataFrame:
    """Feature columns of `frame` typed as a model's input schema wants them (string: object with None for
    missing, e.g. from pandas categoricals; numbers: float64). Keys, labels and any other column are dropped, so
    nothing but features (never personal data) reaches a model, its input example or a serving request."""
    from mlflow.types import DataType

    names = schema.input_names()
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ScoringInputError(f"input lacks feature column(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    out: dict[str, pd.Series | pd.Categorical] = {}
    for spec in schema.inputs:
        col = frame[spec.name]
        if spec.type == DataType.string:
            out[spec.name] = _text_or_none(col)
        else:
            try:
                out[spec.name] = pd.to_numeric(col, errors="raise").astype("float64")
            except (TypeError, ValueError) as exc:
                raise ScoringInputError(f"feature {spec.name!r} must be numeric: {exc}") from None
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def _text_or_none(col: pd.Series) -> pd.Series:
    """Values as text (object), None where missing (what a JSON request holds); a categorical's levels are turned
    into text once, not per row."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        levels = np.array([*(str(c) for c in col.cat.categories), None], dtype=object)
        return pd.Series(levels[col.cat.codes.to_numpy()], index=col.index, dtype=object)  # code -1: the None
    # pandas-stubs leave None out of na_value's types; pandas puts it in for every missing value
    values = col.to_numpy(dtype=object, na_value=None)  # type: ignore[call-overload]
    return pd.Series([v if v is None else str(v) for v in values], index=col.index, dtype=object)


def model_signature(spec: ScoringSpec, example: pd.DataFrame, output: pd.DataFrame) -> Any:
    """Input schema of the features, output schema inferred from a scored example, and the `top_reasons` param."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import DataType, ParamSchema, ParamSpec

    params = ParamSchema(
        [ParamSpec("top_reasons", DataType.long, spec.top_reasons), ParamSpec("variant", DataType.string, "production")]
    )
    return ModelSignature(inputs=input_schema(spec), outputs=infer_signature(example, output).outputs, params=params)
