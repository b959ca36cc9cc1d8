"""The backtests table of the scores store: one row per run, replaced in place, all or nothing, names checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.backtest.core import FIELDS, backtest_frame
from pipelines.config import ScoreTables
from pipelines.crm.db import make_engine
from pipelines.score import store

TABLES = ScoreTables(scores="lead_scores", runs="scoring_runs", latest="lead_scores_latest")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'scores.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


def row(run_id: str, as_of: str, auc: float, production: bool | None = True) -> dict[str, object]:
    values: dict[str, object] = {name: None for name in FIELDS}
    values.update(
        run_id=run_id,
        as_of=pd.Timestamp(as_of, tz="UTC"),
        model_name="lead-scoring",
        model_version="1",
        production=production,
        leads=100,
        roc_auc=auc,
        obs_exp=float("nan"),
        status="ok",
        message="observed / expected 1.00 inside [0.8, 1.25]",
    )
    return values


def test_rows_are_replaced_in_place_and_rows_of_vanished_runs_removed(url: str) -> None:
    engine = make_engine(url, create_dirs=True)
    store.write_backtests(engine, "score_backtests", FIELDS, backtest_frame([row("a", "2026-09-14", 0.7)]))
    replaced = store.write_backtests(
        engine,
        "score_backtests",
        FIELDS,
        backtest_frame([row("a", "2026-09-14", 0.8), row("b", "2026-10-12", 0.75, None)]),
    )
    assert replaced == ["a"]
    got = store.read_backtests(engine, "score_backtests", FIELDS).sort_values("run_id")
    assert list(got["run_id"]) == ["a", "b"] and list(got["roc_auc"]) == [0.8, 0.75]
    assert got["obs_exp"].isna().all()  # NaN is stored as NULL
    assert got["as_of"].iloc[1] == pd.Timestamp("2026-10-12", tz="UTC")
    assert [None if v is None else bool(v) for v in got["production"]] == [True, None]
    store.write_backtests(engine, "score_backtests", FIELDS, backtest_frame([]), drop_run_ids=["a"])
    assert list(store.read_backtests(engine, "score_backtests", FIELDS)["run_id"]) == ["b"]


def test_a_failing_write_changes_nothing(url: str) -> None:
    engine = make_engine(url, create_dirs=True)
    store.write_backtests(engine, "score_backtests", FIELDS, backtest_frame([row("a", "2026-09-14", 0.7)]))
    broken = backtest_frame([row("a", "2026-09-14", 0.9), row("a", "2026-09-14", 0.9)])  # duplicate key
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):  # the driver's own error, not wrapped
        store.write_backtests(engine, "score_backtests", FIELDS, broken)
    got = store.read_backtests(engine, "score_backtests", FIELDS)
    assert list(got["roc_auc"]) == [0.7]


def test_a_missing_table_reads_as_empty_and_names_are_checked(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'scores.db'}", create_dirs=True)
    assert store.read_backtests(engine, "score_backtests", FIELDS).empty
    for bad in ("score backtests; DROP TABLE leads", "leads", "lead_scores", "LEAD_SCORES_LATEST"):
        with pytest.raises(store.ScoresTableError, match=r"backtest\.table"):
            store.check_backtest_name(TABLES, bad)
    assert store.check_backtest_name(TABLES, "score_backtests") == "score_backtests"
    assert np.isnan(backtest_frame([row("a", "2026-09-14", float("nan"))])["roc_auc"].iloc[0])
