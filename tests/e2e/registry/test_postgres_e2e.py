"""The registry against a real `mlflow server` on loopback whose backend store is the local PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.registry.model import conform
from tests.support.servers import BIN, free_port, running
from tests.support.tiny_model import register_tiny, tiny_params


@pytest.fixture
def throwaway_pg_database(pg_url: str) -> Iterator[str]:
    """URL of a fresh PostgreSQL database for MLflow's tables, dropped (with its connections) afterwards."""
    name = f"mlflow_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_register_promote_and_score_through_an_mlflow_server_on_postgres(
    throwaway_pg_database: str, tmp_path: Path
) -> None:
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    args = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        throwaway_pg_database,
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    params = tiny_params(tmp_path)

    with running(args, f"{server}/health", tmp_path / "server.log", {}, timeout=240):
        first = register_tiny(tmp_path, server, seed=0, params_path=params)
        second = register_tiny(tmp_path, server, seed=1, params_path=params)
        mlflow.set_tracking_uri(server)
        try:
            model = mlflow.pyfunc.load_model("models:/lead-scoring@champion")
            frame = pd.read_parquet(tmp_path / "run0" / "features" / "snapshots.parquet").head(5)
            scored = model.predict(conform(frame, model.metadata.get_input_schema()))
            client = mlflow.MlflowClient(server, server)
            aliases = {
                a: str(client.get_model_version_by_alias("lead-scoring", a).version) for a in ("champion", "challenger")
            }
            card = mlflow.artifacts.load_text(f"runs:/{second['run_id']}/model_card.md")
        finally:
            mlflow.set_tracking_uri(None)

    assert first["aliases"] == ["challenger", "champion"] and first["tracking_uri"] == server
    assert second["version"] == "2" and "challenger" in second["aliases"]
    assert aliases == {"champion": "1", "challenger": "2"}  # the strict gate (max ECE 0.03) refuses version 2
    assert "version 2" in card and "## Known limits" in card
    assert len(scored) == 5 and scored["probability"].between(0, 1).all()
