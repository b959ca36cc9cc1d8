"""The champion and challenger aliases, moved only through the gate (`pipelines.registry.gate`).

Every new version gets `challenger`; `champion` moves only through both gates (absolute, then against the champion)
and only for a `clean` registration (`pipelines.registry.lineage.registration_kind`: not `dvc exp run`, no
uncommitted source changes), or by hand with `promote` / `rollback` (`force` overrides a failed gate). The
registered model's tag `champion_history` lists the champion versions in order, so `rollback` knows the previous one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from pipelines.artifacts import load_booster
from pipelines.config import Params
from pipelines.errors import BadInputError
from pipelines.modeling import LABEL, cluster_ids, expected_calibration_error, row_weights
from pipelines.registry.gate import GateResult, absolute_gate, compare, first_model
from pipelines.registry.lineage import dvc_experiment
from pipelines.registry.model import conform
from pipelines.registry.server import RegistryError, check_version_location

log = logging.getLogger(__name__)

CHAMPION: Final = "champion"

CHALLENGER: Final = "challenger"

HISTORY_TAG: Final = "champion_history"

#: Version tag: "true"/"false", whether the version cleared the absolute gate at registration (`gate.absolute_gate`).
ABSOLUTE_TAG: Final = "gate.absolute.passed"


class GateFailedError(RegistryError):
    """The promotion gate refused the version; `--force` overrides it."""


def model_probabilities(model_uri: str, rows: pd.DataFrame) -> np.ndarray:
    """Calibrated probabilities of a registered model on feature rows (no reasons: fast)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(model_uri)
    params: dict[str, Any] = {"top_reasons": 0}
    schema = model.metadata.get_params_schema()
    if schema is not None and "variant" in {p.name for p in schema.params}:
        params["variant"] = "evaluation"  # the out-of-time model: the production one was refitted on these rows
    try:
        scored = model.predict(conform(rows, model.metadata.get_input_schema()), params=params)
    except (MlflowException, BadInputError) as exc:
        raise RegistryError(f"{model_uri} cannot score the test rows: {str(exc)[-300:]}") from None
    probability: np.ndarray = scored["probability"].to_numpy(dtype=float)
    return probability


def alias_version(client: Any, name: str, alias: str) -> str | None:
    """The version an alias points to, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def production_run(client: Any, name: str, version: str) -> tuple[bool, str]:
    """Whether scoring `version` now is a production run: it is the version `champion` resolves to (asked at the
    run's start) and the process is not inside `dvc exp run`; and why not, when it is not."""
    experiment = dvc_experiment()
    if experiment is not None:
        return False, f"inside dvc exp run ({experiment})"
    champion = alias_version(client, name, CHAMPION)
    if champion != version:
        return False, f"{name} version {version} is not the champion (champion: {champion or 'none'})"
    return True, f"{name} version {version} is the champion"


def champion_history(client: Any, name: str) -> list[str]:
    """Champion versions in the order they became champion (registered-model tag)."""
    tag = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in tag.split(",") if v]


def gate_against_champion(client: Any, name: str, version: str, rows: pd.DataFrame, params: Params) -> GateResult:
    """The gate for `version` vs the current champion on `rows` (passes at once when there is no champion)."""
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        return first_model()
    if champion == version:
        return GateResult(True, [f"version {version} already is the champion"])
    for compared in (version, champion):
        check_version_location(client, name, compared)
    challenger_p = model_probabilities(f"models:/{name}/{version}", rows)
    lists = {v: client.get_model_version(name, v).tags.get("feature_list_version") for v in (version, champion)}
    if lists[version] != lists[champion]:
        return new_feature_list(rows, challenger_p, version, champion, lists, params)
    champion_p = model_probabilities(f"models:/{name}/{champion}", rows)
    result = compare(
        rows[LABEL].to_numpy(),
        challenger_p,
        champion_p,
        cluster_ids(rows),
        params.registry.gate,
        params.evaluate.ece_bins,
        params.evaluate.ece_strategy,
        params.base.seed,
        row_weights(rows),
    )
    return GateResult(
        result.passed,
        [f"version {version} vs champion {champion}: {r}" for r in result.reasons],
        {**result.figures, "champion_version": champion},
    )


def new_feature_list(
    rows: pd.DataFrame,
    challenger_p: np.ndarray,
    version: str,
    champion: str,
    lists: Mapping[str, str | None],
    params: Params,
) -> GateResult:
    """The champion was trained on another feature list, so it cannot score these rows: no paired comparison is
    possible. The version passes on its own calibration (ECE at most the gate's `max_ece` on the test rows), as the
    first model of a new feature list; otherwise it stays challenger."""
    ece = expected_calibration_error(
        rows[LABEL].to_numpy(), challenger_p, params.evaluate.ece_bins, params.evaluate.ece_strategy, row_weights(rows)
    )
    passed = bool(ece <= params.registry.gate.max_ece)
    reason = (
        f"version {version} has feature list {lists[version]}, champion {champion} has {lists[champion]}: "
        f"the champion cannot score these rows, so no paired comparison; ECE {ece:.4f} "
        f"{'within' if passed else 'above'} the bound {params.registry.gate.max_ece}"
    )
    log.warning("%s", reason)
    return GateResult(
        passed, [reason], {"ece_challenger": ece, "champion_version": champion, "feature_list_changed": True}
    )


