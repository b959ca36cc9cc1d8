"""`leadscore export` end to end: score an imported CRM whose leads have text ids, then export the latest champion
run keyed by the CRM's own id (CSV and Parquet, generic and Salesforce field names), atomically."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from score_env import AS_OF, LATER, ScoreEnv, build_env
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, app
from pipelines.crm.db import make_engine, replace_tables
from pipelines.crm.mapping import CRM_IDS_TABLE

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScoreEnv]:
    built = build_env(tmp_path_factory.mktemp("export"), leads=600, chunk_leads=200)
    yield built
    mlflow.set_tracking_uri(None)


def _crm(env: ScoreEnv, tmp_path: Path) -> str:
    """A copy of the CRM with Salesforce-like text ids for every lead (as `leadscore import` with `ids: text`)."""
    db = tmp_path / "crm.db"
    shutil.copy(env.crm_db, db)
    ids = env.tables["leads"]["lead_id"].to_numpy()
    replace_tables(
        make_engine(f"sqlite:///{db}"),
        {CRM_IDS_TABLE: pd.DataFrame({"lead_id": ids, "crm_id": [f"00Q{i:015X}" for i in ids]})},
        {CRM_IDS_TABLE: "lead_id"},
    )
    return f"sqlite:///{db}"


def _invoke(*args: str) -> tuple[int, str]:
    done = runner.invoke(app, list(args))
    return done.exit_code, done.output


def _score(env: ScoreEnv, url: str, as_of: str) -> None:
    code, out = _invoke(
        "score", "--url", url, "--params", str(env.params_path), "--tracking-uri", env.tracking_uri, "--as-of", as_of
    )
    assert code == 0, out


def test_export_writes_the_latest_run_keyed_by_crm_id_with_a_0_100_score(env: ScoreEnv, tmp_path: Path) -> None:
    url = _crm(env, tmp_path)
    _score(env, url, AS_OF)
    _score(env, url, LATER)
    out = tmp_path / "out" / "scores.csv"
    code, text = _invoke("export", "--scores-url", url, "--params", str(env.params_path), "--out", str(out))
    assert code == 0, text
    with sqlite3.connect(tmp_path / "crm.db") as conn:
        latest = pd.read_sql_query(
            "SELECT s.* FROM lead_scores s JOIN scoring_runs r USING (run_id) "
            "WHERE r.as_of = (SELECT MAX(as_of) FROM scoring_runs)",
            conn,
        )
    exported = pd.read_csv(out, dtype={"crm_id": str})
    assert list(exported.columns) == [
        "crm_id",
        "lead_score",
        "lead_score_probability",
        "lead_grade",
        "lead_predicted_stage",
        "lead_score_reasons",
        "lead_score_reasons_against",
    ]
    assert len(exported) == len(latest) and exported["crm_id"].str.fullmatch(r"00Q[0-9A-F]{15}").all()
    by_id = latest.set_index("crm_id")
    np.testing.assert_allclose(
        exported["lead_score_probability"], by_id.loc[exported["crm_id"], "probability"], atol=1e-6
    )
    assert (exported["lead_score"] == np.rint(100 * exported["lead_score_probability"])).all()
    assert exported["lead_score"].between(0, 100).all()
    assert set(exported["lead_grade"]) <= set("ABCD")
    assert (exported["lead_predicted_stage"].to_numpy() == by_id.loc[exported["crm_id"], "stage"].to_numpy()).all()
    assert "2026-11-21" in text  # the later run
    personal = {"email", "first_name", "last_name", "phone"}
    assert not personal & {c.lower() for c in exported.columns}

    parquet = tmp_path / "scores.parquet"
    code, text = _invoke(
        "export", "--scores-url", url, "--params", str(env.params_path), "--out", str(parquet), "--shape", "salesforce"
    )
    assert code == 0, text
    sf = pd.read_parquet(parquet)
    assert list(sf.columns)[:3] == ["Id", "Lead_Score__c", "Lead_Score_Probability__c"]
    assert sf["Lead_Score_Reasons__c"].str.len().max() <= 255
    assert sorted(sf["Id"]) == sorted(exported["crm_id"])


def test_only_the_latest_production_run_is_exported_when_runs_say_which_are_production(
    env: ScoreEnv, tmp_path: Path
) -> None:
    url = _crm(env, tmp_path)
    _score(env, url, AS_OF)
    _score(env, url, LATER)
    with sqlite3.connect(tmp_path / "crm.db") as conn:  # only the earlier run is the champion's
        conn.execute("UPDATE scoring_runs SET production = (as_of = (SELECT MIN(as_of) FROM scoring_runs))")
    out = tmp_path / "scores.csv"
    code, text = _invoke("export", "--scores-url", url, "--params", str(env.params_path), "--out", str(out))
    assert code == 0, text
    assert "2026-11-20" in text
    with sqlite3.connect(tmp_path / "crm.db") as conn:
        conn.execute("UPDATE scoring_runs SET production = 0")
    out.write_text("previous export\n")
    code, text = _invoke("export", "--scores-url", url, "--params", str(env.params_path), "--out", str(out))
    assert code == EXIT_BAD_INPUT and "no production (champion) run" in text
    assert out.read_text() == "previous export\n"  # untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".scores.csv")]


def test_an_older_scores_table_gains_crm_id_and_no_run_exits_2(env: ScoreEnv, tmp_path: Path) -> None:
    url = _crm(env, tmp_path)
    code, text = _invoke(
        "export", "--scores-url", url, "--params", str(env.params_path), "--out", str(tmp_path / "x.csv")
    )
    assert code == EXIT_BAD_INPUT and "run `leadscore score` first" in text and not (tmp_path / "x.csv").exists()
    _score(env, url, AS_OF)
    with sqlite3.connect(tmp_path / "crm.db") as conn:
        conn.execute("DROP VIEW lead_scores_latest")
        conn.execute("ALTER TABLE lead_scores DROP COLUMN crm_id")
    _score(env, url, LATER)
    with sqlite3.connect(tmp_path / "crm.db") as conn:
        filled = pd.read_sql_query(
            "SELECT r.as_of, COUNT(s.crm_id) AS n FROM lead_scores s JOIN scoring_runs r "
            "USING (run_id) GROUP BY r.as_of ORDER BY r.as_of",
            conn,
        )
    assert filled["n"].iloc[0] == 0 and filled["n"].iloc[1] > 0
