"""Render the report's sections as one self-contained HTML page: inline SVG charts, plain tables, tiny sort script.

Nothing is fetched: charts are matplotlib SVG inlined into the page (stripped of the XML prologue, DOCTYPE,
metadata and namespace declarations, which name URLs a browser never loads but a reader cannot tell apart), the
CSS and the sort script are inline. Every value is HTML-escaped. Tables wrap their text so the page reads without
scrolling sideways.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import pandas as pd

from pipelines.report.core import HoldoutSection, NightlySection, OperatingPoint, ThresholdNote

_SVG_HEAD: Final = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA: Final = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_XMLNS: Final = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
MODEL_COLOUR: Final = "#1f6fb4"
RULES_COLOUR: Final = "#d9822b"
GREY: Final = "#888888"

CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1rem 1.5rem;color:#222;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:2px solid #ddd;padding-bottom:.2rem}
h3{margin-top:1.6rem}.muted{color:#666}.note{background:#fff6e0;border-left:4px solid #e0a800;padding:.5rem .8rem}
table{border-collapse:collapse;width:100%;table-layout:auto;font-size:.86rem;margin:.6rem 0 1rem}
th,td{border-bottom:1px solid #e3e3e3;padding:.3rem .45rem;text-align:left;vertical-align:top;
overflow-wrap:break-word}
th{background:#f4f6f8;cursor:pointer;user-select:none}th.sorted-asc::after{content:" \\25B2"}
th.sorted-desc::after{content:" \\25BC"}td.num{text-align:right;white-space:nowrap}
tr.flagged td{background:#fdecea}figure{margin:1rem 0}figure svg{max-width:100%;height:auto;display:block}
figcaption{font-size:.85rem;color:#555}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));
gap:1rem}
"""
#: Click a header to sort its table by that column (numbers by their data-value); click again to reverse.
SORT_JS: Final = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var asc = !th.classList.contains("sorted-asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col];
        var v = cell.getAttribute("data-value");
        return v === null ? cell.textContent.trim().toLowerCase() : parseFloat(v);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x === "number" && isNaN(x)) { return 1; }
        if (typeof y === "number" && isNaN(y)) { return -1; }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


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


def interval(low: Any, high: Any) -> str:
    """'[1.2%, 3.4%]' or '' when the bootstrap was off."""
    return f"[{pct(low)}, {pct(high)}]" if _finite(low) and _finite(high) else ""


def esc(value: Any) -> str:
    """HTML-escaped text of a value ('' for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return html.escape(str(value))


Cell = tuple[str, float | None]  # (display text, sort value or None for text sorting)
Formatter = Callable[[Any], str]


def table(
    frame: pd.DataFrame,
    columns: Sequence[tuple[str, str, Formatter | None]],
    flag_column: str | None = None,
    caption: str = "",
) -> str:
    """A sortable HTML table of `frame`'s columns: (column, header, formatter or None for text). Numeric columns get
    a data-value for sorting and right alignment; rows with a non-empty `flag_column` are highlighted."""
    head = "".join(f"<th>{esc(header)}</th>" for _, header, _ in columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for column, _, fmt in columns:
            value = row.get(column)
            if fmt is None:
                cells.append(f"<td>{esc(value)}</td>")
            else:
                sort = float(value) if _finite(value) else float("nan")
                cells.append(f'<td class="num" data-value="{sort!r}">{esc(fmt(value))}</td>')
        flagged = flag_column is not None and bool(row.get(flag_column))
        row_class = ' class="flagged"' if flagged else ""
        body.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    cap = f'<caption class="muted">{esc(caption)}</caption>' if caption else ""
    return f'<table class="sortable">{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# ----------------------------------------------------------------------------------------------------------------
# Charts
# ----------------------------------------------------------------------------------------------------------------


def svg_of(fig: Any) -> str:
    """A matplotlib figure as inline SVG without prologue, metadata or namespace URLs."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = _METADATA.sub("", _SVG_HEAD.sub("", buffer.getvalue(), count=1))
    return _XMLNS.sub("", text)


def _figure(width: float = 6.0, height: float = 3.8) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _chart(fig: Any, name: str, caption: str) -> str:
    return (
        f'<figure class="chart" data-chart="{esc(name)}">{svg_of(fig)}<figcaption>{esc(caption)}</figcaption></figure>'
    )


