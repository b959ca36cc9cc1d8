"""Register stage, scoring by name and the champion/challenger aliases, against a temporary SQLite tracking store.

Two tiny models (seeds 0 and 1) are registered once for the module; the strict test gate (max ECE 0.03) refuses the
second, whose test-slice ECE is ~0.07, so it stays challenger. The last test moves the aliases by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, app
from pipelines.config import load_params
from pipelines.registry.model import OUTPUT_COLUMNS, conform
from tests.support.tiny_model import FEATURE_LIST, REPO, register_tiny, tiny_params

NAME = "lead-scoring"
runner = CliRunner()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A SQLite tracking store holding two registered versions (v1 champion, v2 challenger)."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    strict = tiny_params(root)
    first = register_tiny(root, uri, seed=0, params_path=strict)
    second = register_tiny(root, uri, seed=1, params_path=strict)
    yield {"root": root, "uri": uri, "first": first, "second": second, "strict": strict}
    mlflow.set_tracking_uri(None)


@pytest.fixture
def client(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    """The tracking URI set for this test (env and MLflow) and a client on it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    mlflow.set_tracking_uri(registry["uri"])
    yield MlflowClient(tracking_uri=registry["uri"], registry_uri=registry["uri"])
    mlflow.set_tracking_uri(None)


def features(registry: dict[str, Any], rows: int = 20) -> pd.DataFrame:
    return pd.read_parquet(registry["root"] / "run1" / "features" / "snapshots.parquet").head(rows)


def test_first_version_becomes_champion_and_writes_registered_json(
    registry: dict[str, Any], client: MlflowClient
) -> None:
    first = registry["first"]
    written = json.loads((registry["root"] / "run0" / "registered.json").read_text())

    assert first["version"] == "1" and first["aliases"] == ["challenger", "champion"]
    assert written["name"] == NAME and written["run_id"] == first["run_id"] and written["champion"] == "1"
    tags = client.get_model_version(NAME, "1").tags
    assert tags["data_window.test"] == "2026-06-01..2026-06-01"
    assert tags["metric.roc_auc"] == "0.8000" and tags["metric.roc_auc_ci_low"] == "0.7700"
    assert len(tags["git.commit"]) == 40
    assert tags["run_id"] == first["run_id"]


