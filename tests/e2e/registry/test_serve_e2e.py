"""Real-time use of the registered champion: `mlflow models serve` on loopback answers one lead's features."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from pipelines.registry.model import OUTPUT_COLUMNS, conform
from tests.support.servers import BIN, free_port, running
from tests.support.tiny_model import register_tiny, tiny_params


def invocation(port: int, rows: pd.DataFrame) -> urllib.request.Request:
    """A POST /invocations request with the rows in pandas split orientation."""
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
    return urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
    )


@pytest.mark.slow
def test_models_serve_scores_one_lead_by_alias(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_tiny(tmp_path, uri, seed=0, params_path=tiny_params(tmp_path))
    mlflow.set_tracking_uri(uri)
    try:
        schema = mlflow.models.get_model_info("models:/lead-scoring@champion").signature.inputs
    finally:
        mlflow.set_tracking_uri(None)
    lead = conform(pd.read_parquet(tmp_path / "run0" / "features" / "snapshots.parquet").head(1), schema)
    port = free_port()
    args = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/lead-scoring@champion",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]

    with running(
        args, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", {"MLFLOW_TRACKING_URI": uri}, timeout=180
    ):
        with urllib.request.urlopen(invocation(port, lead), timeout=60) as response:
            answer = json.loads(response.read())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(invocation(port, lead.drop(columns=["icp_region"])), timeout=60)

    (prediction,) = answer["predictions"]
    assert set(prediction) == set(OUTPUT_COLUMNS)
    assert 0 <= prediction["probability"] <= 1 and prediction["grade"] in {"A", "B", "C", "D"}
    assert all(isinstance(r, str) for r in prediction["reasons_positive"] + prediction["reasons_negative"])
    assert refused.value.code == 400 and "icp_region" in refused.value.read().decode()
