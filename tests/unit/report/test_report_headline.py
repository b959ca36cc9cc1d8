"""The headline and the standard-rule table read from the evaluate stage's metrics, never recomputed."""

from __future__ import annotations

import math

import pytest
from report_frames import evaluate_metrics

from pipelines.report import headline as hl


def test_the_headline_is_the_best_rule_comparison_with_its_interval() -> None:
    h = hl.headline(evaluate_metrics(10))

    assert (h.rule, h.best_of, h.ratio, h.ci_low, h.ci_high) == ("decayed_30d", 2, 1.13, 1.056, 1.199)
    assert (h.ci_level, h.resample_unit, h.resamples) == (0.9, "accounts", 200)
    assert h.rule_mqls_per_week == 5792.45 and h.rule_conversion == 0.0307
    assert h.model_conversion == pytest.approx(0.0307 * 1.13)  # equal volume: conversion ratio = capture ratio
    assert (h.history_ratio, h.history_ci_low, h.history_ci_high) == (1.372, 1.247, 1.498)
    assert (h.model_roc_auc, h.rule_roc_auc) == (0.876, 0.819)


def test_without_variants_the_headline_is_the_history_rule() -> None:
    h = hl.headline(evaluate_metrics(10, best=None))

    assert (h.rule, h.best_of, h.ratio, h.rule_mqls_per_week, h.rule_conversion) == ("history", 0, 1.372, 6735.0, 0.022)
    assert math.isnan(h.history_ratio)


def test_missing_figures_name_the_key_and_the_stage_to_rerun() -> None:
    metrics = evaluate_metrics(10)
    del metrics["sql_capture_ratio_vs_best_rule"]

    with pytest.raises(hl.MetricsInputError, match=r"lacks \['sql_capture_ratio_vs_best_rule'\].*leadscore evaluate"):
        hl.headline(metrics)
    with pytest.raises(hl.MetricsInputError, match="best_rule 'nope' is not among rule_variants"):
        hl.headline({**evaluate_metrics(10), "best_rule": "nope"})


def test_the_rule_table_has_one_row_per_variant_and_the_models_capture_at_its_volume() -> None:
    table = hl.rule_table(evaluate_metrics(10)).set_index("rule")

    assert list(table.index) == ["history", "decayed_30d"] and list(table["best"]) == [False, True]
    assert table.loc["decayed_30d", "model_sql_capture_ratio"] == 1.13
    assert table.loc["decayed_30d", "model_mql_recall"] == pytest.approx(0.788 * 1.13)
    assert table.loc["decayed_30d", "threshold"] == "matched to the history's rule MQL volume: 29.1 points or more"
    assert table.loc["history", "threshold"] == "its own threshold"
    assert hl.rule_table(evaluate_metrics(10, best=None)).empty


def test_a_stale_evaluation_is_refused() -> None:
    hl.check_test_rows(evaluate_metrics(10), 10)
    with pytest.raises(hl.MetricsInputError, match="describes 10 test rows"):
        hl.check_test_rows(evaluate_metrics(10), 11)
