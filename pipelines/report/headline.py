"""The report's answer first: the headline comparison and the standard-rule table, from the evaluate stage's metrics.

Pure: the parsed `metrics/evaluate.json` in, typed results out. The report does not recompute these figures (nor
their account-clustered bootstrap): it shows what the evaluate stage measured on the same out-of-time test rows, so
the page, `dvc metrics show` and the README agree to the last digit. At equal volume (the model's top k at each
snapshot, k = the rule's MQLs then) the model's list and the rule's hold the same number of lead-weeks, so the
model's conversion is the rule's conversion times the SQL-capture ratio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

from pipelines.config import HISTORY_RULE
from pipelines.errors import BadInputError

#: Columns of the standard-rule table (`rule_table`), one row per rule variant in the metrics' order.
RULE_TABLE_COLUMNS: Final[tuple[str, ...]] = (
    "rule",
    "source",
    "threshold",
    "best",
    "calibration_roc_auc",
    "roc_auc",
    "mql_leads_per_week",
    "mql_precision",
    "mql_recall",
    "model_sql_capture_ratio",
    "model_mql_recall",
)


class MetricsInputError(BadInputError):
    """metrics/evaluate.json lacks a figure the report shows, or describes other test rows (the CLI exits with 2)."""


@dataclass(frozen=True)
class Headline:
    """Predicted MQLs vs one rule's MQLs at equal volume on the out-of-time test slice."""

    rule: str  # the rule compared with: the best standard rule, else the history's
    rule_source: str
    best_of: int  # how many rules the best was picked from (0: no variants, the history's rule only)
    selected_by: str  # how the best rule was picked (never on the test labels)
    ratio: float  # SQLs the model's list captures / SQLs the rule's MQLs capture, same volume
    ci_low: float
    ci_high: float
    ci_level: float  # the evaluate stage's interval level
    resample_unit: str  # what the bootstrap resampled (accounts)
    resamples: int
    rule_mqls_per_week: float  # the rule's MQL lead-weeks per week (the volume both lists have)
    rule_conversion: float  # share of the rule's MQLs reaching the target stage within the horizon
    model_conversion: float  # the same for the model's list of that volume
    model_roc_auc: float
    rule_roc_auc: float
    history_ratio: float  # the same comparison with the history's rule (NaN when the headline is that rule)
    history_ci_low: float
    history_ci_high: float


def _number(metrics: Mapping[str, Any], key: str, where: str = "") -> float:
    value = metrics.get(key)
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MetricsInputError(f"metrics/evaluate.json{where}: {key} is {value!r}, not a number") from None


def _require(metrics: Mapping[str, Any], keys: tuple[str, ...], where: str = "") -> None:
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise MetricsInputError(
            f"metrics/evaluate.json{where} lacks {missing}: rerun `leadscore evaluate` (DVC stage evaluate)"
        )


def check_test_rows(metrics: Mapping[str, Any], rows: int) -> None:
    """Refuse metrics of other test rows (a stale evaluate.json): the headline would describe another slice."""
    _require(metrics, ("test",))
    measured = metrics["test"].get("rows") if isinstance(metrics["test"], Mapping) else None
    if measured != rows:
        raise MetricsInputError(
            f"metrics/evaluate.json describes {measured} test rows but the test slice of models/split.json holds "
            f"{rows}: rerun `leadscore evaluate` (DVC stage evaluate) on the same features and split"
        )


