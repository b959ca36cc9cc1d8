"""Registrations from `dvc exp run` or from a dirty tree stay challenger, and a copied project never writes into the
original's MLflow artifacts.

The same tiny model (seed 0) is registered again and again under a loose gate, so the gate always passes: whether
`champion` moves depends on the registration kind alone.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, app
from pipelines.registry.server import RegistryError
from tests.support.tiny_model import clean_project, register_tiny, tiny_params

NAME = "lead-scoring"
LOOSE = {"auc_margin": 0.2, "max_ece": 0.5, "max_ece_increase": 0.5, "baseline_auc_margin": 0.0, "min_rounds": 2}
runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A tracking store with version 1 registered from a clean tree (the champion), outside any experiment."""
    for key in ("DVC_EXP_BASELINE_REV", "DVC_EXP_NAME"):
        monkeypatch.delenv(key, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = tiny_params(tmp_path, **LOOSE)
    first = register_tiny(tmp_path, uri, seed=0, params_path=params)
    assert first["champion"] == "1" and first["registration"] == "clean"
    yield {"root": tmp_path, "uri": uri, "params": params, "client": MlflowClient(uri, uri)}
    mlflow.set_tracking_uri(None)


def champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, "champion").version)


def test_a_registration_inside_dvc_exp_run_stays_challenger_even_when_the_gate_passes(
    store: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "f5a7a257db3bf7c19049f91b98d8b789dd9a901d")
    monkeypatch.setenv("DVC_EXP_NAME", "shock-kind")
    caplog.set_level("WARNING", logger="pipelines.registry.tracking")

    second = register_tiny(store["root"], store["uri"], seed=0, params_path=store["params"])

    client = store["client"]
    assert second["version"] == "2" and second["gate"]["passed"]
    assert second["aliases"] == ["challenger"] and second["champion"] == "1" == champion(client)
    assert second["registration"] == "experiment" and "shock-kind" in second["registration_reason"]
    written = json.loads((store["root"] / "run0" / "registered.json").read_text())
    assert written["registration"] == "experiment" and written["champion"] == "1"
    tags = client.get_model_version(NAME, "2").tags
    assert tags["registration"] == "experiment" and "shock-kind" in tags["registration.reason"]
    assert client.get_run(second["run_id"]).data.tags["registration"] == "experiment"
    card = (store["root"] / "run0" / "model_card.md").read_text()
    assert "Registration: **experiment**" in card and "leadscore promote" in card
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("pipelines.registry")]
    assert len(warnings) == 1 and "stays challenger" in warnings[0].getMessage()
    assert "promote --version 2" in warnings[0].getMessage()


def test_a_registration_from_uncommitted_source_changes_stays_challenger(store: dict[str, Any]) -> None:
    project = clean_project(store["root"])
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("learning_rate:", "learning_rate: 0.01 #", 1))

    second = register_tiny(store["root"], store["uri"], seed=0, params_path=store["params"])

    assert second["registration"] == "dirty" and "params.yaml" in second["registration_reason"]
    assert second["aliases"] == ["challenger"] and champion(store["client"]) == "1"
    assert store["client"].get_model_version(NAME, "2").tags["registration"] == "dirty"


def test_what_dvc_repro_writes_keeps_the_registration_clean_and_the_gate_decides(store: dict[str, Any]) -> None:
    project = clean_project(store["root"])
    (project / "dvc.lock").write_text((project / "dvc.lock").read_text() + "\n# rewritten by dvc repro\n")

    second = register_tiny(store["root"], store["uri"], seed=0, params_path=store["params"])

    assert second["registration"] == "clean" and second["gate"]["passed"]
    assert second["champion"] == "2" == champion(store["client"])


