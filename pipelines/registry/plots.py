"""PNG figures of the evaluate stage's plot tables for the MLflow UI (render only: CSV tables in, figures out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def plot_figures(plots_dir: Path) -> dict[str, Any]:
    """PNG versions of the evaluate stage's ROC and reliability tables, for the MLflow UI."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, nothing to close

    figures: dict[str, Any] = {}
    roc = plots_dir / "roc.csv"
    if roc.exists():
        table = pd.read_csv(roc)
        fig = Figure(figsize=(5, 5))
        ax = fig.subplots()
        for col in table.columns.drop("fpr"):
            ax.plot(table["fpr"], table[col], label=col)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test slice")
        ax.legend()
        figures["plots/roc.png"] = fig
    tables = []
    for file, label in (("calibration.csv", "calibrated"), ("calibration_raw.csv", "raw")):
        if (plots_dir / file).exists():
            table = pd.read_csv(plots_dir / file)
            tables += (
                [(str(k), part) for k, part in table.groupby("score")] if "score" in table.columns else [(label, table)]
            )
    if tables:
        fig = Figure(figsize=(5, 5))
        ax = fig.subplots()
        for label, part in tables:
            ax.plot(part["mean_predicted"], part["fraction_positive"], "o-", label=label)
        top = float(max(max(t["mean_predicted"].max(), t["fraction_positive"].max()) for _, t in tables))
        ax.plot([0, top], [0, top], ":", color="grey")
        ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Reliability, test slice")
        ax.legend()
        figures["plots/calibration.png"] = fig
    return figures
