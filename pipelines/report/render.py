"""Render the report as one self-contained HTML page from the Jinja2 templates in `pipelines/report/templates/`.

The templates hold the layout and the prose; this module turns the core's tables into display rows (text plus a
sort value), the params into words (the interval level, the snapshot cadence and its row unit, the horizon and
target stage) and draws the charts (`charts`). Autoescape is on, so every value is HTML-escaped; only the charts'
SVG, drawn by matplotlib here, is marked safe. Nothing is fetched: CSS, the sort script and the charts are inline.
No wall-clock time enters the page: it names the data's as-of dates and the run ids, so DVC sees a new page only
when the figures change.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from pipelines import words
from pipelines.backtest.core import DEGRADED, TrendSection
from pipelines.config import HISTORY_RULE, BacktestParams
from pipelines.plan.core import PlanSection
from pipelines.report import charts
from pipelines.report.charts import Chart
from pipelines.report.core import HoldoutSection, NightlySection, PlanTarget, ThresholdNote
from pipelines.report.headline import Headline

TEMPLATE: Final = "report.html.j2"

# ----------------------------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def pct(value: Any, digits: int = 1) -> str:
    """0.1234 -> '12.3%'; '—' when missing."""
    return f"{100 * float(value):.{digits}f}%" if _finite(value) else "—"


def num(value: Any, digits: int = 0) -> str:
    """A number with thousands separators; '—' when missing."""
    return f"{float(value):,.{digits}f}" if _finite(value) else "—"


def ratio(value: Any) -> str:
    """1.1297 -> '1.13x'; '—' when missing."""
    return f"{float(value):.2f}x" if _finite(value) else "—"


def interval(low: Any, high: Any, fmt: Callable[[Any], str] = pct) -> str:
    """'[1.2%, 3.4%]' or '' when the bootstrap was off."""
    return f"[{fmt(low)}, {fmt(high)}]" if _finite(low) and _finite(high) else ""


def text(value: Any) -> str:
    """A value as display text ('' for missing)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


# ----------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------

Formatter = Callable[[Any], str]
#: (frame column, header, formatter or None for text); a formatted column is numeric (sorted by value).
ColumnSpec = tuple[str, str, Formatter | None]


@dataclass(frozen=True)
class TableCell:
    """One cell: its text, its sort value (numeric columns; 'nan' when missing) and its column (key and header,
    which labels the cell when a narrow screen stacks each row into a card)."""

    text: str
    sort: str | None
    key: str
    label: str


@dataclass(frozen=True)
class TableRow:
    cells: tuple[TableCell, ...]
    css_class: str = ""


@dataclass(frozen=True)
class Table:
    """A sortable table ready for the `sortable` macro of templates/_table.html.j2."""

    columns: tuple[tuple[str, str], ...]  # (key, header)
    rows: tuple[TableRow, ...]
    caption: str = ""
    id: str = ""


def table_view(
    frame: pd.DataFrame,
    columns: Sequence[ColumnSpec],
    flag_column: str | None = None,
    caption: str = "",
    id: str = "",
    row_class: Callable[[Mapping[str, Any]], str] | None = None,
) -> Table:
    """`frame`'s columns as display rows. Numeric columns carry their value for sorting; rows with a non-empty
    `flag_column` get the class 'flagged' (or whatever `row_class` says of the row)."""
    rows = []
    for record in frame.to_dict("records"):
        row: dict[str, Any] = {str(k): v for k, v in record.items()}
        cells = []
        for column, header, fmt in columns:
            value: Any = row.get(column)
            if fmt is None:
                cells.append(TableCell(text(value), None, column, header))
            else:
                sort = repr(float(value)) if _finite(value) else "nan"
                cells.append(TableCell(fmt(value), sort, column, header))
        css = row_class(row) if row_class else ("flagged" if flag_column and bool(row.get(flag_column)) else "")
        rows.append(TableRow(tuple(cells), css))
    return Table(tuple((c, h) for c, h, _ in columns), tuple(rows), caption, id)


def table(frame: pd.DataFrame, columns: Sequence[ColumnSpec], flag_column: str | None = None, caption: str = "") -> str:
    """One sortable table as HTML (the page's own macro), e.g. for a section built outside this module."""
    macro = _environment().get_template("_table.html.j2").module.sortable  # type: ignore[attr-defined]
    return str(macro(table_view(frame, columns, flag_column, caption)))


