"""Loading the registered scoring model from MLflow: resolve a `models:/name@alias` or `models:/name/N` URI to
one version, check it is this project's lead-scoring model, load it with its scoring spec and drift reference.

The scoring core (`pipelines.score.core`) stays pure: it receives the loaded `ScoringModel`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Final

from pipelines.drift import read_reference
from pipelines.registry.model import ARTIFACTS, MODEL_KIND, MODEL_MARKER
from pipelines.score.core import ModelMismatchError, ModelNotFoundError, ScoringModel

log = logging.getLogger(__name__)

_MODEL_URI: Final = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def resolve_model_uri(model_uri: str, client: Any) -> tuple[str, str, str]:
    """(name, version, pinned uri) of a `models:/name@alias` or `models:/name/version` URI."""
    from mlflow.exceptions import MlflowException

    match = _MODEL_URI.match(model_uri)
    if not match:
        raise ModelNotFoundError(f"model URI {model_uri!r} is not models:/<name>@<alias> or models:/<name>/<version>")
    name = match["name"]
    try:
        if match["alias"]:
            version = str(client.get_model_version_by_alias(name, match["alias"]).version)
        else:
            version = str(client.get_model_version(name, match["version"]).version)
    except MlflowException as exc:
        what = f"alias '{match['alias']}'" if match["alias"] else f"version {match['version']}"
        known = ""
        try:
            aliases = sorted(client.get_registered_model(name).aliases)
            known = f"; its aliases are {aliases}" if aliases else "; it has no aliases"
        except MlflowException:
            known = f"; no registered model is called '{name}'"
        raise ModelNotFoundError(
            f"model '{name}' has no {what} in the registry{known} ({str(exc).splitlines()[0][:200]})"
        ) from None
    return name, version, f"models:/{name}/{version}"


def check_model_kind(name: str, version: str, pinned: str, client: Any) -> None:
    """Refuse, before anything loads or is written, a version that is not this project's scoring pyfunc.

    Versions registered by `leadscore register` carry a model-version tag and MLmodel metadata marker; versions
    registered before the marker existed are recognised by their pyfunc artifacts (booster, calibrator, ...).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    tags = client.get_model_version(name, version).tags or {}
    if tags.get(MODEL_MARKER) == MODEL_KIND:
        return
    try:
        info = mlflow.models.get_model_info(pinned)
    except (MlflowException, OSError) as exc:
        raise ModelMismatchError(f"{pinned} has no readable MLmodel file: {str(exc).splitlines()[0][:200]}") from None
    metadata = info.metadata or {}
    pyfunc = (info.flavors or {}).get("python_function", {})
    legacy = pyfunc.get("loader_module") == "mlflow.pyfunc.model" and set(ARTIFACTS) <= set(pyfunc.get("artifacts", {}))
    if metadata.get(MODEL_MARKER) != MODEL_KIND and not legacy:
        raise ModelMismatchError(
            f"{pinned} is not a lead-scoring model of this project (flavour(s) {sorted(info.flavors or {})}, no "
            f"'{MODEL_MARKER}' marker): point the alias at a version registered by `leadscore register`"
        )


def load_scoring_model(model_uri: str, client: Any, checked: tuple[str, str, str] | None = None) -> ScoringModel:
    """Resolve the URI to one version (or take `checked`, resolved and kind-checked by `resolve_scoring_model`),
    load it, and read its scoring spec and drift reference."""
    import time

    import mlflow
    from mlflow.exceptions import MlflowException

    from pipelines.registry.server import check_version_location

    name, version, pinned = checked or resolve_scoring_model(model_uri, client)
    check_version_location(client, name, version)  # loading a local model writes into its folder
    started = time.perf_counter()
    pyfunc = mlflow.pyfunc.load_model(pinned)
    log.debug("loaded %s in %.1f s", pinned, time.perf_counter() - started)
    schema = pyfunc.metadata.get_input_schema()
    if schema is None:
        raise ModelMismatchError(f"{pinned} has no input signature: log models with a signature to score them")
    reference, fl_version = None, None
    try:
        inner = pyfunc.unwrap_python_model()
    except MlflowException:  # not a Python model (e.g. a plain flavour)
        inner = None
    # by name: MLflow may re-import the model's own copy of this package (code_paths), a different class object
    if (type(inner).__module__, type(inner).__name__) != ("pipelines.registry.model", "LeadScoringModel"):
        raise ModelMismatchError(
            f"{pinned} loads as {type(inner or pyfunc).__name__}, not this project's "
            "LeadScoringModel: point the alias at a version registered by `leadscore register`"
        )
    spec = getattr(inner, "spec", None)
    if spec is not None:
        fl_version = spec.feature_list_version
    path = getattr(inner, "reference_path", None)
    if path is not None and Path(path).exists():
        reference = read_reference(Path(path))
    return ScoringModel(
        uri=model_uri,
        pinned_uri=pinned,
        name=name,
        version=version,
        pyfunc=pyfunc,
        schema=schema,
        reference=reference,
        feature_list_version=fl_version,
        thresholds=getattr(inner, "thresholds", None),
    )


def resolve_scoring_model(model_uri: str, client: Any) -> tuple[str, str, str]:
    """(name, version, pinned uri) of a version that is this project's scoring model (registry metadata only)."""
    name, version, pinned = resolve_model_uri(model_uri, client)
    check_model_kind(name, version, pinned, client)
    return name, version, pinned
