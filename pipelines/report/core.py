"""The pure core of the marketers' report: rule MQLs versus predicted MQLs, as tables ready to render.

Inputs are frames with documented columns (no I/O here):

- the *test rows* (`TEST_COLUMNS`): one row per open lead per snapshot date of the out-of-time test slice, with
  its outcome (`label`: reached the target stage within the horizon), the calibrated probability, the predicted
  stage and grade, the rule score and rule MQL flag, and lead attributes (seniority and department codes,
  company-fit flag, lead source, campaign name, region);
- the *latest nightly run* (`NIGHTLY_COLUMNS`): one row per lead of the most recent scoring run, joined with the
  same lead attributes; outcomes are not known yet, so it shows volumes only.

Conventions: a *cell* of the 2x2 is rule MQL (yes/no) x predicted MQL (stage MQL or higher: yes/no); conversion is
the share of rows whose label is 1. Confidence intervals resample *accounts* (all weekly rows of all the account's
leads together, `pipelines.modeling.ClusterBootstrap`; a lead without an account is its own cluster), as everywhere in
this project: rows of one lead are strongly correlated, and leads of one account share its buying state.
Volumes per week = rows / weeks covered, the list refreshed at each snapshot being worked until the next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from pipelines.calibrated import GRADES, NO_STAGE, THRESHOLD_STAGES, Thresholds
from pipelines.config import LeakageParams, ReportParams, StageThresholds
from pipelines.errors import BadInputError
from pipelines.evaluate import gains_table, tradeoff_table  # the evaluate stage's curves, so both agree
from pipelines.features.spec import WEIGHT
from pipelines.modeling import ClusterBootstrap
from pipelines.plan.core import PERIOD_DAYS, Per

#: Optional column of the test rows: the bootstrap cluster of each row (`pipelines.modeling.cluster_ids`).
CLUSTER: Final = "cluster"

#: Columns the test rows need (see the module docstring).
TEST_COLUMNS: Final[tuple[str, ...]] = (
    "lead_id",
    "snapshot_at",
    "label",
    "probability",
    "stage",
    "grade",
    "rule_score",
    "rule_mql",
    "fit",
    "seniority",
    "department",
    "lead_source",
    "campaign",
    "region",
)
#: Columns the latest nightly run needs.
NIGHTLY_COLUMNS: Final[tuple[str, ...]] = (
    "lead_id",
    "probability",
    "stage",
    "grade",
    "rule_mql",
    "fit",
    "seniority",
    "department",
    "lead_source",
    "campaign",
    "region",
    "reasons_positive",
    "reasons_negative",
)
#: The four cells of the 2x2, in display order: (key, label, rule MQL, predicted MQL).
CELLS: Final[tuple[tuple[str, str, bool, bool], ...]] = (
    ("both", "both (rule MQL and predicted MQL)", True, True),
    ("rule_only", "rule only (the model rejects it)", True, False),
    ("model_only", "model only (the rules missed it)", False, True),
    ("neither", "neither", False, False),
)
#: The fit x readiness quadrants: (key, label, fit, ready).
QUADRANTS: Final[tuple[tuple[str, str, bool, bool], ...]] = (
    ("fit_ready", "fit and ready: hand to sales", True, True),
    ("nurture", "fit, not yet ready: nurture", True, False),
    ("ready_not_fit", "ready but outside the ideal profile", False, True),
    ("neither", "neither fit nor ready", False, False),
)
NO_CAMPAIGN: Final = "(no campaign)"
UNKNOWN: Final = "(unknown)"


class ReportInputError(BadInputError):
    """The report's inputs lack a column or hold no rows (the CLI exits with 2)."""


def check_columns(frame: pd.DataFrame, needed: Sequence[str], what: str) -> None:
    """Raise ReportInputError naming the missing columns."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ReportInputError(f"{what} lack column(s) {missing}")


def predicted_mql(stage: pd.Series | np.ndarray) -> np.ndarray:
    """True where the predicted stage is MQL or higher."""
    return np.isin(np.asarray(stage, dtype=object), THRESHOLD_STAGES)


# ----------------------------------------------------------------------------------------------------------------
# Thresholds as marketers read them
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdNote:
    """One stage's threshold, or why it is unreachable (e.g. a precision policy no list can meet)."""

    stage: str
    threshold: float
    grade: str
    policy: str
    note: str


