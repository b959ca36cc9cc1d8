"""Evaluating a rule set point-in-time: each (lead, snapshot) scored with the points, threshold and gates of its
rule set, counting only activities known at the snapshot, with the fired rules in words and the first moment the
rules held MQL.

Pure: a `RuleSet`, snapshot keys and CRM frames in, a frame of `OUTPUT_COLUMNS` out. Counting is
`pipelines.rules.counting` on the features' clock; the fields a condition tests are `pipelines.rules.attributes`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from pipelines.crm import vocab
from pipelines.crm.schema import CrmDataError, to_utc
from pipelines.features import timeline as tl
from pipelines.rules.attributes import Plan, attribute_columns, lead_attributes, resolve_overrides
from pipelines.rules.counting import ActivityIndex, Queries, day_seconds
from pipelines.rules.schema import (
    ActivityCondition,
    AllOf,
    AnyOf,
    EngagementRule,
    FieldCondition,
    FitRule,
    Gate,
    Not,
    RuleSet,
    check_rules_against_crm,
    field_spec,
)
from pipelines.words import ACTIVITY_WORDS, number

log = logging.getLogger(__name__)

#: The raw tables the rules read (stage_history is never an input: rules must not see the funnel outcome).
INPUT_TABLES: Final[tuple[str, ...]] = ("campaigns", "accounts", "leads", "activities")
#: Output columns, in order.
OUTPUT_COLUMNS: Final[tuple[str, ...]] = (
    "lead_id",
    "snapshot_at",
    "rule_score",
    "rule_threshold",
    "rule_mql",
    "rule_mql_since",
    "rule_set",
    "rules_fired",
)
_NS: Final = 1_000_000_000


def _field_mask(cond: FieldCondition, attributes: pd.DataFrame) -> np.ndarray:
    """Per lead: does the condition hold (a missing value satisfies only is_null)."""
    column = attributes[cond.field]
    present = column.notna().to_numpy()
    if cond.op == "is_null":
        return ~present
    if cond.op == "not_null":
        return present
    if field_spec(cond.field, cond.value).kind in ("number", "campaign"):
        values = column.to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            numeric: dict[str, Callable[[], np.ndarray]] = {
                "eq": lambda: values == cond.value,
                "ne": lambda: values != cond.value,
                "gt": lambda: values > cond.value,
                "gte": lambda: values >= cond.value,
                "lt": lambda: values < cond.value,
                "lte": lambda: values <= cond.value,
                "between": lambda: (values >= cond.value[0]) & (values <= cond.value[1]),
                "in": lambda: np.isin(values, cond.value),
                "not_in": lambda: ~np.isin(values, cond.value),
            }
            result = numeric[cond.op]()
    else:
        text: dict[str, Callable[[], np.ndarray]] = {
            "eq": lambda: (column == cond.value).to_numpy(dtype=bool),
            "ne": lambda: (column != cond.value).to_numpy(dtype=bool),
            "in": lambda: column.isin(cond.value).to_numpy(),
            "not_in": lambda: ~column.isin(cond.value).to_numpy(),
        }
        result = text[cond.op]()
    return np.asarray(result, dtype=bool) & present


def condition_mask(cond: BaseModel, queries: Queries) -> np.ndarray:
    """Per (sorted) query: does the condition hold at the query's time."""
    if isinstance(cond, FieldCondition):
        return _field_mask(cond, queries.attributes)[queries.owner]
    if isinstance(cond, ActivityCondition):
        within = None if cond.within_days is None else day_seconds(cond.within_days)
        return queries.count(cond.activity, within) >= cond.min_count
    if isinstance(cond, AllOf):
        every: np.ndarray = np.logical_and.reduce([condition_mask(c, queries) for c in cond.all_of])
        return every
    if isinstance(cond, AnyOf):
        some: np.ndarray = np.logical_or.reduce([condition_mask(c, queries) for c in cond.any_of])
        return some
    if isinstance(cond, Not):
        return ~condition_mask(cond.not_, queries)
    raise TypeError(f"not a condition: {cond!r}")


