"""The plan's pure core: SQLs per lead from the probabilities it used, the target split and the bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.config import load_params
from pipelines.plan import core

LOADED = load_params()
PARAMS = LOADED.plan.model_copy(update={"bootstrap": 30})
FEATURES = LOADED.features
AS_OF = pd.Timestamp("2026-11-16", tz="UTC")


def crm(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Leads of two campaigns over a year, some reaching MQL, SQL and Won; open recent leads get probabilities."""
    rng = np.random.default_rng(seed)
    n = 3000
    age = rng.uniform(0, 365, n)
    leads = pd.DataFrame(
        {
            "lead_id": np.arange(1, n + 1),
            "account_id": rng.integers(0, 800, n).astype(float),
            "created_at": AS_OF - pd.to_timedelta(age, unit="D"),
            "campaign": np.where(rng.random(n) < 0.6, "Webinar", "Trade show"),
            "region": np.where(rng.random(n) < 0.5, "NA", "EMEA"),
        }
    )
    entries = []
    hid = 0
    for lead, created, a in zip(leads["lead_id"], leads["created_at"], age, strict=True):
        path = []
        if rng.random() < 0.4:
            path.append("MQL")
            if rng.random() < 0.4:
                path.append("SQL")
                if rng.random() < 0.3:
                    path.append("Won")
        for i, stage in enumerate(path):
            when = created + pd.Timedelta(days=5 * (i + 1))
            if when <= AS_OF + pd.Timedelta(days=10):
                hid += 1
                entries.append((hid, lead, stage, when))
        _ = a
    stages = pd.DataFrame(entries, columns=["stage_history_id", "lead_id", "stage", "entered_at"])
    reached = set(stages.loc[stages["stage"].isin(["SQL", "Won"]) & (stages["entered_at"] <= AS_OF), "lead_id"])
    open_ids = [i for i in leads["lead_id"] if i not in reached]
    scores = pd.DataFrame({"lead_id": open_ids, "probability": rng.uniform(0.0, 0.3, len(open_ids))})
    return leads, scores, stages


def test_expected_sqls_are_the_sum_of_the_probabilities_it_used() -> None:
    leads, scores, stages = crm()
    outcomes = core.lead_outcomes(leads, scores, stages, AS_OF)
    plan = core.plan_target(outcomes, AS_OF, "run", core.Target("sql", 20, "week"), PARAMS, FEATURES, seed=1)
    recent = leads.loc[leads["created_at"] > AS_OF - pd.Timedelta(days=PARAMS.recent_days)]
    for _, row in plan.table.iterrows():
        mine = leads.loc[leads["campaign"] == row["campaign"], "lead_id"]
        used = scores.loc[scores["lead_id"].isin(mine), "probability"]  # its open leads of every age
        assert row["expected_sql_open"] == pytest.approx(used.sum())
        assert row["open_leads"] == len(used)
        assert row["sql_now"] == pytest.approx(used.sum() * 7 / FEATURES.horizon_days)
        n_recent = int((recent["campaign"] == row["campaign"]).sum())
        assert row["recent_leads"] == n_recent
        assert row["new_leads_now"] == pytest.approx(n_recent * 7 / PARAMS.recent_days)
        assert row["sql_per_lead"] == pytest.approx(row["sql_now"] / row["new_leads_now"])
        assert row["new_leads_needed"] == pytest.approx(row["target_sql"] / row["sql_per_lead"])
        assert row["mqls_needed"] == pytest.approx(row["new_leads_needed"] * row["mql_rate"])
        assert row["new_leads_needed_ci_low"] <= row["new_leads_needed"] <= row["new_leads_needed_ci_high"]
    assert plan.table["target_sql"].sum() == pytest.approx(20)
    assert plan.total["expected_sql_open"] == pytest.approx(scores["probability"].sum())
    # shares follow the SQLs each campaign's open leads are expected to bring
    np.testing.assert_allclose(plan.table["share"], plan.table["sql_now"] / plan.table["sql_now"].sum())


def test_a_mix_sets_the_shares_and_wins_go_through_the_sql_to_won_rate() -> None:
    leads, scores, stages = crm()
    outcomes = core.lead_outcomes(leads, scores, stages, AS_OF)
    names, mix = core.parse_mix(["Webinar=3", "Trade show=1"])
    plan = core.plan_target(
        outcomes, AS_OF, "run", core.Target("wins", 4, "month"), PARAMS, FEATURES, 1, names, (), mix
    )
    by = plan.table.set_index("campaign")
    assert by.loc["Webinar", "share"] == pytest.approx(0.75)
    assert by.loc["Webinar", "target_sql"] == pytest.approx(3 / by.loc["Webinar", "win_rate"])
    assert 0 < by.loc["Webinar", "win_rate"] < 1
    section = core.plan_section(plan)
    assert section.rows[-1][0] == "total" and "wins a month" in section.headline


def test_unknown_campaigns_or_regions_and_bad_targets_are_bad_input() -> None:
    leads, scores, stages = crm()
    outcomes = core.lead_outcomes(leads, scores, stages, AS_OF)
    target = core.Target("sql", 5, "week")
    with pytest.raises(core.PlanInputError, match=r"--campaign \['Nope'\] not found.*'Trade show', 'Webinar'"):
        core.plan_target(outcomes, AS_OF, "r", target, PARAMS, FEATURES, 1, ["Nope"])
    with pytest.raises(core.PlanInputError, match="--region"):
        core.plan_target(outcomes, AS_OF, "r", target, PARAMS, FEATURES, 1, (), ["APAC"])
    with pytest.raises(core.PlanInputError, match="positive"):
        core.Target("sql", 0, "week")
    with pytest.raises(core.PlanInputError, match="--per"):
        core.Target("sql", 3, "day")  # type: ignore[arg-type]
    with pytest.raises(core.PlanInputError, match="every campaign"):
        core.parse_mix(["Webinar=2", "Trade show"])
    old = outcomes.assign(created_sec=outcomes["created_sec"] - 400 * 86_400)
    with pytest.raises(core.PlanInputError, match="no lead of the campaigns"):
        core.plan_target(old, AS_OF, "r", target, PARAMS, FEATURES, 1)