def test_promote_is_the_deliberate_way_to_make_an_experiment_champion(
    store: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "shock-kind")
    register_tiny(store["root"], store["uri"], seed=0, params_path=store["params"])
    monkeypatch.delenv("DVC_EXP_NAME")
    run0 = store["root"] / "run0"
    caplog.set_level("WARNING", logger="pipelines.registry.tracking")

    result = runner.invoke(
        app,
        [
            "promote",
            "--version",
            "2",
            "--features",
            str(run0 / "features"),
            "--models",
            str(run0 / "models"),
            "--params",
            str(store["params"]),
        ],
    )

    assert result.exit_code == 0, result.output
    assert champion(store["client"]) == "2"
    assert "version 2 has registration=experiment (registered from dvc exp run (shock-kind))" in caplog.text


# ----------------------------------------------------------------------------------------------------------------
# A copied project
# ----------------------------------------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def test_a_copied_project_never_writes_into_the_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("DVC_EXP_BASELINE_REV", "DVC_EXP_NAME"):
        monkeypatch.delenv(key, raising=False)
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    register_tiny(original, f"sqlite:///{original / 'mlflow.db'}", seed=0, params_path=tiny_params(original))
    assert (original / "mlartifacts").is_dir()
    copy.mkdir()
    shutil.copy(original / "mlflow.db", copy / "mlflow.db")
    shutil.copytree(original / "mlartifacts", copy / "mlartifacts")
    before, copied = _snapshot(original), _snapshot(copy / "mlartifacts")
    uri = f"sqlite:///{copy / 'mlflow.db'}"

    with pytest.raises(RegistryError) as refused:
        register_tiny(copy, uri, seed=1, params_path=tiny_params(copy))
    message = str(refused.value)
    assert str(original / "mlartifacts") in message and "outside this project" in message
    assert "MLFLOW_TRACKING_URI" in message

    # a new experiment name is not a way out: the gate would load version 1 from the original's artifacts; the
    # refusal comes before anything is logged
    raw = yaml.safe_load((copy / "params.yaml").read_text())
    raw["register"]["experiment"] = "lead-scoring-copy"
    (copy / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(RegistryError, match=r"lead-scoring version 1 keeps its artifacts in .*outside this project"):
        register_tiny(copy, uri, seed=1, params_path=copy / "params.yaml")
    assert MlflowClient(uri, uri).get_experiment_by_name("lead-scoring-copy") is None
    # nor is scoring with it (MLflow writes a registered_model_meta file into a local model's folder on load)
    from pipelines.score.model import load_scoring_model

    with pytest.raises(RegistryError, match="outside this project"):
        load_scoring_model("models:/lead-scoring@champion", MlflowClient(uri, uri))

    assert _snapshot(original) == before  # nothing written under the original folder
    assert _snapshot(copy / "mlartifacts") == copied
    assert [str(v.version) for v in MlflowClient(uri, uri).search_model_versions(f"name = '{NAME}'")] == ["1"]
    mlflow.set_tracking_uri(None)


def test_the_cli_refuses_a_copied_store_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    register_tiny(original, f"sqlite:///{original / 'mlflow.db'}", seed=0, params_path=tiny_params(original))
    copy.mkdir()
    shutil.copy(original / "mlflow.db", copy / "mlflow.db")
    run0 = original / "run0"
    monkeypatch.chdir(copy)  # the default store: sqlite:///mlflow.db in the working folder
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = _snapshot(original)

    result = runner.invoke(
        app,
        [
            "register",
            "--features",
            str(run0 / "features"),
            "--models",
            str(run0 / "models"),
            "--metrics",
            str(run0 / "metrics"),
            "--plots",
            str(run0 / "plots"),
            "--out",
            str(copy / "registered.json"),
            "--params",
            str(original / "params.yaml"),
            "--lock",
            str(original / "project" / "dvc.lock"),
        ],
    )

    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "outside this project" in result.output and "Traceback" not in result.output
    assert _snapshot(original) == before and not (copy / "registered.json").exists()
    assert os.listdir(copy) == ["mlflow.db"]
    mlflow.set_tracking_uri(None)