def _engagement_units(rule: EngagementRule, queries: Queries) -> tuple[np.ndarray, np.ndarray]:
    """Per (sorted) query: (activities counted, their weight: the count, or the decayed count with a half-life)."""
    within = None if rule.within_days is None else day_seconds(rule.within_days)
    count = queries.count(rule.activity, within)
    if rule.half_life_days is None:
        return count, count.astype(float)
    half_life = float(day_seconds(rule.half_life_days))
    weight = queries.decayed(rule.activity, half_life)
    if within is not None:
        weight = weight - queries.decayed(rule.activity, half_life, within) * np.exp2(-within / half_life)
    return count, np.where(count > 0, np.maximum(weight, 0.0), 0.0)


class _Explanation:
    """The fired rules of every query as one "; "-joined text, built in Arrow (no Python loop per row)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rows: list[np.ndarray] = []
        self.pieces: list[pa.Array] = []

    def add(self, rows: np.ndarray, pieces: pa.Array) -> None:
        """Append a piece to each of `rows` (pieces of one row keep the order in which they are added)."""
        if len(rows):
            self.rows.append(np.asarray(rows, dtype=np.int64))
            self.pieces.append(pieces.cast(pa.large_string()))

    def text(self) -> pd.Series:
        """One string per query ("" when nothing fired)."""
        rows = np.concatenate(self.rows) if self.rows else np.zeros(0, dtype=np.int64)
        pieces = pa.concat_arrays(self.pieces) if self.pieces else pa.array([], pa.large_string())
        offsets = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=self.n), out=offsets[1:])
        lists = pa.LargeListArray.from_arrays(pa.array(offsets), pieces.take(pa.array(np.argsort(rows, kind="stable"))))
        joined = pc.binary_join(lists, pa.scalar("; ", pa.large_string())).cast(pa.string())
        return pd.Series(pd.array(joined, dtype="string"))


def _rule_words(rule: FitRule | Gate | EngagementRule) -> str:
    """A rule as sales reads it: its description (first letter lower-cased), else its name in words."""
    text = rule.description or rule.name.replace("_", " ")
    return text[0].lower() + text[1:] if len(text) > 1 and text[1].islower() else text  # "C-level", "ICP" kept


def _engagement_words(rule: EngagementRule, counts: np.ndarray) -> pa.Array:
    """What an engagement rule counted, per row: "2 e-mail opens", "1 e-mail click or website visit in the last 30
    days" (the activity's own words, singular or plural by count)."""
    window = "" if rule.within_days is None else f" in the last {number(rule.within_days)} days"
    one = " or ".join(ACTIVITY_WORDS[a][2] for a in rule.activity) + window
    many = " or ".join(ACTIVITY_WORDS[a][1] for a in rule.activity) + window
    counts = np.asarray(counts, dtype=np.int64)
    nouns = pc.if_else(pa.array(counts == 1), one, many)
    return pc.binary_join_element_wise(pc.cast(pa.array(counts), pa.string()), nouns, " ")


def _signed(values: np.ndarray) -> pa.Array:
    """Points as text with a sign and at most one decimal: "+10", "-20", "+7.4"."""
    rounded = pc.round(pa.array(values, pa.float64()), 1)
    sign = pc.if_else(pc.greater(rounded, 0), "+", "")
    return pc.binary_join_element_wise(sign, pc.cast(rounded, pa.string()), "")


def score_queries(rules: RuleSet, plan: Plan, queries: Queries, explain: bool) -> dict[str, Any]:
    """Per query (in the order given): score, threshold, MQL flag, rule set and, when `explain`, the fired rules."""
    n = len(queries)
    rule_set = plan.set_of_lead[queries.owner]
    score = np.zeros(n, dtype=float)
    explanation = _Explanation(n) if explain else None
    scored: tuple[FitRule | EngagementRule, ...] = (*rules.fit, *rules.engagement)
    for j, rule in enumerate(scored):
        points = plan.points[rule_set, j]
        count = None
        if isinstance(rule, FitRule):
            contribution = np.where(condition_mask(rule.when, queries), points, 0.0)
        else:
            count, weight = _engagement_units(rule, queries)
            contribution = weight * points
            if rule.max_points is not None:
                contribution = np.clip(contribution, -rule.max_points, rule.max_points)
        score += contribution
        if explanation is not None:
            rows = np.flatnonzero(np.round(contribution, 1) != 0)  # what would read "+0" is left out
            # count is None exactly for a fit rule; the isinstance only tells the type checker so
            if count is None or isinstance(rule, FitRule):
                words = pa.scalar(_rule_words(rule))
            else:
                words = _engagement_words(rule, count[rows])
            explanation.add(
                queries.order[rows], pc.binary_join_element_wise(words, " (", _signed(contribution[rows]), ")", "")
            )
    threshold = plan.thresholds[rule_set]
    mql = np.where(np.isnan(threshold), True, score >= np.where(np.isnan(threshold), np.inf, threshold))
    for gate in rules.gates:
        holds = condition_mask(gate.when, queries)
        mql &= holds
        if explanation is not None:
            label = gate.name.replace("_", " ")  # names are short ("ideal company"); gate descriptions define them
            explanation.add(queries.order, pc.if_else(pa.array(holds), f"{label}: met", f"{label}: not met"))
    out: dict[str, Any] = {
        "rule_score": queries.restore(score),
        "rule_threshold": queries.restore(threshold),
        "rule_mql": queries.restore(mql.astype(bool)),
        "rule_set": queries.restore(rule_set),
    }
    if explanation is not None:
        out["rules_fired"] = explanation.text()
    return out


