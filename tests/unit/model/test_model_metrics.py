"""Metric helpers: the ones written here agree with sklearn, and the lead bootstrap keeps leads whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, roc_auc_score

from pipelines.modeling import (
    LeadBootstrap,
    atomic_path,
    average_precision,
    expected_calibration_error,
    lift_and_capture,
    reliability_table,
    roc_auc,
    top_k_per_group,
    write_json,
)


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    p = rng.beta(1, 20, size=5000)
    y = (rng.random(5000) < p).astype(int)
    return y, p


def test_rank_auc_and_average_precision_equal_sklearn_with_ties(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    rounded = np.round(p, 2)  # many ties

    assert roc_auc(y, rounded) == pytest.approx(roc_auc_score(y, rounded), abs=1e-12)
    assert average_precision(y, rounded) == pytest.approx(average_precision_score(y, rounded), abs=1e-12)
    assert np.isnan(roc_auc(np.zeros(5), np.arange(5)))


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_reliability_table_matches_sklearn_calibration_curve(
    scored: tuple[np.ndarray, np.ndarray], strategy: str
) -> None:
    y, p = scored
    table = reliability_table(y, p, 10, strategy)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy=strategy)

    np.testing.assert_allclose(table["fraction_positive"], prob_true)
    np.testing.assert_allclose(table["mean_predicted"], prob_pred)
    assert table["rows"].sum() == len(y)


def test_equal_mass_bins_hold_equal_rows(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    table = reliability_table(y, p, 10, "quantile")

    assert table["rows"].min() >= 499 and table["rows"].max() <= 501


def test_ece_is_small_when_calibrated_and_large_when_not(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored

    assert expected_calibration_error(y, p, 10, "quantile") < 0.01
    assert expected_calibration_error(y, np.clip(p * 3, 0, 1), 10, "quantile") > 0.05


def test_lift_and_capture_of_a_perfect_ranking() -> None:
    y = np.r_[np.ones(10), np.zeros(90)]
    lift, capture = lift_and_capture(y, np.r_[np.ones(10), np.zeros(90)] + np.linspace(0, 0.1, 100), 0.1)

    assert capture == 1.0 and lift == pytest.approx(10.0)


def test_top_k_per_group_picks_k_highest_in_each_group() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.3])
    groups = np.array([0, 0, 0, 1, 1, 1])

    picked = top_k_per_group(scores, groups, np.array([2, 1]))

    assert picked.tolist() == [False, True, True, True, False, False]


def test_lead_bootstrap_draws_whole_leads() -> None:
    lead = np.repeat(np.arange(50), np.arange(1, 51))  # lead i has i + 1 rows
    boot = LeadBootstrap(lead, seed=0)

    idx = boot.sample()
    counts = np.bincount(lead[idx], minlength=50)
    per_lead = np.arange(1, 51)
    assert ((counts % per_lead) == 0).all()  # a lead's rows come all together, once per draw
    assert (counts // per_lead).sum() == 50  # as many leads as the original


def test_lead_bootstrap_interval_covers_the_estimate(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    lead = np.arange(len(y)) // 5
    ci = LeadBootstrap(lead, seed=0).intervals(lambda idx: {"auc": roc_auc(y[idx], p[idx])}, 50, 0.9)

    lo, hi = ci["auc"]
    assert lo < roc_auc(y, p) < hi


def test_atomic_writes_keep_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json(path, {"a": float("nan"), "b": np.float32(1.5)})
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5}

    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")

    assert json.loads(path.read_text()) == {"a": None, "b": 1.5}
    assert list(tmp_path.iterdir()) == [path]


def test_weighted_metrics_equal_the_metrics_of_the_rows_repeated(scored: tuple[np.ndarray, np.ndarray]) -> None:
    """A row of weight k stands for k open-lead weeks: every weighted figure equals the figure on k copies."""
    from pipelines.modeling import precision_recall, top_share_mask

    y, p = scored
    p = np.round(p, 3)  # ties too
    w = np.random.default_rng(2).choice([1, 4], size=len(y), p=[0.6, 0.4])
    y_rep, p_rep = np.repeat(y, w), np.repeat(p, w)

    assert roc_auc(y, p, w) == pytest.approx(roc_auc(y_rep, p_rep), abs=1e-12)
    assert roc_auc(y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)
    assert average_precision(y, p, w) == pytest.approx(average_precision(y_rep, p_rep), abs=1e-12)
    assert expected_calibration_error(y, p, 10, "uniform", w) == pytest.approx(
        expected_calibration_error(y_rep, p_rep, 10, "uniform"), abs=1e-12
    )
    assert reliability_table(y, p, 10, "quantile", w)["rows"].sum() == pytest.approx(w.sum())
    picked = p > 0.05
    assert precision_recall(y, picked, w) == pytest.approx(precision_recall(y_rep, np.repeat(picked, w)))
    # the top 10% of open-lead weeks holds about 10% of the weight
    assert w[top_share_mask(p, 0.1, w)].sum() == pytest.approx(0.1 * w.sum(), abs=4)
    lift, capture = lift_and_capture(y, p, 0.2, w)
    lift_rep, capture_rep = lift_and_capture(y_rep, p_rep, 0.2)
    assert capture == pytest.approx(capture_rep, abs=0.02) and lift == pytest.approx(lift_rep, rel=0.05)


def test_weighted_top_k_counts_weight_within_each_group() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95, 0.1])
    groups = np.array([0, 0, 0, 0, 1, 1])
    weight = np.array([4.0, 1.0, 1.0, 1.0, 1.0, 1.0])

    # group 0: k = 5 places: the 0.9 row (weight 4) and the 0.8 row; group 1: one place
    picked = top_k_per_group(scores, groups, np.array([5.0, 1.0]), weight)

    assert picked.tolist() == [True, True, False, False, True, False]
    assert top_k_per_group(scores, groups, np.array([2, 1])).tolist() == [True, True, False, False, True, False]