def headline(metrics: Mapping[str, Any]) -> Headline:
    """The headline comparison: against the best standard rule when the metrics hold rule variants, else against
    the history's rule (the only rule evaluated)."""
    _require(metrics, ("roc_auc", "sql_capture_ratio_vs_rules", "equal_volume", "rules", "bootstrap"))
    boot = metrics["bootstrap"]
    variants: Mapping[str, Any] = metrics.get("rule_variants") or {}
    history_ratio = _number(metrics, "sql_capture_ratio_vs_rules")
    history_lo = _number(metrics, "sql_capture_ratio_vs_rules_ci_low")
    history_hi = _number(metrics, "sql_capture_ratio_vs_rules_ci_high")
    best = metrics.get("best_rule")
    if best is not None and variants:
        _require(metrics, ("sql_capture_ratio_vs_best_rule", "best_rule_roc_auc"))
        if best not in variants:
            raise MetricsInputError(f"metrics/evaluate.json: best_rule {best!r} is not among rule_variants")
        row = variants[best]
        where = f" rule_variants.{best}"
        _require(row, ("source", "mql_leads_per_week", "mql_precision"), where)
        ratio = _number(metrics, "sql_capture_ratio_vs_best_rule")
        rule_conversion = _number(row, "mql_precision", where)
        return Headline(
            rule=str(best),
            rule_source=str(row["source"]),
            best_of=len(variants),
            selected_by=str(metrics.get("best_rule_selected_by", "")),
            ratio=ratio,
            ci_low=_number(metrics, "sql_capture_ratio_vs_best_rule_ci_low"),
            ci_high=_number(metrics, "sql_capture_ratio_vs_best_rule_ci_high"),
            ci_level=_number(boot, "ci_level"),
            resample_unit=str(boot.get("unit", "")),
            resamples=int(_number(boot, "resamples")),
            rule_mqls_per_week=_number(row, "mql_leads_per_week", where),
            rule_conversion=rule_conversion,
            model_conversion=rule_conversion * ratio,
            model_roc_auc=_number(metrics, "roc_auc"),
            rule_roc_auc=_number(metrics, "best_rule_roc_auc"),
            history_ratio=float("nan") if best == HISTORY_RULE else history_ratio,
            history_ci_low=float("nan") if best == HISTORY_RULE else history_lo,
            history_ci_high=float("nan") if best == HISTORY_RULE else history_hi,
        )
    equal = metrics["equal_volume"]
    _require(equal, ("rule_mql_precision",), " equal_volume")
    rule_conversion = _number(equal, "rule_mql_precision")
    return Headline(
        rule=HISTORY_RULE,
        rule_source="rules.file",
        best_of=0,
        selected_by="",
        ratio=history_ratio,
        ci_low=history_lo,
        ci_high=history_hi,
        ci_level=_number(boot, "ci_level"),
        resample_unit=str(boot.get("unit", "")),
        resamples=int(_number(boot, "resamples")),
        rule_mqls_per_week=_number(metrics["rules"], "mql_leads_per_week"),
        rule_conversion=rule_conversion,
        model_conversion=rule_conversion * history_ratio,
        model_roc_auc=_number(metrics, "roc_auc"),
        rule_roc_auc=_number(metrics["rules"], "roc_auc"),
        history_ratio=float("nan"),
        history_ci_low=float("nan"),
        history_ci_high=float("nan"),
    )


def rule_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per standard rule (the history's first): how its MQL threshold is set, ROC-AUC on the calibration
    slice (what picks the best) and the test slice, MQL volume, conversion and share of SQLs captured, and the
    model's SQL capture at that rule's volume (ratio, and the share of all SQLs it captures). Empty without
    variants."""
    variants: Mapping[str, Any] = metrics.get("rule_variants") or {}
    best = metrics.get("best_rule")
    rows = []
    for name, row in variants.items():
        where = f" rule_variants.{name}"
        _require(row, ("source", "roc_auc", "mql_leads_per_week", "mql_precision", "mql_recall"), where)
        ratio = _number(row, "model_sql_capture_ratio", where)
        recall = _number(row, "mql_recall", where)
        threshold = row.get("threshold")
        rows.append(
            {
                "rule": str(name),
                "source": str(row["source"]),
                "threshold": (
                    f"matched to the history's rule MQL volume: {float(threshold):.1f} points or more"
                    if row.get("threshold_policy") == "match_volume" and threshold is not None
                    else "its own threshold"
                ),
                "best": name == best,
                "calibration_roc_auc": _number(row, "calibration_roc_auc", where),
                "roc_auc": _number(row, "roc_auc", where),
                "mql_leads_per_week": _number(row, "mql_leads_per_week", where),
                "mql_precision": _number(row, "mql_precision", where),
                "mql_recall": recall,
                "model_sql_capture_ratio": ratio,
                "model_mql_recall": recall * ratio if math.isfinite(recall * ratio) else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=list(RULE_TABLE_COLUMNS))
