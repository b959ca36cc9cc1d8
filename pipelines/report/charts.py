"""The report's charts: matplotlib figures as inline SVG text, with nothing a browser would fetch and no randomness.

The SVG is stripped of the XML prologue, DOCTYPE, metadata and namespace declarations (they name URLs a browser never
loads but a reader cannot tell apart from ones it does), and drawn with a fixed `svg.hashsalt`, so the ids of clip
paths are the same on every run and the page DVC tracks changes only when its figures do.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from pipelines.report.core import OperatingPoint

_SVG_HEAD: Final = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA: Final = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_XMLNS: Final = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
#: Salt of matplotlib's SVG ids (its default is a random UUID per figure, which would change the page every run).
SVG_HASH_SALT: Final = "leadscore-report"
MODEL_COLOUR: Final = "#1f6fb4"
RULES_COLOUR: Final = "#d9822b"
GREY: Final = "#888888"


@dataclass(frozen=True)
class Chart:
    """One chart of the page: its name (the figure's data-chart), inline SVG text and caption."""

    name: str
    svg: str
    caption: str


def _finite(value: Any) -> bool:
    try:
        return value is not None and bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def svg_of(fig: Any) -> str:
    """A matplotlib figure as inline SVG without prologue, metadata or namespace URLs, the same on every run."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": SVG_HASH_SALT}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = _METADATA.sub("", _SVG_HEAD.sub("", buffer.getvalue(), count=1))
    return _XMLNS.sub("", text)


def _figure(width: float = 6.0, height: float = 3.8) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _chart(fig: Any, name: str, caption: str) -> Chart:
    return Chart(name=name, svg=svg_of(fig), caption=caption)


def chart_agreement(agreement: pd.DataFrame, level: str) -> Chart:
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
    return _chart(
        fig, "agreement", f"SQL conversion of each cell of the 2x2, with its {level} interval (accounts resampled)."
    )


def chart_capture(gains: pd.DataFrame, rule_share: float) -> Chart:
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


def chart_lift(gains: pd.DataFrame) -> Chart:
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


def chart_tradeoff(tradeoff: pd.DataFrame, points: Sequence[OperatingPoint]) -> Chart:
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


def chart_grades(grades: pd.DataFrame, title: str) -> Chart:
    """Leads per grade."""
    fig, ax = _figure(5.0, 2.8)
    ax.bar(grades["grade"], grades["share"] * 100, color=["#4a7c59", MODEL_COLOUR, "#7fb0dc", GREY])
    ax.set_ylabel("share of leads (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _chart(fig, "grades", f"{title}: share of leads per grade.")
