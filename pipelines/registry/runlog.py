"""Log one training run to MLflow and register its scoring model: tags, params, metrics, plots, lineage, the
pyfunc model with its artifacts and code. Nothing personal or secret is logged: params with URLs are masked and the
input example holds feature columns only. Aliases and the gate are `pipelines.registry.aliases`' job.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from pipelines.artifacts import BOOSTER_FILE, CALIBRATOR_FILE, PRODUCTION_DIR, THRESHOLDS_FILE
from pipelines.config import Params
from pipelines.drift import DriftReference, write_reference
from pipelines.registry.model import (
    EVALUATION_ARTIFACTS,
    MODEL_KIND,
    MODEL_MARKER,
    REFERENCE_ARTIFACT,
    SPEC_FILE,
    LeadScoringModel,
    ScoringSpec,
    conform,
    input_schema,
    model_signature,
)
from pipelines.registry.plots import plot_figures
from pipelines.registry.server import mask_uri

log = logging.getLogger(__name__)

MODEL_ARTIFACT: Final = "model"

_METRIC_NAME: Final = re.compile(r"[^A-Za-z0-9_\-. :/]")

#: Distributions the scoring model needs at load time (pinned to the versions it was logged with).
RUNTIME_PACKAGES: Final[tuple[str, ...]] = (
    "mlflow",
    "lightgbm",
    "numpy",
    "pandas",
    "scikit-learn",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "sqlalchemy",
)


def flatten_metrics(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numbers of a nested metrics dict as dotted keys; a 2-list `<name>_ci` becomes `_ci_low`/`_ci_high`."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = _METRIC_NAME.sub("_", f"{prefix}{key}")  # MLflow accepts only these characters in a metric name
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, list | tuple) and key.endswith("_ci") and len(value) == 2:
            out.update(flatten_metrics({f"{key}_low": value[0], f"{key}_high": value[1]}, prefix))
        elif isinstance(value, int | float | np.number) and not isinstance(value, bool) and np.isfinite(value):
            out[name] = float(value)
    return out


def flatten_params(params: Params) -> dict[str, str]:
    """Every param as `block.key` = value, URLs masked (credentials never reach MLflow)."""
    raw = params.model_dump(mode="json", by_alias=True)
    out: dict[str, str] = {}

    def walk(value: Any, name: str) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{name}.{k}" if name else str(k))
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            out[name] = mask_uri(text) if name.endswith("url") else text

    walk(raw, "")
    return out


def data_window(split: Mapping[str, Any]) -> dict[str, str]:
    """Tags of the split: first and last snapshot date of each slice."""
    out = {"data_window.kind": str(split.get("kind"))}
    for name, (first, last) in (split.get("boundaries") or {}).items():
        out[f"data_window.{name}"] = f"{str(first)[:10]}..{str(last)[:10]}"
    return out


def pip_requirements() -> list[str]:
    """The runtime packages at their installed versions."""
    out = []
    for name in RUNTIME_PACKAGES:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def _package_copy(tmp: Path) -> Path:
    """A clean copy of the `pipelines` package (no caches) to ship with the model as its code."""
    import pipelines

    source = Path(pipelines.__file__).parent
    target = tmp / "code" / "pipelines"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


@dataclass(frozen=True)
class RunContent:
    """Everything one training run logs (read by the register stage before the run starts)."""

    params: Params
    spec: ScoringSpec
    feature_list: dict[str, Any]
    split: dict[str, Any]
    metrics: dict[str, Any]
    train_metrics: dict[str, Any]
    lineage: dict[str, str]
    hashes: dict[str, str]
    kind: str
    why: str
    reference: DriftReference
    test_rows: pd.DataFrame  # the gate's rows; the input example is their head
    models_dir: Path
    plots_dir: Path


def log_run(content: RunContent, experiment_id: str, uri: str) -> tuple[str, str]:
    """Log the run (params, metrics with CIs, plots, features, lineage, model) and register the production model
    (models/production/, with the evaluation model riding along); returns (version, run id)."""
    import mlflow

    reg = content.params.registry
    spec = content.spec
    production = content.models_dir / PRODUCTION_DIR
    with tempfile.TemporaryDirectory() as tmp_name, mlflow.start_run(experiment_id=experiment_id) as run:
        tmp = Path(tmp_name)
        mlflow.set_tags(
            {
                "git.commit": content.lineage["commit"],
                "git.dirty": content.lineage["dirty"],
                "registration": content.kind,
                "registration.reason": content.why[:4000],
                "feature_list_version": spec.feature_list_version,
                "target_stage": spec.target_stage,
                "horizon_days": str(spec.horizon_days),
                **data_window(content.split),
                **{f"dvc.{path}": digest for path, digest in content.hashes.items()},
            }
        )
        mlflow.log_params(flatten_params(content.params))
        mlflow.log_metrics(flatten_metrics(content.metrics))
        if content.train_metrics:
            mlflow.log_metrics(flatten_metrics(content.train_metrics, "train."))
        mlflow.log_dict(content.feature_list, "features/feature_list.json")
        mlflow.log_dict({"git": content.lineage, "dvc": content.hashes, "tracking_uri": mask_uri(uri)}, "lineage.json")
        mlflow.log_dict(content.split, "split.json")
        mlflow.log_dict(content.metrics, "metrics/evaluate.json")
        if content.plots_dir.exists():
            mlflow.log_artifacts(str(content.plots_dir), "plots")
            for path, fig in plot_figures(content.plots_dir).items():
                mlflow.log_figure(fig, path)

        (tmp / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2))
        write_reference(content.reference, tmp / f"{REFERENCE_ARTIFACT}.json")
        artifacts = {
            "booster": str(production / BOOSTER_FILE),
            "calibrator": str(production / CALIBRATOR_FILE),
            "thresholds": str(production / THRESHOLDS_FILE),
            "spec": str(tmp / SPEC_FILE),
            REFERENCE_ARTIFACT: str(tmp / f"{REFERENCE_ARTIFACT}.json"),
            EVALUATION_ARTIFACTS["booster"]: str(content.models_dir / BOOSTER_FILE),
            EVALUATION_ARTIFACTS["calibrator"]: str(content.models_dir / CALIBRATOR_FILE),
            EVALUATION_ARTIFACTS["thresholds"]: str(content.models_dir / THRESHOLDS_FILE),
        }
        example = conform(content.test_rows.head(reg.input_example_rows), input_schema(spec))
        scorer = LeadScoringModel()
        scorer.load_context(type("Context", (), {"artifacts": artifacts})())
        signature = model_signature(spec, example, scorer.predict(None, example))
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=LeadScoringModel(),
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            code_paths=[str(_package_copy(tmp))],
            registered_model_name=reg.model_name,
            metadata={MODEL_MARKER: MODEL_KIND},
        )
        return str(info.registered_model_version), str(run.info.run_id)


def tag_version(client: Any, content: RunContent, version: str, run_id: str) -> None:
    """The version's tags: data window, headline metrics, commit, run, registration kind, feature list."""
    headline = {
        k: content.metrics[k]
        for k in ("roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "ece", "pr_auc")
        if isinstance(content.metrics.get(k), int | float)
    }
    for key, value in {
        **data_window(content.split),
        **{f"metric.{k}": f"{v:.4f}" for k, v in headline.items()},
        "git.commit": content.lineage["commit"],
        "run_id": run_id,
        "registration": content.kind,
        "registration.reason": content.why[:4000],
        "feature_list_version": content.spec.feature_list_version,
        MODEL_MARKER: MODEL_KIND,
    }.items():
        client.set_model_version_tag(content.params.registry.model_name, version, key, value)
