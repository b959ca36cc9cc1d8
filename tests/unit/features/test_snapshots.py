"""The snapshot grid and its labels: who is open when, what counts as converting, and censoring at history's end."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from crm_builder import at, build_crm, lead, params

from pipelines.extract import history_end
from pipelines.features.snapshots import STAGE_OUTCOMES, open_leads_at, snapshot_grid


def grid_days(grid: pd.DataFrame, lead_id: int = 1) -> dict[float, int]:
    """{snapshot day after T0: label} of one lead."""
    rows = grid[grid["lead_id"] == lead_id]
    days = (rows["snapshot_at"] - at(0)) / pd.Timedelta(days=1)
    return dict(zip(days.tolist(), rows["label"].tolist(), strict=True))


def test_grid_is_weekly_utc_midnight_mondays_from_creation_until_the_horizon_fits() -> None:
    tables = build_crm([lead(1, created=0.5)])

    grid = snapshot_grid(tables, params(), end=at(100))

    assert list(grid_days(grid)) == [7, 14, 21, 28, 35, 42, 49, 56, 63, 70]  # 70 + 30 <= 100 < 77 + 30
    assert (grid["snapshot_at"].dt.day_of_week == 0).all()
    assert (grid["snapshot_at"] == grid["snapshot_at"].dt.normalize()).all()
    assert str(grid["snapshot_at"].dtype) == "datetime64[ns, UTC]"
    assert grid["label"].dtype == "int8" and grid["label"].notna().all()


def test_a_lead_created_exactly_at_a_snapshot_is_in_it() -> None:
    grid = snapshot_grid(build_crm([lead(1, created=7)]), params(), end=at(60))

    assert min(grid_days(grid)) == 7


def test_label_is_reaching_sql_within_the_horizon_and_the_lead_leaves_the_grid_once_it_has() -> None:
    tables = build_crm([lead(1)], stages=[(1, 5, "MQL"), (1, 20.5, "SQL"), (1, 40, "Opportunity")])

    days = grid_days(snapshot_grid(tables, params(), end=at(200)))

    assert days == {0: 1, 7: 1, 14: 1}  # open until the SQL on day 20.5; 20.5 lies in (t, t + 30] for all three


def test_an_event_stamped_exactly_at_t_is_known_at_t_and_one_at_t_plus_horizon_counts() -> None:
    on_snapshot = build_crm([lead(1)], stages=[(1, 14, "SQL")])
    at_horizon_end = build_crm([lead(1)], stages=[(1, 37, "SQL")])

    assert grid_days(snapshot_grid(on_snapshot, params(), end=at(200))) == {0: 1, 7: 1}
    assert grid_days(snapshot_grid(at_horizon_end, params(), end=at(200))) == {0: 0, 7: 1, 14: 1, 21: 1, 28: 1, 35: 1}


def test_snapshots_whose_horizon_runs_past_history_end_are_dropped_not_labelled_negative() -> None:
    tables = build_crm([lead(1)], stages=[(1, 60, "SQL")])

    days = grid_days(snapshot_grid(tables, params(), end=at(44)))

    assert days == {0: 0, 7: 0, 14: 0}  # 14 + 30 = 44 is observed; 21 would need history up to day 51


def test_default_history_end_is_the_latest_event_and_ignores_planned_campaign_dates() -> None:
    campaigns = [
        {
            "campaign_id": 1,
            "name": "Next year",
            "channel": "email",
            "region": "NA",
            "start_date": at(500),
            "end_date": at(600),
        }
    ]
    tables = build_crm([lead(1)], activities=[(1, 45.25, "web_visit")], campaigns=campaigns)

    assert history_end(tables) == at(45.25)
    assert list(grid_days(snapshot_grid(tables, params()))) == [0, 7, 14]


def test_disqualified_leads_are_closed_until_they_re_enter_the_funnel() -> None:
    tables = build_crm([lead(1)], stages=[(1, 3, "MQL"), (1, 10, "Disqualified"), (1, 30, "MQL")])

    assert list(grid_days(snapshot_grid(tables, params(), end=at(80)))) == [0, 7, 35, 42, 49]


def test_nurture_and_mql_keep_a_lead_open_won_and_lost_close_it() -> None:
    tables = build_crm(
        [lead(1), lead(2), lead(3)], stages=[(1, 3, "MQL"), (1, 9, "Nurture"), (2, 10, "Lost"), (3, 10, "Won")]
    )

    grid = snapshot_grid(tables, params(), end=at(80))

    assert list(grid_days(grid, 1)) == [0, 7, 14, 21, 28, 35, 42, 49]
    assert grid_days(grid, 2) == {0: 1, 7: 1}  # Lost is at or beyond SQL: it counts as reaching the target
    assert grid_days(grid, 3) == {0: 1, 7: 1}


def test_target_sal_closes_at_sal_and_counts_a_lead_that_skips_straight_to_sql() -> None:
    tables = build_crm([lead(1), lead(2)], stages=[(1, 10, "SAL"), (1, 30, "SQL"), (2, 12, "SQL")])

    grid = snapshot_grid(tables, params(target_stage="SAL"), end=at(80))

    assert grid_days(grid, 1) == {0: 1, 7: 1}
    assert grid_days(grid, 2) == {0: 1, 7: 1}


def test_target_won_keeps_sql_leads_open_and_lost_closes_them() -> None:
    tables = build_crm(
        [lead(1), lead(2)],
        stages=[(1, 5, "SQL"), (1, 20, "Opportunity"), (1, 40, "Won"), (2, 5, "SQL"), (2, 16, "Lost")],
    )

    grid = snapshot_grid(tables, params(target_stage="Won"), end=at(80))

    assert grid_days(grid, 1) == {0: 0, 7: 0, 14: 1, 21: 1, 28: 1, 35: 1}
    assert grid_days(grid, 2) == {0: 0, 7: 0, 14: 0}


def test_max_lead_age_limits_training_rows_inclusively() -> None:
    tables = build_crm([lead(1)])

    assert list(grid_days(snapshot_grid(tables, params(max_lead_age_days=28), end=at(200)))) == [0, 7, 14, 21, 28]


def test_every_lead_is_on_the_grid_only_while_open() -> None:
    tables = build_crm([lead(1), lead(2, created=20), lead(3, created=300)], stages=[(2, 30, "Disqualified")])

    grid = snapshot_grid(tables, params(), end=at(120))

    assert set(grid["lead_id"]) == {1, 2}
    assert list(grid_days(grid, 2)) == [21, 28]
    assert grid.duplicated(["lead_id", "snapshot_at"]).sum() == 0


@pytest.mark.parametrize("as_of_day", [0, 10.5, 400])
def test_open_leads_at_scores_every_open_lead_whatever_its_age(as_of_day: float) -> None:
    tables = build_crm([lead(1), lead(2, created=5), lead(3, created=1)], stages=[(3, 2, "SQL")])

    rows = open_leads_at(tables, at(as_of_day), params(max_lead_age_days=30))

    expected = {0: [1], 10.5: [1, 2], 400: [1, 2]}[as_of_day]
    assert rows["lead_id"].tolist() == expected
    assert (rows["snapshot_at"] == at(as_of_day)).all()


def test_the_fast_grid_agrees_with_the_general_point_in_time_definition() -> None:
    """Per-lead shortcuts in snapshot_grid == open_mask and labels evaluated on every candidate date."""
    import numpy as np

    from pipelines.crm import vocab
    from pipelines.features import timeline as tl
    from pipelines.features.snapshots import StageIndex, labels, open_mask

    rng = np.random.default_rng(3)
    leads = [lead(i, created=float(rng.uniform(0, 200))) for i in range(1, 121)]
    stages = [
        (int(rng.integers(1, 121)), float(rng.uniform(0, 400)), str(rng.choice(vocab.STAGES))) for _ in range(260)
    ]
    tables = build_crm(leads, stages=stages)
    for target in ("SAL", "SQL", "Won"):
        p = params(target_stage=target, max_lead_age_days=120)
        grid = snapshot_grid(tables, p, end=at(330))

        lead_ids = tables["leads"]["lead_id"].to_numpy()
        index = StageIndex.build(tables["stage_history"], lead_ids)
        dates = np.arange(0, 330, 7)
        owner = np.repeat(np.arange(len(lead_ids)), len(dates))
        seconds = tl.query_seconds(pd.Series([at(d) for d in dates] * len(lead_ids)))
        created = tl.known_seconds(tables["leads"]["created_at"])
        age_ok = seconds - tl.query_seconds(tables["leads"]["created_at"])[owner] <= 120 * 86_400
        uncensored = seconds + 30 * 86_400 <= tl.query_seconds(pd.Series([at(330)]))[0]
        keep = open_mask(index, created, owner, seconds, target) & age_ok & uncensored
        expected = pd.DataFrame(
            {
                "lead_id": lead_ids[owner[keep]],
                "snapshot_at": tl.from_seconds(seconds[keep]),
                "label": labels(index, owner[keep], seconds[keep], target, 30),
            }
        )
        assert (grid.pop("weight") == 1).all()  # old_lead_keep_one_in 1: no sampling
        pd.testing.assert_frame_equal(
            grid[list(expected.columns)].reset_index(drop=True), expected.reset_index(drop=True)
        )
        for column, stages in STAGE_OUTCOMES.items():  # each stage's outcome by the general definition too
            reached = index.count_in(stages, owner[keep], seconds[keep], seconds[keep] + 30 * 86_400) > 0
            assert (grid[column].to_numpy() == reached).all(), column
        assert len(grid) > 500 and 0 < grid["label"].sum() < len(grid)


def test_sample_leads_keeps_every_row_of_a_fixed_subset_of_leads() -> None:
    from datetime import date

    from pipelines.config import load_params
    from pipelines.crm.demo import generate
    from pipelines.features.snapshots import snapshot_grid

    params = load_params(Path(__file__).resolve().parents[3] / "params.yaml")
    tables = generate(
        params.demo_crm.model_copy(
            update={"leads": 1500, "seed": 3, "end_date": date(2026, 11, 20), "history_days": 300}
        ),
        params.features.icp,
    ).tables
    full = snapshot_grid(tables, params.features)
    sampled = snapshot_grid(tables, params.features.model_copy(update={"sample_leads": 300}))
    again = snapshot_grid(tables, params.features.model_copy(update={"sample_leads": 300}))
    assert sampled["lead_id"].nunique() == 300 < full["lead_id"].nunique()
    pd.testing.assert_frame_equal(sampled, again)  # the same leads every run
    # every row of a sampled lead is kept, identical to the full grid's
    expected = full[full["lead_id"].isin(sampled["lead_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(sampled.reset_index(drop=True), expected)
    bigger = snapshot_grid(tables, params.features.model_copy(update={"sample_leads": 10_000}))
    pd.testing.assert_frame_equal(bigger, full)


def test_by_default_every_open_lead_is_on_the_grid_whatever_its_age() -> None:
    tables = build_crm([lead(1), lead(2, created=300)], stages=[(2, 310, "Disqualified")])

    grid = snapshot_grid(tables, params(max_lead_age_days=None), end=at(800))

    assert max(grid_days(grid, 1)) == 7 * ((800 - 30) // 7)  # to the last uncensored Monday, 770 days old
    assert (grid["weight"] == 1).all()


def test_long_open_rows_are_sampled_by_lead_and_weighted_back() -> None:
    """Rows of leads older than old_lead_days: all of them for a fixed hash-sample of leads, weighted 1 / rate."""
    leads = [lead(i, created=float(i % 50)) for i in range(1, 801)]
    tables = build_crm(leads)
    full = snapshot_grid(tables, params(max_lead_age_days=None, old_lead_days=60), end=at(400))
    one_in_4 = params(max_lead_age_days=None, old_lead_days=60, old_lead_keep_one_in=4)
    sampled = snapshot_grid(tables, one_in_4, end=at(400))
    again = snapshot_grid(tables, one_in_4, end=at(400))

    pd.testing.assert_frame_equal(sampled, again)  # the same sample every run
    created = tables["leads"].set_index("lead_id")["created_at"]
    age = (sampled["snapshot_at"] - sampled["lead_id"].map(created)).dt.days
    young, old = sampled[age <= 60], sampled[age > 60]
    full_age = (full["snapshot_at"] - full["lead_id"].map(created)).dt.days
    assert len(young) == int((full_age <= 60).sum()) and (young["weight"] == 1).all()  # young rows: all, weight 1
    assert (old["weight"] == 4).all()
    kept = set(old["lead_id"])
    assert 0.18 < len(kept) / 800 < 0.32
    # a kept lead keeps every one of its old weeks (consecutive weeks stay answerable)
    assert len(old) == int(((full_age > 60) & full["lead_id"].isin(kept)).sum())
    # the weights stand for the whole population of open-lead weeks
    assert sampled["weight"].sum() == pytest.approx(len(full), rel=0.1)


def test_each_stage_outcome_is_entering_it_or_a_later_stage_within_the_horizon() -> None:
    tables = build_crm([lead(1), lead(2)], stages=[(1, 5, "MQL"), (1, 20, "SAL"), (1, 40, "SQL"), (2, 3, "Nurture")])

    grid = snapshot_grid(tables, params(), end=at(200))
    one = grid[grid["lead_id"] == 1]
    one = one.set_index((one["snapshot_at"] - at(0)) / pd.Timedelta(days=1))
    two = grid[grid["lead_id"] == 2]

    outcomes = ["reached_MQL", "reached_SAL", "reached_SQL"]
    assert (grid[outcomes].dtypes == "int8").all()
    assert one.loc[0, outcomes].tolist() == [1, 1, 0]  # MQL (day 5) and SAL (day 20) within (0, 30]; SQL after
    assert one.loc[7, outcomes].tolist() == [1, 1, 0]  # the SAL on day 20 is a later stage than MQL
    assert one.loc[14, outcomes].tolist() == [1, 1, 1]  # the SQL on day 40 counts for every stage
    assert (one["reached_SQL"] == one["label"]).all()  # the target is SQL
    assert (two[outcomes] == 0).all().all()  # Nurture is no stage of the funnel