@dataclass(frozen=True)
class ExtraSection:
    """An optional section of the page (the backtest trend of recent runs, the plan), rendered only when given.

    `summary` is its one-sentence answer, shown first; the tables (`table_view`) and charts (`charts.Chart`) follow.
    """

    title: str
    summary: str
    paragraphs: Sequence[str] = ()
    tables: Sequence[Table] = ()
    charts: Sequence[Chart] = ()
    notes: Sequence[str] = ()  # warnings, shown highlighted


#: A cell's leading number ("0.812 (0.790-0.830)", "1,234", "12.3%", "1.04x"), so a pre-formatted column sorts by
#: value; a date ("2026-11-01") or a version ("v3") is text.
_LEADING_NUMBER: Final = re.compile(r"^-?\d[\d,]*(?:\.\d+)?(?=$|[\s%x(])")


def _sort_value(cell: str) -> float | None:
    match = _LEADING_NUMBER.match(cell)
    return float(match.group(0).replace(",", "")) if match else None


def text_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    id: str = "",
    row_class: Callable[[Sequence[str]], str] | None = None,
) -> Table:
    """A table of already formatted rows (the backtest trend, the plan): a column whose cells all start with a
    number (or are 'n/a' or empty) sorts by that number, any other as text."""
    keys = tuple(re.sub(r"[^a-z0-9]+", "-", h.lower()).strip("-") or f"c{i}" for i, h in enumerate(headers))
    numeric = [
        all(_sort_value(r[i]) is not None or r[i] in ("", "n/a") for r in rows) and any(_sort_value(r[i]) for r in rows)
        for i in range(len(headers))
    ]
    out = []
    for r in rows:
        cells = []
        for i, (key, header) in enumerate(zip(keys, headers, strict=True)):
            value = _sort_value(r[i]) if numeric[i] else None
            sort = (repr(value) if value is not None else "nan") if numeric[i] else None
            cells.append(TableCell(r[i], sort, key, header))
        out.append(TableRow(tuple(cells), row_class(r) if row_class else ""))
    return Table(tuple(zip(keys, headers, strict=True)), tuple(out), "", id)


def backtest_extra(trend: TrendSection | None, params: BacktestParams, horizon_days: int) -> ExtraSection:
    """The backtest trend of the recent runs (`backtest.core.backtest_trend`); `None` or no row: one sentence that
    no run has been judged yet, so a marketer knows the check exists and when it starts."""
    title = "Did the scores come true?"
    if trend is None or not trend.rows:
        return ExtraSection(
            title,
            "No nightly run has been checked against what happened yet: each run is checked once its "
            f"{horizon_days}-day horizon has passed in the CRM's data (the nightly leadscore backtest), and its row "
            "appears here.",
        )
    band = f"{params.obs_exp_low:g} to {params.obs_exp_high:g}"
    verdict = trend.columns[-1]
    flagged = (
        [f"{trend.flagged} of these runs left the band of {band}: see the {verdict} column (retrain or recalibrate)."]
        if trend.flagged
        else []
    )
    return ExtraSection(
        title,
        trend.headline,
        paragraphs=(
            f"One row per nightly run whose {horizon_days}-day horizon has passed, newest first: its scores joined "
            "with what the leads did next. Observed / expected near 1 means the probabilities came true; outside "
            f"{band} the run is flagged. The MQL list's precision stands beside the rule's at the same volume.",
        ),
        tables=(
            text_table(
                trend.columns,
                trend.rows,
                id="backtest-trend",
                row_class=lambda r: "flagged" if r[-1].startswith(DEGRADED) else "",
            ),
        ),
        notes=flagged,
    )


def plan_extra(section: PlanSection | None, target: PlanTarget, scores_where: str) -> ExtraSection:
    """The plan for the params' target (`plan.core.plan_section`, total row last); `None`: no nightly run to plan
    from, said in one sentence."""
    title = "How many leads and MQLs the sales target needs"
    goal = f"{num(target.sql, 1 if target.sql % 1 else 0)} SQLs a {target.per}"
    if section is None:
        return ExtraSection(
            title,
            f"No nightly run yet in {scores_where} to plan {goal} from: the plan starts from the latest run's "
            "probabilities, so it appears after the first leadscore score.",
        )
    why = (
        f"The target, {goal}, is the SQL list's capacity of {num(target.capacity_per_week)} hand-offs a week "
        "(calibrate.thresholds.SQL): the leads marketing must bring so that every lead sales can work is a real SQL."
        if target.from_capacity
        else f"The target, {goal}, is report.plan_target_sql of params.yaml."
    )
    total = len(section.rows) - 1
    return ExtraSection(
        title,
        section.headline,
        paragraphs=(
            why,
            "Per campaign: the SQLs it must deliver (its share of the target, in proportion to what it brings now), "
            "what its open leads are expected to bring, how many SQLs each new lead yields, and so the new leads and "
            "MQLs it needs, against the new leads it gets now. Intervals resample whole accounts.",
        ),
        tables=(
            text_table(
                section.columns,
                section.rows,
                id="plan-table",
                row_class=lambda r: "total" if r is section.rows[total] else "",
            ),
        ),
        notes=section.notes,
    )


