"""`leadscore backtest` and `leadscore plan` end to end on a small demo CRM: nightly runs scored as of past dates
(`leadscore score --as-of`), judged against the outcomes the CRM holds, checked against a direct computation on
the same rows written independently here (pandas and scikit-learn, not the project's label or metric code)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from score_env import ScoreEnv, build_env
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, EXIT_DEGRADED, app

pytestmark = pytest.mark.slow
runner = CliRunner()

#: Two past Mondays whose 30-day horizon lies inside the demo's data (it ends 2026-11-20), and one that does not.
PAST = ("2026-09-14T00:00:00Z", "2026-10-12T00:00:00Z")
RECENT = "2026-11-16T00:00:00Z"
SQL_OR_LATER = {"SQL", "Opportunity", "Won", "Lost"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScoreEnv]:
    built = build_env(tmp_path_factory.mktemp("backtest"))
    yield built
    mlflow.set_tracking_uri(None)


def cli(env: ScoreEnv, *args: str, params: Path | None = None) -> tuple[int, str]:
    tracking = [] if args[0] == "plan" else ["--tracking-uri", env.tracking_uri]  # plan never reads MLflow
    result = runner.invoke(app, [*args, "--params", str(params or env.params_path), *tracking])
    shown = "" if result.exception is None or isinstance(result.exception, SystemExit) else repr(result.exception)
    return result.exit_code, result.output + shown


def copy_crm(env: ScoreEnv, folder: Path) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "crm.db"
    shutil.copy(env.crm_db, db)
    return db, f"sqlite:///{db}"


@pytest.fixture(scope="module")
def scored(env: ScoreEnv, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A CRM copy with three nightly runs: two past their horizon, one not yet."""
    db, url = copy_crm(env, tmp_path_factory.mktemp("scored"))
    for as_of in (*PAST, RECENT):
        code, out = cli(env, "score", "--url", url, "--as-of", as_of)
        assert code == 0, out
    return db, url


def read(db: Path, query: str) -> pd.DataFrame:
    with sqlite3.connect(db) as conn:
        return pd.read_sql_query(query, conn)


def direct_figures(db: Path, run_id: str, as_of: str) -> dict[str, float]:
    """The backtest of one run computed here: outcome = a stage entry into SQL or later in (as_of, as_of + 30d]."""
    rows = read(
        db, f"SELECT lead_id, probability, stage, rule_score, rule_mql FROM lead_scores WHERE run_id = '{run_id}'"
    )
    stages = read(db, "SELECT lead_id, stage, entered_at FROM stage_history")
    entered = pd.to_datetime(stages["entered_at"], utc=True, format="ISO8601")
    start = pd.to_datetime(as_of, utc=True)
    hit = stages.loc[
        stages["stage"].isin(SQL_OR_LATER) & (entered > start) & (entered <= start + pd.Timedelta(days=30))
    ]
    rows["y"] = rows["lead_id"].isin(hit["lead_id"]).astype(int)
    rows["rule_mql"] = rows["rule_mql"].astype(bool)
    out = {
        "leads": len(rows),
        "observed": float(rows["y"].sum()),
        "expected": float(rows["probability"].sum()),
        "obs_exp": rows["y"].sum() / rows["probability"].sum(),
        "roc_auc": roc_auc_score(rows["y"], rows["probability"]),
        "rule_mql_leads": int(rows["rule_mql"].sum()),
        "rule_mql_precision": rows.loc[rows["rule_mql"], "y"].mean(),
    }
    by_p = rows.sort_values(["probability", "lead_id"], ascending=[False, True])
    out["model_precision_at_rule_volume"] = by_p.head(out["rule_mql_leads"])["y"].mean()
    lists = {"mql": {"MQL", "SAL", "SQL"}, "sal": {"SAL", "SQL"}, "sql": {"SQL"}}
    for key, members in lists.items():
        on = rows.loc[rows["stage"].isin(members)]
        out[f"{key}_leads"] = len(on)
        out[f"{key}_obs_exp"] = on["y"].sum() / on["probability"].sum() if len(on) else float("nan")
        out[f"{key}_precision"] = on["y"].mean() if len(on) else float("nan")
        by_rule = rows.sort_values(["rule_score", "lead_id"], ascending=[False, True])
        out[f"{key}_rule_precision"] = by_rule.head(len(on))["y"].mean() if len(on) else float("nan")
    return out


