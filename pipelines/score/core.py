"""The scoring core: one chunk of CRM tables in, one chunk of `lead_scores` rows out.

Features come from `build_features`, the very code that built the training rows, at t = the run's as-of time
(and, in the same build, at the previous snapshot's time, for what is new on each list); the rule score and MQL
flag from the rules stage's scoring code (`rule_flags`) at the same times; probability, stage, grade and reasons
from the registered model. The pandas engine calls these functions chunk by chunk in process; the Spark
engine calls the same ones on its executors, one whole-account group at a time (pipelines.score.groups).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from pipelines.calibrated import THRESHOLD_STAGES, Thresholds
from pipelines.config import CalibrateParams, FeaturesParams, StagePolicy
from pipelines.drift import DriftReference
from pipelines.errors import BadInputError
from pipelines.features.build import build_features, feature_specs
from pipelines.features.snapshots import open_leads_at
from pipelines.registry.model import conform, feature_list_version
from pipelines.rules import RuleSet, rule_flags

#: What the model returns per lead (pipelines.registry.model.OUTPUT_COLUMNS).
MODEL_OUTPUT: Final[tuple[str, ...]] = ("probability", "stage", "grade", "reasons_positive", "reasons_negative")
log = logging.getLogger(__name__)


class ModelNotFoundError(BadInputError):
    """The model URI, alias or version does not resolve in the registry."""


class ModelMismatchError(BadInputError):
    """The model's signature does not match the features this configuration builds."""


@dataclass(frozen=True)
class ScoringModel:
    """A loaded model and what the run records about it."""

    uri: str  # as given (e.g. models:/lead-scoring@champion)
    pinned_uri: str  # the exact version loaded (models:/lead-scoring/3)
    name: str
    version: str
    pyfunc: Any  # mlflow.pyfunc.PyFuncModel
    schema: Any  # its input schema
    reference: DriftReference | None  # training population bins, if the model carries them
    feature_list_version: str | None  # from the model's scoring spec, if it is a LeadScoringModel
    thresholds: Thresholds | None = None  # its thresholds.json (policies and volume), if it is a LeadScoringModel

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Score conformed feature rows in process (MLflow checks them against the signature first)."""
        scored: pd.DataFrame = self.pyfunc.predict(features)
        return scored


def check_compatible(model: ScoringModel, params: FeaturesParams) -> None:
    """Every feature the model takes must be one this configuration builds (else: retrain, or fix the params)."""
    specs = feature_specs(params)
    built = {s.name: s.kind for s in specs}
    wanted = model.schema.input_names()
    missing = [n for n in wanted if n not in built]
    if missing:
        raise ModelMismatchError(
            f"{model.pinned_uri} expects feature(s) {missing[:10]} that the features params do not build: score "
            "with the features params of the model's training run (logged in MLflow), or retrain"
        )
    if model.feature_list_version is not None:
        ours = feature_list_version([s.to_dict() for s in specs])
        if ours != model.feature_list_version:
            log.warning(
                "%s was trained on feature list %s, these params build %s; the model's own features are all "
                "built, but check that feature settings did not change since training",
                model.pinned_uri,
                model.feature_list_version,
                ours,
            )


def chunk_features(
    tables: Mapping[str, pd.DataFrame], as_of: pd.Timestamp, params: FeaturesParams, ruleset: RuleSet
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and rule scores of every lead open at as_of in this chunk (same rows, same order)."""
    return snapshot_features(tables, [as_of], params, ruleset)[0]


