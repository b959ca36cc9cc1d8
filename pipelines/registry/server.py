"""Where the MLflow tracking server and its artifacts are: the tracking URI (argument, then
`MLFLOW_TRACKING_URI`, then `sqlite:///mlflow.db` with artifacts under `mlartifacts/` beside the database), the
client, experiments, and the checks that a store's artifact locations lie inside it.

The URI is set by the entry points, never at import, and appears in logs and outputs masked. MLflow stores an
experiment's artifact location as an absolute URI, so a copied or moved project's `mlflow.db` still points at the
original `mlartifacts/`: with the embedded SQLite store, registering, the gate and scoring refuse an experiment or
version whose artifacts lie outside the store's folder (`check_artifact_location`) instead of writing into another
project.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Final

from pipelines.crm.db import display_url
from pipelines.errors import BadInputError

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI: Final = "sqlite:///mlflow.db"

ARTIFACTS_DIR: Final = "mlartifacts"


class RegistryError(BadInputError):
    """A registry action the user asked for cannot be done (unknown version, gate failed, no champion)."""


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


def registry_client(tracking_uri: str | None) -> Any:
    """Client for the hand-run commands (promote, rollback), with the URI resolved and set."""
    uri = resolve_tracking_uri(tracking_uri)
    log.info("MLflow tracking at %s", mask_uri(uri))
    return configure_tracking(uri)
