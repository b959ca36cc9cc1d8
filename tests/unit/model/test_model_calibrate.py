"""Calibrator and thresholds: calibrated on the slice, policies honoured, stages ordered, one JSON artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.calibrate import (
    Calibrator,
    Thresholds,
    centred_knots,
    fit_calibrator,
    fit_thresholds,
    load_thresholds,
    precision_threshold,
    save_thresholds,
    volume_threshold,
)
from pipelines.config import CalibrateParams
from pipelines.modeling import ModelInputError, expected_calibration_error, roc_auc


@pytest.fixture
def overconfident() -> tuple[np.ndarray, np.ndarray]:
    """True probabilities p; the 'model' reports p ** 0.5 (too high), so calibration has work to do."""
    rng = np.random.default_rng(2)
    p = rng.beta(1, 30, size=20_000)
    y = (rng.random(len(p)) < p).astype(int)
    return np.sqrt(p), y


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_removes_the_bias(overconfident: tuple[np.ndarray, np.ndarray], method: str) -> None:
    raw, y = overconfident
    calibrator = fit_calibrator(raw, y, method)  # type: ignore[arg-type]

    calibrated = calibrator.apply(raw)

    assert expected_calibration_error(y, raw, 10, "quantile") > 0.05
    assert expected_calibration_error(y, calibrated, 10, "quantile") < 0.01
    assert calibrated.mean() == pytest.approx(y.mean(), rel=0.1)


def test_centred_isotonic_is_increasing_and_keeps_the_ranking(overconfident: tuple[np.ndarray, np.ndarray]) -> None:
    raw, y = overconfident
    calibrator = fit_calibrator(raw, y, "isotonic")

    assert np.all(np.diff(calibrator.knots_x) > 0) and np.all(np.diff(calibrator.knots_y) >= 0)
    inner = (raw > calibrator.knots_x[1]) & (raw < calibrator.knots_x[-2])
    assert roc_auc(y[inner], calibrator.apply(raw[inner])) == pytest.approx(roc_auc(y[inner], raw[inner]), abs=1e-9)


def test_centred_knots_put_each_plateau_at_its_midpoint() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([0.1, 0.1, 0.5, 0.5])

    kx, ky = centred_knots(x, y)

    assert kx.tolist() == [0.0, 0.5, 2.5, 3.0]
    assert ky.tolist() == [0.1, 0.1, 0.5, 0.5]


def test_calibrator_round_trips_through_json() -> None:
    for calibrator in (Calibrator("isotonic", (0.0, 1.0), (0.0, 0.5)), Calibrator("platt", slope=0.8, intercept=-1)):
        assert Calibrator.from_dict(calibrator.to_dict()) == calibrator


def test_calibration_needs_both_classes() -> None:
    with pytest.raises(ModelInputError, match="both"):
        fit_calibrator(np.linspace(0, 1, 10), np.zeros(10), "isotonic")


def test_volume_and_precision_thresholds() -> None:
    prob = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 1, 0, 1, 0, 0])

    assert volume_threshold(prob, 3) == 0.7
    assert volume_threshold(prob, 0.2) == np.inf
    assert volume_threshold(prob, 100) == 0.4
    # precision of the top 1..6: 1, 1, .67, .75, .6, .5 -> lowest threshold with >= 0.7 is 0.6 (4 picked)
    assert precision_threshold(prob, y, 0.7) == 0.6
    assert precision_threshold(prob, y, 0.99) == 0.8
    assert precision_threshold(prob, np.zeros(6), 0.5) == np.inf


def _params(**thresholds: dict[str, object]) -> CalibrateParams:
    default = {"MQL": {"policy": "match_rules"}, "SAL": {"policy": "capacity", "leads_per_week": 10},
               "SQL": {"policy": "precision", "min_precision": 0.5}}
    return CalibrateParams.model_validate({
        "method": "isotonic", "thresholds": {**default, **thresholds}, "segment_column": None, "segment_k": 50,
        "bootstrap": 20, "ci_level": 0.9,
    })


@pytest.fixture
def slice_rows() -> dict[str, object]:
    """Ten weekly snapshots of 200 leads with calibrated-looking probabilities and 30 rule MQLs per week."""
    rng = np.random.default_rng(4)
    n_weeks, n_leads = 10, 200
    prob = rng.beta(1, 8, size=n_weeks * n_leads)
    return {
        "prob": prob, "y": (rng.random(len(prob)) < prob).astype(int),
        "lead_id": np.tile(np.arange(n_leads), n_weeks),
        "snapshot_at": pd.Series(np.repeat(pd.date_range("2026-01-05", periods=n_weeks, freq="7D", tz="UTC"),
                                           n_leads)),
        "rule_mql": np.tile(np.arange(n_leads) < 30, n_weeks),
    }


def _fit(rows: dict[str, object], params: CalibrateParams, segments: pd.Series | None = None) -> Thresholds:
    return fit_thresholds(rows["prob"], rows["y"], rows["lead_id"], rows["snapshot_at"], rows["rule_mql"],  # type: ignore[arg-type]
                          segments, params, "SQL", 30, 7, 1.0, 0)


def test_each_policy_gives_what_it_promises(slice_rows: dict[str, object]) -> None:
    thresholds = _fit(slice_rows, _params())
    stats = thresholds.report["calibration_slice"]

    assert stats["MQL"]["leads_per_week"] == pytest.approx(30, abs=0.5)  # as many as rule MQLs
    assert stats["SAL"]["leads_per_week"] == pytest.approx(10, abs=0.5)  # the team's capacity
    assert stats["SQL"]["precision"] >= 0.5
    for stage in ("MQL", "SAL", "SQL"):
        lo, hi = stats[stage]["precision_ci"]
        assert lo <= stats[stage]["precision"] <= hi


def test_stage_thresholds_are_ordered_even_when_policies_disagree(slice_rows: dict[str, object]) -> None:
    # SAL capacity larger than the MQL volume would put SAL below MQL: it is raised to the MQL threshold
    thresholds = _fit(slice_rows, _params(SAL={"policy": "capacity", "leads_per_week": 100}))
    t = thresholds.global_thresholds

    assert t["MQL"] <= t["SAL"] <= t["SQL"]


def test_predicted_stage_and_grade_follow_the_highest_threshold_reached() -> None:
    thresholds = Thresholds("SQL", 30, {"MQL": 0.1, "SAL": 0.2, "SQL": 0.5})
    prob = np.array([0.05, 0.1, 0.3, 0.5, 0.9])

    assert thresholds.stage_of(prob).tolist() == ["none", "MQL", "SAL", "SQL", "SQL"]
    assert thresholds.grade_of(prob).tolist() == ["D", "C", "B", "A", "A"]


def test_segment_thresholds_shrink_toward_the_global_one(slice_rows: dict[str, object]) -> None:
    rng = np.random.default_rng(5)
    segments = pd.Series(rng.choice(["NA", "EMEA", "tiny"], p=[0.6, 0.39, 0.01], size=len(slice_rows["prob"])))
    params = _params().model_copy(update={"segment_column": "region"})

    thresholds = _fit(slice_rows, params, segments)

    per = thresholds.report["segments"]["per_segment"]
    assert per["tiny"]["weight"] < per["EMEA"]["weight"] < per["NA"]["weight"] < 1
    for value, info in per.items():  # MQL is the lowest stage, so ordering never moves it: the plain blend
        w, own, glob = info["weight"], info["unshrunk"]["MQL"], thresholds.global_thresholds["MQL"]
        assert thresholds.segment_thresholds[value]["MQL"] == pytest.approx(w * own + (1 - w) * glob)
    stages = thresholds.stage_of(np.full(3, 0.2), pd.Series(["NA", "unknown", None]))
    assert stages[1] == stages[2] == thresholds.stage_of(np.array([0.2]))[0]  # unseen segment -> global


def test_thresholds_json_round_trip(tmp_path: Path, slice_rows: dict[str, object]) -> None:
    rows = {**slice_rows, "y": np.zeros(len(slice_rows["prob"]), dtype=int)}  # nothing converts
    thresholds = _fit(rows, _params())
    path = tmp_path / "thresholds.json"

    save_thresholds(thresholds, path)
    loaded = load_thresholds(path)

    assert loaded.global_thresholds == thresholds.global_thresholds  # unreachable (inf) survives as null
    assert loaded.global_thresholds["SQL"] == np.inf
    assert set(path.read_text().split('"grades"')[1][:200].split('"')) >= {"A", "B", "C", "D"}
    prob = np.linspace(0, 1, 50)
    assert (loaded.stage_of(prob) == thresholds.stage_of(prob)).all()
