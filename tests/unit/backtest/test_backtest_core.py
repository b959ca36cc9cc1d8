"""The backtest's pure core: which runs are due, the outcome window, the figures of a run and the verdict."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.backtest import core
from pipelines.config import BacktestParams, load_params
from pipelines.features.snapshots import outcomes_as_of

PARAMS = load_params().backtest
FEATURES = load_params().features
AS_OF = pd.Timestamp("2026-09-14", tz="UTC")


def test_a_run_is_due_only_once_its_whole_horizon_lies_inside_the_data() -> None:
    runs = pd.DataFrame(
        {"run_id": ["a", "b", "c"], "as_of": pd.to_datetime(["2026-09-01", "2026-10-21", "2026-10-22"], utc=True)}
    )
    due = core.due_runs(runs, pd.Timestamp("2026-11-20", tz="UTC"), 30)
    assert list(due.due["run_id"]) == ["a", "b"]  # 10-21 + 30 days = 11-20: exactly observed
    assert list(due.waiting["run_id"]) == ["c"]


def test_the_outcome_window_is_the_training_labels_half_open_horizon() -> None:
    day = pd.Timedelta(days=1)
    stages = pd.DataFrame(
        {
            "stage_history_id": [1, 2, 3, 4, 5, 6],
            "lead_id": [1, 2, 3, 4, 5, 5],
            "stage": ["SQL", "SQL", "SQL", "Won", "MQL", "SAL"],
            "entered_at": [
                AS_OF,
                AS_OF + 30 * day,
                AS_OF + 30 * day + pd.Timedelta(seconds=1),
                AS_OF + day,
                AS_OF - day,
                AS_OF + 2 * day,
            ],
        }
    )
    out = outcomes_as_of(stages, np.array([1, 2, 3, 4, 5, 6]), AS_OF, FEATURES).set_index("lead_id")
    # at as_of itself: already known then (not an outcome); at as_of + 30 d: inside; a second later: outside
    assert out["label"].to_dict() == {1: 0, 2: 1, 3: 0, 4: 1, 5: 0, 6: 0}
    assert out.loc[5, "reached_MQL"] == 1 and out.loc[5, "reached_SAL"] == 1 and out.loc[5, "reached_SQL"] == 0


def frame(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.4, n)
    y = (rng.random(n) < p).astype(int)
    stage = np.select([p > 0.35, p > 0.3, p > 0.2], ["SQL", "SAL", "MQL"], "none")
    scores = pd.DataFrame(
        {
            "lead_id": np.arange(n, 0, -1),  # reverse order: the core sorts by lead_id
            "probability": p,
            "stage": stage,
            "rule_score": rng.integers(0, 60, n).astype(float),
            "rule_mql": rng.random(n) < 0.3,
        }
    )
    outcomes = pd.DataFrame(
        {"lead_id": scores["lead_id"], "label": y, "reached_MQL": y, "reached_SAL": y, "reached_SQL": y}
    )
    accounts = pd.DataFrame({"lead_id": scores["lead_id"], "account_id": scores["lead_id"] // 4})
    rows, missing = core.join_outcomes(scores, outcomes.iloc[: n - 5], accounts)
    assert missing == 5
    return rows


RUN = {
    "run_id": "r1",
    "as_of": AS_OF,
    "model_name": "m",
    "model_version": "3",
    "production": True,
    "target_stage": "SQL",
    "horizon_days": 30,
    "history_end": AS_OF + pd.Timedelta(days=60),
}


def test_the_figures_of_a_run_match_a_direct_computation() -> None:
    rows = frame()
    got = core.backtest_run(rows, RUN, PARAMS.model_copy(update={"bootstrap": 50}), seed=1, missing=5)
    assert set(got) == set(core.FIELDS)
    assert got["leads"] == len(rows) and got["leads_missing"] == 5 and got["accounts"] == rows["cluster"].nunique()
    assert got["roc_auc"] == pytest.approx(roc_auc_score(rows["label"], rows["probability"]))
    assert got["obs_exp"] == pytest.approx(rows["label"].sum() / rows["probability"].sum())
    assert got["roc_auc_ci_low"] < got["roc_auc"] < got["roc_auc_ci_high"]
    mql = rows.loc[rows["stage"] != "none"]
    assert got["mql_leads"] == len(mql) and got["mql_precision"] == pytest.approx(mql["label"].mean())
    top_rule = rows.sort_values(["rule_score", "lead_id"], ascending=[False, True]).head(len(mql))
    assert got["mql_rule_precision"] == pytest.approx(top_rule["label"].mean())
    sql = rows.loc[rows["stage"] == "SQL"]
    assert got["sql_obs_exp"] == pytest.approx(sql["label"].sum() / sql["probability"].sum())
    k = int(rows["rule_mql"].sum())
    top_model = rows.sort_values(["probability", "lead_id"], ascending=[False, True]).head(k)
    assert got["rule_mql_leads"] == k
    assert got["model_precision_at_rule_volume"] == pytest.approx(top_model["label"].mean())
    assert got["outcomes_until"] == AS_OF + pd.Timedelta(days=30)


def test_the_verdict_recalibrates_when_the_ranking_holds_and_retrains_when_it_broke() -> None:
    band = BacktestParams(
        obs_exp_low=0.8, obs_exp_high=1.25, min_roc_auc=0.7, bootstrap=0, ci_level=0.95, table="score_backtests"
    )
    assert core.verdict(1.0, 0.6, band)[:2] == ("ok", None)
    assert core.verdict(1.4, 0.75, band)[:2] == ("degraded", "recalibrate")
    assert core.verdict(0.5, 0.65, band)[:2] == ("degraded", "retrain")
    assert core.verdict(math.nan, math.nan, band)[:2] == ("degraded", "retrain")
    assert "outside [0.8, 1.25]" in core.verdict(1.4, 0.75, band)[2]


def test_the_trend_section_shows_the_newest_production_runs_first() -> None:
    rows = frame()
    older = core.backtest_run(
        rows, {**RUN, "run_id": "old", "as_of": AS_OF}, PARAMS.model_copy(update={"bootstrap": 0}), 1
    )
    newer = core.backtest_run(
        rows,
        {**RUN, "run_id": "new", "as_of": AS_OF + pd.Timedelta(days=7)},
        PARAMS.model_copy(update={"bootstrap": 0}),
        1,
    )
    challenger = core.backtest_run(
        rows,
        {**RUN, "run_id": "ch", "as_of": AS_OF + pd.Timedelta(days=14), "production": False},
        PARAMS.model_copy(update={"bootstrap": 0}),
        1,
    )
    section = core.backtest_trend(core.backtest_frame([older, challenger, newer]))
    assert [r[0] for r in section.rows] == ["2026-09-21", "2026-09-14"]
    assert section.headline.startswith("The run of 2026-09-21")
    assert len(section.columns) == len(section.rows[0])
    assert core.backtest_trend(core.backtest_frame([])).rows == ()


def test_a_run_without_any_lead_left_in_the_crm_is_bad_input() -> None:
    with pytest.raises(core.BacktestInputError, match="none of its scored leads"):
        core.backtest_run(frame().iloc[:0], RUN, PARAMS, 1)
