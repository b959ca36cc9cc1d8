"""The scoring core: one chunk of CRM tables in, one chunk of `lead_scores` rows out.

Features come from `features_as_of`, the very code that built the training rows, at t = the run's as-of time;
the rule score and MQL flag from the rules stage's `evaluate_rules` at the same t; probability, stage, grade and
reasons from the registered model. The pandas engine calls the model in process, the Spark engine through
`mlflow.pyfunc.spark_udf`; everything else is shared.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from pipelines.config import FeaturesParams
from pipelines.drift import DriftReference, read_reference
from pipelines.errors import BadInputError
from pipelines.features.build import feature_specs, features_as_of
from pipelines.registry.model import feature_list_version
from pipelines.rules import RuleSet, evaluate_rules

#: What the model returns per lead (pipelines.registry.model.OUTPUT_COLUMNS).
MODEL_OUTPUT: Final[tuple[str, ...]] = ("probability", "stage", "grade", "reasons_positive", "reasons_negative")
log = logging.getLogger(__name__)

_MODEL_URI: Final = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")



class ModelNotFoundError(BadInputError):
    """The model URI, alias or version does not resolve in the registry."""


class ModelMismatchError(BadInputError):
    """The model's signature does not match the features this configuration builds."""


@dataclass(frozen=True)
class ScoringModel:
    """A loaded model and what the run records about it."""

    uri: str                          # as given (e.g. models:/lead-scoring@champion)
    pinned_uri: str                   # the exact version loaded (models:/lead-scoring/3)
    name: str
    version: str
    pyfunc: Any                       # mlflow.pyfunc.PyFuncModel
    schema: Any                       # its input schema
    reference: DriftReference | None  # training population bins, if the model carries them
    feature_list_version: str | None  # from the model's scoring spec, if it is a LeadScoringModel

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Score conformed feature rows in process (MLflow checks them against the signature first)."""
        return self.pyfunc.predict(features)


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
        raise ModelNotFoundError(f"model '{name}' has no {what} in the registry{known} "
                                 f"({str(exc).splitlines()[0][:200]})") from None
    return name, version, f"models:/{name}/{version}"


def load_scoring_model(model_uri: str, client: Any) -> ScoringModel:
    """Resolve the URI to one version, load it, and read its scoring spec and drift reference if it has them."""
    import mlflow

    name, version, pinned = resolve_model_uri(model_uri, client)
    pyfunc = mlflow.pyfunc.load_model(pinned)
    schema = pyfunc.metadata.get_input_schema()
    if schema is None:
        raise ModelMismatchError(f"{pinned} has no input signature: log models with a signature to score them")
    reference, fl_version = None, None
    try:
        inner = pyfunc.unwrap_python_model()
    except Exception:  # not a Python model (e.g. a plain flavour): signature checks only
        inner = None
    spec = getattr(inner, "spec", None)
    if spec is not None:
        fl_version = spec.feature_list_version
    path = getattr(inner, "reference_path", None)
    if path is not None and Path(path).exists():
        reference = read_reference(Path(path))
    return ScoringModel(uri=model_uri, pinned_uri=pinned, name=name, version=version, pyfunc=pyfunc,
                        schema=schema, reference=reference, feature_list_version=fl_version)


def check_compatible(model: ScoringModel, params: FeaturesParams) -> None:
    """Every feature the model takes must be one this configuration builds (else: retrain, or fix the params)."""
    specs = feature_specs(params)
    built = {s.name: s.kind for s in specs}
    wanted = model.schema.input_names()
    missing = [n for n in wanted if n not in built]
    if missing:
        raise ModelMismatchError(
            f"{model.pinned_uri} expects feature(s) {missing[:10]} that the features params do not build: score "
            "with the features params of the model's training run (logged in MLflow), or retrain")
    if model.feature_list_version is not None:
        ours = feature_list_version([s.to_dict() for s in specs])
        if ours != model.feature_list_version:
            log.warning("%s was trained on feature list %s, these params build %s; the model's own features are all "
                        "built, but check that feature settings did not change since training", model.pinned_uri,
                        model.feature_list_version, ours)


def chunk_features(tables: Mapping[str, pd.DataFrame], as_of: pd.Timestamp, params: FeaturesParams,
                   ruleset: RuleSet) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and rule scores of every lead open at as_of in this chunk (same rows, same order)."""
    features = features_as_of(tables, as_of, params)
    rules = evaluate_rules(ruleset, features[["lead_id", "snapshot_at"]], tables)
    return features, rules


def _json_lists(values: pd.Series) -> list[str]:
    return [json.dumps([str(x) for x in v] if isinstance(v, list | tuple | np.ndarray) else [], ensure_ascii=False)
            for v in values]


def crm_id_of(lead_ids: np.ndarray, crm_ids: pd.Series | None) -> np.ndarray:
    """The CRM's own id of each lead (an imported CRM's `lead_crm_ids`), else the lead id as text."""
    own = pd.Series(np.asarray(lead_ids, dtype=np.int64)).astype(str)
    if crm_ids is None:
        return own.to_numpy(dtype=object)
    found = crm_ids.reindex(np.asarray(lead_ids, dtype=np.int64)).to_numpy(dtype=object, na_value=None)
    return np.where(pd.isna(found), own.to_numpy(dtype=object), found).astype(object)


def score_rows(features: pd.DataFrame, rules: pd.DataFrame, scored: pd.DataFrame, run: Mapping[str, Any],
               crm_ids: pd.Series | None = None) -> pd.DataFrame:
    """`lead_scores` rows: keys (with the CRM's own id), the model's outputs, the rule score and flag, the run."""
    n = len(features)
    if len(scored) != n or len(rules) != n:
        raise ValueError(f"scored {len(scored)} and rule rows {len(rules)} for {n} feature rows")
    stamp = pd.Series(pd.Timestamp(run["as_of"]), index=range(n), dtype="datetime64[ns, UTC]")
    return pd.DataFrame({
        "run_id": pd.Series([run["run_id"]] * n, dtype=object),
        "lead_id": features["lead_id"].to_numpy(dtype=np.int64),
        "as_of": stamp,
        "scored_at": pd.Series(pd.Timestamp(run["scored_at"]), index=range(n), dtype="datetime64[ns, UTC]"),
        "model_name": pd.Series([run["model_name"]] * n, dtype=object),
        "model_version": pd.Series([run["model_version"]] * n, dtype=object),
        "probability": scored["probability"].to_numpy(dtype=float),
        "stage": scored["stage"].astype(object).to_numpy(),
        "grade": scored["grade"].astype(object).to_numpy(),
        "rule_score": rules["rule_score"].to_numpy(dtype=float),
        "rule_mql": rules["rule_mql"].to_numpy(dtype=bool),
        "reasons_positive": _json_lists(scored["reasons_positive"]),
        "reasons_negative": _json_lists(scored["reasons_negative"]),
        "crm_id": crm_id_of(features["lead_id"].to_numpy(dtype=np.int64), crm_ids),
    })
