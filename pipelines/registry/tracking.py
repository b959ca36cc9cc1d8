"""MLflow I/O: log a training run, register its scoring model, and move the champion and challenger aliases.

Entry points (`run_register`, `promote`, `rollback`) take the tracking URI from their caller (the CLI reads
`MLFLOW_TRACKING_URI`, default `sqlite:///mlflow.db` with artifacts under `mlartifacts/` beside the database) and
set it there, never at import. Nothing personal or secret is logged: params with URLs are masked, the input
example holds feature columns only, and the tracking URI appears in logs and outputs masked.

Aliases: every new version gets `challenger`; `champion` moves only through the gate (`pipelines.registry.gate`),
and only for a `clean` registration (`pipelines.registry.lineage.registration_kind`: not `dvc exp run`, no
uncommitted source changes), or by hand with `promote` / `rollback` (`force` overrides a failed gate). The
registered model's tag `champion_history` lists the champion versions in order, so `rollback` knows the previous one.

Artifact locations: MLflow stores an experiment's artifact location as an absolute URI (`create_experiment` resolves
a relative one against the working folder), so a copied or moved project's `mlflow.db` still points at the original
`mlartifacts/`. With the embedded SQLite store, registering, the gate and scoring refuse an experiment or version
whose artifacts lie outside the store's folder (`check_artifact_location`) instead of writing into another project.
"""

from __future__ import annotations

import json
import logging
import os
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

