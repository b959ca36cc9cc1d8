"""The out-of-time split: slices in time order, gaps longer than the horizon, random only without time."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from model_frames import train_params, weekly_frame

from pipelines.modeling import ModelInputError, SplitPlan, assign_slices, plan_split

HORIZON = 30
ORDER = ("fit", "calibration", "test")


def _plan(frame: pd.DataFrame, horizon: int = HORIZON, **overrides: object) -> SplitPlan:
    return plan_split(frame["snapshot_at"], frame["label"], frame["lead_id"], train_params(**overrides), horizon, 7)


def test_slices_follow_each_other_with_gaps_longer_than_the_horizon() -> None:
    frame = weekly_frame()
    plan = _plan(frame)
    slices = assign_slices(frame, plan)

    assert plan.kind == "time"
    for earlier, later in itertools.pairwise(ORDER):
        last = frame.loc[slices == earlier, "snapshot_at"].max()
        first = frame.loc[slices == later, "snapshot_at"].min()
        # the label window (t, t + horizon] of the earlier slice's last row ends before the later slice starts
        assert last + pd.Timedelta(days=HORIZON) < first
    assert frame.loc[slices == "test", "snapshot_at"].max() == frame["snapshot_at"].max()


def test_slice_shares_and_counts_match_the_params() -> None:
    frame = weekly_frame()
    plan = _plan(frame)
    slices = assign_slices(frame, plan)

    assert plan.rows["test"] == pytest.approx(0.2 * len(frame), rel=0.1)
    assert plan.rows["calibration"] == pytest.approx(0.15 * len(frame), rel=0.15)
    for name in ORDER:
        assert plan.rows[name] == int((slices == name).sum())
        assert plan.positives[name] == int(frame.loc[slices == name, "label"].sum())
    assert sum(plan.rows[k] for k in (*ORDER, "gap")) == len(frame)


def test_two_gaps_only_and_each_gap_counts_the_positives_it_drops() -> None:
    frame = weekly_frame()
    plan = _plan(frame)
    slices = assign_slices(frame, plan)
    at = frame["snapshot_at"]
    gap = slices == "gap"
    before_cal = gap & (at < pd.Timestamp(plan.boundaries["calibration"][0])).to_numpy()
    before_test = gap & (at > pd.Timestamp(plan.boundaries["calibration"][1])).to_numpy()

    assert set(plan.boundaries) == set(ORDER)  # no early-stopping slice: no third gap
    assert (before_cal | before_test).sum() == gap.sum()
    assert plan.positives["gap_before_calibration"] == int(frame.loc[before_cal, "label"].sum()) > 0
    assert plan.positives["gap_before_test"] == int(frame.loc[before_test, "label"].sum()) > 0
    assert plan.positives["gap"] == plan.positives["gap_before_calibration"] + plan.positives["gap_before_test"]


def test_plan_round_trips_through_json() -> None:
    frame = weekly_frame()
    plan = _plan(frame)

    again = SplitPlan.from_dict(plan.to_dict())

    assert again == plan
    assert (assign_slices(frame, again) == assign_slices(frame, plan)).all()


def test_a_longer_horizon_widens_the_gaps() -> None:
    frame = weekly_frame()

    short, long = _plan(frame, horizon=7), _plan(frame, horizon=60)

    assert long.rows["gap"] > short.rows["gap"]


def test_single_snapshot_falls_back_to_a_stratified_random_split_by_lead() -> None:
    frame = weekly_frame(n_leads=2000, n_weeks=1)
    plan = _plan(frame)
    slices = assign_slices(frame, plan)

    assert plan.kind == "random"
    assert plan.rows["gap"] == 0 and (slices != "gap").all()
    rates = [frame.loc[slices == name, "label"].mean() for name in ORDER]
    assert max(rates) - min(rates) < 0.02  # stratified
    leads = [set(frame.loc[slices == name, "lead_id"]) for name in ORDER]
    assert sum(len(s) for s in leads) == len(set().union(*leads))  # no lead in two slices


def test_too_short_a_history_is_refused_with_a_reason() -> None:
    frame = weekly_frame(n_weeks=8)

    with pytest.raises(ModelInputError, match=r"no room|too short"):
        _plan(frame)


def test_unsorted_rows_get_the_same_slices() -> None:
    frame = weekly_frame()
    shuffled = frame.sample(frac=1.0, random_state=3)

    plan = _plan(shuffled)

    assert plan == _plan(frame)
    np.testing.assert_array_equal(assign_slices(shuffled, plan), assign_slices(frame, plan)[shuffled.index])


def test_production_slices_refit_on_every_labelled_week_and_recalibrate_on_the_latest() -> None:
    from pipelines.modeling import production_slices

    frame = weekly_frame()
    plan = _plan(frame)
    slices = production_slices(frame, plan)
    fit_last = frame.loc[slices == "fit", "snapshot_at"].max()
    cal = frame.loc[slices == "calibration", "snapshot_at"]

    assert frame.loc[slices == "fit", "snapshot_at"].min() == frame["snapshot_at"].min()
    assert cal.max() == frame["snapshot_at"].max()  # the latest complete weeks
    assert fit_last + pd.Timedelta(days=HORIZON) < cal.min()  # gapped: no label window reaches the recalibration
    # the production fit reaches past the evaluation train period, into the evaluation test weeks
    assert fit_last > pd.Timestamp(plan.boundaries["calibration"][1])
    assert (slices == "calibration").sum() == pytest.approx(0.15 * len(frame), rel=0.15)
    assert SplitPlan.from_dict(plan.to_dict()) == plan


def test_weighted_split_shares_count_open_lead_weeks() -> None:
    frame = weekly_frame()
    at = pd.to_datetime(frame["snapshot_at"], utc=True)
    weight = np.where(at >= at.quantile(0.7), 4.0, 1.0)  # the latest weeks weigh more
    weighted = plan_split(frame["snapshot_at"], frame["label"], frame["lead_id"], train_params(), HORIZON, 7, weight)
    slices = assign_slices(frame, weighted)

    assert weight[slices == "test"].sum() == pytest.approx(0.2 * weight.sum(), rel=0.1)
    assert (slices == "test").sum() < 0.2 * len(frame)  # fewer rows, as each weighs more