def set_champion(client: Any, name: str, version: str, gate: GateResult, history: list[str]) -> None:
    """Point `champion` at the version, record the new history and the gate's verdict on the version."""
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
    client.set_model_version_tag(name, version, "gate.passed", str(gate.passed).lower())
    client.set_model_version_tag(name, version, "gate.reasons", " | ".join(gate.reasons)[:4000])
    log.info("%s version %s is now the champion", name, version)


def _check_version(client: Any, name: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise RegistryError(f"model {name!r} has no version {version}") from None


def promote(client: Any, name: str, version: str, rows: pd.DataFrame, params: Params, force: bool) -> GateResult:
    """Make `version` champion if it passes the gate against the current champion (or `force`)."""
    _check_version(client, name, version)
    tags = client.get_model_version(name, version).tags
    if tags.get("registration", "clean") != "clean":
        log.warning(
            "%s version %s has registration=%s (%s): promoting it by hand",
            name,
            version,
            tags["registration"],
            tags.get("registration.reason", "no reason recorded"),
        )
    gate = gate_against_champion(client, name, version, rows, params)
    if tags.get(ABSOLUTE_TAG) == "false":  # recorded at registration (the figures are the version's own)
        reasons = tags.get(f"{ABSOLUTE_TAG}.reasons", "absolute gate failed").split(" | ")
        gate = GateResult(False, [*reasons, *gate.reasons], gate.figures)
    if not gate.passed and not force:
        raise GateFailedError(
            f"promotion of {name} version {version} refused by the gate: "
            + "; ".join(gate.reasons)
            + " (use --force to override)"
        )
    history = champion_history(client, name)
    if alias_version(client, name, CHAMPION) != version:
        set_champion(client, name, version, gate, [*history, version])
    return gate


def rollback(
    client: Any, name: str, version: str | None, rows: pd.DataFrame, params: Params, force: bool
) -> tuple[str, GateResult]:
    """Return `champion` to the previous champion (or `version`), through the same gate unless `force`."""
    history = champion_history(client, name)
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"model {name!r} has no champion to roll back")
    if version is None:
        earlier = [v for v in history[: history.index(current)] if v != current] if current in history else []
        if not earlier:
            raise RegistryError(f"{name}: no earlier champion than version {current} to roll back to")
        version = earlier[-1]
    _check_version(client, name, version)
    gate = gate_against_champion(client, name, version, rows, params)
    if not gate.passed and not force:
        raise GateFailedError(
            f"rollback of {name} to version {version} refused by the gate: "
            + "; ".join(gate.reasons)
            + " (use --force to override)"
        )
    if current in history:
        history = history[: history.index(current)]
    if not history or history[-1] != version:
        history.append(version)
    set_champion(client, name, version, gate, history)
    return version, gate


def version_absolute_gate(
    models_dir: Path, rows: pd.DataFrame, metrics: Mapping[str, Any], params: Params
) -> GateResult:
    """The absolute gate of the evaluation model (models/booster.txt, the one the test figures measure)."""
    from pipelines.train import is_constant

    booster = load_booster(models_dir)
    return absolute_gate(metrics, booster.num_trees(), is_constant(booster, rows), params.registry.gate)


def set_challenger(client: Any, name: str, version: str, run_id: str) -> None:
    """Every newly registered version becomes `challenger`."""
    client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("registered %s version %s (run %s) as %s", name, version, run_id, CHALLENGER)


def decide_champion(
    client: Any,
    name: str,
    version: str,
    registration: tuple[str, str],
    rows: pd.DataFrame,
    metrics: Mapping[str, Any],
    models_dir: Path,
    params: Params,
    force: bool,
) -> GateResult:
    """Run both gates on a newly registered version (absolute, then against the champion), record their verdicts
    on it, and make it champion when they pass on a clean registration, or with `force`."""
    kind, why = registration
    absolute = version_absolute_gate(models_dir, rows, metrics, params)
    client.set_model_version_tag(name, version, ABSOLUTE_TAG, str(absolute.passed).lower())
    client.set_model_version_tag(
        name, version, f"{ABSOLUTE_TAG[: -len('.passed')]}.reasons", " | ".join(absolute.reasons)[:4000]
    )
    relative = gate_against_champion(client, name, version, rows, params)
    gate = GateResult(
        absolute.passed and relative.passed,
        [*absolute.reasons, *relative.reasons],
        {**relative.figures, "absolute": absolute.figures},
    )
    client.set_model_version_tag(name, version, "gate.passed", str(gate.passed).lower())
    client.set_model_version_tag(name, version, "gate.reasons", " | ".join(gate.reasons)[:4000])
    if kind != "clean":
        log.warning(
            "%s version %s stays challenger, champion unchanged (version %s): %s; the gate %s; "
            "`leadscore promote --version %s` makes it champion deliberately",
            name,
            version,
            alias_version(client, name, CHAMPION) or "none",
            why,
            "passed" if gate.passed else "failed: " + "; ".join(gate.reasons),
            version,
        )
    elif gate.passed:
        set_champion(client, name, version, gate, [*champion_history(client, name), version])
    elif force:
        log.warning("%s version %s made champion by --force although: %s", name, version, "; ".join(gate.reasons))
        set_champion(client, name, version, gate, [*champion_history(client, name), version])
    elif not absolute.passed:
        log.warning(
            "%s version %s registered as challenger, NOT champion (champion: %s): %s; `leadscore register --force` "
            "or `leadscore promote --force` overrides",
            name,
            version,
            alias_version(client, name, CHAMPION) or "none",
            "; ".join(r.removeprefix("absolute gate failed: ") for r in absolute.reasons),
        )
    else:
        log.warning("%s version %s stays challenger: %s", name, version, "; ".join(gate.reasons))
    return gate