from pipelines.artifacts import (
    BOOSTER_FILE,
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
from pipelines.crm.db import display_url
from pipelines.drift import DriftReference, build_reference, write_reference
from pipelines.errors import BadInputError
from pipelines.modeling import (
    LABEL,
    assign_slices,
    cluster_ids,
    expected_calibration_error,
    production_slices,
    read_features,
    read_json,
    row_weights,
    write_json,
)
from pipelines.registry.card import model_card
from pipelines.registry.gate import GateResult, absolute_gate, compare, first_model
from pipelines.registry.lineage import (
    dvc_experiment,
    git_commit,
    pipeline_outputs,
    read_lock_hashes,
    registration_kind,
)
from pipelines.registry.model import (
    EVALUATION_ARTIFACTS,
    MODEL_KIND,
    MODEL_MARKER,
    REFERENCE_ARTIFACT,
    SPEC_FILE,
    LeadScoringModel,
    ScoringSpec,
    build_spec,
    category_levels,
    conform,
    input_schema,
    model_signature,
    score_frame,
)

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI: Final = "sqlite:///mlflow.db"
ARTIFACTS_DIR: Final = "mlartifacts"
CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
HISTORY_TAG: Final = "champion_history"
#: Version tag: "true"/"false", whether the version cleared the absolute gate at registration (`gate.absolute_gate`).
ABSOLUTE_TAG: Final = "gate.absolute.passed"
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


class RegistryError(BadInputError):
    """A registry action the user asked for cannot be done (unknown version, gate failed, no champion)."""


class GateFailedError(RegistryError):
    """The promotion gate refused the version; `--force` overrides it."""


# ----------------------------------------------------------------------------------------------------------------
# Tracking URI
# ----------------------------------------------------------------------------------------------------------------


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """The explicit URI, else $MLFLOW_TRACKING_URI, else the embedded SQLite store in the working folder."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def mask_uri(uri: str) -> str:
    """The URI with any password masked (fit for logs, tags and output files)."""
    return display_url(uri) if "://" in uri else uri


def _sqlite_file(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///")
    return None if path in ("", ":memory:") else Path(path)


def check_tracking_database(uri: str) -> None:
    """A database tracking store (postgresql://, mysql://, ...) must answer now: MLflow would retry for minutes and
    then fail with a traceback. One connection; DatabaseUnavailableError names the store, password masked."""
    import sqlalchemy as sa

    from pipelines.crm.db import make_engine
    from pipelines.errors import BadInputError

    try:
        backend = sa.make_url(uri).get_backend_name()
    except (sa.exc.ArgumentError, ValueError):
        return  # not a database URL (http://, file:, databricks): MLflow's own business
    if backend not in ("postgresql", "mysql", "mssql", "oracle"):  # MLflow's SQL stores besides SQLite
        return
    try:
        engine = make_engine(uri)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except BadInputError as exc:
        raise type(exc)(f"MLflow tracking store: {exc}") from None


def configure_tracking(uri: str) -> Any:
    """Point MLflow's tracking and registry at `uri` (called by entry points only) and return a client."""
    import mlflow
    from mlflow import MlflowClient

    db = _sqlite_file(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    else:
        check_tracking_database(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _local_path(location: str) -> Path | None:
    """The filesystem path of a local artifact location (a file: URI or a plain path), else None."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(location) if parsed.scheme == "" else None


def check_artifact_location(what: str, location: str, uri: str) -> None:
    """Refuse, for the embedded SQLite store, local artifacts of `what` that lie outside the store's folder.

    That happens when a project (with its mlflow.db) was copied or moved: MLflow keeps the absolute locations of the
    original, so every new run, model and card would be written into the other project's `mlartifacts/`, and even
    loading a version writes there (MLflow adds a `registered_model_meta` file to a local model's folder).
    Remote stores (a server, PostgreSQL) and remote artifact stores (s3:, mlflow-artifacts:) are shared on purpose.
    """
    db = _sqlite_file(uri)
    path = _local_path(location) if db is not None else None
    if db is None or path is None:
        return
    project = db.resolve().parent
    resolved = path.resolve()
    if resolved == project or project in resolved.parents:
        return
    raise RegistryError(
        f"{what} keeps its artifacts in {path}, outside this project ({project}, where {db.name} is): the MLflow "
        "store was copied or moved from another folder, and using it would write into that one (MLflow stores "
        "artifact locations as absolute paths). Start this project's own store (move mlflow.db and mlartifacts/ "
        "aside; the next `leadscore register` creates them here), or point MLFLOW_TRACKING_URI at the original "
        "store on purpose"
    )


def version_location(client: Any, name: str, version: str) -> str:
    """Where a registered version's files are: its logged model's (MLflow 3) or its run's artifact location."""
    source = str(client.get_model_version(name, version).source)
    if source.startswith("models:/"):
        return str(client.get_logged_model(source.removeprefix("models:/").split("/")[0]).artifact_location)
    if source.startswith("runs:/"):
        run_id, _, path = source.removeprefix("runs:/").partition("/")
        return f"{str(client.get_run(run_id).info.artifact_uri).rstrip('/')}/{path}"
    return source


def check_version_location(client: Any, name: str, version: str) -> None:
    """`check_artifact_location` for a registered version, before anything loads it."""
    check_artifact_location(
        f"{name} version {version}", version_location(client, name, version), str(client.tracking_uri)
    )


def ensure_experiment(client: Any, name: str, uri: str) -> str:
    """The experiment's id, creating it if needed; with SQLite its artifacts go to `mlartifacts/` beside the DB
    (an existing experiment whose artifacts lie outside that folder is refused: `check_artifact_location`)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        check_artifact_location(f"MLflow experiment {name!r}", str(found.artifact_location), uri)
        return str(found.experiment_id)
    db = _sqlite_file(uri)
    location = (db.resolve().parent / ARTIFACTS_DIR).as_uri() if db is not None else None
    return str(client.create_experiment(name, artifact_location=location))


# ----------------------------------------------------------------------------------------------------------------
# What a run logs
# ----------------------------------------------------------------------------------------------------------------


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


def _plot_figures(plots_dir: Path) -> dict[str, Any]:
    """PNG versions of the evaluate stage's ROC and reliability tables, for the MLflow UI."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, nothing to close

    figures: dict[str, Any] = {}
    roc = plots_dir / "roc.csv"
    if roc.exists():
        table = pd.read_csv(roc)
        fig = Figure(figsize=(5, 5))
        ax = fig.subplots()
        for col in table.columns.drop("fpr"):
            ax.plot(table["fpr"], table[col], label=col)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test slice")
        ax.legend()
        figures["plots/roc.png"] = fig
    tables = []
    for file, label in (("calibration.csv", "calibrated"), ("calibration_raw.csv", "raw")):
        if (plots_dir / file).exists():
            table = pd.read_csv(plots_dir / file)
            tables += (
                [(str(k), part) for k, part in table.groupby("score")] if "score" in table.columns else [(label, table)]
            )
    if tables:
        fig = Figure(figsize=(5, 5))
        ax = fig.subplots()
        for label, part in tables:
            ax.plot(part["mean_predicted"], part["fraction_positive"], "o-", label=label)
        top = float(max(max(t["mean_predicted"].max(), t["fraction_positive"].max()) for _, t in tables))
        ax.plot([0, top], [0, top], ":", color="grey")
        ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Reliability, test slice")
        ax.legend()
        figures["plots/calibration.png"] = fig
    return figures


def pip_requirements() -> list[str]:
    """The runtime packages at their installed versions."""
    out = []
    for name in RUNTIME_PACKAGES:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Inputs of a registration
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterInputs:
    """Where the upstream stages wrote their artifacts, and the dvc.lock that records their hashes."""

    features_dir: Path
    models_dir: Path
    metrics_dir: Path
    plots_dir: Path
    lock_path: Path = Path("dvc.lock")


def gate_rows(features_dir: Path, models_dir: Path) -> pd.DataFrame:
    """The out-of-time test slice of the current features under the current split (the gate's rows)."""

    frame, _ = read_features(features_dir)
    rows: pd.DataFrame = frame.loc[assign_slices(frame, load_split(models_dir)) == "test"].reset_index(drop=True)
    if rows.empty or not 0 < int(rows[LABEL].sum()) < len(rows):
        raise RegistryError("the test slice is empty or holds one class only: the gate cannot compare models")
    return rows


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


# ----------------------------------------------------------------------------------------------------------------
# Aliases
# ----------------------------------------------------------------------------------------------------------------


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


def training_reference(
    features_dir: Path, models_dir: Path, spec: ScoringSpec, top_features: int, n_bins: int
) -> DriftReference:
    """Bins of the calibrated score and the most important features (by gain) over the latest labelled weeks, the
    rows the production model was calibrated and thresholded on (weighted: the whole open population then)."""

    production = models_dir / PRODUCTION_DIR
    booster = load_booster(production)
    frame, _ = read_features(features_dir)
    slices = production_slices(frame, load_split(models_dir))
    rows = frame.loc[slices == "calibration"].reset_index(drop=True)
    if rows.empty:
        raise RegistryError("the production calibration weeks are empty: no drift reference can be built")
    calibrator = load_calibrator(production / CALIBRATOR_FILE)
    thresholds = load_thresholds(production / THRESHOLDS_FILE)
    score = score_frame(booster, calibrator, thresholds, spec, rows, 0)["probability"].to_numpy(dtype=float)
    gain = booster.feature_importance("gain")
    ranked = [spec.features[i] for i in np.argsort(-gain, kind="stable") if gain[i] > 0][:top_features]
    kinds = {f.name: f.kind for f in ranked}
    levels = {name: [str(v) for v in values] for name, values in category_levels(booster, spec).items()}
    first, last = rows["snapshot_at"].min(), rows["snapshot_at"].max()
    return build_reference(
        rows,
        score,
        kinds,
        n_bins,
        source=f"latest labelled weeks {first:%Y-%m-%d}..{last:%Y-%m-%d}: {len(rows):,} rows",
        levels={k: v for k, v in levels.items() if k in kinds},
        weight=row_weights(rows),
    )


# ----------------------------------------------------------------------------------------------------------------
# The register stage
# ----------------------------------------------------------------------------------------------------------------


def _package_copy(tmp: Path) -> Path:
    """A clean copy of the `pipelines` package (no caches) to ship with the model as its code."""
    import pipelines

    source = Path(pipelines.__file__).parent
    target = tmp / "code" / "pipelines"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def version_absolute_gate(
    models_dir: Path, rows: pd.DataFrame, metrics: Mapping[str, Any], params: Params
) -> GateResult:
    """The absolute gate of the evaluation model (models/booster.txt, the one the test figures measure)."""
    from pipelines.train import is_constant

    booster = load_booster(models_dir)
    return absolute_gate(metrics, booster.num_trees(), is_constant(booster, rows), params.registry.gate)


def log_and_register(
    client: Any, params: Params, inputs: RegisterInputs, uri: str, repo: Path, force: bool = False
) -> dict[str, Any]:
    """Log the training run (params, metrics with CIs, plots, features, lineage, model) and register the model;
    it becomes champion only through both gates (absolute, then against the champion), or with `force`."""
    import mlflow

    reg = params.registry
    production = inputs.models_dir / PRODUCTION_DIR  # what is registered; the evaluation model rides along
    feature_list = read_json(inputs.features_dir / "feature_list.json", "feature list")
    booster = load_booster(production)
    split = load_split(inputs.models_dir).to_dict()
    thresholds = read_json(production / THRESHOLDS_FILE, "thresholds")
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
    window = data_window(split)

    current = alias_version(client, reg.model_name, CHAMPION)
    if current is not None:  # the gate will load it: refuse a copied store before anything is written
        check_version_location(client, reg.model_name, current)
    experiment_id = ensure_experiment(client, reg.experiment, uri)
    with tempfile.TemporaryDirectory() as tmp_name, mlflow.start_run(experiment_id=experiment_id) as run:
        tmp = Path(tmp_name)
        mlflow.set_tags(
            {
                "git.commit": lineage["commit"],
                "git.dirty": lineage["dirty"],
                "registration": kind,
                "registration.reason": why[:4000],
                "feature_list_version": spec.feature_list_version,
                "target_stage": spec.target_stage,
                "horizon_days": str(spec.horizon_days),
                **window,
                **{f"dvc.{path}": digest for path, digest in hashes.items()},
            }
        )
        mlflow.log_params(flatten_params(params))
        mlflow.log_metrics(flatten_metrics(metrics))
        if train_metrics:
            mlflow.log_metrics(flatten_metrics(train_metrics, "train."))
        mlflow.log_dict(feature_list, "features/feature_list.json")
        mlflow.log_dict({"git": lineage, "dvc": hashes, "tracking_uri": mask_uri(uri)}, "lineage.json")
        mlflow.log_dict(split, "split.json")
        mlflow.log_dict(metrics, "metrics/evaluate.json")
        if inputs.plots_dir.exists():
            mlflow.log_artifacts(str(inputs.plots_dir), "plots")
            for path, fig in _plot_figures(inputs.plots_dir).items():
                mlflow.log_figure(fig, path)

        (tmp / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2))
        write_reference(reference, tmp / f"{REFERENCE_ARTIFACT}.json")
        artifacts = {
            "booster": str(production / BOOSTER_FILE),
            "calibrator": str(production / CALIBRATOR_FILE),
            "thresholds": str(production / THRESHOLDS_FILE),
            "spec": str(tmp / SPEC_FILE),
            REFERENCE_ARTIFACT: str(tmp / f"{REFERENCE_ARTIFACT}.json"),
            EVALUATION_ARTIFACTS["booster"]: str(inputs.models_dir / BOOSTER_FILE),
            EVALUATION_ARTIFACTS["calibrator"]: str(inputs.models_dir / CALIBRATOR_FILE),
            EVALUATION_ARTIFACTS["thresholds"]: str(inputs.models_dir / THRESHOLDS_FILE),
        }
        example = conform(rows.head(reg.input_example_rows), input_schema(spec))
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
        version = str(info.registered_model_version)
        run_id = run.info.run_id

    name = reg.model_name
    headline = {
        k: metrics[k]
        for k in ("roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "ece", "pr_auc")
        if isinstance(metrics.get(k), int | float)
    }
    for key, value in {
        **window,
        **{f"metric.{k}": f"{v:.4f}" for k, v in headline.items()},
        "git.commit": lineage["commit"],
        "run_id": run_id,
        "registration": kind,
        "registration.reason": why[:4000],
        "feature_list_version": spec.feature_list_version,
        MODEL_MARKER: MODEL_KIND,
    }.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("registered %s version %s (run %s) as %s", name, version, run_id, CHALLENGER)

    absolute = version_absolute_gate(inputs.models_dir, rows, metrics, params)
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
    registration = {"kind": kind, "reason": why}
    card = model_card(
        name, version, run_id, lineage, spec.to_dict(), split, metrics, thresholds, gate.to_dict(), registration
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


def registry_client(tracking_uri: str | None) -> Any:
    """Client for the hand-run commands (promote, rollback), with the URI resolved and set."""
    uri = resolve_tracking_uri(tracking_uri)
    log.info("MLflow tracking at %s", mask_uri(uri))
    return configure_tracking(uri)
