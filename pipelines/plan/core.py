"""The pure core of `leadscore plan`: a sales target in, the new leads and MQLs each campaign needs out.

The funnel practice sets MQL targets backwards from the sales target; calibrated probabilities make that
arithmetic honest. Per campaign (its leads as the CRM knows them at the latest nightly run's as-of time t):

- *SQLs it brings now*: the sum of the latest run's calibrated probabilities over the campaign's open leads, of
  every age (the expected SQLs within `features.horizon_days`), per period = sum x period / horizon. Most SQLs come
  from leads months old (on the demo, 31% of SQL entries are from leads over a year old), so the pipeline of every
  age is what today's lead flow yields, not its newest leads alone.
- *new leads it gets now*: its leads created in the `recent_days` before t, per period.
- *SQLs per new lead* = SQLs now / new leads now: the yield of its lead flow in steady state (a new lead brings, over
  its life, what the flow's older leads bring now).
- *funnel rates* from its leads created `history_days` to `features.horizon_days` before t: lead -> MQL (reached MQL
  or later by t) and SQL -> Won (won by t, among those that reached SQL); a campaign without such leads (a new one)
  takes the rates of all the campaigns planned, and the plan's notes say so.
- the target's share of each campaign: the `mix` given, else in proportion to the SQLs (or wins) it brings now;
  SQLs it must deliver = target x share (wins: / its SQL -> Won rate); new leads needed = SQLs / SQLs per new lead;
  MQLs needed = new leads x lead -> MQL rate.

Intervals resample accounts (`modeling.ClusterBootstrap`; a lead without an account is its own cluster), the whole
plan recomputed on each resample. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from pipelines.config import FeaturesParams, PlanParams
from pipelines.errors import BadInputError
from pipelines.features import timeline as tl
from pipelines.features.snapshots import TARGET_STAGES, StageIndex, first_entry_seconds
from pipelines.modeling import ClusterBootstrap, clean_json, cluster_ids

Per = Literal["week", "month", "quarter"]
#: Days in each planning period (a month and a quarter of the average year).
PERIOD_DAYS: Final[dict[str, float]] = {"week": 7.0, "month": 365.25 / 12, "quarter": 365.25 / 4}
NO_CAMPAIGN: Final = "(no campaign)"
UNKNOWN: Final = "(unknown)"
#: Columns the plan needs of the CRM's leads and of the latest run's scores.
LEAD_INPUT: Final[tuple[str, ...]] = ("lead_id", "account_id", "created_at", "campaign", "region")
SCORE_INPUT: Final[tuple[str, ...]] = ("lead_id", "probability")
_MQL_OR_LATER: Final = frozenset({"MQL"}) | TARGET_STAGES["SAL"]


class PlanInputError(BadInputError):
    """The target, the campaigns or regions asked for, or the inputs are unusable: the CLI exits with 2."""


@dataclass(frozen=True)
class Target:
    """What sales must deliver: `value` SQLs or wins per `per`."""

    kind: Literal["sql", "wins"]
    value: float
    per: Per

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value > 0):
            raise PlanInputError(f"the target must be a positive number, not {self.value}")
        if self.per not in PERIOD_DAYS:
            raise PlanInputError(f"--per must be one of {sorted(PERIOD_DAYS)}, not {self.per!r}")


@dataclass(frozen=True)
class Plan:
    """Per campaign (one row each, `campaign` first) and in total: what the target needs, with intervals."""

    target: Target
    as_of: pd.Timestamp
    run_id: str
    table: pd.DataFrame
    total: dict[str, float]
    ci_level: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (`--json`)."""
        rows = clean_json(self.table.to_dict(orient="records"))  # NaN (no figure) as null
        return {
            "target": {"kind": self.target.kind, "value": self.target.value, "per": self.target.per},
            "as_of": self.as_of.isoformat(),
            "run_id": self.run_id,
            "ci_level": self.ci_level,
            "campaigns": rows,
            "total": clean_json(self.total),
            "notes": self.notes,
        }


def parse_mix(values: Sequence[str]) -> tuple[list[str], dict[str, float] | None]:
    """`--campaign NAME` or `--campaign NAME=SHARE` options: the campaigns, and the shares when every one has one."""
    names, shares = [], {}
    for value in values:
        name, sep, share = value.rpartition("=") if "=" in value else (value, "", "")
        name = name.strip()
        names.append(name)
        if sep:
            try:
                shares[name] = float(share)
            except ValueError:
                raise PlanInputError(f"--campaign {value!r}: the share after '=' must be a number") from None
            if not (math.isfinite(shares[name]) and shares[name] > 0):
                raise PlanInputError(f"--campaign {value!r}: the share must be positive")
    if shares and len(shares) != len(names):
        raise PlanInputError("--campaign: give a share (NAME=SHARE) for every campaign, or for none")
    return names, (shares or None)