def threshold_notes(thresholds: Thresholds) -> list[ThresholdNote]:
    """Each stage's threshold in words; an unreachable one (null in thresholds.json) is said so plainly."""
    policies: Mapping[str, Any] = thresholds.report.get("policies", {})
    grade_of_stage = {s: g for g, s in GRADES.items() if s}
    out = []
    for stage in THRESHOLD_STAGES:
        value = thresholds.global_thresholds[stage]
        policy = dict(policies.get(stage, {}))
        words = _policy_words(policy, str(thresholds.report.get("volume", "standing")))
        if math.isfinite(value):
            note = f"probability >= {value:.4f} ({words})" if words else f"probability >= {value:.4f}"
        else:
            note = (
                f"unreachable: no threshold meets the policy ({words}) on the calibration slice, so no lead is "
                f"predicted {stage} and grade {grade_of_stage[stage]} is empty"
            )
        out.append(ThresholdNote(stage, value, grade_of_stage[stage], str(policy.get("policy", "")), note))
    return out


def _policy_words(policy: Mapping[str, Any], volume: str = "standing") -> str:
    kind = policy.get("policy")
    new = volume == "new"
    if kind == "capacity":
        return f"capacity: {policy.get('leads_per_week')} {'new hand-offs' if new else 'leads'} per week"
    if kind == "precision":
        return f"precision: at least {100 * float(policy.get('min_precision', 0)):.0f}% must reach the target"
    if kind == "match_rules":
        return "as many new hand-offs as the rule's new MQLs" if new else "as many leads as the rule MQLs"
    return ""


# ----------------------------------------------------------------------------------------------------------------
# The out-of-time test slice
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HoldoutRows:
    """The test rows with derived arrays, computed once (cell, group codes, bootstrap)."""

    rows: pd.DataFrame
    weeks: float
    y: np.ndarray
    rule: np.ndarray
    model: np.ndarray
    lead_id: np.ndarray
    cluster: np.ndarray  # bootstrap cluster per row: the lead's account (`modeling.cluster_ids`), else the lead

    @classmethod
    def from_rows(cls, rows: pd.DataFrame, weeks: float) -> HoldoutRows:
        """Check the columns and prepare the arrays; `weeks` is the span the rows cover (for volumes per week).

        Rows with a `weight` are repeated that many times, so every count of the report is in open-lead weeks
        (features.old_lead_keep_one_in makes the weights whole numbers)."""
        check_columns(rows, TEST_COLUMNS, "test rows")
        if rows.empty:
            raise ReportInputError("no test rows to report on")
        if not weeks > 0:
            raise ReportInputError(f"the test rows must cover a positive number of weeks, not {weeks}")
        if WEIGHT in rows.columns:  # a sampled long-open lead's row stands for several open-lead weeks: count them
            rows = rows.loc[rows.index.repeat(np.rint(rows[WEIGHT].to_numpy(dtype=float)).astype(np.int64))]
        rows = rows.reset_index(drop=True)
        return cls(
            rows=rows,
            weeks=float(weeks),
            y=rows["label"].to_numpy(dtype=np.int64),
            rule=rows["rule_mql"].to_numpy(dtype=bool),
            model=predicted_mql(rows["stage"]),
            lead_id=rows["lead_id"].to_numpy(dtype=np.int64),
            cluster=(rows[CLUSTER] if CLUSTER in rows.columns else -1 - rows["lead_id"]).to_numpy(dtype=np.int64),
        )


