"""Rule-based MQL scoring as configuration: the points rules marketers use today, evaluated point-in-time.

A rules file (YAML, format in docs/rules.md) gives *fit* rules (points once when a condition on the lead holds),
*engagement* rules (points per activity, optionally only within a window of days or decayed by a half-life),
optional *gates* (conditions that must all hold for an MQL, e.g. "ideal company + target role + confirmed problem
+ willing to meet") and an MQL threshold, with overrides per region and per campaign (campaign > region >
default, key by key). `evaluate_rules` scores every (lead_id, snapshot_at) of a snapshot frame counting only
activities stamped at or before snapshot_at, and says which rules fired, so the rules are the baseline every
prediction is compared with on the very same rows.

Evaluation is vectorised: activities are packed into sorted int64 keys (lead, activity type, time rank) and every
"how many of this lead's activities of type k happened in (t - window, t]" is two `np.searchsorted` calls;
decayed sums use segmented cumulative sums. No Python loop runs per lead or per row.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from pipelines.config import ParamsError, RulesParams, read_yaml
from pipelines.crm import vocab
from pipelines.crm.schema import CrmDataError, to_utc
from pipelines.crm.titles import DEPARTMENTS, SENIORITIES, parse_titles
from pipelines.features.static import email_domains
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
_NS_PER_DAY: Final = 86_400 * 1_000_000_000
#: Decayed sums are kept relative to a reference that moves every this many half-lives (no float overflow), and
#: activities older than that many half-lives before a snapshot (weight < 2**-400) are dropped.
_DECAY_EPOCH_HALF_LIVES: Final = 400
_NAME_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"


class RulesError(ParamsError):
    """The rules file is missing, malformed, or names something the CRM does not have; says which rule and key."""


# ----------------------------------------------------------------------------------------------------------------
# Fields a condition may test
# ----------------------------------------------------------------------------------------------------------------

FieldKind = Literal["category", "number", "bool", "campaign"]


@dataclass(frozen=True)
class FieldSpec:
    """One lead attribute a condition can test: its kind and, for categories, the values it may take."""

    kind: FieldKind
    description: str
    values: tuple[str, ...] | None = None


#: Lead attributes known at lead creation (the CRM keeps no history of field edits, so the current row is used).
FIELDS: Final[dict[str, FieldSpec]] = {
    "industry": FieldSpec("category", "the account's industry (free text in the CRM)"),
    "employee_count": FieldSpec("number", "the account's employee count"),
    "annual_revenue": FieldSpec("number", "the account's annual revenue"),
    "region": FieldSpec("category", "the lead's country's region, else the account's region", vocab.REGIONS),
    "country": FieldSpec("category", "the lead's country (ISO 3166 alpha-2), else the account's country"),
    "seniority": FieldSpec("category", "seniority parsed from the job title", SENIORITIES),
    "department": FieldSpec("category", "department parsed from the job title", DEPARTMENTS),
    "email_domain": FieldSpec("category", "the lower-cased domain of the lead's email"),
    "free_mail_domain": FieldSpec("bool", "the email domain is a consumer free-mail provider"),
    "lead_source": FieldSpec("category", "the lead's source", vocab.LEAD_SOURCES),
    "campaign_id": FieldSpec("campaign", "the campaign that created the lead"),
    "campaign_channel": FieldSpec("category", "the channel of that campaign", vocab.CAMPAIGN_CHANNELS),
    "budget_range": FieldSpec("category", "self-reported budget range", vocab.BUDGET_RANGES),
    "purchase_timeframe": FieldSpec("category", "self-reported purchase timeframe", vocab.PURCHASE_TIMEFRAMES),
}

#: A mapped CRM's extra lead attributes (`lead_attributes`, docs/mapping.md) are fields `attribute.<name>`: numeric
#: ones take the number operators, text ones the category operators; which they are is checked against the data.
ATTRIBUTE_PREFIX: Final = "attribute."
_ATTRIBUTE_FIELD: Final = re.compile(r"^attribute\.[a-z_][a-z0-9_]{0,62}$")


def field_spec(name: str, value: object = None) -> FieldSpec:
    """The spec of a field: a built-in one, or an attribute's (number when the value is a number, else category)."""
    if name in FIELDS:
        return FIELDS[name]
    sample = value[0] if isinstance(value, list | tuple) and value else value
    kind: FieldKind = "number" if isinstance(sample, int | float) and not isinstance(sample, bool) else "category"
    return FieldSpec(kind, f"the mapped lead attribute {name[len(ATTRIBUTE_PREFIX) :]}")