def _first_seconds(stage_history: pd.DataFrame, lead_ids: np.ndarray, stages: frozenset[str]) -> np.ndarray:
    index = StageIndex.build(stage_history, lead_ids)
    return first_entry_seconds(index, stages, len(lead_ids))


def lead_outcomes(
    leads: pd.DataFrame, scores: pd.DataFrame, stage_history: pd.DataFrame, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Per CRM lead known at as_of: whether it reached MQL (or later), SQL (or later) and Won by as_of, and the
    latest run's calibrated probability when it was scored (open then), NaN otherwise."""
    missing = [c for c in LEAD_INPUT if c not in leads.columns] + [c for c in SCORE_INPUT if c not in scores.columns]
    if missing:
        raise PlanInputError(f"plan inputs lack column(s) {missing}")
    at = int(pd.Timestamp(as_of).value // 1_000_000_000)
    created = tl.known_seconds(leads["created_at"])
    known = leads.loc[created <= at].reset_index(drop=True)
    ids = known["lead_id"].to_numpy(dtype=np.int64)
    out = known[list(LEAD_INPUT)].copy()
    out["created_sec"] = tl.known_seconds(known["created_at"])
    out["mql"] = _first_seconds(stage_history, ids, _MQL_OR_LATER) <= at
    out["sql"] = _first_seconds(stage_history, ids, TARGET_STAGES["SQL"]) <= at
    out["won"] = _first_seconds(stage_history, ids, frozenset({"Won"})) <= at
    prob = scores.drop_duplicates("lead_id").set_index("lead_id")["probability"].astype(float)
    out["probability"] = pd.Series(ids).map(prob).to_numpy(dtype=float)
    out["cluster"] = cluster_ids(out)
    return out


def _select(rows: pd.DataFrame, campaigns: Sequence[str], regions: Sequence[str]) -> pd.DataFrame:
    """The rows of the campaigns and regions asked for (all when none); unknown names are bad input."""
    for asked, column, flag in ((campaigns, "campaign", "--campaign"), (regions, "region", "--region")):
        known = sorted(rows[column].dropna().astype(str).unique())
        unknown = [c for c in asked if c not in known]
        if unknown:
            shown = ", ".join(repr(k) for k in known[:30]) + (" ..." if len(known) > 30 else "")
            raise PlanInputError(f"{flag} {unknown} not found in the CRM's leads; known: {shown}")
    keep = np.ones(len(rows), dtype=bool)
    if campaigns:
        keep &= rows["campaign"].isin(list(campaigns)).to_numpy()
    if regions:
        keep &= rows["region"].isin(list(regions)).to_numpy()
    return rows.loc[keep].reset_index(drop=True)


@dataclass(frozen=True)
class _Window:
    """The plan's time scales: the target's period, the probabilities' horizon, the recent-inflow window (days)."""

    period: float
    horizon: int
    recent: int


def _figures(
    rows: pd.DataFrame,
    code: np.ndarray,
    n_groups: int,
    recent: np.ndarray,
    history: np.ndarray,
    target: Target,
    mix: np.ndarray | None,
    window: _Window,
) -> dict[str, np.ndarray]:
    """The plan's per-campaign arrays on `rows` (the full rows, or one resample of them)."""

    def per_group(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        mask = np.ones(len(values), dtype=bool) if mask is None else mask
        return np.bincount(code[mask], weights=values[mask].astype(float), minlength=n_groups)

    prob = rows["probability"].to_numpy(dtype=float)
    sql = rows["sql"].to_numpy(dtype=bool)
    open_leads = per_group((~np.isnan(prob)).astype(float))
    expected = per_group(np.nan_to_num(prob, nan=0.0))  # the run's open leads of every age: the pipeline
    n_recent = per_group(np.ones(len(rows)), recent)
    with np.errstate(divide="ignore", invalid="ignore"):
        sql_now = expected * window.period / window.horizon
        leads_now = n_recent * window.period / window.recent
        sql_per_lead = sql_now / leads_now
        n_hist = per_group(np.ones(len(rows)), history)
        hist_mql = per_group(rows["mql"].to_numpy(dtype=float), history)
        hist_sql = per_group(sql.astype(float), history)
        hist_won = per_group((rows["won"].to_numpy(dtype=bool) & sql).astype(float), history)
        # a campaign too young for funnel rates of its own takes those of every campaign planned
        mql_rate = np.where(n_hist > 0, hist_mql / n_hist, hist_mql.sum() / n_hist.sum())
        win_rate = np.where(hist_sql > 0, hist_won / hist_sql, hist_won.sum() / hist_sql.sum())
        weight = sql_now if target.kind == "sql" else sql_now * np.nan_to_num(win_rate)
        usable = (n_recent > 0) & (sql_per_lead > 0)
        base = np.where(usable, mix if mix is not None else weight, 0.0)
        share = base / base.sum() if base.sum() > 0 else np.full(n_groups, np.nan)
        target_sql = target.value * share if target.kind == "sql" else target.value * share / win_rate
        leads_needed = np.where(share > 0, target_sql / sql_per_lead, 0.0)
        mqls_needed = leads_needed * mql_rate
    return {
        "open_leads": open_leads,
        "expected_sql_open": expected,
        "sql_now": sql_now,
        "recent_leads": n_recent,
        "new_leads_now": leads_now,
        "sql_per_lead": sql_per_lead,
        "historical_leads": n_hist,
        "mql_rate": mql_rate,
        "win_rate": win_rate,
        "share": share,
        "target_sql": target_sql,
        "new_leads_needed": leads_needed,
        "mqls_needed": mqls_needed,
    }


_WITH_CI: Final[tuple[str, ...]] = ("sql_per_lead", "mql_rate", "win_rate", "new_leads_needed", "mqls_needed")


def plan_target(
    outcomes: pd.DataFrame,
    as_of: pd.Timestamp,
    run_id: str,
    target: Target,
    params: PlanParams,
    features: FeaturesParams,
    seed: int,
    campaigns: Sequence[str] = (),
    regions: Sequence[str] = (),
    mix: Mapping[str, float] | None = None,
) -> Plan:
    """The plan for `target` from `lead_outcomes` rows, per campaign (those asked for, else every campaign with
    recent leads), with bootstrap intervals over accounts."""
    if features.target_stage != "SQL":
        raise PlanInputError(
            f"the model predicts reaching {features.target_stage} (features.target_stage), not SQL: the plan's "
            "SQLs per lead come from its probabilities, so it needs target_stage SQL"
        )
    rows = _select(outcomes, campaigns, regions)
    at = int(pd.Timestamp(as_of).value // 1_000_000_000)
    created = rows["created_sec"].to_numpy(dtype=np.int64)
    recent = created > at - params.recent_days * tl.DAY
    history = (created > at - params.history_days * tl.DAY) & (created <= at - features.horizon_days * tl.DAY)
    names, code = np.unique(rows["campaign"].astype(str).to_numpy(), return_inverse=True)
    keep_groups = np.bincount(code[recent], minlength=len(names)) > 0
    notes = []
    has_history = np.bincount(code[history], minlength=len(names)) > 0
    young = [str(n) for n, h, k in zip(names, has_history, keep_groups, strict=True) if k and not h]
    if young:
        notes.append(
            f"{len(young)} campaign(s) have no lead created {features.horizon_days}-{params.history_days} days "
            f"before the run (e.g. {young[:3]}): their funnel rates are those of all campaigns planned"
        )
    if campaigns:
        idle = [str(n) for n, k in zip(names, keep_groups, strict=True) if not k]
        if idle:
            notes.append(f"no lead created in the {params.recent_days} days before the run: {idle} (no plan)")
    if not keep_groups.any():
        raise PlanInputError(
            f"no lead of the campaigns and regions asked for was created in the {params.recent_days} days before "
            f"the latest run (as of {pd.Timestamp(as_of):%Y-%m-%d}; plan.recent_days): nothing to plan from"
        )
    mix_array = None
    if mix is not None:
        mix_array = np.array([float(mix.get(str(n), 0.0)) for n in names])
    window = _Window(PERIOD_DAYS[target.per], features.horizon_days, params.recent_days)
    figures = _figures(rows, code, len(names), recent, history, target, mix_array, window)
    table = pd.DataFrame({"campaign": names, **figures})
    with np.errstate(divide="ignore", invalid="ignore"):
        table["needed_vs_now"] = table["new_leads_needed"] / table["new_leads_now"]

    def statistic(idx: np.ndarray) -> dict[str, float]:
        sample = rows.iloc[idx].reset_index(drop=True)
        got = _figures(sample, code[idx], len(names), recent[idx], history[idx], target, mix_array, window)
        out = {f"{name}|{j}": float(got[name][j]) for name in _WITH_CI for j in range(len(names))}
        out["total|new_leads_needed"] = float(np.nansum(got["new_leads_needed"]))
        out["total|mqls_needed"] = float(np.nansum(got["mqls_needed"]))
        return out

    boot = ClusterBootstrap(rows["cluster"].to_numpy(), seed)
    ci = boot.intervals(statistic, params.bootstrap, params.ci_level)
    nan = (float("nan"), float("nan"))
    for name in _WITH_CI:
        table[f"{name}_ci_low"] = [ci.get(f"{name}|{j}", nan)[0] for j in range(len(names))]
        table[f"{name}_ci_high"] = [ci.get(f"{name}|{j}", nan)[1] for j in range(len(names))]
    table = table.loc[keep_groups].sort_values("target_sql", ascending=False, kind="stable").reset_index(drop=True)
    total = {
        "target_sql": float(np.nansum(table["target_sql"])),
        "recent_leads": float(table["recent_leads"].sum()),
        "open_leads": float(table["open_leads"].sum()),
        "expected_sql_open": float(table["expected_sql_open"].sum()),
        "sql_now": float(table["sql_now"].sum()),
        "new_leads_needed": float(np.nansum(table["new_leads_needed"])),
        "mqls_needed": float(np.nansum(table["mqls_needed"])),
        "new_leads_now": float(table["new_leads_now"].sum()),
    }
    for name in ("new_leads_needed", "mqls_needed"):
        total[f"{name}_ci_low"], total[f"{name}_ci_high"] = ci.get(f"total|{name}", nan)
    if target.kind == "wins" and not np.isfinite(table["target_sql"]).all():
        notes.append("campaigns without a historical SQL -> Won conversion cannot be planned for wins (n/a)")
    return Plan(target, pd.Timestamp(as_of), run_id, table, total, params.ci_level, notes)


# ----------------------------------------------------------------------------------------------------------------
# What the report and the command line show
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanSection:
    """The plan, ready for any renderer: a one-sentence headline, column titles and formatted rows (total last)."""

    headline: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...]


def _n(value: Any, digits: int = 0) -> str:
    return f"{float(value):,.{digits}f}" if value is not None and math.isfinite(float(value)) else "n/a"


def _range(low: Any, high: Any, digits: int = 0) -> str:
    return f"{_n(low, digits)}-{_n(high, digits)}"


def plan_section(plan: Plan) -> PlanSection:
    """The plan as a table a marketer reads: per campaign the SQLs it must deliver and brings now, the new leads and
    MQLs needed per period with their interval, against the new leads it gets now."""
    per = plan.target.per
    what = "SQLs" if plan.target.kind == "sql" else "wins"
    level = f"{100 * plan.ci_level:.0f}%"
    columns = (
        "campaign",
        f"SQLs per {per} needed",
        f"SQLs per {per} now",
        "SQLs per new lead",
        f"new leads per {per} ({level} CI)",
        f"MQLs per {per} ({level} CI)",
        f"new leads per {per} now",
    )

    def cells(r: Any, yield_text: str) -> tuple[str, ...]:  # a table row or the total
        return (
            _n(r["target_sql"], 1),
            _n(r["sql_now"], 1),
            yield_text,
            f"{_n(r['new_leads_needed'])} ({_range(r['new_leads_needed_ci_low'], r['new_leads_needed_ci_high'])})",
            f"{_n(r['mqls_needed'])} ({_range(r['mqls_needed_ci_low'], r['mqls_needed_ci_high'])})",
            _n(r["new_leads_now"]),
        )

    rows = [(str(r["campaign"]), *cells(r, _n(r["sql_per_lead"], 3))) for _, r in plan.table.iterrows()]
    t = plan.total
    rows.append(("total", *cells(t, "")))
    headline = (
        f"{_n(plan.target.value)} {what} a {per} need about {_n(t['new_leads_needed'])} new leads "
        f"({_range(t['new_leads_needed_ci_low'], t['new_leads_needed_ci_high'])}) and {_n(t['mqls_needed'])} MQLs "
        f"a {per} across {len(plan.table)} campaign group(s); today they get {_n(t['new_leads_now'])} new leads "
        f"and their open leads are expected to bring {_n(t['sql_now'])} SQLs a {per}."
    )
    return PlanSection(headline, columns, tuple(rows), tuple(plan.notes))


def region_of(leads: pd.DataFrame, accounts: pd.DataFrame) -> pd.Series:
    """Each lead's region: its account's (`UNKNOWN` without an account or region)."""
    regions = accounts.set_index(accounts["account_id"].astype("int64"))["region"]
    region = leads["account_id"].astype("Int64").map(regions)
    return region.astype(object).where(region.notna(), UNKNOWN)


def campaign_of(leads: pd.DataFrame, campaigns: pd.DataFrame) -> pd.Series:
    """Each lead's campaign name (`NO_CAMPAIGN` without one)."""
    names = campaigns.set_index(campaigns["campaign_id"].astype("int64"))["name"]
    campaign = leads["campaign_id"].astype("Int64").map(names)
    return campaign.astype(object).where(campaign.notna(), NO_CAMPAIGN)


__all__ = ["PERIOD_DAYS", "Plan", "PlanSection", "Target", "lead_outcomes", "plan_section", "plan_target"]
