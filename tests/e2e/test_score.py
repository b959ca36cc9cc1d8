"""Nightly scoring end to end on SQLite and PostgreSQL: what it writes, idempotent reruns, the lock, kill -9, and
bad input that stops the run with one clear message and nothing written.

One tiny registered model (v1 champion, in a temporary MLflow store) and one small demo CRM serve the module;
each test scores its own copy of the CRM (a SQLite file, or a throwaway PostgreSQL schema).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from score_env import AS_OF, LATER, ScoreEnv, build_env, count_rows, fresh_crm, sqlite_exec, table_names
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, EXIT_LOCKED, app
from pipelines.crm.db import index_name, make_engine, scoring_indexes, write_crm
from pipelines.features.build import features_as_of
from pipelines.registry.model import conform
from pipelines.score import store
from tests.support.tiny_model import register_tiny, tiny_params

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScoreEnv]:
    built = build_env(tmp_path_factory.mktemp("score"))
    yield built
    mlflow.set_tracking_uri(None)


@pytest.fixture(params=["sqlite", "postgres"])
def crm(request: pytest.FixtureRequest, env: ScoreEnv, tmp_path: Path) -> str:
    """The URL of a fresh copy of the demo CRM (scores are written into the same database)."""
    return fresh_crm(request.param, env, tmp_path, request)


def score(env: ScoreEnv, url: str, *extra: str, as_of: str = AS_OF) -> tuple[int, str]:
    result = runner.invoke(
        app,
        [
            "score",
            "--url",
            url,
            "--params",
            str(env.params_path),
            "--tracking-uri",
            env.tracking_uri,
            "--as-of",
            as_of,
            *extra,
        ],
    )
    return result.exit_code, result.output  # stdout and stderr together


def scores(url: str, latest: bool = False) -> pd.DataFrame:
    from pipelines.config import ScoreTables

    tables = ScoreTables(scores="lead_scores", runs="scoring_runs", latest="lead_scores_latest")
    return store.read_scores(make_engine(url), tables, latest=latest)


def runs(url: str) -> pd.DataFrame:
    from pipelines.config import ScoreTables

    tables = ScoreTables(scores="lead_scores", runs="scoring_runs", latest="lead_scores_latest")
    return store.read_runs(make_engine(url), tables)


# ----------------------------------------------------------------------------------------------------------------
# What a run writes
# ----------------------------------------------------------------------------------------------------------------


def test_a_run_scores_every_open_lead_once_with_the_registered_model(env: ScoreEnv, crm: str) -> None:
    code, out = score(env, crm)
    assert code == 0, out
    assert "open leads" in out and "status" in out

    written = scores(crm)
    expected = features_as_of(env.tables, pd.Timestamp(AS_OF), env.params.features)
    assert sorted(written["lead_id"]) == sorted(expected["lead_id"])
    assert written["lead_id"].is_unique and written["run_id"].nunique() == 1
    assert (written["as_of"] == pd.Timestamp(AS_OF)).all()
    assert written["model_name"].eq("lead-scoring").all() and written["model_version"].eq("1").all()
    assert set(written["stage"]) <= {"MQL", "SAL", "SQL", "none"} and set(written["grade"]) <= set("ABCD")
    assert written["reasons_positive"].map(len).gt(0).any()

    # chunked scoring (300 leads a chunk, whole accounts) gives the probabilities of scoring all at once
    model = mlflow.pyfunc.load_model("models:/lead-scoring/1")
    direct = model.predict(conform(expected, model.metadata.get_input_schema()), params={"top_reasons": 0})
    by_lead = written.set_index("lead_id")["probability"]
    np.testing.assert_allclose(by_lead.loc[expected["lead_id"]].to_numpy(), direct["probability"], atol=1e-12)

    run = runs(crm)
    assert len(run) == 1
    row = run.iloc[0]
    assert row["leads_scored"] == len(written) and row["leads_read"] == len(env.tables["leads"])
    assert row["chunks"] >= 4  # 1,500 leads in chunks of >= 300
    assert row["status"] in {"ok", "drift_warning"} and row["psi_score"] >= 0
    assert row["n_rule_mql"] == int(written["rule_mql"].sum())
    assert row["n_mql"] == int(written["stage"].isin(["MQL", "SAL", "SQL"]).sum())
    latest = scores(crm, latest=True)
    assert sorted(latest["lead_id"]) == sorted(written["lead_id"])


def test_a_run_records_what_each_stage_delivers_against_its_target(
    env: ScoreEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "crm.db"
    shutil.copy(env.crm_db, db)
    url = f"sqlite:///{db}"
    with caplog.at_level("WARNING"):
        code, out = score(env, url)
    assert code == 0, out

    volumes = json.loads(runs(url).iloc[0]["stage_volumes"])
    written = scores(url).set_index("lead_id")
    # independently: the same model on the same leads a cadence earlier, and the rule's MQLs then
    before = pd.Timestamp(AS_OF) - pd.Timedelta(days=env.params.features.cadence_days)
    earlier = features_as_of(env.tables, before, env.params.features)
    model = mlflow.pyfunc.load_model("models:/lead-scoring/1")
    prev_stage = pd.Series(
        model.predict(conform(earlier, model.metadata.get_input_schema()), params={"top_reasons": 0})[
            "stage"
        ].to_numpy(),
        index=earlier["lead_id"],
    )
    rank = {"none": 0, "MQL": 1, "SAL": 2, "SQL": 3}
    now_rank = written["stage"].map(rank)
    then_rank = prev_stage.map(rank).reindex(written.index).fillna(0)
    per_week = 7 / env.params.features.cadence_days
    for level, stage in enumerate(("MQL", "SAL", "SQL"), start=1):
        on, new = now_rank >= level, (now_rank >= level) & (then_rank < level)
        v = volumes[stage]
        assert v["list_size"] == int(on.sum()) and v["new"] == int(new.sum()), stage
        assert 0 < v["new"] < v["list_size"], stage  # the demo's lists are partly standing, partly new
    # the tiny model's thresholds were fitted without a volume: standing lists, the calibrate stage's definition
    assert {v["volume"] for v in volumes.values()} == {"standing"}
    assert volumes["SAL"] == {
        **volumes["SAL"],
        "policy": "capacity",
        "target_per_week": 150,
        "delivered_per_week": pytest.approx(volumes["SAL"]["list_size"] * per_week),
    }
    assert volumes["MQL"]["target_per_week"] == pytest.approx(written["rule_mql"].sum() * per_week)
    assert volumes["SQL"]["policy"] == "precision" and volumes["SQL"]["target_per_week"] is None
    warned = [r.getMessage() for r in caplog.records if "off target" in r.getMessage()]
    off = [
        s
        for s, v in volumes.items()
        if v["target_per_week"] and abs(v["delivered_per_week"] / v["target_per_week"] - 1) > 0.25
    ]
    assert len(warned) == len(off) and all(
        any(w.startswith(f"stage volume off target by more than 25%: {s} (") for w in warned) for s in off
    )


def test_rerunning_the_same_as_of_replaces_the_run_and_a_later_run_becomes_latest(env: ScoreEnv, crm: str) -> None:
    assert score(env, crm)[0] == 0
    first = scores(crm)
    code, out = score(env, crm)
    assert code == 0 and "replaced run" in out
    again = scores(crm)
    assert len(again) == len(first) and again["run_id"].nunique() == 1
    assert again["run_id"].iloc[0] != first["run_id"].iloc[0]
    assert len(runs(crm)) == 1

    assert score(env, crm, as_of=LATER)[0] == 0
    history = scores(crm)
    assert history["run_id"].nunique() == 2
    latest = scores(crm, latest=True)
    assert (latest["as_of"] == pd.Timestamp(LATER)).all()
    assert len(runs(crm)) == 2


def test_a_second_concurrent_run_is_refused_while_the_lock_is_held(env: ScoreEnv, crm: str) -> None:
    engine = make_engine(crm)
    with store.run_lock(engine, env.params.score.tables):
        code, out = score(env, crm)
    assert code == EXIT_LOCKED
    assert "another scoring run" in out
    assert "lead_scores" not in table_names(crm)
    assert score(env, crm)[0] == 0  # released


def test_scores_can_go_to_another_database(env: ScoreEnv, tmp_path: Path) -> None:
    out_db = f"sqlite:///{tmp_path / 'scores.db'}"
    code, out = score(env, f"sqlite:///{env.crm_db}", "--scores-url", out_db)
    assert code == 0, out
    assert count_rows(out_db, "lead_scores") > 0
    assert "lead_scores" not in table_names(f"sqlite:///{env.crm_db}")


# ----------------------------------------------------------------------------------------------------------------
# Production runs: the champion, outside dvc exp run
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def challenger(env: ScoreEnv) -> str:
    """A second registered version that stays challenger (the strict gate refuses the seed-1 model)."""
    second = register_tiny(env.root, env.tracking_uri, seed=1, params_path=tiny_params(env.root))
    assert second["aliases"] == ["challenger"] and second["champion"] == "1"
    return str(second["version"])


def test_a_pinned_non_champion_version_goes_to_the_history_only(env: ScoreEnv, crm: str, challenger: str) -> None:
    assert score(env, crm)[0] == 0
    tonight = set(scores(crm, latest=True)["run_id"])

    code, out = score(env, crm, "--model-uri", f"models:/lead-scoring/{challenger}")  # same night, later

    assert code == 0 and "not production" in out, out
    assert set(scores(crm)["model_version"]) == {"1", challenger}
    assert set(scores(crm, latest=True)["run_id"]) == tonight
    logged = runs(crm).set_index("model_version")["production"]
    assert bool(logged["1"]) and not bool(logged[challenger])

    # the champion pinned by its number is the champion: production, and the latest view moves to it
    code, out = score(env, crm, "--model-uri", "models:/lead-scoring/1", as_of=LATER)
    assert code == 0 and "not production" not in out
    latest = scores(crm, latest=True)
    assert (latest["as_of"] == pd.Timestamp(LATER)).all() and latest["model_version"].eq("1").all()


def test_scoring_inside_dvc_exp_run_never_writes_production_scores(
    env: ScoreEnv, crm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert score(env, crm)[0] == 0
    before = scores(crm, latest=True).sort_values("lead_id").reset_index(drop=True)
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "f5a7a257db3bf7c19049f91b98d8b789dd9a901d")
    monkeypatch.setenv("DVC_EXP_NAME", "shock-kind")

    for as_of in (AS_OF, LATER):  # the same night and model version (must not replace it), and a later night
        code, out = score(env, crm, as_of=as_of)
        assert code == 0 and "not production" in out, out

    after = scores(crm, latest=True).sort_values("lead_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(after, before)
    logged = runs(crm)
    assert len(logged) == 3 and sorted(logged["production"].astype(bool)) == [False, False, True]
    assert scores(crm)["run_id"].nunique() == 3


# ----------------------------------------------------------------------------------------------------------------
# kill -9
# ----------------------------------------------------------------------------------------------------------------


def _spawn(env: ScoreEnv, url: str, staging: Path, as_of: str) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).parent / "leadscore"),
        "score",
        "--url",
        url,
        "--params",
        str(env.params_path),
        "--tracking-uri",
        env.tracking_uri,
        "--as-of",
        as_of,
        "--staging-dir",
        str(staging),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_chunks(staging: Path, proc: subprocess.Popen[bytes], at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(staging.glob("leadscore-score-*/chunk-*.parquet"))) >= at_least:
            return
        time.sleep(0.02)
    raise AssertionError(
        f"the run ended or stalled before {at_least} chunk(s) were staged: {proc.communicate()[1].decode()[-2000:]}"
    )


def test_kill_9_mid_run_leaves_the_last_complete_run_and_a_rerun_completes(
    env: ScoreEnv, crm: str, tmp_path: Path
) -> None:
    assert score(env, crm)[0] == 0
    before = scores(crm).sort_values("lead_id").reset_index(drop=True)
    chunks = int(runs(crm).iloc[0]["chunks"])
    staging = tmp_path / "staging"
    staging.mkdir()

    # once early (one chunk staged) and once late (every chunk staged: publishing is next or under way)
    for at_least in (1, chunks):
        proc = _spawn(env, crm, staging, LATER)
        _wait_for_chunks(staging, proc, at_least)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        after = scores(crm)
        run_ids = set(after["run_id"])
        # either exactly the old run, or (if the commit made it) the old run plus the complete new one
        assert run_ids == set(before["run_id"]) or len(after) == 2 * len(before), len(after)
        old = after[after["run_id"] == before["run_id"].iloc[0]].sort_values("lead_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(old, before)
        assert len(runs(crm)) == len(run_ids)

    assert list(staging.glob("leadscore-score-*")), "a killed run leaves its staging folder behind"
    proc = _spawn(env, crm, staging, LATER)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert not list(staging.glob("leadscore-score-*")), "the next run cleans the dead run's staging folder"
    assert scores(crm)["run_id"].nunique() == 2 and len(scores(crm, latest=True)) == len(before)


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one clear message, exit 2, nothing written
# ----------------------------------------------------------------------------------------------------------------


def _type_break(url: str) -> list[str]:
    first = "(SELECT MIN(account_id) FROM accounts)"
    if url.startswith("postgresql"):
        return [
            "ALTER TABLE accounts ALTER COLUMN employee_count TYPE text",
            f"UPDATE accounts SET employee_count = 'many' WHERE account_id = {first}",
        ]
    return [f"UPDATE accounts SET employee_count = 'many' WHERE account_id = {first}"]


def _drop_detail_index(url: str) -> list[str]:
    """SQLite refuses to drop a column an index holds: the covering event index goes first (it is not on PostgreSQL)."""
    covering = dict(scoring_indexes("sqlite"))["activities"]
    return [f"DROP INDEX IF EXISTS {index_name('activities', covering)}"]


BREAKS = {
    "missing table": (lambda url: ["DROP TABLE stage_history"], ["table 'stage_history' not found"]),
    "missing column": (
        lambda url: [*_drop_detail_index(url), "ALTER TABLE activities DROP COLUMN detail"],
        ["activities", "detail"],
    ),
    "wrong type": (_type_break, ["accounts", "employee_count", "account_id="]),
    "activities of unknown leads": (
        lambda url: [
            "INSERT INTO activities (activity_id, lead_id, occurred_at, activity_type, detail) VALUES "
            "(999999999, 888888888, '2026-01-01 00:00:00', 'web_visit', NULL)"
        ],
        ["activities", "lead_id", "activity_id=999999999"],
    ),
}


def _execute(url: str, statements: list[str]) -> None:
    if url.startswith("sqlite"):
        sqlite_exec(Path(url.removeprefix("sqlite:///")), *statements)
        return
    import sqlalchemy as sa

    with make_engine(url).begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


@pytest.mark.parametrize("case", list(BREAKS))
def test_broken_crm_stops_the_run_naming_table_column_and_row(env: ScoreEnv, crm: str, case: str) -> None:
    statements, words = BREAKS[case]
    _execute(crm, statements(crm))
    code, out = score(env, crm)
    assert code == EXIT_BAD_INPUT, out
    assert out.count("error:") == 1 and "Traceback" not in out
    for word in words:
        assert word in out, (word, out)
    assert "lead_scores" not in table_names(crm)


def test_unknown_alias_and_mismatched_signature_stop_before_anything_is_written(
    env: ScoreEnv, crm: str, tmp_path: Path
) -> None:
    code, out = score(env, crm, "--model-uri", "models:/lead-scoring@nope")
    assert code == EXIT_BAD_INPUT and "no alias 'nope'" in out and "champion" in out

    raw = yaml.safe_load(env.params_path.read_text())
    raw["features"]["windows_days"] = [14, 60]  # the model needs n_*_30d
    other = tmp_path / "params.yaml"
    other.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = runner.invoke(
        app, ["score", "--url", crm, "--params", str(other), "--tracking-uri", env.tracking_uri, "--as-of", AS_OF]
    )
    assert result.exit_code == EXIT_BAD_INPUT and "expects feature(s)" in result.output
    assert "_30d" in result.output
    assert "lead_scores" not in table_names(crm)


def test_a_bad_as_of_time_is_bad_input(env: ScoreEnv, crm: str) -> None:
    code, out = score(env, crm, as_of="yesterday-ish")
    assert code == EXIT_BAD_INPUT and "--as-of" in out


def test_the_database_password_never_reaches_the_output_or_the_logs(
    env: ScoreEnv, pg_schema_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlalchemy as sa

    write_crm(make_engine(pg_schema_url), env.tables)
    with_password = sa.make_url(pg_schema_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    caplog.set_level("DEBUG")
    code, out = score(env, with_password)  # trust auth: the password is ignored, but must never be shown
    assert code == 0, out
    assert "s3cret-pw" not in out and "s3cret-pw" not in caplog.text
    assert "***" in out  # the summary names the database, masked
