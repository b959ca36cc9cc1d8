"""Calibrator and thresholds: calibrated on the slice, policies honoured, stages ordered, one JSON artifact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.artifacts import load_thresholds, save_thresholds
from pipelines.calibrate import (
    UnreachablePolicyError,
    best_precision,
    centred_knots,
    fit_calibrator,
    fit_thresholds,
    list_sizes,
    precision_threshold,
    previous_values,
    volume_threshold,
)
from pipelines.calibrated import Calibrator, Thresholds
from pipelines.config import CalibrateParams, StagePolicy
from pipelines.errors import BadInputError
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
    assert ky[:3].tolist() == [0.1, 0.1, 0.5]
    assert 0.5 < ky[3] < 0.5001  # no fitted rows given: a negligible rise keeps the top strictly ordered


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
    assert volume_threshold(prob, 6) == 0.4
    assert volume_threshold(prob, 100) == np.inf  # more than there are: cannot be met
    # precision of the top 1..6: 1, 1, .67, .75, .6, .5 -> lowest threshold with >= 0.7 is 0.6 (4 picked)
    assert precision_threshold(prob, y, 0.7) == 0.6
    assert precision_threshold(prob, y, 0.99) == 0.8
    assert precision_threshold(prob, np.zeros(6), 0.5) == np.inf


def _params(volume: str = "standing", **thresholds: dict[str, object]) -> CalibrateParams:
    default = {
        "MQL": {"policy": "match_rules"},
        "SAL": {"policy": "capacity", "leads_per_week": 10},
        "SQL": {"policy": "precision", "min_precision": 0.5},
    }
    return CalibrateParams.model_validate(
        {
            "method": "isotonic",
            "thresholds": {**default, **thresholds},
            "volume": volume,
            "precision_min_rows": 1,
            "segment_column": None,
            "segment_k": 50,
            "bootstrap": 20,
            "ci_level": 0.9,
        }
    )


@pytest.fixture
def slice_rows() -> dict[str, object]:
    """Ten weekly snapshots of 200 leads with calibrated-looking probabilities and 30 rule MQLs per week."""
    rng = np.random.default_rng(4)
    n_weeks, n_leads = 10, 200
    prob = rng.beta(1, 8, size=n_weeks * n_leads)
    return {
        "prob": prob,
        "y": (rng.random(len(prob)) < prob).astype(int),
        "lead_id": np.tile(np.arange(n_leads), n_weeks),
        "snapshot_at": pd.Series(np.repeat(pd.date_range("2026-01-05", periods=n_weeks, freq="7D", tz="UTC"), n_leads)),
        "rule_mql": np.tile(np.arange(n_leads) < 30, n_weeks),
    }


def _fit(rows: dict[str, object], params: CalibrateParams, segments: pd.Series | None = None) -> Thresholds:
    return fit_thresholds(
        rows["prob"],
        rows["y"],
        rows["lead_id"],
        rows["snapshot_at"],
        rows["rule_mql"],  # type: ignore[arg-type]
        segments,
        params,
        "SQL",
        30,
        7,
        1.0,
        0,
    )


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
    thresholds = _fit(slice_rows, _params())
    path = tmp_path / "thresholds.json"

    save_thresholds(thresholds, path)
    loaded = load_thresholds(path)

    assert loaded.global_thresholds == thresholds.global_thresholds
    assert set(path.read_text().split('"grades"')[1][:200].split('"')) >= {"A", "B", "C", "D"}
    prob = np.linspace(0, 1, 50)
    assert (loaded.stage_of(prob) == thresholds.stage_of(prob)).all()
    older = {**json.loads(path.read_text()), "thresholds": {"MQL": 0.1, "SAL": 0.2, "SQL": None}}
    assert Thresholds.from_dict(older).global_thresholds["SQL"] == np.inf  # files of older versions still load


def test_a_slice_where_nothing_converts_cannot_meet_a_precision(slice_rows: dict[str, object]) -> None:
    rows = {**slice_rows, "y": np.zeros(len(slice_rows["prob"]), dtype=int)}

    with pytest.raises(UnreachablePolicyError, match=r"SQL: min_precision 0\.5 cannot be met"):
        _fit(rows, _params())


# ----------------------------------------------------------------------------------------------------------------
# What a stage's team receives: new hand-offs, reachable policies, a ranked top
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture
def sticky_rows() -> dict[str, object]:
    """Twelve weekly snapshots of 400 leads whose probability persists week to week (a standing list forms), 60
    leads join each week, and the rule flags 40 persistent leads plus a few new ones each week."""
    rng = np.random.default_rng(7)
    lead, week = np.meshgrid(np.arange(400), np.arange(12), indexing="ij")
    lead, week = lead.ravel(), week.ravel()
    base = rng.beta(1, 8, size=400)[lead]
    prob = np.clip(base * np.exp(rng.normal(0, 0.15, size=len(lead))), 0, 1)
    keep = week >= (lead % 7)  # leads join over the first weeks: their first row has no previous one
    lead, week, prob = lead[keep], week[keep], prob[keep]
    dates = pd.date_range("2026-01-05", periods=12, freq="7D", tz="UTC")
    return {
        "prob": prob,
        "y": (rng.random(len(prob)) < prob).astype(int),
        "lead_id": lead,
        "snapshot_at": pd.Series(dates[week]),
        "rule_mql": (lead < 40) | (rng.random(len(prob)) < 0.02),
    }


def test_previous_values_come_from_the_same_lead_one_cadence_earlier() -> None:
    at = pd.Series(pd.to_datetime(["2026-01-05", "2026-01-12", "2026-01-26", "2026-01-12", "2026-01-05"], utc=True))
    lead = np.array([1, 1, 1, 2, 3])
    values = np.array([0.1, 0.2, 0.3, 0.4, 0.5])

    prev = previous_values(lead, at, values, 7)

    # lead 1: first row none, second row its first, third row 14 days after the second (a gap: none);
    # lead 2's row has no earlier one, and lead 3's row at 01-05 is not lead 2's previous row
    np.testing.assert_array_equal(prev, [np.nan, 0.1, np.nan, np.nan, np.nan])


def test_new_volume_counts_only_leads_that_crossed_the_threshold() -> None:
    prob = np.array([0.9, 0.8, 0.7, 0.6])
    prev = np.array([0.95, np.nan, 0.1, 0.65])  # row 0 was already above every threshold, row 1 is a new lead

    candidates, count = list_sizes(prob, prev_prob=prev)

    # threshold 0.9: row 0 only, already on the list -> 0 new; 0.8: +row 1 (new lead) -> 1; 0.7: +row 2 -> 2;
    # 0.6: row 3 now counts but so was its previous row (0.65 >= 0.6) -> still 2
    assert candidates.tolist() == [0.9, 0.8, 0.7, 0.6]
    assert count.tolist() == [0, 1, 2, 2]
    assert volume_threshold(prob, 2, prev_prob=prev) == 0.7
    assert volume_threshold(prob, 3, prev_prob=prev) == np.inf  # no threshold gives 3 new hand-offs
    # weights are summed, not counted: weight 2 on row 1 reaches 2 new hand-offs at 0.8 already
    assert volume_threshold(prob, 2, weight=np.array([1.0, 2.0, 1.0, 1.0]), prev_prob=prev) == 0.8


def test_weighted_volume_equals_repeating_the_rows() -> None:
    rng = np.random.default_rng(0)
    prob = rng.random(200)
    weight = rng.integers(1, 4, size=200).astype(float)

    assert volume_threshold(prob, 150, weight=weight) == volume_threshold(np.repeat(prob, weight.astype(int)), 150)


def test_capacity_counts_new_hand_offs_by_default_or_the_standing_list(sticky_rows: dict[str, object]) -> None:
    sal = {"policy": "capacity", "leads_per_week": 10}
    new = _fit(sticky_rows, _params("new", MQL=sal, SAL=sal, SQL=sal)).report["calibration_slice"]["SAL"]
    standing = _fit(sticky_rows, _params("standing", MQL=sal, SAL=sal, SQL=sal)).report["calibration_slice"]["SAL"]

    assert new["new_per_week"] == pytest.approx(10, abs=0.5)
    assert new["delivered_per_week"] == new["new_per_week"] and new["target_per_week"] == 10
    assert new["leads_per_week"] > 20  # the standing list keeps the hand-offs of earlier weeks
    assert standing["leads_per_week"] == pytest.approx(10, abs=0.5)
    assert standing["delivered_per_week"] == standing["leads_per_week"]
    assert standing["new_per_week"] < 10
    assert new["threshold"] < standing["threshold"]


def test_match_rules_under_new_matches_the_rules_new_mqls(sticky_rows: dict[str, object]) -> None:
    rows = sticky_rows
    stats = _fit(rows, _params("new")).report["calibration_slice"]["MQL"]
    prev_rule = previous_values(rows["lead_id"], rows["snapshot_at"], rows["rule_mql"], 7)  # type: ignore[arg-type]
    new_rule = np.asarray(rows["rule_mql"]) & ~(prev_rule >= 0.5)

    assert stats["target_per_week"] == pytest.approx(new_rule.sum() / 12)
    assert stats["new_per_week"] == pytest.approx(stats["target_per_week"], abs=0.5)
    assert stats["target_per_week"] < np.asarray(rows["rule_mql"]).sum() / 12 / 2  # most rule MQLs are standing


def test_context_rows_give_the_first_weeks_previous_state_without_being_counted(sticky_rows: dict[str, object]) -> None:
    rows = sticky_rows
    first = pd.Series(rows["snapshot_at"]) == pd.Series(rows["snapshot_at"]).min()
    cap = {"policy": "capacity", "leads_per_week": 10}
    params = _params("new", MQL=cap, SAL=cap, SQL=cap)
    with_context = fit_thresholds(
        rows["prob"],
        rows["y"],
        rows["lead_id"],
        rows["snapshot_at"],  # type: ignore[arg-type]
        rows["rule_mql"],
        None,
        params,
        "SQL",
        30,
        7,
        1.0,
        0,  # type: ignore[arg-type]
        counted=~first.to_numpy(),
    )
    stats = with_context.report["calibration_slice"]["SAL"]

    weeks = 11  # the first week only says who was on the list before the second
    assert stats["new_per_week"] == pytest.approx(10, abs=0.5)
    assert stats["leads_per_week"] * weeks == pytest.approx(
        (np.asarray(rows["prob"])[~first.to_numpy()] >= stats["threshold"]).sum()
    )


def test_an_unreachable_precision_is_an_error_naming_stage_policy_and_the_reachable_range(
    slice_rows: dict[str, object],
) -> None:
    params = _params(SQL={"policy": "precision", "min_precision": 0.9}).model_copy(update={"precision_min_rows": 50})

    with pytest.raises(UnreachablePolicyError) as caught:
        _fit(slice_rows, params)

    message = str(caught.value)
    assert isinstance(caught.value, BadInputError)  # exit code 2
    assert message.startswith("SQL: min_precision 0.9 cannot be met")
    assert "at least 50 lead-weeks" in message and "policy capacity" in message
    reachable = float(re.search(r"choose min_precision <= ([0-9.]+)", message)[1])  # type: ignore[index]
    assert 0 < reachable < 0.9
    ok = _fit(
        slice_rows,
        params.model_copy(
            update={
                "thresholds": params.thresholds.model_copy(
                    update={"SQL": StagePolicy(policy="precision", min_precision=reachable)}
                )
            }
        ),
    )
    assert np.isfinite(ok.global_thresholds["SQL"]) and ok.report["calibration_slice"]["SQL"]["precision"] >= reachable


def test_the_precision_of_a_handful_of_top_rows_does_not_count_as_reachable() -> None:
    prob = np.linspace(0.01, 0.5, 1000)
    y = np.zeros(1000)
    y[-3:] = 1  # the top 3 rows convert: precision 1 for a list of 3
    y[::10] = 1

    assert precision_threshold(prob, y, 0.9) == prob[-3]
    assert precision_threshold(prob, y, 0.9, min_rows=200) == np.inf
    assert best_precision(prob, y, min_rows=200) < 0.2


def test_an_unreachable_capacity_is_an_error_with_the_range(sticky_rows: dict[str, object]) -> None:
    cap = {"policy": "capacity", "leads_per_week": 5000}

    with pytest.raises(
        UnreachablePolicyError,
        match=r"^MQL: capacity 5000 new hand-offs per week cannot be met.*"
        r"at most [0-9.]+ new hand-offs per week.*volume standing",
    ):
        _fit(sticky_rows, _params("new", MQL=cap))


def test_thresholds_are_never_stored_as_null(tmp_path: Path, slice_rows: dict[str, object]) -> None:
    thresholds = _fit(slice_rows, _params(SQL={"policy": "precision", "min_precision": 0.2}))
    path = tmp_path / "thresholds.json"
    save_thresholds(thresholds, path)

    stored = json.loads(path.read_text())
    assert all(isinstance(stored["thresholds"][s], float) for s in ("MQL", "SAL", "SQL"))
    assert stored["volume"] == "standing" and load_thresholds(path).report["volume"] == "standing"


def _flat_top(calibrator: Calibrator) -> Calibrator:
    """The calibrator as it was before the top rise: flat beyond the last plateau midpoint."""
    knots_y = (*calibrator.knots_y[:-1], calibrator.knots_y[-2])
    return Calibrator("isotonic", calibrator.knots_x, knots_y)


def test_the_highest_raw_scores_keep_their_order_and_calibration_holds(
    overconfident: tuple[np.ndarray, np.ndarray],
) -> None:
    raw, y = overconfident
    calibrator = fit_calibrator(raw, y, "isotonic")
    flat = _flat_top(calibrator)
    top = raw >= calibrator.knots_x[-2]  # the best leads: past the top plateau's midpoint
    assert top.sum() >= 20

    assert np.all(np.diff(calibrator.knots_y[-2:]) > 0)
    assert len(np.unique(calibrator.apply(raw[top]))) == len(np.unique(raw[top]))  # no ties
    assert len(np.unique(flat.apply(raw[top]))) == 1  # the old curve tied them all
    assert roc_auc(y[top], calibrator.apply(raw[top])) == pytest.approx(roc_auc(y[top], raw[top]), abs=1e-12)
    # calibration does not get worse: ECE on fresh rows of the same population, and the top rows' mean
    rng = np.random.default_rng(12)
    p = rng.beta(1, 30, size=200_000)
    fresh_raw, fresh_y = np.sqrt(p), (rng.random(len(p)) < p).astype(int)
    new_ece = expected_calibration_error(fresh_y, calibrator.apply(fresh_raw), 10, "quantile")
    assert new_ece <= expected_calibration_error(fresh_y, flat.apply(fresh_raw), 10, "quantile") + 1e-4
    fresh_top = fresh_raw >= calibrator.knots_x[-3]
    gap_new = abs(calibrator.apply(fresh_raw[fresh_top]).mean() - fresh_y[fresh_top].mean())
    assert gap_new <= abs(flat.apply(fresh_raw[fresh_top]).mean() - fresh_y[fresh_top].mean()) + 0.01


def test_the_top_rise_keeps_the_top_plateau_calibrated() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y_iso = np.array([0.1, 0.1, 0.5, 0.5, 0.5])  # plateaus [0, 1] and [2, 4]: midpoints 0.5 and 3
    raw = np.array([2.0, 2.5, 3.5, 4.0])  # the top plateau's rows

    kx, ky = centred_knots(x, y_iso, raw)
    calibrator = Calibrator("isotonic", tuple(kx), tuple(ky))

    assert calibrator.apply(raw).mean() == pytest.approx(0.5)  # its observed rate
    assert np.all(np.diff(calibrator.apply(raw)) > 0)


def test_the_top_rise_is_at_most_half_the_last_step_when_the_top_score_is_an_outlier() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0, 100.0])
    y_iso = np.array([0.1, 0.1, 0.5, 0.5, 0.5])  # the top plateau [2, 100] has one far outlier
    raw = np.array([2.0, 2.0, 2.0, 51.5, 100.0])

    _, ky = centred_knots(x, y_iso, raw)

    assert ky[-2] == 0.5 and 0.5 < ky[-1] <= 0.5 + (0.5 - 0.1) / 2