Operator = Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "is_null", "not_null"]
_OPERATORS_BY_KIND: Final[dict[str, frozenset[str]]] = {
    "category": frozenset({"eq", "ne", "in", "not_in", "is_null", "not_null"}),
    "campaign": frozenset({"eq", "ne", "in", "not_in", "is_null", "not_null"}),
    "bool": frozenset({"eq", "ne", "is_null", "not_null"}),
    "number": frozenset({"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "is_null", "not_null"}),
}


def _scalar_ok(kind: str, value: object) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "campaign":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


_KIND_WORDS: Final[dict[str, tuple[str, str]]] = {  # (one value, a list of them)
    "bool": ("true or false", "true/false values"),
    "number": ("a number", "numbers"),
    "campaign": ("an integer campaign id", "integer campaign ids"),
    "category": ("a string", "strings"),
}


# ----------------------------------------------------------------------------------------------------------------
# The rules file model
# ----------------------------------------------------------------------------------------------------------------


class _RulesModel(BaseModel):
    """Base of every part of a rules file: unknown keys are errors, nothing changes after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _activity_types(value: object) -> tuple[str, ...]:
    """One activity type or a list of them, as a tuple; unknown types are named."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or not all(isinstance(v, str) for v in items):
        raise ValueError("activity must be an activity type or a non-empty list of them")
    unknown = [v for v in items if v not in vocab.ACTIVITY_TYPES]
    if unknown:
        raise ValueError(f"unknown activity type(s) {unknown}; expected any of {list(vocab.ACTIVITY_TYPES)}")
    if len(set(items)) != len(items):
        raise ValueError(f"activity lists a type twice: {list(items)}")
    return tuple(items)


#: One activity type or a list of them (YAML may give either); always a tuple once loaded.
ActivityTypes = Annotated[tuple[str, ...], BeforeValidator(_activity_types)]


class FieldCondition(_RulesModel):
    """`field op value`: a test of one lead attribute; a missing attribute satisfies only `is_null`."""

    field: StrictStr
    op: Operator
    value: Any = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if value not in FIELDS and not _ATTRIBUTE_FIELD.fullmatch(value):
            raise ValueError(
                f"unknown field {value!r}; expected one of {list(FIELDS)} or attribute.<name> (a mapped lead attribute)"
            )
        return value

    @model_validator(mode="after")
    def _value_fits_op(self) -> FieldCondition:
        spec = field_spec(self.field, self.value)
        if self.op not in _OPERATORS_BY_KIND[spec.kind]:
            raise ValueError(
                f"op {self.op!r} does not apply to field {self.field!r} ({spec.kind}); "
                f"use one of {sorted(_OPERATORS_BY_KIND[spec.kind])}"
            )
        one, many = _KIND_WORDS[spec.kind]
        value = self.value
        if self.op in ("is_null", "not_null"):
            if value is not None:
                raise ValueError(f"op {self.op!r} takes no value")
            return self
        if self.op == "between":
            pair = isinstance(value, list | tuple) and len(value) == 2
            if not (pair and all(_scalar_ok("number", v) for v in value)):
                raise ValueError(f"value of 'between' must be [low, high] (two numbers, inclusive), got {value!r}")
            if value[0] > value[1]:
                raise ValueError(f"value of 'between' must have low <= high, got {value!r}")
            object.__setattr__(self, "value", tuple(value))
            return self
        if self.op in ("in", "not_in"):
            if not (isinstance(value, list | tuple) and value and all(_scalar_ok(spec.kind, v) for v in value)):
                raise ValueError(
                    f"value of {self.op!r} on {self.field!r} must be a non-empty list of {many}, got {value!r}"
                )
            values = list(value)
        else:
            if not _scalar_ok(spec.kind, value):
                raise ValueError(f"value of {self.op!r} on {self.field!r} must be {one}, got {value!r}")
            values = [value]
        if spec.values is not None:
            unknown = [v for v in values if v not in spec.values]
            if unknown:
                raise ValueError(f"unknown {self.field} value(s) {unknown}; expected any of {list(spec.values)}")
        if self.op in ("in", "not_in"):
            object.__setattr__(self, "value", tuple(values))
        return self


class ActivityCondition(_RulesModel):
    """The lead did one of these activities at least `min_count` times, within the last `within_days` if given."""

    activity: ActivityTypes
    within_days: StrictFloat | None = Field(default=None, gt=0)
    min_count: StrictInt = Field(default=1, ge=1)


def _not_empty(value: object) -> object:
    """Reject an empty list of conditions before its items are validated (so the message is about the list)."""
    if isinstance(value, list | tuple) and not value:
        raise ValueError("needs at least one condition")
    return value


class AllOf(_RulesModel):
    """Every condition holds."""

    all_of: Annotated[tuple[Condition, ...], BeforeValidator(_not_empty)]


class AnyOf(_RulesModel):
    """At least one condition holds."""

    any_of: Annotated[tuple[Condition, ...], BeforeValidator(_not_empty)]


class Not(_RulesModel):
    """The condition does not hold."""

    not_: Condition = Field(alias="not")


#: The kinds of condition, told apart by their leading key. Tags are spelt unlike any key so error paths can drop them.
_CONDITION_TAGS: Final[dict[str, str]] = {
    "all_of": "<all_of>",
    "any_of": "<any_of>",
    "not": "<not>",
    "activity": "<activity>",
    "field": "<field>",
}


def _condition_kind(value: object) -> str | None:
    if isinstance(value, dict):
        return next((tag for key, tag in _CONDITION_TAGS.items() if key in value), None)
    kinds = {
        AllOf: "<all_of>",
        AnyOf: "<any_of>",
        Not: "<not>",
        ActivityCondition: "<activity>",
        FieldCondition: "<field>",
    }
    return kinds.get(type(value))


Condition = Annotated[
    Annotated[FieldCondition, Tag("<field>")]
    | Annotated[ActivityCondition, Tag("<activity>")]
    | Annotated[AllOf, Tag("<all_of>")]
    | Annotated[AnyOf, Tag("<any_of>")]
    | Annotated[Not, Tag("<not>")],
    Discriminator(
        _condition_kind,
        custom_error_type="condition_kind",
        custom_error_message="a condition is a mapping with one of the keys field, activity, all_of, any_of, not",
    ),
]

for _model in (AllOf, AnyOf, Not):
    _model.model_rebuild()

RuleName = Annotated[str, Field(pattern=_NAME_PATTERN, description="lower_snake_case, unique within the file")]


class FitRule(_RulesModel):
    """Points once when the condition holds at the snapshot (fit attributes; activity tests are allowed too)."""

    name: RuleName
    description: StrictStr | None = None
    when: Condition
    points: StrictFloat


class EngagementRule(_RulesModel):
    """Points per activity of the listed type(s), optionally only within a window or decayed by a half-life."""

    name: RuleName
    description: StrictStr | None = None
    activity: ActivityTypes
    points: StrictFloat
    within_days: StrictFloat | None = Field(default=None, gt=0)
    half_life_days: StrictFloat | None = Field(default=None, gt=0)
    max_points: StrictFloat | None = Field(default=None, gt=0)


class Gate(_RulesModel):
    """A condition every MQL must meet (all gates must hold, besides the threshold if there is one)."""

    name: RuleName
    description: StrictStr | None = None
    when: Condition


class Override(_RulesModel):
    """Changes for one region or campaign: a new threshold and/or new points for named rules."""

    description: StrictStr | None = None
    threshold: StrictFloat | None = None
    points: dict[str, StrictFloat] = Field(default_factory=dict)


class Overrides(_RulesModel):
    """Per-region and per-campaign overrides; the most specific setting of each key wins."""

    regions: dict[str, Override] = Field(default_factory=dict)
    campaigns: dict[StrictInt, Override] = Field(default_factory=dict)

    @field_validator("regions")
    @classmethod
    def _known_regions(cls, value: dict[str, Override]) -> dict[str, Override]:
        unknown = [r for r in value if r not in vocab.REGIONS]
        if unknown:
            raise ValueError(f"unknown region(s) {unknown}; expected any of {list(vocab.REGIONS)}")
        return value

    @field_validator("campaigns", mode="before")
    @classmethod
    def _integer_keys(cls, value: object) -> object:
        if isinstance(value, dict):
            bad = [
                k
                for k in value
                if not (isinstance(k, int) and not isinstance(k, bool)) and not (isinstance(k, str) and k.isdigit())
            ]
            if bad:
                raise ValueError(f"campaign keys must be integer campaign ids, got {bad}")
            return {int(k): v for k, v in value.items()}
        return value


class RuleSet(_RulesModel):
    """A whole rules file."""

    description: StrictStr | None = None
    threshold: StrictFloat | None = Field(description="MQL when score >= threshold (null: the gates alone decide)")
    fit: tuple[FitRule, ...] = ()
    engagement: tuple[EngagementRule, ...] = ()
    gates: tuple[Gate, ...] = ()
    overrides: Overrides = Field(default_factory=Overrides)

    @model_validator(mode="after")
    def _consistent(self) -> RuleSet:
        names = [r.name for r in (*self.fit, *self.engagement, *self.gates)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique; repeated: {duplicates}")
        if self.threshold is None and not self.gates:
            raise ValueError("threshold is null and there are no gates: nothing would define an MQL")
        scored = {r.name for r in (*self.fit, *self.engagement)}
        for scope, table in (("regions", self.overrides.regions), ("campaigns", self.overrides.campaigns)):
            for key, override in table.items():
                unknown = [n for n in override.points if n not in scored]
                if unknown:
                    raise ValueError(
                        f"overrides.{scope}.{key}.points: unknown rule(s) {unknown}; points can be overridden for "
                        f"the fit and engagement rules {sorted(scored)}"
                    )
        return self


# ----------------------------------------------------------------------------------------------------------------
# Loading and checking a rules file
# ----------------------------------------------------------------------------------------------------------------


def _describe_location(raw: object, loc: tuple[str | int, ...]) -> str:
    """'rule 'x' (fit[2]), key when.all_of[0].op' for a pydantic error location, using the rule's own name."""
    parts = [p for p in loc if p not in _CONDITION_TAGS.values()]
    if len(parts) >= 2 and parts[0] in ("fit", "engagement", "gates") and isinstance(parts[1], int):
        section, index, rest = parts[0], parts[1], parts[2:]
        items = raw.get(section) if isinstance(raw, dict) else None
        name = None
        if isinstance(items, list | tuple) and index < len(items) and isinstance(items[index], dict):
            name = items[index].get("name")
        where = f"rule {name!r} ({section}[{index}])" if name else f"rule {section}[{index}]"
    else:
        where, rest = "top level", parts
    key = ""
    for part in rest:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return f"{where}, key {key}" if key else where


def parse_rules(raw: object, source: str = "<rules>") -> RuleSet:
    """A validated RuleSet from the loaded YAML; RulesError lists every problem with its rule and key."""
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: a rules file must hold a mapping, got {type(raw).__name__}")
    try:
        return RuleSet.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: {exc.error_count()} problem(s) in the rules file"]
        for err in exc.errors():
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            message = message.removeprefix("Value error, ")
            lines.append(f"  {_describe_location(raw, err['loc'])}: {message}")
        raise RulesError("\n".join(lines)) from None


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules file (static checks; `check_rules_against_crm` does the ones needing data)."""
    path = Path(path)
    return parse_rules(read_yaml(path, "rules file", RulesError), str(path))


def _conditions(condition: BaseModel) -> Iterator[BaseModel]:
    """The condition and every condition nested inside it."""
    yield condition
    children: tuple[BaseModel, ...] = ()
    if isinstance(condition, AllOf):
        children = condition.all_of
    elif isinstance(condition, AnyOf):
        children = condition.any_of
    elif isinstance(condition, Not):
        children = (condition.not_,)
    for child in children:
        yield from _conditions(child)


def check_rules_against_crm(rules: RuleSet, campaigns: pd.DataFrame) -> None:
    """RulesError if the rules name campaign ids the campaigns table does not hold."""
    known = set(pd.to_numeric(campaigns["campaign_id"]).astype("int64").tolist())
    problems = [
        f"overrides.campaigns.{cid}: unknown campaign id {cid} (not in the campaigns table)"
        for cid in rules.overrides.campaigns
        if cid not in known
    ]
    for rule in (*rules.fit, *rules.gates):
        for cond in _conditions(rule.when):
            if isinstance(cond, FieldCondition) and cond.field == "campaign_id" and cond.value is not None:
                values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
                unknown = [v for v in values if v not in known]
                if unknown:
                    problems.append(
                        f"rule {rule.name!r}, key when.value: unknown campaign id(s) {unknown} "
                        "(not in the campaigns table)"
                    )
    if problems:
        raise RulesError("the rules name campaigns the CRM does not have:\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------------------------------------------
# Lead attributes and the rule set of each lead
# ----------------------------------------------------------------------------------------------------------------


def _conditions_of(rules: RuleSet) -> Iterator[BaseModel]:
    for rule in (*rules.fit, *rules.engagement, *rules.gates):
        when = getattr(rule, "when", None)
        if when is not None:
            yield from _conditions(when)


def attribute_columns(rules: RuleSet, leads: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The mapped attributes the rules test, as `attribute.<name>` columns aligned with `leads` (empty if none).

    A rule naming an attribute the CRM does not have, or testing a text attribute with a number (or the reverse), is
    a RulesError naming the rule's field and the attributes there are.
    """
    from pipelines.crm.attributes import ATTRIBUTES_KEY, ATTRIBUTES_TABLE, attribute_kind

    wanted = {
        c.field: c
        for c in _conditions_of(rules)
        if isinstance(c, FieldCondition) and c.field.startswith(ATTRIBUTE_PREFIX)
    }
    out = pd.DataFrame(index=range(len(leads)))
    if not wanted:
        return out
    frame = tables.get(ATTRIBUTES_TABLE)
    have = [] if frame is None else [c for c in frame.columns if c != ATTRIBUTES_KEY]
    problems = []
    for field, cond in wanted.items():
        name = field[len(ATTRIBUTE_PREFIX) :]
        if frame is None or name not in frame.columns:
            problems.append(
                f"field {field!r}: the CRM has no lead attribute {name!r} (it has {have or 'none'}; "
                "nightly scoring reads no attributes yet)"
            )
            continue
        values = frame.set_index(ATTRIBUTES_KEY)[name].reindex(leads["lead_id"].to_numpy())
        numeric = attribute_kind(frame[name]) == "numeric"
        if cond.op not in ("is_null", "not_null") and numeric != (field_spec(field, cond.value).kind == "number"):
            problems.append(
                f"field {field!r}: the attribute is {'numeric' if numeric else 'text'} but the rule "
                f"compares it with {cond.value!r}"
            )
            continue
        out[field] = (
            values.to_numpy(dtype=float) if numeric else values.astype(object).where(values.notna(), None).to_numpy()
        )
    if problems:
        raise RulesError("the rules test lead attributes the CRM does not have as written:\n  " + "\n  ".join(problems))
    return out


def lead_attributes(leads: pd.DataFrame, accounts: pd.DataFrame, campaigns: pd.DataFrame) -> pd.DataFrame:
    """One row per lead (same order as `leads`) with every built-in field a condition can test."""
    acc = accounts.set_index("account_id")
    account = leads["account_id"]
    region = vocab.lead_region(leads["country"], account.map(acc["region"]))
    parsed = parse_titles(leads["job_title"])
    domain = email_domains(leads["email"])  # vocab.email_domain, vectorised
    channel = leads["campaign_id"].map(campaigns.set_index("campaign_id")["channel"])
    return pd.DataFrame(
        {
            "industry": account.map(acc["industry"]).astype(object),
            "employee_count": account.map(acc["employee_count"]).astype("Float64").astype("float64"),
            "annual_revenue": account.map(acc["annual_revenue"]).astype("float64"),
            "region": region.astype(object),
            "country": leads["country"].where(leads["country"].notna(), account.map(acc["country"])).astype(object),
            "seniority": parsed["seniority"].astype(object),
            "department": parsed["department"].astype(object),
            "email_domain": domain.astype(object),
            "free_mail_domain": domain.isin(vocab.FREE_MAIL_DOMAINS).where(domain.notna()).astype(object),
            "lead_source": leads["lead_source"].astype(object),
            "campaign_id": leads["campaign_id"].astype("Float64").astype("float64"),
            "campaign_channel": channel.astype(object),
            "budget_range": leads["budget_range"].astype(object),
            "purchase_timeframe": leads["purchase_timeframe"].astype(object),
        }
    ).reset_index(drop=True)


@dataclass(frozen=True)
class _Plan:
    """The rules resolved per lead: each lead's rule-set index, and per rule set its threshold and points."""

    set_of_lead: np.ndarray  # int, per lead position
    labels: tuple[str, ...]  # per rule set: "default", "region:APAC", "campaign:12+region:APAC"
    thresholds: np.ndarray  # float per rule set (NaN: no threshold, the gates decide)
    points: np.ndarray  # (rule sets x scored rules) points


def _plan(rules: RuleSet, attributes: pd.DataFrame) -> _Plan:
    """Resolve the overrides for every lead: a campaign's setting beats its region's, which beats the default."""
    regions = list(rules.overrides.regions)
    campaigns = list(rules.overrides.campaigns)
    region_code = pd.Index(regions, dtype=object).get_indexer(attributes["region"]).astype(np.int64)
    campaign_ids = attributes["campaign_id"].to_numpy()
    campaign_code = np.full(len(attributes), -1, dtype=np.int64)
    for code, cid in enumerate(campaigns):  # one pass per override in the file, never per lead
        campaign_code[campaign_ids == cid] = code
    combo = (campaign_code + 1) * (len(regions) + 1) + (region_code + 1)
    uniques, set_of_lead = np.unique(combo, return_inverse=True)
    scored = (*rules.fit, *rules.engagement)
    labels, thresholds, points = [], [], []
    for value in uniques:
        c, r = divmod(int(value), len(regions) + 1)
        layers = []  # most specific first
        if c:
            layers.append((f"campaign:{campaigns[c - 1]}", rules.overrides.campaigns[campaigns[c - 1]]))
        if r:
            layers.append((f"region:{regions[r - 1]}", rules.overrides.regions[regions[r - 1]]))
        labels.append("+".join(label for label, _ in layers) or "default")
        threshold = next((o.threshold for _, o in layers if o.threshold is not None), rules.threshold)
        thresholds.append(np.nan if threshold is None else threshold)
        points.append(
            [next((o.points[rule.name] for _, o in layers if rule.name in o.points), rule.points) for rule in scored]
        )
    return _Plan(
        set_of_lead=set_of_lead.astype(np.int64),
        labels=tuple(labels),
        thresholds=np.asarray(thresholds, dtype=float),
        points=np.asarray(points, dtype=float).reshape(len(uniques), len(scored)),
    )


# ----------------------------------------------------------------------------------------------------------------
# Point-in-time activity counts
# ----------------------------------------------------------------------------------------------------------------


def _nanoseconds(values: pd.Series) -> np.ndarray:
    """Timestamps as int64 nanoseconds since 1970 UTC (NaT: the int64 minimum)."""
    return pd.DatetimeIndex(to_utc(values)).as_unit("ns").asi8


def _days_ns(days: float) -> int:
    return round(days * _NS_PER_DAY)


class ActivityIndex:
    """Activities packed as sorted int64 keys (lead position, activity type, time rank) for as-of counting.

    An activity stamped `ts` counts at `t` exactly when `ts <= t` (nanoseconds, no rounding): a query's time
    becomes "the number of distinct activity times <= t", so every count is a pair of `np.searchsorted` calls.
    """

    def __init__(self, owner: np.ndarray, type_code: np.ndarray, ns: np.ndarray, n_owners: int) -> None:
        self.times, rank = np.unique(np.asarray(ns, dtype=np.int64), return_inverse=True)
        self.n_types = len(vocab.ACTIVITY_TYPES)
        self.rank_bits = max(1, int(len(self.times) + 1).bit_length())
        bits = self.rank_bits + max(1, int(n_owners * self.n_types).bit_length())
        if bits > 62:
            raise ValueError(f"too many leads x activity times to pack into int64 keys ({bits} bits)")
        self.owner = np.asarray(owner, dtype=np.int64)
        self.type_code = np.asarray(type_code, dtype=np.int64)
        self.ns = np.asarray(ns, dtype=np.int64)
        self.rank = rank.astype(np.int64).ravel()
        self.sorted_keys = np.sort(self.key(self.owner * self.n_types + self.type_code, self.rank))

    def key(self, group: np.ndarray, rank: np.ndarray | int) -> np.ndarray:
        """The packed key of (group, rank); a group is (lead position x types + type) or another such product."""
        return (np.asarray(group, dtype=np.int64) << self.rank_bits) | np.asarray(rank, dtype=np.int64)


class _Queries:
    """A batch of as-of questions (lead position, time in ns) with the lead attributes and the activity index.

    The queries are kept sorted by (lead, time), so every needle handed to `np.searchsorted` is sorted (which is
    what makes the searches fast), and answers are cached per (activity type, window). `order` maps back: the
    i-th sorted query is the `order[i]`-th query as given.
    """

    def __init__(self, attributes: pd.DataFrame, index: ActivityIndex, owner: np.ndarray, ns: np.ndarray) -> None:
        self.attributes = attributes
        self.index = index
        self.order = np.lexsort((ns, owner))
        self.owner = np.asarray(owner, dtype=np.int64)[self.order]
        self.ns = np.asarray(ns, dtype=np.int64)[self.order]
        self._time_order: np.ndarray | None = None
        self._ranks: dict[int, np.ndarray] = {}
        self._starts: dict[int, np.ndarray] = {}
        self._prefix: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ns)

    def restore(self, values: np.ndarray) -> np.ndarray:
        """Values in sorted-query order back in the order the queries were given."""
        out = np.empty_like(values)
        out[self.order] = values
        return out

    def rank(self, shift_ns: int = 0) -> np.ndarray:
        """Per query: the number of distinct activity times <= t - shift_ns."""
        if shift_ns not in self._ranks:
            if self._time_order is None:
                self._time_order = np.argsort(self.ns, kind="stable")
            ranks = np.empty(len(self.ns), dtype=np.int64)
            ranks[self._time_order] = np.searchsorted(
                self.index.times, self.ns[self._time_order] - shift_ns, side="right"
            )
            self._ranks[shift_ns] = ranks
        return self._ranks[shift_ns]

    def _count_upto(self, type_code: int, shift_ns: int) -> np.ndarray:
        """Per query: activities of one type with ts <= t - shift_ns."""
        if (type_code, shift_ns) not in self._prefix:
            group = self.owner * self.index.n_types + type_code
            if type_code not in self._starts:
                self._starts[type_code] = np.searchsorted(self.index.sorted_keys, self.index.key(group, 0))
            upto = np.searchsorted(self.index.sorted_keys, self.index.key(group, self.rank(shift_ns)))
            self._prefix[(type_code, shift_ns)] = upto - self._starts[type_code]
        return self._prefix[(type_code, shift_ns)]

    def count(self, types: tuple[str, ...], within_ns: int | None = None) -> np.ndarray:
        """Per query: activities of `types` with ts <= t (and ts > t - within_ns when a window is given)."""
        total = np.zeros(len(self.ns), dtype=np.int64)
        for name in types:
            code = vocab.ACTIVITY_TYPES.index(name)
            total += self._count_upto(code, 0)
            if within_ns is not None:
                total -= self._count_upto(code, within_ns)
        return total

    def decayed(self, types: tuple[str, ...], half_life_ns: float, shift_ns: int = 0) -> np.ndarray:
        """Per query: the sum over activities of `types` with ts <= u of 2 ** (-(u - ts) / half_life), u = t - shift.

        Sums are kept relative to a reference that moves every `_DECAY_EPOCH_HALF_LIVES` half-lives, so no power
        of two overflows: each activity is filed under its own epoch and the next, and a query reads the
        cumulative sum of its own epoch's segment (older activities weigh < 2**-400 and are left out).
        """
        index = self.index
        mask = np.isin(index.type_code, [vocab.ACTIVITY_TYPES.index(t) for t in types])
        out = np.zeros(len(self.ns), dtype=float)
        if not mask.any() or not len(self.ns):
            return out
        ev_owner, ev_ns, ev_rank = index.owner[mask], index.ns[mask], index.rank[mask]
        span = int(_DECAY_EPOCH_HALF_LIVES * half_life_ns)
        origin = int(ev_ns.min())
        ev_epoch = (ev_ns - origin) // span
        n_frames = int(ev_epoch.max()) + 2
        frame = np.concatenate([ev_epoch, ev_epoch + 1])
        keys = index.key(np.tile(ev_owner, 2) * n_frames + frame, np.tile(ev_rank, 2))
        weight = np.exp2((np.tile(ev_ns, 2) - (origin + (frame - 1) * span)) / half_life_ns)
        order = np.argsort(keys, kind="stable")
        keys, weight = keys[order], weight[order]
        cumulative = pd.Series(weight).groupby(keys >> index.rank_bits, sort=False).cumsum().to_numpy()
        at = self.ns - shift_ns
        q_frame = np.clip((at - origin) // span, 0, n_frames - 1)
        group = self.owner * n_frames + q_frame
        start = np.searchsorted(keys, index.key(group, 0))
        last = np.searchsorted(keys, index.key(group, self.rank(shift_ns))) - 1
        hit = (last >= start) & (at >= origin)
        reference = origin + (q_frame[hit] - 1) * span
        out[hit] = cumulative[last[hit]] * np.exp2(-(at[hit] - reference) / half_life_ns)
        return out


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------


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
            result = {
                "eq": lambda: values == cond.value,
                "ne": lambda: values != cond.value,
                "gt": lambda: values > cond.value,
                "gte": lambda: values >= cond.value,
                "lt": lambda: values < cond.value,
                "lte": lambda: values <= cond.value,
                "between": lambda: (values >= cond.value[0]) & (values <= cond.value[1]),
                "in": lambda: np.isin(values, cond.value),
                "not_in": lambda: ~np.isin(values, cond.value),
            }[cond.op]()
    else:
        result = {
            "eq": lambda: (column == cond.value).to_numpy(dtype=bool),
            "ne": lambda: (column != cond.value).to_numpy(dtype=bool),
            "in": lambda: column.isin(cond.value).to_numpy(),
            "not_in": lambda: ~column.isin(cond.value).to_numpy(),
        }[cond.op]()
    return np.asarray(result, dtype=bool) & present


def _condition_mask(cond: BaseModel, queries: _Queries) -> np.ndarray:
    """Per (sorted) query: does the condition hold at the query's time."""
    if isinstance(cond, FieldCondition):
        return _field_mask(cond, queries.attributes)[queries.owner]
    if isinstance(cond, ActivityCondition):
        within = None if cond.within_days is None else _days_ns(cond.within_days)
        return queries.count(cond.activity, within) >= cond.min_count
    if isinstance(cond, AllOf):
        return np.logical_and.reduce([_condition_mask(c, queries) for c in cond.all_of])
    if isinstance(cond, AnyOf):
        return np.logical_or.reduce([_condition_mask(c, queries) for c in cond.any_of])
    if isinstance(cond, Not):
        return ~_condition_mask(cond.not_, queries)
    raise TypeError(f"not a condition: {cond!r}")


def _engagement_units(rule: EngagementRule, queries: _Queries) -> tuple[np.ndarray, np.ndarray]:
    """Per (sorted) query: (activities counted, their weight: the count, or the decayed count with a half-life)."""
    within = None if rule.within_days is None else _days_ns(rule.within_days)
    count = queries.count(rule.activity, within)
    if rule.half_life_days is None:
        return count, count.astype(float)
    half_life = float(_days_ns(rule.half_life_days))
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


def _score(rules: RuleSet, plan: _Plan, queries: _Queries, explain: bool) -> dict[str, Any]:
    """Per query (in the order given): score, threshold, MQL flag, rule set and, when `explain`, the fired rules."""
    n = len(queries)
    rule_set = plan.set_of_lead[queries.owner]
    score = np.zeros(n, dtype=float)
    explanation = _Explanation(n) if explain else None
    for j, rule in enumerate((*rules.fit, *rules.engagement)):
        points = plan.points[rule_set, j]
        count = None
        if isinstance(rule, FitRule):
            contribution = np.where(_condition_mask(rule.when, queries), points, 0.0)
        else:
            count, weight = _engagement_units(rule, queries)
            contribution = weight * points
            if rule.max_points is not None:
                contribution = np.clip(contribution, -rule.max_points, rule.max_points)
        score += contribution
        if explanation is not None:
            rows = np.flatnonzero(np.round(contribution, 1) != 0)  # what would read "+0" is left out
            words = pa.scalar(_rule_words(rule)) if count is None else _engagement_words(rule, count[rows])
            explanation.add(
                queries.order[rows], pc.binary_join_element_wise(words, " (", _signed(contribution[rows]), ")", "")
            )
    threshold = plan.thresholds[rule_set]
    mql = np.where(np.isnan(threshold), True, score >= np.where(np.isnan(threshold), np.inf, threshold))
    for gate in rules.gates:
        holds = _condition_mask(gate.when, queries)
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
    return positions.astype(np.int64)


def _snapshot_ns(values: pd.Series) -> np.ndarray:
    """Snapshot times as int64 UTC nanoseconds; CrmDataError when some are missing or not timestamps."""
    try:
        stamps = to_utc(values)
    except (ValueError, TypeError) as exc:
        raise CrmDataError(f"snapshots, column 'snapshot_at': not timestamps ({exc})") from None
    if stamps.isna().any():
        raise CrmDataError(f"snapshots, column 'snapshot_at': {int(stamps.isna().sum())} missing value(s)")
    return pd.DatetimeIndex(stamps).as_unit("ns").asi8


def _utc(ns: np.ndarray) -> pd.Series:
    """int64 nanoseconds (int64 minimum: NaT) as a tz-aware UTC series."""
    return pd.Series(pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]"), tz="UTC"))


@dataclass(frozen=True)
class _Setup:
    """What every scoring of snapshot rows needs: attributes, the resolved overrides and the activity index."""

    leads: pd.DataFrame
    attributes: pd.DataFrame
    plan: _Plan
    index: ActivityIndex
    snap_owner: np.ndarray
    snap_ns: np.ndarray
    scored_leads: np.ndarray


def _setup(rules: RuleSet, snapshots: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> _Setup:
    """Check the inputs, resolve the overrides and index the scored leads' activities."""
    missing = [c for c in ("lead_id", "snapshot_at") if c not in snapshots.columns]
    if missing:
        raise CrmDataError(f"snapshots lack column(s) {missing}; they have {list(snapshots.columns)}")
    check_rules_against_crm(rules, tables["campaigns"])
    leads, activities = tables["leads"], tables["activities"]
    attributes = lead_attributes(leads, tables["accounts"], tables["campaigns"])
    attributes = pd.concat([attributes, attribute_columns(rules, leads, tables)], axis=1)
    plan = _plan(rules, attributes)

    snap_ns = _snapshot_ns(snapshots["snapshot_at"])
    snap_owner = _positions(snapshots["lead_id"], leads["lead_id"], "snapshots")
    act_owner = pd.Index(leads["lead_id"]).get_indexer(activities["lead_id"]).astype(np.int64)
    scored_leads = np.zeros(len(leads), dtype=bool)
    scored_leads[snap_owner] = True
    type_code = pd.Categorical(activities["activity_type"], categories=vocab.ACTIVITY_TYPES).codes.astype(np.int64)
    keep = (act_owner >= 0) & scored_leads[np.maximum(act_owner, 0)] & (type_code >= 0)
    index = ActivityIndex(act_owner[keep], type_code[keep], _nanoseconds(activities["occurred_at"])[keep], len(leads))
    return _Setup(leads, attributes, plan, index, snap_owner, snap_ns, scored_leads)


def evaluate_rules(rules: RuleSet, snapshots: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Score every (lead_id, snapshot_at) with the rules, counting only activities stamped <= snapshot_at.

    `tables` holds campaigns, accounts, leads and activities with canonical dtypes. Returns one row per snapshot
    row (same order) with the columns of `OUTPUT_COLUMNS`: rule_mql is the state at the snapshot
    (score >= threshold and every gate holds); rule_mql_since is the first moment at or before the snapshot at
    which the rules held MQL (checked at the lead's creation, its activities and its snapshots), as an
    automation tool that never un-marks an MQL would have recorded it (NaT: not by then).
    """
    setup = _setup(rules, snapshots, tables)
    leads, attributes, plan, index = setup.leads, setup.attributes, setup.plan, setup.index
    snap_owner, snap_ns, scored_leads = setup.snap_owner, setup.snap_ns, setup.scored_leads

    result = _score(rules, plan, _Queries(attributes, index, snap_owner, snap_ns), explain=True)
    first = _first_mql(rules, plan, attributes, index, leads, snap_owner, snap_ns)[snap_owner]
    frame = pd.DataFrame(
        {
            "lead_id": snapshots["lead_id"].to_numpy(dtype=np.int64),
            "snapshot_at": _utc(snap_ns),
            "rule_score": result["rule_score"],
            "rule_threshold": result["rule_threshold"],
            "rule_mql": result["rule_mql"],
            "rule_mql_since": _utc(np.where(first <= snap_ns, first, np.iinfo(np.int64).min)),
            "rule_set": pd.Series(np.asarray(plan.labels, dtype=object)[result["rule_set"]], dtype="string"),
            "rules_fired": result["rules_fired"],
        }
    )
    log.info(
        "rules scored %s snapshot rows of %s leads: %.1f%% MQL at the snapshot, %.1f%% marked MQL by then",
        f"{len(frame):,}",
        f"{int(scored_leads.sum()):,}",
        100 * frame["rule_mql"].mean() if len(frame) else 0,
        100 * frame["rule_mql_since"].notna().mean() if len(frame) else 0,
    )
    return frame


def derive_rules(rules: RuleSet, half_life_days: float | None = None, within_days: float | None = None) -> RuleSet:
    """The same points with every engagement rule decayed and/or windowed (the standard variants a marketer would
    configure): rules that already have a half-life or a window keep theirs. The threshold is kept as is; its
    scale no longer fits decayed points, so the evaluate stage matches the variant's MQL volume instead."""
    engagement = tuple(
        rule.model_copy(
            update={
                "half_life_days": rule.half_life_days if rule.half_life_days is not None else half_life_days,
                "within_days": rule.within_days if rule.within_days is not None else within_days,
            }
        )
        for rule in rules.engagement
    )
    parts = [
        f"half-life {half_life_days:g} days" if half_life_days else "",
        f"window {within_days:g} days" if within_days else "",
    ]
    description = f"{rules.description or 'rules'} ({', '.join(p for p in parts if p)})"
    return rules.model_copy(update={"engagement": engagement, "description": description})


#: Columns of the variants frame per variant `<name>`: score, MQL by the file's own threshold and gates, gates alone.
VARIANT_SUFFIXES: Final[tuple[str, ...]] = ("_score", "_mql", "_gates")


def score_variants(
    variants: Mapping[str, RuleSet], snapshots: pd.DataFrame, tables: Mapping[str, pd.DataFrame]
) -> pd.DataFrame:
    """Every variant scored on the same (lead_id, snapshot_at) rows (input order): `<name>_score`, `<name>_mql`
    (the file's threshold and gates) and `<name>_gates` (every gate holds; true without gates), so a caller can
    put its own threshold on the score and keep the gates."""
    out = pd.DataFrame(
        {
            "lead_id": snapshots["lead_id"].to_numpy(dtype=np.int64),
            "snapshot_at": _utc(_snapshot_ns(snapshots["snapshot_at"])),
        }
    )
    for name, rules in variants.items():
        setup = _setup(rules, snapshots, tables)
        queries = _Queries(setup.attributes, setup.index, setup.snap_owner, setup.snap_ns)
        result = _score(rules, setup.plan, queries, explain=False)
        gates = np.ones(len(queries), dtype=bool)
        for gate in rules.gates:
            gates &= _condition_mask(gate.when, queries)
        out[f"{name}_score"] = result["rule_score"]
        out[f"{name}_mql"] = result["rule_mql"]
        out[f"{name}_gates"] = queries.restore(gates)
        log.info(
            "rule variant %s: %.1f%% MQL rows at its own threshold and gates",
            name,
            100 * out[f"{name}_mql"].mean() if len(out) else 0.0,
        )
    return out


def _first_mql(
    rules: RuleSet,
    plan: _Plan,
    attributes: pd.DataFrame,
    index: ActivityIndex,
    leads: pd.DataFrame,
    snap_owner: np.ndarray,
    snap_ns: np.ndarray,
) -> np.ndarray:
    """Per lead position: the first time (ns) the rules held MQL, checked at creation, activities and snapshots.

    Only times up to the lead's last snapshot are checked; int64 max means "not by then". Exact for rules whose
    score and gates only move at activities (no windows, no decay); with windows or decay a score can also rise
    between activities (a negative activity ageing out), which this check sees only at the next activity or
    snapshot.
    """
    n = len(leads)
    never = np.iinfo(np.int64).min
    last = np.full(n, never, dtype=np.int64)
    np.maximum.at(last, snap_owner, snap_ns)
    candidates = np.flatnonzero(last > never)
    owner = np.concatenate([index.owner, candidates, snap_owner])
    ns = np.concatenate([index.ns, _nanoseconds(leads["created_at"])[candidates], snap_ns])
    keep = ns <= last[owner]
    owner, ns = owner[keep], ns[keep]
    mql = _score(rules, plan, _Queries(attributes, index, owner, ns), explain=False)["rule_mql"]
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, owner[mql], ns[mql])
    return first


# ----------------------------------------------------------------------------------------------------------------
# I/O for the CLI
# ----------------------------------------------------------------------------------------------------------------

#: The raw columns the rules read (stage_history only because the snapshot reader wants every table; it is dropped).
RAW_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "campaigns": ("campaign_id", "channel"),
    "accounts": ("account_id", "industry", "employee_count", "annual_revenue", "country", "region"),
    "leads": (
        "lead_id",
        "account_id",
        "created_at",
        "email",
        "job_title",
        "lead_source",
        "campaign_id",
        "country",
        "budget_range",
        "purchase_timeframe",
    ),
    "activities": ("lead_id", "occurred_at", "activity_type"),
    "stage_history": ("stage_history_id",),
}


def load_variants(params: RulesParams) -> dict[str, RuleSet]:
    """The rules of every variant of `params.variants`: its own file, or `params.file` decayed and/or windowed."""
    base: RuleSet | None = None
    out: dict[str, RuleSet] = {}
    for name, variant in params.variants.items():
        if variant.file is not None:
            out[name] = load_rules(variant.file)
            continue
        base = base or load_rules(params.file)
        out[name] = derive_rules(base, variant.half_life_days, variant.within_days)
    return out


def read_raw_tables(raw: Path) -> dict[str, pd.DataFrame]:
    """The tables the rules need from the extract stage's snapshot folder (validated when it was written)."""
    from pipelines.extract import read_snapshot

    tables, _ = read_snapshot(raw, RAW_COLUMNS, {"activities": ("activity_type",)})
    return {name: tables[name] for name in (*INPUT_TABLES, "lead_attributes") if name in tables}


def read_snapshot_keys(path: Path) -> pd.DataFrame:
    """The (lead_id, snapshot_at) pairs to score from the features stage's Parquet file (no other column is read)."""
    if not Path(path).exists():
        raise CrmDataError(f"snapshots file {path} not found (run the features stage first)")
    try:
        return pd.read_parquet(path, columns=["lead_id", "snapshot_at"])
    except (KeyError, ValueError, OSError) as exc:
        raise CrmDataError(f"snapshots file {path} must be Parquet with lead_id and snapshot_at: {exc}") from None


def write_scores(scores: pd.DataFrame, path: Path) -> None:
    """Write the rule scores atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        scores.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
