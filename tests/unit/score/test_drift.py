"""Drift: bins of a training population and the PSI of a scored one, chunk by chunk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.drift import (
    SCORE,
    DriftCounter,
    DriftReference,
    build_reference,
    categorical_bins,
    numeric_bins,
    psi,
)


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    expected = [0.25, 0.25, 0.25, 0.25]
    assert psi(expected, [25, 25, 25, 25]) == pytest.approx(0.0)
    small = psi(expected, [30, 25, 25, 20])
    large = psi(expected, [70, 10, 10, 10])
    assert 0 < small < 0.1 < 0.25 < large


def test_psi_of_nothing_observed_is_nan_not_zero() -> None:
    assert np.isnan(psi([0.5, 0.5], [0, 0]))


def test_numeric_bins_put_missing_values_in_their_own_bin_and_merge_tied_edges() -> None:
    values = pd.Series([0.0] * 80 + [1.0, 2.0, 3.0, 4.0] * 5 + [np.nan] * 10)
    bins = numeric_bins("n", values, 10)
    assert len(bins.edges) < 9  # 80% zeros: quantile edges collapse
    assert sum(bins.expected) == pytest.approx(1.0)
    assert bins.expected[-1] == pytest.approx(10 / 110)
    assert bins.counts(pd.Series([np.nan, 0.0])).tolist()[-1] == 1


def test_categorical_bins_count_unseen_levels_and_missing_apart() -> None:
    bins = categorical_bins("seniority", pd.Series(["vp", "vp", "manager", None]), levels=["manager", "vp"])
    assert bins.expected == pytest.approx((0.25, 0.5, 0.0, 0.25))
    assert bins.counts(pd.Series(["ceo", "vp", None, None])).tolist() == [0, 1, 1, 2]


def test_counter_adds_chunks_and_reports_psi_per_column_against_the_reference() -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {"visits": rng.poisson(2, 5000).astype(float), "region": rng.choice(["NA", "EMEA", "APAC"], 5000)}
    )
    score = rng.beta(2, 8, 5000)
    reference = build_reference(train, score, {"visits": "numeric", "region": "categorical"}, 10, "test rows")
    same = DriftCounter(reference)
    for part in np.array_split(np.arange(5000), 4):  # chunk by chunk = all at once
        same.add(train.iloc[part], score[part])
    assert max(same.psi().values()) < 1e-9

    shifted = DriftCounter(reference)
    shifted.add(
        pd.DataFrame({"visits": rng.poisson(6, 3000).astype(float), "region": ["LATAM"] * 3000}), rng.beta(2, 8, 3000)
    )
    result = shifted.psi()
    assert result["visits"] > 0.25 and result["region"] > 0.25 and result[SCORE] < 0.1


def test_reference_round_trips_through_json() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan], "c": ["a", "b", "a", None]})
    reference = build_reference(frame, np.array([0.1, 0.2, 0.3, 0.4]), {"x": "numeric", "c": "categorical"}, 4, "s")
    again = DriftReference.from_dict(reference.to_dict())
    assert again == reference
    assert again.features == ["x", "c"]