def rate_intervals(
    cluster_id: np.ndarray, y: np.ndarray, codes: np.ndarray, n_groups: int, bootstrap: int, ci_level: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster-bootstrap (accounts: `HoldoutRows.cluster`) percentile intervals of the conversion rate of each group
    (codes 0..n_groups-1; -1 = none).

    One pass computes every group's rate per resample (bincount), so many groups cost little more than one.
    """
    codes = np.asarray(codes, dtype=np.int64)
    lo, hi = np.full(n_groups, np.nan), np.full(n_groups, np.nan)
    if bootstrap <= 0 or n_groups == 0 or len(y) == 0:
        return lo, hi
    boot = ClusterBootstrap(cluster_id, seed)
    keep = codes >= 0

    def statistic(idx: np.ndarray) -> dict[str, float]:
        idx = idx[keep[idx]]
        n = np.bincount(codes[idx], minlength=n_groups)
        hits = np.bincount(codes[idx], weights=y[idx], minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = hits / n
        return {str(g): float(rate[g]) for g in range(n_groups)}

    for name, (low, high) in boot.intervals(statistic, bootstrap, ci_level).items():
        lo[int(name)], hi[int(name)] = low, high
    return lo, hi


def _group_stats(test: HoldoutRows, codes: np.ndarray, n_groups: int, params: ReportParams, seed: int) -> pd.DataFrame:
    """Rows, leads, rows per week, conversions and conversion rate with its interval, per group code."""
    keep = codes >= 0
    n = np.bincount(codes[keep], minlength=n_groups)
    hits = np.bincount(codes[keep], weights=test.y[keep], minlength=n_groups)
    leads = np.array([len(np.unique(test.lead_id[codes == g])) for g in range(n_groups)])
    lo, hi = rate_intervals(test.cluster, test.y, codes, n_groups, params.bootstrap, params.ci_level, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = hits / n
    return pd.DataFrame(
        {
            "rows": n,
            "leads": leads,
            "per_week": n / test.weeks,
            "sqls": hits.astype(np.int64),
            "conversion": rate,
            "ci_low": lo,
            "ci_high": hi,
        }
    )


def agreement_table(test: HoldoutRows, params: ReportParams, seed: int) -> pd.DataFrame:
    """The 2x2 of rule MQL x predicted MQL: volume, SQLs, conversion with its interval, share of all SQLs."""
    codes = np.select([test.rule & test.model, test.rule & ~test.model, ~test.rule & test.model], [0, 1, 2], 3)
    stats = _group_stats(test, codes, len(CELLS), params, seed)
    total = max(int(test.y.sum()), 1)
    stats.insert(0, "cell", [c[1] for c in CELLS])
    stats.insert(0, "key", [c[0] for c in CELLS])
    stats["share_of_sqls"] = stats["sqls"] / total
    return stats


def gains_curves(test: HoldoutRows, points: int) -> pd.DataFrame:
    """Capture (share of SQLs in the top share of rows) and lift (capture / share) for the model and the rule score,
    pooled over the test rows, as the evaluate stage computes its gains plot."""
    scores = {
        "model": test.rows["probability"].to_numpy(dtype=float),
        "rules": test.rows["rule_score"].to_numpy(dtype=float),
    }
    gains = gains_table(test.y, scores, points)
    share = gains["share_of_leads"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        for name in scores:
            gains[f"{name}_lift"] = np.where(share > 0, gains[name].to_numpy() / share, np.nan)
    return gains


@dataclass(frozen=True)
class OperatingPoint:
    """A list sales would be handed: its volume and the SQLs it brings (expected by the model, and observed)."""

    name: str
    leads_per_week: float
    expected_sqls_per_week: float
    observed_sqls_per_week: float
    share_of_rows: float


def operating_points(test: HoldoutRows) -> list[OperatingPoint]:
    """The model's MQL/SAL/SQL lists and the rule MQLs, on the test rows."""
    prob = test.rows["probability"].to_numpy(dtype=float)
    rank = {s: i for i, s in enumerate([NO_STAGE, *THRESHOLD_STAGES])}
    stage_level = test.rows["stage"].map(rank).fillna(0).to_numpy(dtype=int)
    out = []
    for i, stage in enumerate(THRESHOLD_STAGES, start=1):
        picked = stage_level >= i
        out.append(_point(f"model {stage} and above", picked, prob, test))
    out.append(_point("rule MQLs", test.rule, prob, test))
    return out


def _point(name: str, picked: np.ndarray, prob: np.ndarray, test: HoldoutRows) -> OperatingPoint:
    return OperatingPoint(
        name=name,
        leads_per_week=float(picked.sum() / test.weeks),
        expected_sqls_per_week=float(prob[picked].sum() / test.weeks),
        observed_sqls_per_week=float(test.y[picked].sum() / test.weeks),
        share_of_rows=float(picked.mean()),
    )


def tradeoff_curve(test: HoldoutRows, points: int) -> pd.DataFrame:
    """Leads per week at or above each threshold vs the SQLs per week they bring (expected and observed)."""
    return tradeoff_table(test.y, test.rows["probability"].to_numpy(dtype=float), test.weeks, points)


def leakage_table(test: HoldoutRows, by: str, params: ReportParams, seed: int) -> pd.DataFrame:
    """Per group (campaign or region): the rule MQLs' conversion to SQL with its interval, the SQLs the rules missed,
    the model's MQL conversion, and a flag when the rule qualifies too loosely or too narrowly (params.leakage)."""
    values = test.rows[by].astype(object).where(test.rows[by].notna(), UNKNOWN).astype(str).to_numpy()
    codes, names = pd.factorize(values, sort=True)
    n_groups = len(names)
    mql_codes = np.where(test.rule, codes, -1)
    rule = _group_stats(test, mql_codes, n_groups, params, seed)
    model_codes = np.where(test.model, codes, -1)
    model_n = np.bincount(model_codes[model_codes >= 0], minlength=n_groups)
    model_hits = np.bincount(model_codes[model_codes >= 0], weights=test.y[model_codes >= 0], minlength=n_groups)
    sqls = np.bincount(codes, weights=test.y, minlength=n_groups)
    missed = np.bincount(codes[~test.rule], weights=test.y[~test.rule], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame(
            {
                by: names.astype(str),
                "leads": [len(np.unique(test.lead_id[codes == g])) for g in range(n_groups)],
                "rule_mqls_per_week": rule["per_week"],
                "rule_mql_rows": rule["rows"],
                "mql_to_sql": rule["conversion"],
                "ci_low": rule["ci_low"],
                "ci_high": rule["ci_high"],
                "leakage": 1 - rule["conversion"],
                "sqls": sqls.astype(np.int64),
                "sqls_missed_by_rules": np.where(sqls > 0, missed / sqls, np.nan),
                "model_mqls_per_week": model_n / test.weeks,
                "model_mql_to_sql": model_hits / model_n,
            }
        )
    table["flag"] = [
        leakage_flag(n, rate, params.leakage)
        for n, rate in zip(table["rule_mql_rows"], table["mql_to_sql"], strict=True)
    ]
    return table.sort_values(["rule_mql_rows", by], ascending=[False, True], ignore_index=True)


def leakage_flag(mql_rows: int, mql_to_sql: float, params: LeakageParams) -> str:
    """'too loose' (too many MQLs never reach SQL), 'too narrow' (almost every MQL converts: the net catches only
    the sure things), 'too few MQLs' to tell, or '' (within bounds)."""
    if mql_rows < params.min_mqls or not np.isfinite(mql_to_sql):
        return "too few MQLs"
    if mql_to_sql < params.too_loose_below:
        return "too loose: leakage too high"
    if mql_to_sql > params.too_narrow_above:
        return "too narrow: leakage too low"
    return ""


#: Attribute columns shown with each disagreement example (no personal data: codes, flags and names of campaigns).
EXAMPLE_COLUMNS: Final[tuple[str, ...]] = (
    "lead_id",
    "snapshot_at",
    "seniority",
    "department",
    "fit",
    "lead_source",
    "campaign",
    "region",
    "rule_score",
    "probability",
    "stage",
    "label",
)


def disagreement_examples(test: HoldoutRows, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rule MQLs the model rejects, model picks the rules missed): up to n leads each, one row per lead (its
    latest test snapshot in that cell). Rule-only examples are the highest rule scores (the engaged lead the
    model does not believe), model-only ones the highest probabilities (the quiet buyer the rules do not see)."""
    rows = test.rows.assign(_order=np.arange(len(test.rows)))
    rule_only = rows.loc[test.rule & ~test.model]
    model_only = rows.loc[~test.rule & test.model]
    return (
        _pick(rule_only, ["rule_score", "probability"], [False, True], n),
        _pick(model_only, ["probability", "rule_score"], [False, True], n),
    )


def _pick(rows: pd.DataFrame, by: list[str], ascending: list[bool], n: int) -> pd.DataFrame:
    latest = rows.sort_values(["snapshot_at", "_order"]).drop_duplicates("lead_id", keep="last")
    chosen = latest.sort_values([*by, "lead_id"], ascending=[*ascending, True]).head(n)
    extra = [c for c in ("rules_fired",) if c in chosen.columns]
    return chosen[[*EXAMPLE_COLUMNS, *extra]].reset_index(drop=True)


def grade_mix(grade: pd.Series, y: np.ndarray | None, weeks: float) -> pd.DataFrame:
    """Per grade A-D: rows, share, per week and (when outcomes are known) SQL conversion."""
    grades = list(GRADES)
    counts = grade.astype(str).value_counts().reindex(grades, fill_value=0)
    table = pd.DataFrame(
        {
            "grade": grades,
            "meaning": [_grade_words(g) for g in grades],
            "rows": counts.to_numpy(),
            "share": counts.to_numpy() / max(len(grade), 1),
            "per_week": counts.to_numpy() / weeks,
        }
    )
    if y is not None:
        hits = pd.Series(y, index=grade.index).groupby(grade.astype(str)).sum().reindex(grades, fill_value=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            table["conversion"] = hits.to_numpy() / counts.to_numpy()
    return table


def _grade_words(grade: str) -> str:
    stage = GRADES[grade]
    return f"reaches the {stage} threshold" if stage else "below the MQL threshold"


def fit_readiness(fit: np.ndarray, ready: np.ndarray, y: np.ndarray | None, weeks: float) -> pd.DataFrame:
    """The fit (company in the ideal profile) x readiness (predicted MQL or higher) quadrants, sized; the nurture
    group is the fit leads not yet ready."""
    fit, ready = np.asarray(fit, dtype=bool), np.asarray(ready, dtype=bool)
    rows = []
    for key, label, f, r in QUADRANTS:
        inside = (fit == f) & (ready == r)
        row: dict[str, Any] = {
            "key": key,
            "group": label,
            "rows": int(inside.sum()),
            "share": float(inside.mean()) if len(inside) else float("nan"),
            "per_week": float(inside.sum() / weeks),
        }
        if y is not None:
            row["conversion"] = float(y[inside].mean()) if inside.any() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class HoldoutSection:
    """Every table of the test-slice section."""

    period: tuple[str, str]
    snapshots: int
    rows: int
    leads: int
    sqls: int
    weeks: float
    agreement: pd.DataFrame
    gains: pd.DataFrame
    tradeoff: pd.DataFrame
    points: list[OperatingPoint]
    leakage_campaign: pd.DataFrame
    leakage_region: pd.DataFrame
    rule_only: pd.DataFrame
    model_only: pd.DataFrame
    grades: pd.DataFrame
    fit_ready: pd.DataFrame


def holdout_section(test: HoldoutRows, params: ReportParams, seed: int) -> HoldoutSection:
    """All tables of the out-of-time test slice."""
    at = pd.to_datetime(test.rows["snapshot_at"], utc=True)
    rule_only, model_only = disagreement_examples(test, params.examples)
    return HoldoutSection(
        period=(at.min().date().isoformat(), at.max().date().isoformat()),
        snapshots=int(at.nunique()),
        rows=len(test.rows),
        leads=len(np.unique(test.lead_id)),
        sqls=int(test.y.sum()),
        weeks=test.weeks,
        agreement=agreement_table(test, params, seed),
        gains=gains_curves(test, params.curve_points),
        tradeoff=tradeoff_curve(test, params.curve_points),
        points=operating_points(test),
        leakage_campaign=leakage_table(test, "campaign", params, seed),
        leakage_region=leakage_table(test, "region", params, seed),
        rule_only=rule_only,
        model_only=model_only,
        grades=grade_mix(test.rows["grade"], test.y, test.weeks),
        fit_ready=fit_readiness(test.rows["fit"].to_numpy(dtype=bool), test.model, test.y, test.weeks),
    )


# ----------------------------------------------------------------------------------------------------------------
# The latest nightly run
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NightlySection:
    """The latest complete scoring run: its metadata, 2x2 volumes, mixes and disagreement examples."""

    run: dict[str, Any]
    leads: int
    agreement: pd.DataFrame
    grades: pd.DataFrame
    fit_ready: pd.DataFrame
    by_campaign: pd.DataFrame
    by_region: pd.DataFrame
    rule_only: pd.DataFrame
    model_only: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def nightly_section(latest: pd.DataFrame, run: Mapping[str, Any], params: ReportParams) -> NightlySection:
    """Volumes of the latest run (one row per lead; outcomes are not known yet, so no conversion)."""
    check_columns(latest, NIGHTLY_COLUMNS, "latest nightly scores")
    latest = latest.reset_index(drop=True)
    rule = latest["rule_mql"].fillna(False).to_numpy(dtype=bool)
    model = predicted_mql(latest["stage"])
    agreement = pd.DataFrame(
        {
            "key": [c[0] for c in CELLS],
            "cell": [c[1] for c in CELLS],
            "leads": [int(((rule == r) & (model == m)).sum()) for _, _, r, m in CELLS],
        }
    )
    agreement["share"] = agreement["leads"] / max(len(latest), 1)
    notes = []
    unscored = latest["probability"].isna()
    if unscored.any():
        notes.append(f"{int(unscored.sum()):,} leads of the run have no probability")
    by_campaign = _volumes(latest, "campaign", rule, model)
    by_region = _volumes(latest, "region", rule, model)
    order = np.arange(len(latest))
    frame = latest.assign(_order=order)
    return NightlySection(
        run=dict(run),
        leads=len(latest),
        agreement=agreement,
        grades=grade_mix(latest["grade"], None, 1.0),
        fit_ready=fit_readiness(latest["fit"].fillna(False).to_numpy(dtype=bool), model, None, 1.0),
        by_campaign=by_campaign,
        by_region=by_region,
        rule_only=_nightly_pick(frame.loc[rule & ~model], "probability", True, params.examples),
        model_only=_nightly_pick(frame.loc[~rule & model], "probability", False, params.examples),
        notes=notes,
    )


#: Columns shown with each nightly disagreement example (no personal data).
NIGHTLY_EXAMPLE_COLUMNS: Final[tuple[str, ...]] = (
    "lead_id",
    "seniority",
    "department",
    "fit",
    "lead_source",
    "campaign",
    "region",
    "rule_score",
    "probability",
    "stage",
    "grade",
    "reasons_positive",
    "reasons_negative",
)


def _nightly_pick(rows: pd.DataFrame, by: str, ascending: bool, n: int) -> pd.DataFrame:
    columns = [c for c in NIGHTLY_EXAMPLE_COLUMNS if c in rows.columns]
    return rows.sort_values([by, "lead_id"], ascending=[ascending, True]).head(n)[columns].reset_index(drop=True)


def _volumes(latest: pd.DataFrame, by: str, rule: np.ndarray, model: np.ndarray) -> pd.DataFrame:
    """Per group: leads scored, rule MQLs, predicted MQLs and how many of each the other side agrees with."""
    values = latest[by].astype(object).where(latest[by].notna(), UNKNOWN).astype(str)
    frame = pd.DataFrame(
        {
            by: values,
            "leads": 1,
            "rule_mqls": rule.astype(int),
            "model_mqls": model.astype(int),
            "both": (rule & model).astype(int),
            "rule_only": (rule & ~model).astype(int),
            "model_only": (~rule & model).astype(int),
        }
    )
    table = frame.groupby(by, sort=True).sum().reset_index()
    return table.sort_values(["leads", by], ascending=[False, True], ignore_index=True)


# ----------------------------------------------------------------------------------------------------------------
# The plan's target (the page plans for a target from params)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanTarget:
    """The SQLs per period the page's plan is for, and whether they are the SQL list's capacity (null in params)."""

    sql: float
    per: Per
    from_capacity: bool
    capacity_per_week: float = float("nan")


def plan_target(report: ReportParams, thresholds: StageThresholds) -> PlanTarget:
    """`report.plan_target_sql` per `report.plan_per`; when null, the SQL list's weekly capacity scaled to the
    period: the leads sales can work as SQLs, which marketing's leads should fill with real ones."""
    if report.plan_target_sql is not None:
        return PlanTarget(float(report.plan_target_sql), report.plan_per, False)
    weekly = thresholds.SQL.leads_per_week
    if thresholds.SQL.policy != "capacity" or weekly is None:  # Params refuses this; kept for a hand-made params
        raise ReportInputError(
            "report.plan_target_sql is null but calibrate.thresholds.SQL has no capacity policy; set a number"
        )
    return PlanTarget(float(weekly) * PERIOD_DAYS[report.plan_per] / 7, report.plan_per, True, float(weekly))