def chart_agreement(agreement: pd.DataFrame) -> str:
    """SQL conversion of each 2x2 cell with its interval."""
    fig, ax = _figure(6.0, 3.2)
    labels = [k.replace("_", " ") for k in agreement["key"]]
    rate = 100 * agreement["conversion"].to_numpy(dtype=float)
    lo = 100 * agreement["ci_low"].to_numpy(dtype=float)
    hi = 100 * agreement["ci_high"].to_numpy(dtype=float)
    colours = ["#4a7c59", RULES_COLOUR, MODEL_COLOUR, GREY]
    ax.barh(labels[::-1], np.nan_to_num(rate[::-1]), color=colours[::-1])
    has_ci = np.isfinite(lo) & np.isfinite(hi)
    if has_ci.any():
        err = np.vstack([np.where(has_ci, rate - lo, 0), np.where(has_ci, hi - rate, 0)])[:, ::-1]
        ax.errorbar(
            np.nan_to_num(rate[::-1]),
            labels[::-1],
            xerr=np.clip(np.nan_to_num(err), 0, None),
            fmt="none",
            ecolor="#222",
            capsize=3,
        )
    ax.set_xlabel("SQL conversion within the horizon (%)")
    ax.grid(axis="x", alpha=0.3)
    return _chart(fig, "agreement", "SQL conversion of each cell of the 2x2, with its 95% interval (leads resampled).")