# ----------------------------------------------------------------------------------------------------------------
# Words from params
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wording:
    """What the prose depends on: the report's interval level, the snapshot cadence, horizon and target stage."""

    ci_level: float  # report.ci_level (the report's own conversion intervals)
    cadence_days: int  # features.cadence_days
    horizon_days: int  # features.horizon_days
    target: str  # features.target_stage
    rules_file: str  # rules.file: the history's rule, the report's "rule MQL"

    @property
    def level(self) -> str:
        return words.percent_level(self.ci_level)

    @property
    def unit(self) -> str:
        return words.snapshot_rows(self.cadence_days)

    def snapshots(self, count: int) -> str:
        return words.snapshots(count, self.cadence_days)


# ----------------------------------------------------------------------------------------------------------------
# Views of the sections (what the template shows)
# ----------------------------------------------------------------------------------------------------------------


def rule_name(name: str) -> str:
    """A rule variant's name as the page says it."""
    return "the history's rule" if name == HISTORY_RULE else name


@dataclass(frozen=True)
class HeadlineView:
    headline: Headline
    rule: str
    ratio: str
    interval: str
    level: str
    history_ratio: str
    history_interval: str
    rules: Table | None


RULE_COLUMNS: Final[tuple[ColumnSpec, ...]] = (
    ("name", "rule", None),
    ("source", "points from", None),
    ("threshold", "MQL threshold", None),
    ("calibration_roc_auc", "ROC-AUC, calibration slice (picks the best)", lambda v: num(v, 3)),
    ("roc_auc", "ROC-AUC, test slice", lambda v: num(v, 3)),
    ("mql_leads_per_week", "rule MQLs / week", num),
    ("mql_precision", "rule MQL → SQL", pct),
    ("mql_recall", "share of SQLs the rule MQLs capture", pct),
    ("model_mql_recall", "model at that volume: share of SQLs", pct),
    ("model_sql_capture_ratio", "model vs the rule: SQLs at equal volume", ratio),
)


def headline_view(headline: Headline, rules: pd.DataFrame) -> HeadlineView:
    """The headline's numbers as text, and the standard-rule table with the best rule highlighted."""
    shown = rules.assign(
        name=[rule_name(n) + (" (best)" if best else "") for n, best in zip(rules["rule"], rules["best"], strict=True)]
    )
    return HeadlineView(
        headline=headline,
        rule=rule_name(headline.rule),
        ratio=ratio(headline.ratio),
        interval=interval(headline.ci_low, headline.ci_high, ratio),
        level=words.percent_level(headline.ci_level) if _finite(headline.ci_level) else "",
        history_ratio=ratio(headline.history_ratio) if _finite(headline.history_ratio) else "",
        history_interval=interval(headline.history_ci_low, headline.history_ci_high, ratio),
        rules=(
            table_view(shown, RULE_COLUMNS, id="rule-variants", row_class=lambda r: "best" if r["best"] else "")
            if len(rules)
            else None
        ),
    )


def threshold_view(notes: Sequence[ThresholdNote]) -> dict[str, Any]:
    """Each stage's threshold in words, and which grades are in use when some threshold is unreachable."""
    unreachable = [n for n in notes if not math.isfinite(n.threshold)]
    empty = {n.grade for n in unreachable}
    in_use = "-".join(g for g in "ABCD" if g not in empty) if len(empty) < 3 else "D"
    return {
        "notes": list(notes),
        "unreachable": ", ".join(f"{n.stage} (grade {n.grade})" for n in unreachable),
        "grades_in_use": in_use,
    }


