"""Whole-account groups of the CRM packed into one Arrow table, and the scoring of one group: the compute the
Spark engine's executors run (`groupBy(group).applyInArrow`), over the pandas engine's own core.

Spark groups one DataFrame at a time, so the four tables that travel by account (accounts, leads, activities,
stage entries) are stacked into one tagged table: a `__table` code, the `__group` bucket, and each table's columns
prefixed `<table>__`. Timestamps travel as int64 nanoseconds since the epoch (Spark's own timestamps hold
microseconds and Parquet nanoseconds do not load into them), integers as nullable int64: nothing is rounded on the
way, so a group's tables are the tables the pandas engine's reader hands its core, and `score_group` gives the
same rows (`snapshot_features`, the model, `previous_flags`, `score_rows`). Campaigns are small and go to every
group whole. No Spark here: this module is pure and tested without a JVM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import Params
from pipelines.crm.schema import PRIMARY_KEYS, SCHEMAS, TABLES, UTC_NS, validate_crm
from pipelines.features.columns import INPUT_COLUMNS
from pipelines.registry.model import conform
from pipelines.rules import RuleSet
from pipelines.score.core import ScoringModel, previous_flags, previous_time, score_rows, snapshot_features

log = logging.getLogger(__name__)

#: The tables that travel grouped by account; campaigns go to every group whole.
GROUPED: Final[tuple[str, ...]] = ("accounts", "leads", "activities", "stage_history")
TAG: Final = "__table"
GROUP: Final = "__group"
#: Extra output columns beside the `lead_scores` ones: the lead's state a cadence earlier (None: not open then),
#: the group's compute seconds (on its first row, 0 elsewhere) and the drift-tracked features (`DRIFT_PREFIX`).
PREV_STAGE: Final = "__prev_stage"
PREV_RULE_MQL: Final = "__prev_rule_mql"
SECONDS_FEATURES: Final = "__seconds_features"
SECONDS_PREDICT: Final = "__seconds_predict"
DRIFT_PREFIX: Final = "__drift__"


def read_columns(table: str) -> list[str]:
    """The columns scoring reads of a table: its primary key, then the features' and rules' explicit list."""
    return list(dict.fromkeys([PRIMARY_KEYS[table], *INPUT_COLUMNS[table]]))


def packed(table: str, column: str) -> str:
    """A table's column in the packed table."""
    return f"{table}__{column}"


def timestamp_columns(table: str) -> list[str]:
    """The read columns of a table that hold timestamps (they travel as int64 nanoseconds)."""
    return [c for c in read_columns(table) if SCHEMAS[table].columns[c].dtype.type == UTC_NS]


def unpack(group: pa.Table, campaigns: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The five CRM tables of one packed group (not yet validated), with the read columns only."""
    tag = group.column(TAG)
    tables = {"campaigns": campaigns}
    for code, table in enumerate(GROUPED):
        part = group.filter(pc.equal(tag, code))
        stamps = set(timestamp_columns(table))
        columns = {}
        for column in read_columns(table):
            values = part.column(packed(table, column))
            if column in stamps:
                columns[column] = pd.Series(
                    values.cast(pa.timestamp("ns", tz="UTC")).to_pandas(), dtype=UTC_NS
                ).reset_index(drop=True)
            elif pa.types.is_integer(values.type):
                columns[column] = pd.Series(values.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get))
            else:
                columns[column] = pd.Series(values.to_pandas(), dtype=object).where(lambda s: s.notna(), None)
        tables[table] = pd.DataFrame(columns)
    return tables


def predict(model: ScoringModel, conformed: pd.DataFrame, rule_mql: np.ndarray, reasons_for: str) -> pd.DataFrame:
    """The model's outputs for conformed rows, with reasons as `score.reasons_for` says (as the pandas engine)."""
    from pipelines.score.run import score_flagged, score_handed

    if reasons_for == "flagged":
        return score_flagged(model, conformed, rule_mql)
    if reasons_for == "handed":
        return score_handed(model, conformed)
    return model.predict(conformed)


def score_group(
    tables: Mapping[str, pd.DataFrame],
    as_of: pd.Timestamp,
    params: Params,
    ruleset: RuleSet,
    model: ScoringModel,
    run: Mapping[str, Any],
    drift: Sequence[tuple[str, str]] = (),
) -> pd.DataFrame:
    """`lead_scores` rows of one group's open leads (crm_id: the lead id, the driver puts the CRM's own), plus the
    extra columns the run's totals need: previous stage and rule flag, compute seconds, drift-tracked features
    (`drift`: (name, 'numeric' | 'categorical') pairs)."""
    t0 = time.perf_counter()
    checked = validate_crm(tables, {t: read_columns(t) for t in TABLES})
    (features, rules), before = snapshot_features(
        checked, [as_of, previous_time(as_of, params.features)], params.features, ruleset, leads_of_first=True
    )
    seconds_features = time.perf_counter() - t0
    if features.empty:
        return pd.DataFrame()
    t0 = time.perf_counter()
    rule_mql = rules["rule_mql"].to_numpy(dtype=bool)
    scored = predict(model, conform(features, model.schema), rule_mql, params.score.reasons_for)
    previous = previous_flags(*before, model).set_index("lead_id")
    seconds_predict = time.perf_counter() - t0
    rows = score_rows(features, rules, scored, run)
    lead_id = rows["lead_id"].to_numpy()
    rows[PREV_STAGE] = previous["stage"].reindex(lead_id).to_numpy(dtype=object)
    rows[PREV_STAGE] = rows[PREV_STAGE].where(rows[PREV_STAGE].notna(), None)
    rows[PREV_RULE_MQL] = previous["rule_mql"].reindex(lead_id).fillna(False).to_numpy(dtype=bool)
    rows[SECONDS_FEATURES] = np.r_[seconds_features, np.zeros(len(rows) - 1)]
    rows[SECONDS_PREDICT] = np.r_[seconds_predict, np.zeros(len(rows) - 1)]
    for name, kind in drift:
        values = features[name]
        if kind == "numeric":
            rows[DRIFT_PREFIX + name] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        else:
            text = values.astype(object)
            rows[DRIFT_PREFIX + name] = text.where(text.notna(), None).map(lambda v: v if v is None else str(v))
    return rows


def previous_of(rows: pd.DataFrame) -> pd.DataFrame:
    """The (lead_id, stage, rule_mql) frame `core.count_lists` takes, from a scored group's extra columns."""
    was_open = rows[PREV_STAGE].notna().to_numpy()
    return pd.DataFrame(
        {
            "lead_id": rows["lead_id"].to_numpy(dtype=np.int64)[was_open],
            "stage": rows[PREV_STAGE].to_numpy(dtype=object)[was_open],
            "rule_mql": rows[PREV_RULE_MQL].to_numpy(dtype=bool)[was_open],
        }
    )


def drift_frame(rows: pd.DataFrame, drift: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The drift-tracked features of scored rows under their own names (what `DriftCounter.add` reads)."""
    return pd.DataFrame({name: rows[DRIFT_PREFIX + name].to_numpy() for name, _ in drift}, index=rows.index)


def extra_columns(drift: Sequence[tuple[str, str]]) -> list[str]:
    """The output columns beyond `lead_scores`'."""
    return [PREV_STAGE, PREV_RULE_MQL, SECONDS_FEATURES, SECONDS_PREDICT, *(DRIFT_PREFIX + n for n, _ in drift)]
