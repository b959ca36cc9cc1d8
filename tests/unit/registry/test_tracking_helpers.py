"""Small pure helpers of the tracking module: URI resolution and masking, metric flattening, data window tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.registry.runlog import data_window, flatten_metrics
from pipelines.registry.server import DEFAULT_TRACKING_URI, mask_uri, resolve_tracking_uri


def test_the_tracking_uri_comes_from_the_argument_then_the_environment_then_the_embedded_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///other.db") == "sqlite:///other.db"


def test_passwords_in_uris_are_masked() -> None:
    masked = mask_uri("postgresql+psycopg://mlflow:s3cret@db.internal:5432/mlflow")

    assert "s3cret" not in masked and "db.internal" in masked
    assert mask_uri("databricks") == "databricks"


def test_metrics_flatten_to_dotted_keys_with_ci_bounds_and_skip_non_numbers() -> None:
    flat = flatten_metrics(
        {
            "roc_auc": 0.9,
            "roc_auc_ci_low": 0.88,
            "stages": {"SQL": {"precision": 0.5, "precision_ci": [0.4, 0.6], "policy": "precision"}},
            "ok": True,
            "nan": float("nan"),
            "missing": None,
        }
    )

    assert flat == {
        "roc_auc": 0.9,
        "roc_auc_ci_low": 0.88,
        "stages.SQL.precision": 0.5,
        "stages.SQL.precision_ci_low": 0.4,
        "stages.SQL.precision_ci_high": 0.6,
    }


def test_data_window_tags_name_each_slice() -> None:
    tags = data_window(
        {
            "kind": "time",
            "boundaries": {
                "fit": ["2024-11-25T00:00:00+00:00", "2025-10-27T00:00:00"],
                "test": ["2026-06-22", "2026-10-12"],
            },
        }
    )

    assert tags == {
        "data_window.kind": "time",
        "data_window.fit": "2024-11-25..2025-10-27",
        "data_window.test": "2026-06-22..2026-10-12",
    }


def test_a_new_feature_list_passes_on_its_own_calibration_since_the_champion_cannot_score_it() -> None:
    import numpy as np
    import pandas as pd

    from pipelines.config import load_params
    from pipelines.registry.aliases import new_feature_list

    params = load_params(Path(__file__).resolve().parents[3] / "params.yaml")
    rng = np.random.default_rng(0)
    p = rng.beta(1, 30, 20_000)
    rows = pd.DataFrame({"label": (rng.random(len(p)) < p).astype(int), "lead_id": np.arange(len(p))})
    lists = {"2": "fl-new", "1": "fl-old"}

    calibrated = new_feature_list(rows, p, "2", "1", lists, params)
    overconfident = new_feature_list(rows, np.clip(p * 4, 0, 1), "2", "1", lists, params)

    assert calibrated.passed and "no paired comparison" in calibrated.reasons[0]
    assert not overconfident.passed and "above the bound" in overconfident.reasons[0]
    assert calibrated.figures["feature_list_changed"] is True