def _with_ci(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(ci=[interval(lo, hi) for lo, hi in zip(frame["ci_low"], frame["ci_high"], strict=True)])


def _joined(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Several short attributes of each row as one ' · '-separated text (keeps example tables narrow)."""
    present = [c for c in columns if c in frame.columns]
    return (
        [
            " · ".join(str(v) for v in values if v is not None and not pd.isna(v) and str(v) != "")
            for values in frame[present].itertuples(index=False)
        ]
        if present
        else [""] * len(frame)
    )


def example_table(frame: pd.DataFrame, nightly: bool, id: str = "") -> Table | None:
    """Disagreement examples: who (codes and flags only), where from, both scores, the model's reasons, outcome;
    None when there is no such lead."""
    if frame.empty:
        return None
    fit = frame["fit"].map(
        lambda v: "" if v is None or pd.isna(v) else "ideal profile" if bool(v) else "outside the ideal profile"
    )
    shown = frame.assign(fit=fit)
    if not nightly:
        shown = shown.assign(
            week=pd.to_datetime(shown["snapshot_at"], utc=True).dt.strftime("week of %Y-%m-%d"),
            outcome=np.where(shown["label"].astype(int) == 1, "reached SQL", "no SQL"),
        )
    shown = shown.assign(
        who=_joined(shown, ["seniority", "department", "fit"]),
        origin=_joined(shown, ["lead_source", "campaign", "region"]),
        lead=_joined(shown, ["lead_id", "week"]),
        model=_joined(shown.assign(p=shown["probability"].map(pct)), ["p", "stage", "grade"]),
    )
    columns: list[ColumnSpec] = [
        ("lead", "lead", None),
        ("who", "seniority · department · company fit", None),
        ("origin", "source · campaign · region", None),
        ("rule_score", "rule points", lambda v: num(v, 0)),
        ("model", "model: probability · predicted stage", None),
        ("reasons_positive", "model: reasons for", None),
        ("reasons_negative", "model: reasons against", None),
        ("rules_fired", "rules that fired", None),
        ("outcome", "outcome", None),
    ]
    return table_view(shown, [c for c in columns if c[0] in shown.columns], id=id)


def _leakage_columns(level: str) -> tuple[ColumnSpec, ...]:
    return (
        ("leads", "leads", num),
        ("rule_mqls_per_week", "rule MQLs / week", lambda v: num(v, 1)),
        ("mql_to_sql", "rule MQL → SQL", pct),
        ("ci", f"{level} interval", None),
        ("leakage", "leakage", pct),
        ("sqls", "SQLs", num),
        ("sqls_missed_by_rules", "SQLs never MQL", pct),
        ("model_mqls_per_week", "model MQLs / week", lambda v: num(v, 1)),
        ("model_mql_to_sql", "model MQL → SQL", pct),
        ("flag", "flag", None),
    )


def mix_view(grades: pd.DataFrame, fit_ready: pd.DataFrame, per_week: bool, conversion: bool) -> dict[str, Any]:
    """The grade table, the fit x readiness table and the nurture group's size in words."""
    volume: ColumnSpec = ("per_week", "per week", lambda v: num(v, 1)) if per_week else ("rows", "leads", num)
    extra: list[ColumnSpec] = [("conversion", "SQL conversion", pct)] if conversion else []
    nurture = fit_ready.loc[fit_ready["key"] == "nurture"].iloc[0]
    size = f"{num(nurture['per_week'], 1)} leads per week" if per_week else f"{num(nurture['rows'])} leads"
    return {
        "grades": table_view(
            grades, [("grade", "grade", None), ("meaning", "meaning", None), volume, ("share", "share", pct), *extra]
        ),
        "fit_ready": table_view(fit_ready, [("group", "group", None), volume, ("share", "share", pct), *extra]),
        "nurture_size": size,
        "nurture_share": pct(nurture["share"]),
    }


def holdout_view(section: HoldoutSection, notes: Sequence[ThresholdNote], wording: Wording) -> dict[str, Any]:
    """The out-of-time test slice section: numbers as text, tables as display rows, charts as SVG."""
    rule_share = next((p.share_of_rows for p in section.points if p.name == "rule MQLs"), float("nan"))
    points = pd.DataFrame([p.__dict__ for p in section.points])
    agreement_columns: list[ColumnSpec] = [
        ("cell", "cell", None),
        ("rows", wording.unit, num),
        ("leads", "leads", num),
        ("per_week", "per week", num),
        ("sqls", "SQLs", num),
        ("conversion", "SQL conversion", pct),
        ("ci", f"{wording.level} interval", None),
        ("share_of_sqls", "share of all SQLs", pct),
    ]
    leakage = _leakage_columns(wording.level)
    return {
        "period": section.period,
        "snapshots": wording.snapshots(section.snapshots),
        "rows": num(section.rows),
        "leads": num(section.leads),
        "sqls": num(section.sqls),
        "thresholds": threshold_view(notes),
        "agreement": table_view(_with_ci(section.agreement), agreement_columns, id="agreement"),
        "agreement_chart": charts.chart_agreement(section.agreement, wording.level),
        "capture_chart": charts.chart_capture(section.gains, rule_share),
        "lift_chart": charts.chart_lift(section.gains),
        "tradeoff_chart": charts.chart_tradeoff(section.tradeoff, section.points),
        "points": table_view(
            points,
            [
                ("name", "list", None),
                ("leads_per_week", "leads / week", lambda v: num(v, 1)),
                ("expected_sqls_per_week", "expected SQLs / week", lambda v: num(v, 1)),
                ("observed_sqls_per_week", "observed SQLs / week", lambda v: num(v, 1)),
                ("share_of_rows", "share of open leads", pct),
            ],
        ),
        "leakage_campaign": table_view(
            _with_ci(section.leakage_campaign), [("campaign", "campaign", None), *leakage], "flag"
        ),
        "leakage_region": table_view(_with_ci(section.leakage_region), [("region", "region", None), *leakage], "flag"),
        "rule_only": example_table(section.rule_only, nightly=False),
        "model_only": example_table(section.model_only, nightly=False),
        "mix": mix_view(section.grades, section.fit_ready, per_week=True, conversion=True),
        "grades_chart": charts.chart_grades(section.grades, "Test period"),
    }


NIGHTLY_VOLUME_COLUMNS: Final[tuple[ColumnSpec, ...]] = (
    ("leads", "leads", num),
    ("rule_mqls", "rule MQLs", num),
    ("model_mqls", "predicted MQLs", num),
    ("both", "both", num),
    ("rule_only", "rule only", num),
    ("model_only", "model only", num),
)


def as_of_text(value: Any) -> str:
    """A run's as-of time as the page says it."""
    if isinstance(value, pd.Timestamp):
        stamp = value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")
        return stamp.strftime("%Y-%m-%d %H:%M UTC")
    return text(value)


def nightly_view(section: NightlySection) -> dict[str, Any]:
    """The latest nightly run section."""
    run = section.run
    return {
        "run_id": text(run.get("run_id")),
        "as_of": as_of_text(run.get("as_of")),
        "model_name": text(run.get("model_name")),
        "model_version": text(run.get("model_version")),
        "leads": num(section.leads),
        "drift": run.get("status") == "drift_warning",
        "psi_max": num(run.get("psi_max"), 2),
        "psi_max_feature": text(run.get("psi_max_feature")),
        "notes": list(section.notes),
        "agreement": table_view(
            section.agreement, [("cell", "cell", None), ("leads", "leads", num), ("share", "share", pct)]
        ),
        "by_campaign": table_view(section.by_campaign, [("campaign", "campaign", None), *NIGHTLY_VOLUME_COLUMNS]),
        "by_region": table_view(section.by_region, [("region", "region", None), *NIGHTLY_VOLUME_COLUMNS]),
        "rule_only": example_table(section.rule_only, nightly=True),
        "model_only": example_table(section.model_only, nightly=True),
        "mix": mix_view(section.grades, section.fit_ready, per_week=False, conversion=False),
        "grades_chart": charts.chart_grades(section.grades, "Latest nightly run"),
    }


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pipelines.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["svg"] = lambda chart: Markup(chart.svg)  # drawn by matplotlib in `charts`, not user text
    return env


@dataclass(frozen=True)
class PageInputs:
    """Everything the page shows, already computed."""

    title: str
    data_as_of: str  # the CRM snapshot's history end (never the time the page was built)
    wording: Wording
    headline: Headline
    rules: pd.DataFrame  # `headline.rule_table`
    holdout: HoldoutSection
    thresholds: Sequence[ThresholdNote]
    nightly: NightlySection | None
    scores_where: str  # where the nightly run was looked for (display URL)
    backtest: ExtraSection | None = None  # the trend of recent runs' backtests, when computed
    plan: ExtraSection | None = None  # leads and MQLs a sales target needs, when computed


def page(inputs: PageInputs) -> str:
    """The whole self-contained page."""
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=inputs.title,
            data_as_of=inputs.data_as_of,
            w=inputs.wording,
            h=headline_view(inputs.headline, inputs.rules),
            holdout=holdout_view(inputs.holdout, inputs.thresholds, inputs.wording),
            nightly=None if inputs.nightly is None else nightly_view(inputs.nightly),
            scores_where=inputs.scores_where,
            backtest=inputs.backtest,
            plan=inputs.plan,
            pct=pct,
            num=num,
        )
    )