def test_backtest_fills_the_table_with_figures_a_direct_computation_confirms(
    env: ScoreEnv, scored: tuple[Path, str]
) -> None:
    db, url = scored
    code, out = cli(env, "backtest", "--url", url)
    assert code == 0, out  # without --fail-on-degradation a flagged run exits 0 too
    assert "backtested 2 run(s)" in out and "1 waiting for their horizon" in out

    table = read(db, "SELECT * FROM score_backtests ORDER BY as_of")
    runs = read(db, "SELECT run_id, as_of FROM scoring_runs ORDER BY as_of")
    assert len(table) == 2
    assert list(table["run_id"]) == list(runs["run_id"][:2])
    for _, row in table.iterrows():
        as_of = runs.set_index("run_id").loc[row["run_id"], "as_of"]
        want = direct_figures(db, row["run_id"], as_of)
        assert want["observed"] > 0, "the demo must hold conversions in the window for the check to mean anything"
        for key, value in want.items():
            assert row[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
        assert row["roc_auc_ci_low"] <= row["roc_auc"] <= row["roc_auc_ci_high"]
        assert row["obs_exp_ci_low"] <= row["obs_exp"] <= row["obs_exp_ci_high"]
        assert row["accounts"] < row["leads"]  # clusters are accounts, not leads
        assert row["status"] in ("ok", "degraded")
        assert (row["recommendation"] is None) == (row["status"] == "ok")


def test_a_rerun_adds_nothing_and_all_replaces_each_row_in_place(env: ScoreEnv, scored: tuple[Path, str]) -> None:
    db, url = scored
    cli(env, "backtest", "--url", url)
    before = read(db, "SELECT * FROM score_backtests ORDER BY run_id")
    code, out = cli(env, "backtest", "--url", url)
    assert code == 0 and "backtested 0 run(s)" in out and "2 already done" in out, out
    code, out = cli(env, "backtest", "--url", url, "--all")
    assert code == 0 and "backtested 2 run(s)" in out, out
    after = read(db, "SELECT * FROM score_backtests ORDER BY run_id")
    figures = [c for c in before.columns if c != "backtested_at"]
    pd.testing.assert_frame_equal(before[figures], after[figures])


def test_the_figures_are_metrics_on_the_model_version_in_mlflow(env: ScoreEnv, scored: tuple[Path, str]) -> None:
    db, url = scored
    cli(env, "backtest", "--url", url)
    table = read(db, "SELECT as_of, roc_auc, obs_exp, status FROM score_backtests ORDER BY as_of")
    client = mlflow.MlflowClient(tracking_uri=env.tracking_uri, registry_uri=env.tracking_uri)
    version = client.get_model_version("lead-scoring", "1")
    history = sorted(client.get_metric_history(version.run_id, "backtest.roc_auc"), key=lambda m: m.step)
    steps = sorted({m.step for m in history})
    days = [int(pd.Timestamp(a).value // 86_400_000_000_000) for a in table["as_of"]]
    assert steps == days
    last = [m for m in history if m.step == days[-1]]
    assert last[-1].value == pytest.approx(table["roc_auc"].iloc[-1])
    if version.model_id:
        logged = client.get_logged_model(version.model_id)
        names = {m.key for m in logged.metrics or []}
        assert "backtest.obs_exp" in names
    assert client.get_model_version("lead-scoring", "1").tags["backtest.status"] == table["status"].iloc[-1]


def band_params(env: ScoreEnv, folder: Path, low: float, high: float) -> Path:
    raw = yaml.safe_load(env.params_path.read_text())
    raw["backtest"]["obs_exp_low"], raw["backtest"]["obs_exp_high"] = low, high
    path = folder / f"params_{low}_{high}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_fail_on_degradation_exits_4_only_when_a_run_leaves_the_band(
    env: ScoreEnv, scored: tuple[Path, str], tmp_path: Path
) -> None:
    db, url = scored
    wide = band_params(env, tmp_path, 0.01, 100.0)
    code, out = cli(env, "backtest", "--url", url, "--all", "--fail-on-degradation", params=wide)
    assert code == 0, out
    assert set(read(db, "SELECT status FROM score_backtests")["status"]) == {"ok"}

    ratio = float(read(db, "SELECT obs_exp FROM score_backtests ORDER BY as_of DESC")["obs_exp"].iloc[0])
    assert ratio != 1.0
    low, high = ((ratio + 1) / 2, 100.0) if ratio < 1 else (0.01, (ratio + 1) / 2)
    narrow = band_params(env, tmp_path, low, high)
    code, out = cli(env, "backtest", "--url", url, "--all", "--fail-on-degradation", params=narrow)
    assert code == EXIT_DEGRADED, out
    flagged = read(db, "SELECT status, recommendation, message FROM score_backtests ORDER BY as_of DESC").iloc[0]
    assert flagged["status"] == "degraded" and flagged["recommendation"] in ("retrain", "recalibrate")
    assert flagged["recommendation"] in flagged["message"]


def test_no_run_past_its_horizon_is_bad_input_and_writes_nothing(env: ScoreEnv, tmp_path: Path) -> None:
    db, url = copy_crm(env, tmp_path)
    code, out = cli(env, "backtest", "--url", url, "--no-mlflow")
    assert code == EXIT_BAD_INPUT and "no scoring run" in out and "leadscore score" in out, out
    code, out = cli(env, "score", "--url", url, "--as-of", RECENT)
    assert code == 0, out
    code, out = cli(env, "backtest", "--url", url, "--no-mlflow")
    assert code == EXIT_BAD_INPUT, out
    assert "no stored run can be judged yet" in out and "2026-12-16" in out and "Traceback" not in out
    with sqlite3.connect(db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "score_backtests" not in names


# ----------------------------------------------------------------------------------------------------------------
# leadscore plan
# ----------------------------------------------------------------------------------------------------------------


def test_plan_answers_per_campaign_and_its_expected_sqls_are_the_probabilities_it_used(
    env: ScoreEnv, scored: tuple[Path, str]
) -> None:
    db, url = scored
    code, out = cli(env, "plan", "--url", url, "--target-sql", "12", "--per", "week", "--json")
    assert code == 0, out
    plan = json.loads(out)
    latest = read(db, "SELECT run_id, as_of FROM scoring_runs ORDER BY as_of DESC").iloc[0]
    assert plan["run_id"] == latest["run_id"]  # the latest production run
    as_of = pd.to_datetime(latest["as_of"], utc=True)
    # independently: the run's probabilities summed per campaign; the leads each campaign got in the 90 days before
    leads = read(
        db,
        "SELECT l.lead_id, l.created_at, COALESCE(c.name, '(no campaign)') AS campaign FROM leads l "
        "LEFT JOIN campaigns c ON c.campaign_id = l.campaign_id",
    )
    created = pd.to_datetime(leads["created_at"], utc=True, format="ISO8601")
    recent = leads.loc[(created > as_of - pd.Timedelta(days=90)) & (created <= as_of)]
    probs = read(db, f"SELECT lead_id, probability FROM lead_scores WHERE run_id = '{latest['run_id']}'")
    used = leads.merge(probs, on="lead_id")
    want = used.groupby("campaign")["probability"].sum()
    got = {c["campaign"]: c for c in plan["campaigns"]}
    assert set(got) == set(recent["campaign"])
    for name, row in got.items():
        assert row["expected_sql_open"] == pytest.approx(want.get(name, 0.0), rel=1e-9, abs=1e-12), name
        assert row["sql_now"] == pytest.approx(want.get(name, 0.0) * 7 / 30, rel=1e-9, abs=1e-12), name
        assert row["recent_leads"] == int((recent["campaign"] == name).sum())
        assert row["new_leads_needed_ci_low"] <= row["new_leads_needed"] <= row["new_leads_needed_ci_high"]
    assert sum(c["target_sql"] for c in plan["campaigns"]) == pytest.approx(12)
    planned = used.loc[used["campaign"].isin(list(got)), "probability"].sum()
    assert plan["total"]["expected_sql_open"] == pytest.approx(planned)

    code, out = cli(env, "plan", "--url", url, "--target-sql", "12", "--per", "week")
    assert code == 0, out
    assert "SQLs a week need about" in out and "new leads per week (95% CI)" in out and "total" in out


def test_plan_refuses_an_unknown_campaign_and_a_crm_without_runs(env: ScoreEnv, scored: tuple[Path, str]) -> None:
    _, url = scored
    code, out = cli(env, "plan", "--url", url, "--target-sql", "5", "--campaign", "No Such Campaign")
    assert code == EXIT_BAD_INPUT and "--campaign ['No Such Campaign'] not found" in out, out
    assert "Traceback" not in out
    code, out = cli(env, "plan", "--url", url, "--target-sql", "5", "--target-wins", "2")
    assert code == EXIT_BAD_INPUT and "exactly one of" in out, out
    code, out = cli(env, "plan", "--url", url, "--target-sql", "5", "--per", "day")
    assert code == EXIT_BAD_INPUT and "--per" in out, out


def test_plan_without_a_scoring_run_is_bad_input(env: ScoreEnv, tmp_path: Path) -> None:
    _, url = copy_crm(env, tmp_path)
    code, out = cli(env, "plan", "--url", url, "--target-wins", "3")
    assert code == EXIT_BAD_INPUT and "leadscore score" in out, out
