"""The promotion gate: paired lead bootstrap of the AUC difference, ECE bounds."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import GateParams
from pipelines.registry.gate import absolute_gate, best_baseline, compare, first_model

GATE = GateParams(
    auc_margin=0.005,
    max_ece=0.05,
    max_ece_increase=0.01,
    bootstrap=100,
    ci_level=0.95,
    baseline_auc_margin=0.0,
    min_rounds=2,
)


def rows(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from a calibrated probability, that probability, and lead ids (3 rows per lead)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 6, n)
    y = (rng.random(n) < p).astype(int)
    return y, p, np.repeat(np.arange(n // 3), 3)


def test_the_same_model_passes() -> None:
    y, p, lead = rows()

    result = compare(y, p, p, lead, GATE, 10, "quantile", seed=1)

    assert result.passed, result.reasons
    assert result.figures["auc_delta"] == 0.0


def test_a_clearly_worse_challenger_is_refused_naming_the_auc() -> None:
    y, p, lead = rows()
    noisy = np.clip(p + np.random.default_rng(2).normal(0, 0.15, len(p)), 0.001, 0.999)

    result = compare(y, noisy, p, lead, GATE, 10, "quantile", seed=1)

    assert not result.passed
    assert any("AUC may be worse" in r for r in result.reasons)
    assert result.figures["auc_delta_ci"][1] < 0


def test_a_miscalibrated_challenger_with_the_same_ranking_is_refused_on_ece() -> None:
    y, p, lead = rows()

    result = compare(y, np.sqrt(p), p, lead, GATE, 10, "quantile", seed=1)  # same order, probabilities too high

    assert not result.passed
    assert any("ECE" in r and "above the bound" in r for r in result.reasons)
    assert not any("AUC may be worse" in r for r in result.reasons)


def test_first_model_passes() -> None:
    assert first_model().passed


def test_the_paired_bootstrap_resamples_the_clusters_it_is_given() -> None:
    # a challenger better on half the accounts and worse on the other half: resampling whole accounts spreads the
    # AUC difference more than resampling its 3-row leads
    rng = np.random.default_rng(5)
    y, p, lead = rows(6000, seed=5)
    account = lead // 20
    sign = np.where(account % 2 == 0, 1.0, -1.0)
    challenger = np.clip(p + sign * 0.15 * (y - p) + rng.normal(0, 0.01, len(p)), 0, 1)
    by_lead = compare(y, challenger, p, lead, GATE, 10, "quantile", seed=1).figures["auc_delta_ci"]
    by_account = compare(y, challenger, p, account, GATE, 10, "quantile", seed=1).figures["auc_delta_ci"]
    assert by_account[1] - by_account[0] > by_lead[1] - by_lead[0]


METRICS = {
    "roc_auc": 0.70,
    "ece": 0.02,
    "logreg": {"roc_auc": 0.66},
    "rules": {"roc_auc": 0.55},
    "best_rule": "decayed_30d",
    "best_rule_roc_auc": 0.62,
}


def test_the_best_baseline_is_the_higher_of_logistic_regression_and_the_best_rule() -> None:
    assert best_baseline(METRICS) == ("logistic regression", 0.66)
    assert best_baseline(METRICS | {"best_rule_roc_auc": 0.69}) == ("rule decayed_30d", 0.69)
    no_variants = {k: v for k, v in METRICS.items() if not k.startswith("best_rule")}  # the history's rule then
    assert best_baseline(no_variants | {"rules": {"roc_auc": 0.68}}) == ("rule history", 0.68)


def test_the_absolute_gate_passes_a_model_that_beats_the_baselines_and_is_calibrated() -> None:
    result = absolute_gate(METRICS, rounds=120, constant=False, gate=GATE)

    assert result.passed, result.reasons
    assert result.figures["best_baseline"] == "logistic regression" and result.figures["rounds"] == 120


@pytest.mark.parametrize(
    ("metrics", "rounds", "constant", "why"),
    [
        (METRICS | {"roc_auc": 0.65}, 120, False, "does not beat the best baseline (logistic regression, 0.6600)"),
        (METRICS | {"roc_auc": 0.66}, 120, False, "does not beat"),  # a tie does not beat
        (METRICS | {"ece": 0.18}, 120, False, "ECE 0.1800 above max_ece"),
        (METRICS | {"roc_auc": 0.5}, 120, True, "constant model"),
        (METRICS, 1, False, "1 boosting round(s), fewer than min_rounds 2"),
        ({"roc_auc": 0.9, "ece": 0.01}, 120, False, "no baseline"),
    ],
)
def test_the_absolute_gate_refuses_a_model_that_loses_is_miscalibrated_constant_or_one_round(
    metrics: dict, rounds: int, constant: bool, why: str
) -> None:
    result = absolute_gate(metrics, rounds=rounds, constant=constant, gate=GATE)

    assert not result.passed
    assert any(why in r and r.startswith("absolute gate failed") for r in result.reasons), result.reasons


def test_a_baseline_margin_raises_the_bar() -> None:
    strict = GATE.model_copy(update={"baseline_auc_margin": 0.05})

    assert not absolute_gate(METRICS, rounds=120, constant=False, gate=strict).passed
