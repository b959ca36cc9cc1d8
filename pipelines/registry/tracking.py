"""The register stage, composed: read what the upstream stages wrote, log the run and register the model
(`runlog`), give it `challenger` and let the gates decide `champion` (`aliases`), render the model card (`card`).

The tracking URI comes from the caller (`server.resolve_tracking_uri`) and is set here, never at import.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines.artifacts import (
    CALIBRATOR_FILE,
    PRODUCTION_DIR,
    THRESHOLDS_FILE,
    load_booster,
    load_calibrator,
    load_split,
    load_thresholds,
)
from pipelines.atomic import atomic_path
from pipelines.config import Params
from pipelines.modeling import read_json, write_json
from pipelines.registry.aliases import CHAMPION, alias_version, decide_champion, set_challenger
from pipelines.registry.card import model_card
from pipelines.registry.inputs import RegisterInputs, gate_rows, training_reference
from pipelines.registry.lineage import dvc_experiment, git_commit, pipeline_outputs, read_lock_hashes, registration_kind
from pipelines.registry.model import build_spec
from pipelines.registry.runlog import RunContent, log_run, tag_version
from pipelines.registry.server import (
    check_version_location,
    configure_tracking,
    ensure_experiment,
    mask_uri,
    resolve_tracking_uri,
)

log = logging.getLogger(__name__)


def read_run_content(params: Params, inputs: RegisterInputs, repo: Path) -> RunContent:
    """Everything the run logs, read (and checked) before anything is written to MLflow."""
    reg = params.registry
    production = inputs.models_dir / PRODUCTION_DIR  # what is registered; the evaluation model rides along
    feature_list = read_json(inputs.features_dir / "feature_list.json", "feature list")
    booster = load_booster(production)
    split = load_split(inputs.models_dir).to_dict()
    for folder in (production, inputs.models_dir):  # fail early, with the calibrate stage's message
        load_calibrator(folder / CALIBRATOR_FILE)
        load_thresholds(folder / THRESHOLDS_FILE)
    metrics = read_json(inputs.metrics_dir / "evaluate.json", "test metrics")
    train_path = inputs.metrics_dir / "train.json"
    train_metrics = read_json(train_path, "train metrics") if train_path.exists() else {}
    spec = build_spec(
        booster, feature_list, params.features.target_stage, params.features.horizon_days, reg.top_reasons
    )
    rows = gate_rows(inputs.features_dir, inputs.models_dir)
    reference = training_reference(
        inputs.features_dir, inputs.models_dir, spec, params.score.drift_features, params.score.drift_bins
    )
    lineage = git_commit(repo, ignore=pipeline_outputs(repo, inputs.lock_path))
    kind, why = registration_kind(lineage, dvc_experiment())
    hashes = read_lock_hashes(inputs.lock_path, skip_stage="register")  # every other stage is upstream
    return RunContent(
        params,
        spec,
        feature_list,
        split,
        metrics,
        train_metrics,
        lineage,
        hashes,
        kind,
        why,
        reference,
        rows,
        inputs.models_dir,
        inputs.plots_dir,
    )


def log_and_register(
    client: Any, params: Params, inputs: RegisterInputs, uri: str, repo: Path, force: bool = False
) -> dict[str, Any]:
    """Log the training run and register the model; it becomes champion only through both gates (absolute, then
    against the champion), or with `force`."""
    name = params.registry.model_name
    content = read_run_content(params, inputs, repo)
    thresholds = read_json(inputs.models_dir / PRODUCTION_DIR / THRESHOLDS_FILE, "thresholds")
    current = alias_version(client, name, CHAMPION)
    if current is not None:  # the gate will load it: refuse a copied store before anything is written
        check_version_location(client, name, current)
    experiment_id = ensure_experiment(client, params.registry.experiment, uri)
    version, run_id = log_run(content, experiment_id, uri)
    tag_version(client, content, version, run_id)
    set_challenger(client, name, version, run_id)
    gate = decide_champion(
        client,
        name,
        version,
        (content.kind, content.why),
        content.test_rows,
        content.metrics,
        inputs.models_dir,
        params,
        force,
    )
    registration = {"kind": content.kind, "reason": content.why}
    card = model_card(
        name,
        version,
        run_id,
        content.lineage,
        content.spec.to_dict(),
        content.split,
        content.metrics,
        thresholds,
        gate.to_dict(),
        registration,
    )
    client.log_text(run_id, card, "model_card.md")
    return {
        "name": name,
        "version": version,
        "run_id": run_id,
        "card": card,
        "gate": gate.to_dict(),
        "registration": registration,
    }


def run_register(
    params: Params,
    inputs: RegisterInputs,
    out_json: Path,
    card_path: Path | None,
    tracking_uri: str | None = None,
    repo: Path = Path("."),
    force: bool = False,
) -> dict[str, Any]:
    """Entry point of the register stage: log, register, gate; write the small registered.json (and the card).
    The version is registered whatever the gates say; `force` makes it champion even when they fail."""
    uri = resolve_tracking_uri(tracking_uri)
    client = configure_tracking(uri)
    log.info("MLflow tracking at %s", mask_uri(uri))
    result = log_and_register(client, params, inputs, uri, repo, force)
    name, version = result["name"], result["version"]
    aliases = sorted(client.get_model_version(name, version).aliases)
    summary = {
        "name": name,
        "version": version,
        "aliases": aliases,
        "run_id": result["run_id"],
        "model_uri": f"models:/{name}/{version}",
        "champion": alias_version(client, name, CHAMPION),
        "gate": result["gate"],
        "registration": result["registration"]["kind"],
        "registration_reason": result["registration"]["reason"],
        "tracking_uri": mask_uri(uri),
    }
    write_json(out_json, summary)
    if card_path is not None:
        with atomic_path(card_path) as tmp:
            tmp.write_text(result["card"])
    return summary