def snapshot_features(
    tables: Mapping[str, pd.DataFrame],
    times: Sequence[pd.Timestamp],
    params: FeaturesParams,
    ruleset: RuleSet,
    leads_of_first: bool = False,
) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Per time: (features, rule score and flag) of every lead of the chunk open then, through one feature build
    and one rules pass over all the times (the features of a (lead, t) row do not depend on the other rows asked
    with it, so this is the same as one build per time, with the chunk's preparation done once).

    `leads_of_first`: at the later times, only the leads also open at the first one (what is new on tonight's
    lists needs the previous state of tonight's leads, not of leads that have closed since)."""
    keys = [open_leads_at(tables, t, params) for t in times]
    if leads_of_first:
        tonight = keys[0]["lead_id"].to_numpy()
        keys[1:] = [k[k["lead_id"].isin(tonight).to_numpy()].reset_index(drop=True) for k in keys[1:]]
    features = build_features(tables, pd.concat(keys, ignore_index=True), params)
    rules = rule_flags(ruleset, features[["lead_id", "snapshot_at"]], tables)
    cuts = np.cumsum([0, *(len(k) for k in keys)])
    return [
        (
            features.iloc[lo:hi].reset_index(drop=True),
            rules.iloc[lo:hi].reset_index(drop=True),
        )
        for lo, hi in itertools.pairwise(cuts)
    ]


def _json_lists(values: pd.Series) -> list[str]:
    """Each list as JSON text ("[]" without a call for the many leads that have no reasons tonight)."""
    return [
        json.dumps([str(x) for x in v], ensure_ascii=False)
        if isinstance(v, list | tuple | np.ndarray) and len(v)
        else "[]"
        for v in values
    ]


def crm_id_of(lead_ids: np.ndarray, crm_ids: pd.Series | None) -> np.ndarray:
    """The CRM's own id of each lead (an imported CRM's `lead_crm_ids`), else the lead id as text."""
    own = pd.Series(np.asarray(lead_ids, dtype=np.int64)).astype(str)
    if crm_ids is None:
        return own.to_numpy(dtype=object)
    # pandas-stubs leave None out of na_value's types; pandas puts it in for every missing id
    found = crm_ids.reindex(np.asarray(lead_ids, dtype=np.int64)).to_numpy(dtype=object, na_value=None)  # type: ignore[call-overload]
    return np.where(pd.isna(found), own.to_numpy(dtype=object), found).astype(object)


def score_rows(
    features: pd.DataFrame,
    rules: pd.DataFrame,
    scored: pd.DataFrame,
    run: Mapping[str, Any],
    crm_ids: pd.Series | None = None,
) -> pd.DataFrame:
    """`lead_scores` rows: keys (with the CRM's own id), the model's outputs, the rule score and flag, the run."""
    n = len(features)
    if len(scored) != n or len(rules) != n:
        raise ValueError(f"scored {len(scored)} and rule rows {len(rules)} for {n} feature rows")
    stamp = pd.Series(pd.Timestamp(run["as_of"]), index=range(n), dtype="datetime64[ns, UTC]")
    return pd.DataFrame(
        {
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
        }
    )


# ----------------------------------------------------------------------------------------------------------------
# What each stage's team receives tonight
# ----------------------------------------------------------------------------------------------------------------

_STAGE_RANK: Final[dict[str, int]] = {"none": 0, **{stage: i + 1 for i, stage in enumerate(THRESHOLD_STAGES)}}
#: A stage delivering further than this from its target (relative) is logged as a warning.
VOLUME_TOLERANCE: Final = 0.25


def previous_time(as_of: pd.Timestamp, params: FeaturesParams) -> pd.Timestamp:
    """The previous snapshot's time: as_of - cadence_days, whose lists tonight's new hand-offs were not on."""
    return pd.Timestamp(as_of) - pd.Timedelta(days=params.cadence_days)


def previous_flags(features: pd.DataFrame, rules: pd.DataFrame, model: ScoringModel) -> pd.DataFrame:
    """(lead_id, stage, rule_mql) of the chunk's leads open at the previous snapshot (`previous_time`), from their
    features and rule flags then: the lists tonight's new hand-offs were not on. Stages only (no reasons)."""
    if features.empty:
        return pd.DataFrame(
            {
                "lead_id": np.zeros(0, dtype=np.int64),
                "stage": np.zeros(0, dtype=object),
                "rule_mql": np.zeros(0, dtype=bool),
            }
        )
    scored = model.pyfunc.predict(conform(features, model.schema), params={"top_reasons": 0})
    return pd.DataFrame(
        {
            "lead_id": features["lead_id"].to_numpy(dtype=np.int64),
            "stage": scored["stage"].astype(str).to_numpy(),
            "rule_mql": rules["rule_mql"].to_numpy(dtype=bool),
        }
    )


def count_lists(
    counts: dict[str, int], lead_id: np.ndarray, stage: np.ndarray, rule_mql: np.ndarray, previous: pd.DataFrame
) -> None:
    """Add one chunk to the run's list sizes and new hand-offs per stage (and of the rule MQLs).

    A lead is on a stage's list when its predicted stage is that one or higher; it is new on it when it was not on
    it at the previous snapshot (including leads that were not open then).
    """
    prev = previous.set_index("lead_id")
    prev_rank = pd.Series(lead_id).map(prev["stage"].map(_STAGE_RANK)).fillna(0).to_numpy()
    prev_rule = pd.Series(lead_id).map(prev["rule_mql"].astype(float)).fillna(0.0).to_numpy() > 0
    rank = pd.Series(np.asarray(stage, dtype=object)).map(_STAGE_RANK).to_numpy()
    for level, name in enumerate(THRESHOLD_STAGES, start=1):
        on = rank >= level
        counts[f"{name}_list"] = counts.get(f"{name}_list", 0) + int(on.sum())
        counts[f"{name}_new"] = counts.get(f"{name}_new", 0) + int((on & (prev_rank < level)).sum())
    rule = np.asarray(rule_mql, dtype=bool)
    counts["rule_list"] = counts.get("rule_list", 0) + int(rule.sum())
    counts["rule_new"] = counts.get("rule_new", 0) + int((rule & ~prev_rule).sum())


def stage_volumes(
    counts: Mapping[str, int], policies: Mapping[str, StagePolicy], volume: str, cadence_days: int
) -> dict[str, dict[str, Any]]:
    """Per stage: its policy, what it promises a week and what tonight's list delivers a week.

    `new`: delivered = tonight's new hand-offs x 7 / cadence_days (a snapshot's new leads arrive once per cadence);
    `standing`: the list is worked until the next snapshot, so a list of L leads is L x 7 / cadence_days a week,
    the calibrate stage's definition of capacity. match_rules promises the rule's MQLs counted the same way;
    precision promises a rate, so its target is null and only the delivery is reported.
    """
    per_week = 7 / cadence_days
    kind = "new" if volume == "new" else "list"
    out: dict[str, dict[str, Any]] = {}
    for stage in THRESHOLD_STAGES:
        policy = policies[stage]
        target = (
            policy.leads_per_week
            if policy.policy == "capacity"
            else counts.get(f"rule_{kind}", 0) * per_week
            if policy.policy == "match_rules"
            else None
        )
        out[stage] = {
            "policy": policy.policy,
            "volume": volume,
            "target_per_week": target,
            "delivered_per_week": counts.get(f"{stage}_{kind}", 0) * per_week,
            "list_size": counts.get(f"{stage}_list", 0),
            "new": counts.get(f"{stage}_new", 0),
        }
    return out


def volume_policies(model: ScoringModel, params: CalibrateParams) -> tuple[dict[str, StagePolicy], str]:
    """The stage policies and volume the model's thresholds were fitted with (else those of the params)."""
    report = model.thresholds.report if model.thresholds is not None else {}
    stored = report.get("policies") or {}
    if all(stage in stored for stage in THRESHOLD_STAGES):
        policies = {stage: StagePolicy.model_validate(stored[stage]) for stage in THRESHOLD_STAGES}
        return policies, str(report.get("volume", "standing"))
    return {stage: getattr(params.thresholds, stage) for stage in THRESHOLD_STAGES}, params.volume


def off_target(volumes: Mapping[str, Mapping[str, Any]], tolerance: float = VOLUME_TOLERANCE) -> list[str]:
    """Stages whose delivery is more than `tolerance` away from their target (relative), as readable lines."""
    lines = []
    for stage, v in volumes.items():
        target = v["target_per_week"]
        if target and abs(v["delivered_per_week"] / target - 1) > tolerance:
            lines.append(
                f"{stage} ({v['policy']}, {v['volume']}) delivers {v['delivered_per_week']:.0f} a week "
                f"against a target of {target:.0f}"
            )
    return lines