def _positions(ids: pd.Series, known: pd.Series, what: str) -> np.ndarray:
    """Position of each id within `known`; CrmDataError naming examples when some are absent."""
    positions = pd.Index(known).get_indexer(ids)
    if (positions < 0).any():
        missing = pd.unique(ids[positions < 0])[:5]
        raise CrmDataError(
            f"{what}: {int((positions < 0).sum())} row(s) refer to lead_id(s) not in the leads table, "
            f"e.g. {[int(v) for v in missing]}"
        )
    as_int: np.ndarray = positions.astype(np.int64)
    return as_int


def snapshot_ns(values: pd.Series) -> np.ndarray:
    """Snapshot times as int64 UTC nanoseconds; CrmDataError when some are missing or not timestamps."""
    try:
        stamps = to_utc(values)
    except (ValueError, TypeError) as exc:
        raise CrmDataError(f"snapshots, column 'snapshot_at': not timestamps ({exc})") from None
    if stamps.isna().any():
        raise CrmDataError(f"snapshots, column 'snapshot_at': {int(stamps.isna().sum())} missing value(s)")
    return tl.nanoseconds(stamps)


def utc(ns: np.ndarray) -> pd.Series:
    """int64 nanoseconds (int64 minimum: NaT) as a tz-aware UTC series."""
    return pd.Series(pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]"), tz="UTC"))


@dataclass(frozen=True)
class Setup:
    """What every scoring of snapshot rows needs: attributes, the resolved overrides and the activity index."""

    leads: pd.DataFrame
    attributes: pd.DataFrame
    plan: Plan
    index: ActivityIndex
    snap_owner: np.ndarray
    snap_ns: np.ndarray  # the snapshot times as given (the output's snapshot_at)
    snap_seconds: np.ndarray  # the same on the timeline's clock (rounded down to the second)
    scored_leads: np.ndarray

    def queries(self) -> Queries:
        """The as-of questions of the snapshot rows."""
        return Queries(self.attributes, self.index, self.snap_owner, self.snap_seconds)


