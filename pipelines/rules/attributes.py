"""What the rules see of each lead: the built-in fields a condition tests, the mapped attributes it names, and the
overrides (campaign > region > default) resolved into one rule set per lead.

Pure: CRM frames and a `RuleSet` in, frames and arrays out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.crm import vocab
from pipelines.crm.attributes import ATTRIBUTES_KEY, ATTRIBUTES_TABLE, attribute_kind
from pipelines.crm.titles import parse_titles
from pipelines.features.static import email_domains
from pipelines.rules.schema import (
    ATTRIBUTE_PREFIX,
    EngagementRule,
    FieldCondition,
    FitRule,
    RulesError,
    RuleSet,
    conditions_of,
    field_spec,
)


def attribute_columns(rules: RuleSet, leads: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The mapped attributes the rules test, as `attribute.<name>` columns aligned with `leads` (empty if none).

    A rule naming an attribute the CRM does not have, or testing a text attribute with a number (or the reverse), is
    a RulesError naming the rule's field and the attributes there are.
    """
    wanted = {
        c.field: c
        for c in conditions_of(rules)
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
class Plan:
    """The rules resolved per lead: each lead's rule-set index, and per rule set its threshold and points."""

    set_of_lead: np.ndarray  # int, per lead position
    labels: tuple[str, ...]  # per rule set: "default", "region:APAC", "campaign:12+region:APAC"
    thresholds: np.ndarray  # float per rule set (NaN: no threshold, the gates decide)
    points: np.ndarray  # (rule sets x scored rules) points


def resolve_overrides(rules: RuleSet, attributes: pd.DataFrame) -> Plan:
    """Resolve the overrides for every lead: a campaign's setting beats its region's, which beats the default."""
    regions = list(rules.overrides.regions)
    campaigns = list(rules.overrides.campaigns)
    # pandas-stubs accept only an Index as get_indexer's target; pandas takes any array-like (it wraps it itself)
    region_code = pd.Index(regions, dtype=object).get_indexer(attributes["region"]).astype(np.int64)  # type: ignore[arg-type]
    campaign_ids = attributes["campaign_id"].to_numpy()
    campaign_code = np.full(len(attributes), -1, dtype=np.int64)
    for code, cid in enumerate(campaigns):  # one pass per override in the file, never per lead
        campaign_code[campaign_ids == cid] = code
    combo = (campaign_code + 1) * (len(regions) + 1) + (region_code + 1)
    uniques, set_of_lead = np.unique(combo, return_inverse=True)
    scored: tuple[FitRule | EngagementRule, ...] = (*rules.fit, *rules.engagement)
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
    return Plan(
        set_of_lead=set_of_lead.astype(np.int64),
        labels=tuple(labels),
        thresholds=np.asarray(thresholds, dtype=float),
        points=np.asarray(points, dtype=float).reshape(len(uniques), len(scored)),
    )