def test_the_run_logs_params_metrics_with_cis_features_lineage_plots_and_the_card(
    registry: dict[str, Any], client: MlflowClient
) -> None:
    run = client.get_run(registry["first"]["run_id"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    artifacts |= {a.path for d in ("plots", "features") for a in client.list_artifacts(run.info.run_id, d)}

    logged = load_params(registry["strict"])
    assert run.data.params["train.learning_rate"] == str(logged.train.learning_rate)
    assert run.data.params["register.model_name"] == NAME and run.data.params["register.gate.max_ece"] == "0.03"
    assert run.data.metrics["roc_auc"] == 0.8 and run.data.metrics["roc_auc_ci_low"] == 0.77
    assert run.data.metrics["stages.SQL.precision_ci_high"] == 0.6
    assert run.data.tags["git.commit"] and run.data.tags["feature_list_version"].startswith("fl-")
    assert {
        "model_card.md",
        "lineage.json",
        "features/feature_list.json",
        "plots/roc.png",
        "plots/roc.csv",
        "plots/calibration.png",
    } <= artifacts
    card = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model_card.md")
    # the tiny model's data is one snapshot date: the card must say its test is not out-of-time
    assert "## Data (leads-only" in card and "NOT an out-of-time test" in card
    assert "[0.7700, 0.8300]" in card and "## Known limits" in card
    assert "match_rules" in card and "within **30 days**" in card


def test_the_champion_scores_by_name_alone(registry: dict[str, Any], client: MlflowClient) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    frame = features(registry)

    scored = model.predict(conform(frame, model.metadata.get_input_schema()))

    assert list(scored.columns) == list(OUTPUT_COLUMNS) and len(scored) == len(frame)
    assert scored["probability"].between(0, 1).all()
    assert set(scored["grade"]) <= {"A", "B", "C", "D"} and set(scored["stage"]) <= {"MQL", "SAL", "SQL", "none"}
    reasons = [r for rs in scored["reasons_positive"] for r in rs] + [
        r for rs in scored["reasons_negative"] for r in rs
    ]
    assert all(isinstance(r, str) and r for r in reasons)
    assert any("pricing page" in r for r in reasons) and any("-level title" in r for r in reasons)
    assert all(len(rs) <= 3 for rs in scored["reasons_positive"])


def test_the_registered_model_is_the_production_refit_and_carries_the_evaluation_model(
    registry: dict[str, Any], client: MlflowClient
) -> None:
    """Production scores come from models/production/ (refitted on newer rows); `variant: evaluation` gives the
    out-of-time model the gate compares, as the production one has seen the test rows."""
    import lightgbm as lgb

    from pipelines.artifacts import load_calibrator

    models = registry["root"] / "run0" / "models"
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    frame = features(registry, 200)
    conformed = conform(frame, model.metadata.get_input_schema())
    names = [f["name"] for f in FEATURE_LIST]

    def calibrated(folder: Path) -> Any:
        raw = lgb.Booster(model_file=str(folder / "booster.txt")).predict(frame[names])
        return load_calibrator(folder / "calibrator.json").apply(raw)

    production = model.predict(conformed, params={"top_reasons": 0})["probability"].to_numpy()
    evaluation = model.predict(conformed, params={"top_reasons": 0, "variant": "evaluation"})["probability"]
    assert production == pytest.approx(calibrated(models / "production"), abs=1e-9)
    assert evaluation.to_numpy() == pytest.approx(calibrated(models), abs=1e-9)
    assert abs(production - evaluation.to_numpy()).max() > 1e-6  # two different models


def test_input_that_breaks_the_signature_is_refused_naming_the_column(
    registry: dict[str, Any], client: MlflowClient
) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    good = conform(features(registry, 3), model.metadata.get_input_schema())

    with pytest.raises(MlflowException, match=r"missing inputs \['icp_region'\]"):
        model.predict(good.drop(columns=["icp_region"]))
    with pytest.raises(MlflowException, match="Incompatible input types for column icp_region"):
        model.predict(good.assign(icp_region="yes"))
    with pytest.raises(MlflowException, match="Incompatible input types for column seniority"):
        model.predict(good.assign(seniority=3.0))


def test_signature_and_input_example_hold_feature_columns_only(registry: dict[str, Any], client: MlflowClient) -> None:
    info = mlflow.models.get_model_info(f"models:/{NAME}@champion")
    local = mlflow.artifacts.download_artifacts(f"models:/{NAME}@champion")
    example = json.loads((Path(local) / "input_example.json").read_text())

    names = {f["name"] for f in FEATURE_LIST}
    assert set(info.signature.inputs.input_names()) == names
    assert set(example["columns"]) == names
    assert {"lead_id", "label", "email", "first_name", "last_name", "phone"}.isdisjoint(example["columns"])
    assert info.signature.params.to_dict()[0]["name"] == "top_reasons"


def test_a_version_that_fails_the_gate_stays_challenger(registry: dict[str, Any], client: MlflowClient) -> None:
    second = registry["second"]

    assert second["version"] == "2" and second["aliases"] == ["challenger"] and second["champion"] == "1"
    assert not second["gate"]["passed"]
    assert any("ECE" in r for r in second["gate"]["reasons"])
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert client.get_model_version(NAME, "2").tags["gate.passed"] == "false"


def test_promote_and_rollback_by_hand_refuse_a_failed_gate_unless_forced(
    registry: dict[str, Any], client: MlflowClient
) -> None:
    run1 = registry["root"] / "run1"
    where = ["--features", str(run1 / "features"), "--models", str(run1 / "models")]
    strict = ["--params", str(registry["strict"])]
    loose = ["--params", str(tiny_params(registry["root"] / "run1", max_ece=0.5, max_ece_increase=0.5, auc_margin=0.2))]

    def champion() -> str:
        return str(client.get_model_version_by_alias(NAME, "champion").version)

    refused = runner.invoke(app, ["promote", "--version", "2", *where, *strict])
    assert refused.exit_code == EXIT_BAD_INPUT, refused.output
    assert "refused by the gate" in refused.output and "--force" in refused.output and champion() == "1"

    forced = runner.invoke(app, ["promote", "--version", "2", "--force", *where, *strict])
    assert forced.exit_code == 0, forced.output
    assert champion() == "2"

    refused = runner.invoke(app, ["rollback", *where, *strict])
    assert refused.exit_code == EXIT_BAD_INPUT and "rollback" in refused.output and champion() == "2"

    back = runner.invoke(app, ["rollback", *where, *loose])
    assert back.exit_code == 0, back.output
    assert "rolled back to version 1" in back.output and champion() == "1"

    passed = runner.invoke(app, ["promote", "--version", "2", *where, *loose])
    assert passed.exit_code == 0 and "gate failed" not in passed.output and champion() == "2"

    unknown = runner.invoke(app, ["promote", "--version", "99", *where, *loose])
    assert unknown.exit_code == EXIT_BAD_INPUT and "no version 99" in unknown.output


def test_params_name_the_model_and_gate() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.registry.model_name == NAME and params.registry.gate.auc_margin >= 0


def test_a_first_version_that_loses_to_a_baseline_is_registered_but_never_champion_unless_forced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    loose = tiny_params(tmp_path, max_ece=0.5, max_ece_increase=0.5, auc_margin=0.2)  # only the absolute gate bites
    losing = {"roc_auc": 0.61, "logreg": {"roc_auc": 0.695}, "rules": {"roc_auc": 0.614}}
    try:
        with caplog.at_level("WARNING", logger="pipelines.registry.tracking"):
            first = register_tiny(tmp_path, uri, seed=0, params_path=loose, metrics=losing)
        assert first["aliases"] == ["challenger"] and first["champion"] is None  # the first version too
        assert not first["gate"]["passed"]
        line = next(r.getMessage() for r in caplog.records if "NOT champion" in r.getMessage())
        assert "does not beat the best baseline (logistic regression, 0.6950)" in line and "--force" in line
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        assert client.get_model_version(NAME, "1").tags["gate.absolute.passed"] == "false"

        forced = register_tiny(tmp_path, uri, seed=1, params_path=loose, metrics=losing, force=True)
        assert forced["champion"] == forced["version"] == "2"
    finally:
        mlflow.set_tracking_uri(None)