def prepare(rules: RuleSet, snapshots: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> Setup:
    """Check the inputs, resolve the overrides and index the scored leads' activities."""
    missing = [c for c in ("lead_id", "snapshot_at") if c not in snapshots.columns]
    if missing:
        raise CrmDataError(f"snapshots lack column(s) {missing}; they have {list(snapshots.columns)}")
    check_rules_against_crm(rules, tables["campaigns"])
    leads, activities = tables["leads"], tables["activities"]
    attributes = lead_attributes(leads, tables["accounts"], tables["campaigns"])
    attributes = pd.concat([attributes, attribute_columns(rules, leads, tables)], axis=1)
    plan = resolve_overrides(rules, attributes)

    snap_ns = snapshot_ns(snapshots["snapshot_at"])
    snap_owner = _positions(snapshots["lead_id"], leads["lead_id"], "snapshots")
    act_owner = pd.Index(leads["lead_id"]).get_indexer(activities["lead_id"]).astype(np.int64)
    scored_leads = np.zeros(len(leads), dtype=bool)
    scored_leads[snap_owner] = True
    type_code = vocab.codes(activities["activity_type"], vocab.ACTIVITY_TYPES)
    keep = (act_owner >= 0) & scored_leads[np.maximum(act_owner, 0)] & (type_code >= 0)
    known = tl.known_seconds(to_utc(activities["occurred_at"]))
    index = ActivityIndex(act_owner[keep], type_code[keep], known[keep], len(leads))
    snap_seconds = tl.query_seconds(pd.DatetimeIndex(snap_ns.view("datetime64[ns]"), tz="UTC"))
    return Setup(leads, attributes, plan, index, snap_owner, snap_ns, snap_seconds, scored_leads)


def evaluate_rules(rules: RuleSet, snapshots: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Score every (lead_id, snapshot_at) with the rules, counting only activities stamped <= snapshot_at.

    `tables` holds campaigns, accounts, leads and activities with canonical dtypes. Returns one row per snapshot
    row (same order) with the columns of `OUTPUT_COLUMNS`: rule_mql is the state at the snapshot
    (score >= threshold and every gate holds); rule_mql_since is the first moment at or before the snapshot at
    which the rules held MQL (checked at the lead's creation, its activities and its snapshots), as an
    automation tool that never un-marks an MQL would have recorded it (NaT: not by then).
    """
    setup = prepare(rules, snapshots, tables)
    result = score_queries(rules, setup.plan, setup.queries(), explain=True)
    first = _first_mql(rules, setup)[setup.snap_owner]
    since = first <= setup.snap_seconds
    frame = pd.DataFrame(
        {
            "lead_id": snapshots["lead_id"].to_numpy(dtype=np.int64),
            "snapshot_at": utc(setup.snap_ns),
            "rule_score": result["rule_score"],
            "rule_threshold": result["rule_threshold"],
            "rule_mql": result["rule_mql"],
            "rule_mql_since": utc(np.where(since, np.where(since, first, 0) * _NS, np.iinfo(np.int64).min)),
            "rule_set": pd.Series(np.asarray(setup.plan.labels, dtype=object)[result["rule_set"]], dtype="string"),
            "rules_fired": result["rules_fired"],
        }
    )
    log.info(
        "rules scored %s snapshot rows of %s leads: %.1f%% MQL at the snapshot, %.1f%% marked MQL by then",
        f"{len(frame):,}",
        f"{int(setup.scored_leads.sum()):,}",
        100 * frame["rule_mql"].mean() if len(frame) else 0,
        100 * frame["rule_mql_since"].notna().mean() if len(frame) else 0,
    )
    return frame


#: The columns `rule_flags` returns: what nightly scoring stores of the rule beside the model's score.
FLAG_COLUMNS: Final[tuple[str, ...]] = ("lead_id", "snapshot_at", "rule_score", "rule_mql")


def rule_flags(rules: RuleSet, snapshots: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The rule score and MQL flag of every (lead_id, snapshot_at), exactly as `evaluate_rules` gives them.

    Nightly scoring stores only these two; the fired rules in words and the first moment of MQL (two thirds of
    `evaluate_rules`' time) are for the rules stage and the report, so they are not computed here.
    """
    setup = prepare(rules, snapshots, tables)
    result = score_queries(rules, setup.plan, setup.queries(), explain=False)
    return pd.DataFrame(
        {
            "lead_id": snapshots["lead_id"].to_numpy(dtype=np.int64),
            "snapshot_at": utc(setup.snap_ns),
            "rule_score": result["rule_score"],
            "rule_mql": result["rule_mql"],
        }
    )


def _first_mql(rules: RuleSet, setup: Setup) -> np.ndarray:
    """Per lead position: the first second the rules held MQL, checked at creation, activities and snapshots.

    Only times up to the lead's last snapshot are checked; int64 max means "not by then". Exact for rules whose
    score and gates only move at activities (no windows, no decay); with windows or decay a score can also rise
    between activities (a negative activity ageing out), which this check sees only at the next activity or
    snapshot.
    """
    index, snap_owner, snap_seconds = setup.index, setup.snap_owner, setup.snap_seconds
    n = len(setup.leads)
    never = np.iinfo(np.int64).min
    last = np.full(n, never, dtype=np.int64)
    np.maximum.at(last, snap_owner, snap_seconds)
    candidates = np.flatnonzero(last > never)
    created = tl.known_seconds(to_utc(setup.leads["created_at"]))
    owner = np.concatenate([index.owner, candidates, snap_owner])
    seconds = np.concatenate([index.seconds, created[candidates], snap_seconds])
    keep = seconds <= last[owner]
    owner, seconds = owner[keep], seconds[keep]
    queries = Queries(setup.attributes, index, owner, seconds)
    mql = score_queries(rules, setup.plan, queries, explain=False)["rule_mql"]
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, owner[mql], seconds[mql])
    return first