def chart_capture(gains: pd.DataFrame, rule_share: float) -> str:
    """Cumulative capture of SQLs by the model and by the rule score."""
    fig, ax = _figure()
    share = 100 * gains["share_of_leads"]
    ax.plot(share, 100 * gains["model"], color=MODEL_COLOUR, label="model (probability)")
    ax.plot(share, 100 * gains["rules"], color=RULES_COLOUR, label="rules (points)")
    ax.plot(share, 100 * gains["random"], color=GREY, linestyle=":", label="random")
    if _finite(rule_share):
        ax.axvline(100 * rule_share, color=RULES_COLOUR, linestyle="--", linewidth=1, label="rule MQL volume")
    ax.set_xlabel("share of open leads handed over, best first (%)")
    ax.set_ylabel("share of SQLs captured (%)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _chart(fig, "capture", "Capture: the share of all SQLs found in the top x% of leads by each score.")


def chart_lift(gains: pd.DataFrame) -> str:
    """Lift (capture / share) of the model and the rule score."""
    fig, ax = _figure()
    keep = gains["share_of_leads"] >= 0.01
    share = 100 * gains.loc[keep, "share_of_leads"]
    ax.plot(share, gains.loc[keep, "model_lift"], color=MODEL_COLOUR, label="model")
    ax.plot(share, gains.loc[keep, "rules_lift"], color=RULES_COLOUR, label="rules")
    ax.axhline(1.0, color=GREY, linestyle=":", label="random")
    ax.set_xscale("log")
    ax.set_xlabel("share of open leads handed over, best first (%, log scale)")
    ax.set_ylabel("lift (x the average conversion)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return _chart(fig, "lift", "Lift: how many times the average SQL rate the top x% of leads convert at.")


def chart_tradeoff(tradeoff: pd.DataFrame, points: Sequence[OperatingPoint]) -> str:
    """Leads per week handed to sales vs SQLs per week, with the current lists marked."""
    fig, ax = _figure()
    ax.plot(
        tradeoff["leads_per_week"],
        tradeoff["expected_sqls_per_week"],
        color=MODEL_COLOUR,
        label="expected SQLs (model probabilities)",
    )
    ax.plot(
        tradeoff["leads_per_week"],
        tradeoff["observed_sqls_per_week"],
        color=MODEL_COLOUR,
        linestyle="--",
        alpha=0.6,
        label="observed SQLs",
    )
    for point in points:
        if point.leads_per_week <= 0:
            continue
        colour = RULES_COLOUR if point.name.startswith("rule") else "#222"
        ax.scatter([point.leads_per_week], [point.observed_sqls_per_week], color=colour, zorder=3, s=25)
        ax.annotate(
            point.name,
            (point.leads_per_week, point.observed_sqls_per_week),
            fontsize=7,
            xytext=(4, -10),
            textcoords="offset points",
        )
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("leads handed to sales per week (at or above a threshold)")
    ax.set_ylabel("SQLs per week")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _chart(
        fig,
        "tradeoff",
        "Threshold trade-off: a lower threshold hands more leads to sales for more SQLs; "
        "dots are today's lists (observed SQLs).",
    )


def chart_grades(grades: pd.DataFrame, title: str) -> str:
    """Leads per grade."""
    fig, ax = _figure(5.0, 2.8)
    ax.bar(grades["grade"], grades["share"] * 100, color=["#4a7c59", MODEL_COLOUR, "#7fb0dc", GREY])
    ax.set_ylabel("share of leads (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _chart(fig, "grades", f"{title}: share of leads per grade.")


# ----------------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------------


def _threshold_list(notes: Sequence[ThresholdNote]) -> str:
    items = "".join(f"<li><b>{esc(n.stage)}</b> (grade {esc(n.grade)}): {esc(n.note)}</li>" for n in notes)
    unreachable = [n for n in notes if not math.isfinite(n.threshold)]
    warn = ""
    if unreachable:
        names = ", ".join(f"{n.stage} (grade {n.grade})" for n in unreachable)
        warn = (
            f'<p class="note">No lead is predicted {esc(names)}: the threshold is unreachable under its '
            f"policy. The grades in use are {esc(_grades_in_use(notes))} only.</p>"
        )
    return f"<ul>{items}</ul>{warn}"


def _grades_in_use(notes: Sequence[ThresholdNote]) -> str:
    empty = {n.grade for n in notes if not math.isfinite(n.threshold)}
    return "-".join(g for g in "ABCD" if g not in empty) if len(empty) < 3 else "D"


AGREEMENT_COLUMNS: Final = (
    ("cell", "cell", None),
    ("rows", "lead-weeks", num),
    ("leads", "leads", num),
    ("per_week", "per week", num),
    ("sqls", "SQLs", num),
    ("conversion", "SQL conversion", pct),
    ("ci", "95% interval", None),
    ("share_of_sqls", "share of all SQLs", pct),
)


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


def _example_table(frame: pd.DataFrame, nightly: bool) -> str:
    """Disagreement examples: who (codes and flags only), where from, both scores, the model's reasons, outcome."""
    if frame.empty:
        return '<p class="muted">No such lead.</p>'
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
    columns: list[tuple[str, str, Formatter | None]] = [
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
    return table(shown, [c for c in columns if c[0] in shown.columns])


LEAKAGE_COLUMNS: Final = (
    ("leads", "leads", num),
    ("rule_mqls_per_week", "rule MQLs / week", lambda v: num(v, 1)),
    ("mql_to_sql", "rule MQL → SQL", pct),
    ("ci", "95% interval", None),
    ("leakage", "leakage", pct),
    ("sqls", "SQLs", num),
    ("sqls_missed_by_rules", "SQLs never MQL", pct),
    ("model_mqls_per_week", "model MQLs / week", lambda v: num(v, 1)),
    ("model_mql_to_sql", "model MQL → SQL", pct),
    ("flag", "flag", None),
)


def holdout_html(section: HoldoutSection, notes: Sequence[ThresholdNote], horizon_days: int, target: str) -> str:
    """The out-of-time test slice section."""
    agreement = _with_ci(section.agreement)
    rule_share = next((p.share_of_rows for p in section.points if p.name == "rule MQLs"), float("nan"))
    points = pd.DataFrame([p.__dict__ for p in section.points])
    parts = [
        "<h2>Out-of-time test period</h2>",
        f"<p>{esc(section.period[0])} to {esc(section.period[1])}: {section.snapshots} weekly snapshots, "
        f"{num(section.rows)} lead-weeks of {num(section.leads)} open leads, {num(section.sqls)} of which reached "
        f"{esc(target)} within {horizon_days} days. The model never saw this period. A <i>rule MQL</i> is a lead the "
        "marketing points rule marks as MQL that week; a <i>predicted MQL</i> is a lead whose probability reaches "
        "the model's MQL threshold.</p>",
        "<h3>Thresholds</h3>",
        _threshold_list(notes),
        "<h3>Rule MQL vs predicted MQL</h3>",
        table(agreement, AGREEMENT_COLUMNS),
        chart_agreement(section.agreement),
        "<h3>Lift and capture</h3>",
        '<div class="grid">',
        chart_capture(section.gains, rule_share),
        chart_lift(section.gains),
        "</div>",
        "<h3>Threshold trade-off</h3>",
        chart_tradeoff(section.tradeoff, section.points),
        table(
            points,
            [
                ("name", "list", None),
                ("leads_per_week", "leads / week", lambda v: num(v, 1)),
                ("expected_sqls_per_week", "expected SQLs / week", lambda v: num(v, 1)),
                ("observed_sqls_per_week", "observed SQLs / week", lambda v: num(v, 1)),
                ("share_of_rows", "share of open leads", pct),
            ],
        ),
        "<h3>MQL → SQL leakage per campaign</h3>",
        "<p>Leakage = rule MQLs that do not reach SQL within the horizon. <b>Too loose</b>: so few MQLs convert "
        "that sales wastes time; <b>too narrow</b>: almost every MQL converts, so the rule only catches the sure "
        "things (look at <i>SQLs never MQL</i> for what it misses).</p>",
        table(_with_ci(section.leakage_campaign), [("campaign", "campaign", None), *LEAKAGE_COLUMNS], "flag"),
        "<h3>MQL → SQL leakage per region</h3>",
        table(_with_ci(section.leakage_region), [("region", "region", None), *LEAKAGE_COLUMNS], "flag"),
        "<h3>Where they disagree</h3>",
        "<p><b>Rule MQLs the model rejects</b> (highest rule scores first: typically the engaged junior). "
        "No names, e-mails, phones or titles: seniority and department are codes parsed from the title.</p>",
        _example_table(section.rule_only, nightly=False),
        "<p><b>Leads the model picks that the rules missed</b> (highest probabilities first: typically the quiet "
        "senior buyer).</p>",
        _example_table(section.model_only, nightly=False),
        "<h3>Grades and fit vs readiness</h3>",
        _mix_html(section.grades, section.fit_ready, per_week=True, conversion=True),
        chart_grades(section.grades, "Test period"),
    ]
    return "\n".join(parts)


def _mix_html(grades: pd.DataFrame, fit_ready: pd.DataFrame, per_week: bool, conversion: bool) -> str:
    volume: tuple[str, str, Formatter | None] = (
        ("per_week", "per week", lambda v: num(v, 1)) if per_week else ("rows", "leads", num)
    )
    extra: list[tuple[str, str, Formatter | None]] = [("conversion", "SQL conversion", pct)] if conversion else []
    nurture = fit_ready.loc[fit_ready["key"] == "nurture"].iloc[0]
    size = f"{num(nurture['per_week'], 1)} leads per week" if per_week else f"{num(nurture['rows'])} leads"
    return "\n".join(
        [
            table(
                grades,
                [("grade", "grade", None), ("meaning", "meaning", None), volume, ("share", "share", pct), *extra],
            ),
            "<p>Fit = the company matches the ideal customer profile (industry, size and region); ready = the model "
            f"predicts MQL or higher. <b>Nurture group (fit, not yet ready): {esc(size)}, {pct(nurture['share'])} of "
            "open leads.</b></p>",
            table(fit_ready, [("group", "group", None), volume, ("share", "share", pct), *extra]),
        ]
    )


def nightly_html(section: NightlySection | None, where: str) -> str:
    """The latest nightly run section, or a plain sentence when there is none yet."""
    if section is None:
        return (
            "<h2>Latest nightly run</h2>"
            f'<p class="note" id="no-nightly-run">No nightly scoring run yet in {esc(where)}: run '
            "<code>leadscore score</code> (the DVC stage <code>score</code>) and rebuild this report.</p>"
        )
    run = section.run
    as_of = run.get("as_of")
    as_of_text = as_of.strftime("%Y-%m-%d %H:%M UTC") if isinstance(as_of, pd.Timestamp) else esc(as_of)
    drift = ""
    if run.get("status") == "drift_warning":
        drift = (
            f'<p class="note">The run warned of drift: PSI up to {num(run.get("psi_max"), 2)} '
            f"({esc(run.get('psi_max_feature'))}).</p>"
        )
    meta = (
        f"<p>Run <code>{esc(run.get('run_id'))}</code> as of {esc(as_of_text)}, model "
        f"{esc(run.get('model_name'))} version {esc(run.get('model_version'))}: {num(section.leads)} open leads "
        "scored. Outcomes are not known yet, so this section shows volumes only.</p>"
    )
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in section.notes)
    volume_columns: list[tuple[str, str, Formatter | None]] = [
        ("leads", "leads", num),
        ("rule_mqls", "rule MQLs", num),
        ("model_mqls", "predicted MQLs", num),
        ("both", "both", num),
        ("rule_only", "rule only", num),
        ("model_only", "model only", num),
    ]
    return "\n".join(
        [
            "<h2>Latest nightly run</h2>",
            meta,
            drift,
            notes,
            "<h3>Rule MQL vs predicted MQL</h3>",
            table(section.agreement, [("cell", "cell", None), ("leads", "leads", num), ("share", "share", pct)]),
            "<h3>Per campaign</h3>",
            table(section.by_campaign, [("campaign", "campaign", None), *volume_columns]),
            "<h3>Per region</h3>",
            table(section.by_region, [("region", "region", None), *volume_columns]),
            "<h3>Where they disagree</h3>",
            "<p><b>Rule MQLs the model rejects</b> (lowest probabilities first).</p>",
            _example_table(section.rule_only, nightly=True),
            "<p><b>Leads the model picks that the rules missed</b> (highest probabilities first).</p>",
            _example_table(section.model_only, nightly=True),
            "<h3>Grades and fit vs readiness</h3>",
            _mix_html(section.grades, section.fit_ready, per_week=False, conversion=False),
            chart_grades(section.grades, "Latest nightly run"),
        ]
    )


def page(title: str, holdout: str, nightly: str, generated_at: datetime | None = None) -> str:
    """The whole self-contained page."""
    stamp = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<h1>{esc(title)}</h1><p class="muted">Generated {esc(stamp)} by <code>leadscore report</code>. '
        "Click a column header to sort a table.</p>"
        f"{holdout}\n{nightly}<script>{SORT_JS}</script></body></html>\n"
    )
