"""The rules file: its model (fit and engagement rules, gates, overrides), validation with messages that name the
rule and key, and the checks that need the CRM's campaigns (format: docs/rules.md).

A condition's value may name the ideal customer profile of the params (`{icp: industries}`), so the profile is
written once, in `features.icp`; such references are resolved while the file is validated.

Pure: a loaded YAML mapping and the profile in, a frozen `RuleSet` out (reading the file is `pipelines.rules.io`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import pandas as pd
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
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipelines.config import IcpParams
from pipelines.crm import vocab
from pipelines.crm.titles import DEPARTMENTS, SENIORITIES
from pipelines.errors import ParamsError

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
# The ideal customer profile of the params, named from a condition's value
# ----------------------------------------------------------------------------------------------------------------

#: `{icp: KEY}` as a condition's value stands for this part of `features.icp`, so the rules, the features' fit flags
#: and the demo's historical rule share one profile. KEY -> (what it is, the ops it goes with).
ICP_KEYS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "industries": ("a list of industries", ("in", "not_in")),
    "regions": ("a list of regions", ("in", "not_in")),
    "employees": ("[employees_min, employees_max]", ("between",)),
    "employees_min": ("a number", ("eq", "ne", "gt", "gte", "lt", "lte")),
    "employees_max": ("a number", ("eq", "ne", "gt", "gte", "lt", "lte")),
}
#: The context key under which `parse_rules` hands the profile to the validators.
_ICP_CONTEXT: Final = "icp"


def icp_value(icp: IcpParams, key: str) -> object:
    """The value `{icp: key}` stands for (a list, a [low, high] pair or a number), as a rules file would spell it."""
    if key == "industries":
        return list(icp.industries)
    if key == "regions":
        return list(icp.regions)
    if key == "employees":
        return [icp.employees_min, icp.employees_max]
    if key == "employees_min":
        return icp.employees_min
    if key == "employees_max":
        return icp.employees_max
    raise KeyError(key)


def _resolve_icp(reference: dict[Any, Any], field: object, op: object, icp: object) -> object:
    """The profile's value for a `{icp: KEY}` value; a ValueError says what is wrong with the reference."""
    key = reference.get("icp")
    if set(reference) != {"icp"} or not isinstance(key, str):
        raise ValueError(
            f"a value written as a mapping must be a reference to the ideal customer profile, {{icp: KEY}} with KEY "
            f"one of {list(ICP_KEYS)}; got {reference!r}"
        )
    if key not in ICP_KEYS:
        raise ValueError(
            f"unknown ICP key {key!r} in {{icp: {key}}}; expected one of {list(ICP_KEYS)} "
            "(features.icp of params.yaml; employees is [employees_min, employees_max])"
        )
    what, ops = ICP_KEYS[key]
    if isinstance(op, str) and op not in ops:
        choices = ops[0] if len(ops) == 1 else f"{', '.join(ops[:-1])} or {ops[-1]}"
        raise ValueError(f"{{icp: {key}}} is {what}: use it with op {choices}, not {op!r}")
    if not isinstance(icp, IcpParams):
        raise ValueError(
            f"{{icp: {key}}} names the ideal customer profile, but the rules were read without the params' "
            "features.icp (pass it to load_rules / parse_rules)"
        )
    value = icp_value(icp, key)
    spec = FIELDS.get(field) if isinstance(field, str) else None
    if spec is not None and spec.values is not None and isinstance(value, list):
        unknown = [v for v in value if v not in spec.values]
        if unknown:
            raise ValueError(
                f"features.icp.{key} of the params holds unknown {field} value(s) {unknown}; "
                f"expected any of {list(spec.values)}"
            )
    return value


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

    @field_validator("value", mode="before")
    @classmethod
    def _icp_reference(cls, value: object, info: ValidationInfo) -> object:
        """`{icp: KEY}` becomes the params' profile value here, so every check below applies to it."""
        if not isinstance(value, dict):
            return value
        context = info.context if isinstance(info.context, dict) else {}
        return _resolve_icp(value, info.data.get("field"), info.data.get("op"), context.get(_ICP_CONTEXT))

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
    kinds: dict[type, str] = {
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
        rules: tuple[FitRule | EngagementRule | Gate, ...] = (*self.fit, *self.engagement, *self.gates)
        names = [r.name for r in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique; repeated: {duplicates}")
        if self.threshold is None and not self.gates:
            raise ValueError("threshold is null and there are no gates: nothing would define an MQL")
        scored_rules: tuple[FitRule | EngagementRule, ...] = (*self.fit, *self.engagement)
        scored = {r.name for r in scored_rules}
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


def parse_rules(raw: object, source: str = "<rules>", icp: IcpParams | None = None) -> RuleSet:
    """A validated RuleSet from the loaded YAML, its `{icp: KEY}` values read from `icp` (the params'
    features.icp); RulesError lists every problem with its rule and key."""
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: a rules file must hold a mapping, got {type(raw).__name__}")
    try:
        return RuleSet.model_validate(raw, context={_ICP_CONTEXT: icp})
    except ValidationError as exc:
        lines = [f"{source}: {exc.error_count()} problem(s) in the rules file"]
        for err in exc.errors():
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            message = message.removeprefix("Value error, ")
            lines.append(f"  {_describe_location(raw, err['loc'])}: {message}")
        raise RulesError("\n".join(lines)) from None


def conditions(condition: BaseModel) -> Iterator[BaseModel]:
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
        yield from conditions(child)


def check_rules_against_crm(rules: RuleSet, campaigns: pd.DataFrame) -> None:
    """RulesError if the rules name campaign ids the campaigns table does not hold."""
    known = set(pd.to_numeric(campaigns["campaign_id"]).astype("int64").tolist())
    problems = [
        f"overrides.campaigns.{cid}: unknown campaign id {cid} (not in the campaigns table)"
        for cid in rules.overrides.campaigns
        if cid not in known
    ]
    conditional: tuple[FitRule | Gate, ...] = (*rules.fit, *rules.gates)
    for rule in conditional:
        for cond in conditions(rule.when):
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


def conditions_of(rules: RuleSet) -> Iterator[BaseModel]:
    """Every condition of every rule and gate, nested ones included."""
    for rule in (*rules.fit, *rules.engagement, *rules.gates):
        when = getattr(rule, "when", None)
        if when is not None:
            yield from conditions(when)
