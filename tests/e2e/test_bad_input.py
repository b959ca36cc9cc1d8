"""Bad input refused clearly, and tonight's list never lost (issue 16).

Every case ends with exit 2 (3 for a held lock), one `error:` line naming table, column and rows (or the model,
the database, the argument), no traceback, and the previous good outputs exactly as they were. Cases where the
database matters run on SQLite and PostgreSQL (a throwaway schema; skipped without the local server).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from score_env import AS_OF, ScoreEnv, build_env, fresh_crm, sqlite_exec, table_names
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, EXIT_LOCKED, app
from pipelines.config import ScoreTables
from pipelines.crm.db import make_engine, write_crm
from pipelines.registry.model import MODEL_KIND, MODEL_MARKER
from pipelines.score import store

pytestmark = pytest.mark.slow
runner = CliRunner()
TABLES = ScoreTables(scores="lead_scores", runs="scoring_runs", latest="lead_scores_latest")
LEADSCORE = str(Path(sys.executable).parent / "leadscore")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScoreEnv]:
    built = build_env(tmp_path_factory.mktemp("bad_input"), leads=600, chunk_leads=150)
    yield built
    mlflow.set_tracking_uri(None)


@pytest.fixture(params=["sqlite", "postgres"])
def crm(request: pytest.FixtureRequest, env: ScoreEnv, tmp_path: Path) -> str:
    """A fresh copy of the demo CRM; scores go into the same database."""
    return fresh_crm(request.param, env, tmp_path, request)


def execute(url: str, *statements: str) -> None:
    """Break the CRM on purpose, as a careless upstream job would."""
    if url.startswith("sqlite"):
        sqlite_exec(Path(url.removeprefix("sqlite:///")), *statements)
        return
    engine = make_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def without_primary_key(url: str, table: str) -> list[str]:
    """Statements that drop the table's primary key (what a CRM without constraints looks like)."""
    if url.startswith("sqlite"):
        return [
            f"CREATE TABLE {table}_copy AS SELECT * FROM {table}",
            f"DROP TABLE {table}",
            f"ALTER TABLE {table}_copy RENAME TO {table}",
        ]
    return [f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey"]


def score(env: ScoreEnv, url: str, *extra: str, as_of: str = AS_OF, params: Path | None = None) -> tuple[int, str]:
    result = runner.invoke(
        app,
        [
            "score",
            "--url",
            url,
            "--params",
            str(params or env.params_path),
            "--tracking-uri",
            env.tracking_uri,
            "--as-of",
            as_of,
            *extra,
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def refused(code: int, out: str, *words: str) -> None:
    assert code == EXIT_BAD_INPUT, out
    assert out.count("error:") == 1 and "Traceback" not in out, out
    for word in words:
        assert word in out, (word, out)


def latest(url: str) -> pd.DataFrame:
    return store.read_scores(make_engine(url), TABLES, latest=True).sort_values("lead_id").reset_index(drop=True)


def params_with(env: ScoreEnv, tmp_path: Path, **changes: dict[str, object]) -> Path:
    raw = yaml.safe_load(env.params_path.read_text())
    for block, values in changes.items():
        raw[block].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------------------------
# Bad values in any column: exit 2 naming table, column and rows, in every command that reads the CRM
# ----------------------------------------------------------------------------------------------------------------


def _max(table: str, key: str) -> str:
    return f"(SELECT MAX({key}) FROM {table})"


LAST_ACTIVITY, LAST_LEAD = _max("activities", "activity_id"), _max("leads", "lead_id")
LAST_STAGE = _max("stage_history", "stage_history_id")
SQLITE_VALUES = {
    "not a date": (
        [f"UPDATE activities SET occurred_at = 'not a date' WHERE activity_id = {LAST_ACTIVITY}"],
        ["table 'activities', column 'occurred_at'", "activity_id=", "'not a date'"],
    ),
    "non-UTF-8 text": (
        [f"UPDATE leads SET job_title = CAST(x'ff41fe' AS TEXT) WHERE lead_id = {LAST_LEAD}"],
        ["table 'leads', column 'job_title'", "not UTF-8", "lead_id="],
    ),
    "non-UTF-8 activity detail": (
        [f"UPDATE activities SET detail = CAST(x'c328' AS TEXT) WHERE activity_id = {LAST_ACTIVITY}"],
        ["table 'activities', column 'detail'", "not UTF-8", "activity_id="],
    ),
    "text in leads.account_id": (
        [
            "UPDATE leads SET account_id = 'abc' WHERE account_id IS NOT NULL AND lead_id = "
            "(SELECT MIN(lead_id) FROM leads WHERE account_id IS NOT NULL)"
        ],
        ["table 'leads', column 'account_id'", "'abc'", "lead_id="],
    ),
    "text in activities.lead_id": (  # on SQLite found by the reference check, then named as text
        [f"UPDATE activities SET lead_id = 'abc' WHERE activity_id = {LAST_ACTIVITY}"],
        ["table 'activities', column 'lead_id'", "'abc'", "activity_id="],
    ),
    "NULL stage_history.lead_id": (
        [f"UPDATE stage_history SET lead_id = NULL WHERE stage_history_id = {LAST_STAGE}"],
        ["table 'stage_history', column 'lead_id'", "NULL", "stage_history_id="],
    ),
}


@pytest.mark.parametrize("case", list(SQLITE_VALUES))
@pytest.mark.parametrize("command", ["validate", "extract", "score"])
def test_a_bad_value_is_one_message_naming_table_column_and_row_in_every_command(
    env: ScoreEnv, tmp_path: Path, case: str, command: str
) -> None:
    db = tmp_path / "crm.db"
    shutil.copy(env.crm_db, db)
    url = f"sqlite:///{db}"
    statements, words = SQLITE_VALUES[case]
    sqlite_exec(db, *statements)
    if command == "score":
        code, out = score(env, url)
        assert "lead_scores" not in table_names(url)
    else:
        extra = ["--out", str(tmp_path / "raw"), "--params", str(env.params_path)] if command == "extract" else []
        result = runner.invoke(app, [command, "--url", url, *extra])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        code, out = result.exit_code, result.output
        assert not (tmp_path / "raw").exists()
    refused(code, out, *words)


def test_text_in_a_key_column_on_postgresql_is_refused_before_any_chunk(env: ScoreEnv, pg_schema_url: str) -> None:
    write_crm(make_engine(pg_schema_url), env.tables)
    execute(
        pg_schema_url,
        "ALTER TABLE leads ALTER COLUMN account_id TYPE text",
        "UPDATE leads SET account_id = 'abc' WHERE lead_id = (SELECT MIN(lead_id) FROM leads)",
    )
    refused(*score(env, pg_schema_url), "table 'leads', column 'account_id'", "integer")
    result = runner.invoke(app, ["validate", "--url", pg_schema_url])
    refused(result.exit_code, result.output, "table 'leads', column 'account_id'", "'abc'")


# ----------------------------------------------------------------------------------------------------------------
# Keys over the whole table: NULL and duplicate keys are found before any work
# ----------------------------------------------------------------------------------------------------------------


def test_a_null_lead_id_is_refused_before_scoring(env: ScoreEnv, crm: str) -> None:
    statements = without_primary_key(crm, "leads")
    if crm.startswith("postgresql"):
        statements.append("ALTER TABLE leads ALTER COLUMN lead_id DROP NOT NULL")
    # a lead without an account: its group key (account, else lead) is NULL too
    execute(
        crm,
        *statements,
        "UPDATE leads SET lead_id = NULL WHERE lead_id = (SELECT MIN(lead_id) FROM leads WHERE account_id IS NULL)",
    )
    refused(*score(env, crm), "table 'leads', column 'lead_id'", "NULL", "created_at=")
    assert "lead_scores" not in table_names(crm)


def test_a_lead_id_used_twice_in_different_chunks_is_refused_before_scoring(env: ScoreEnv, crm: str) -> None:
    first = int(env.tables["leads"]["lead_id"].min())
    # the last lead (last chunk) takes the first lead's id (first chunk)
    execute(
        crm,
        *without_primary_key(crm, "leads"),
        f"UPDATE leads SET lead_id = {first} WHERE lead_id = (SELECT MAX(lead_id) FROM leads)",
    )
    refused(*score(env, crm), "table 'leads', column 'lead_id'", "more than once", f"lead_id={first} (2 rows)")
    assert "lead_scores" not in table_names(crm)


# ----------------------------------------------------------------------------------------------------------------
# Tonight's list is never lost: empty or shrunken input, future as-of
# ----------------------------------------------------------------------------------------------------------------


def _delete_leads(url: str, where: str) -> None:
    execute(
        url,
        f"DELETE FROM activities WHERE lead_id IN (SELECT lead_id FROM leads WHERE {where})",
        f"DELETE FROM stage_history WHERE lead_id IN (SELECT lead_id FROM leads WHERE {where})",
        f"DELETE FROM leads WHERE {where}",
    )


def test_an_empty_leads_table_is_refused_and_the_latest_list_stays(env: ScoreEnv, crm: str) -> None:
    assert score(env, crm)[0] == 0
    before = latest(crm)
    assert len(before) > 0
    _delete_leads(crm, "1 = 1")

    refused(*score(env, crm), "leads table is empty", "--allow-shrink")
    pd.testing.assert_frame_equal(latest(crm), before)

    code, out = score(env, crm, "--allow-shrink")
    assert code == 0, out
    assert latest(crm).empty  # the operator said so


def test_a_shrunken_crm_is_refused_against_the_latest_run(env: ScoreEnv, crm: str) -> None:
    assert score(env, crm)[0] == 0
    before = latest(crm)
    keep = int(env.tables["leads"]["lead_id"].sort_values().iloc[len(env.tables["leads"]) // 3])
    _delete_leads(crm, f"lead_id > {keep}")  # two thirds of the leads gone

    refused(*score(env, crm), "leads read, fewer than 0.5 x the 600 of the latest run", "score.min_leads_ratio")
    pd.testing.assert_frame_equal(latest(crm), before)


def test_a_crm_whose_leads_all_closed_is_refused_at_the_scored_count(env: ScoreEnv, crm: str) -> None:
    assert score(env, crm)[0] == 0
    before = latest(crm)
    # every lead disqualified now: the leads are all there, but none is open
    execute(
        crm,
        "INSERT INTO stage_history (stage_history_id, lead_id, stage, entered_at, reason) SELECT "
        "lead_id + 100000000, lead_id, 'Disqualified', '2026-11-19 00:00:00', NULL FROM leads",
    )
    refused(*score(env, crm), "leads scored, fewer than 0.5 x")
    pd.testing.assert_frame_equal(latest(crm), before)


def test_an_as_of_time_in_the_future_is_refused(env: ScoreEnv, tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    shutil.copy(env.crm_db, db)
    refused(
        *score(env, f"sqlite:///{db}", as_of="2030-01-01"),
        "--as-of 2030-01-01",
        "future",
        "base.future_tolerance_minutes",
    )
    assert "lead_scores" not in table_names(f"sqlite:///{db}")


def test_future_events_are_refused_at_extract_and_the_last_snapshot_stays(env: ScoreEnv, tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    shutil.copy(env.crm_db, db)
    url, out = f"sqlite:///{db}", tmp_path / "raw"
    extract = ["extract", "--url", url, "--out", str(out), "--params", str(env.params_path)]
    assert runner.invoke(app, extract).exit_code == 0
    manifest = (out / "manifest.json").read_text()
    last = int(env.tables["activities"]["activity_id"].max())
    sqlite_exec(db, f"UPDATE activities SET occurred_at = '2099-01-01 00:00:00' WHERE activity_id = {last}")

    result = runner.invoke(app, extract)
    refused(
        result.exit_code,
        result.output,
        "table 'activities', column 'occurred_at'",
        "in the future",
        f"activity_id={last}: 2099-01-01 00:00:00",
    )
    assert (out / "manifest.json").read_text() == manifest


# ----------------------------------------------------------------------------------------------------------------
# The lock, table names and the model: refused before the slow part
# ----------------------------------------------------------------------------------------------------------------


def _no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded although the run had to stop before")

    monkeypatch.setattr("pipelines.score.run.load_scoring_model", refuse)


def test_a_second_run_is_refused_before_the_model_loads(
    env: ScoreEnv, crm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_model_load(monkeypatch)
    with store.run_lock(make_engine(crm), TABLES):
        code, out = score(env, crm)
    assert code == EXIT_LOCKED, out
    assert "another scoring run" in out


def test_the_postgresql_lock_is_per_schema_and_names_it(env: ScoreEnv, pg_schema_url: str, pg_url: str) -> None:
    other = "leadscore_test_other_schema"
    admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{other}"')
    other_url = (
        sa.make_url(pg_url)
        .update_query_dict({"options": f"-csearch_path={other}"})
        .render_as_string(hide_password=False)
    )
    try:
        for url in (pg_schema_url, other_url):
            write_crm(make_engine(url), env.tables)
        with store.run_lock(make_engine(pg_schema_url), TABLES):
            code, out = score(env, other_url)
            assert code == 0, out  # another schema of the same database is another scores table
            code, out = score(env, pg_schema_url)
            schema = sa.make_url(pg_schema_url).query["options"].split("=", 1)[1]
            assert code == EXIT_LOCKED and f"schema {schema}" in out, out
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')
        admin.dispose()


def test_scores_table_names_that_clash_are_refused_at_start(
    env: ScoreEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_model_load(monkeypatch)
    db = tmp_path / "crm.db"
    shutil.copy(env.crm_db, db)
    url = f"sqlite:///{db}"
    clash = params_with(
        env, tmp_path, score={"tables": {"scores": "leads", "runs": "scoring_runs", "latest": "lead_scores_latest"}}
    )
    refused(*score(env, url, params=clash), "score.tables.scores", "'leads' is a CRM table")

    sqlite_exec(db, "CREATE TABLE lead_scores_latest (x INTEGER)")
    refused(*score(env, url), "'lead_scores_latest' is a table", "score.tables.latest")


class NotOurs(mlflow.pyfunc.PythonModel):
    """Another project's pyfunc with the same inputs: it loads, but returns something else."""

    def predict(self, context: object, model_input: pd.DataFrame, params: dict | None = None) -> list[int]:
        return list(range(len(model_input)))


def test_a_model_of_another_kind_under_the_alias_is_refused_before_any_write(env: ScoreEnv, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(env.root, registry, ignore=shutil.ignore_patterns("crm.db"))
    uri = f"sqlite:///{registry / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        ours = mlflow.pyfunc.load_model("models:/lead-scoring/1")
        assert ours.metadata.metadata == {MODEL_MARKER: MODEL_KIND}  # marked at register
        assert client.get_model_version("lead-scoring", "1").tags[MODEL_MARKER] == MODEL_KIND
        schema = ours.metadata.get_input_schema()
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="other",
                python_model=NotOurs(),
                signature=mlflow.models.ModelSignature(inputs=schema),
                registered_model_name="lead-scoring",
            )
        client.set_registered_model_alias("lead-scoring", "champion", str(info.registered_model_version))
    finally:
        mlflow.set_tracking_uri(None)
    db = tmp_path / "crm.db"
    shutil.copy(env.crm_db, db)
    url = f"sqlite:///{db}"

    result = runner.invoke(
        app, ["score", "--url", url, "--params", str(env.params_path), "--tracking-uri", uri, "--as-of", AS_OF]
    )
    refused(
        result.exit_code,
        result.output,
        f"models:/lead-scoring/{info.registered_model_version}",
        "not a lead-scoring model of this project",
    )
    assert "lead_scores" not in table_names(url)
    assert not list(tmp_path.glob("*.score.lock")), "a refused run leaves no lock file"


def test_a_finished_run_leaves_no_lock_file(env: ScoreEnv, tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    shutil.copy(env.crm_db, db)
    assert score(env, f"sqlite:///{db}")[0] == 0
    assert not list(tmp_path.glob("*.score.lock"))


# ----------------------------------------------------------------------------------------------------------------
# An unreachable database, and the command line itself (real processes: what cron sees)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "score"])
def test_an_unreachable_database_is_one_line_naming_the_host_with_the_password_masked(command: str) -> None:
    url = "postgresql+psycopg://scoring:s3cret-pw@127.0.0.1:1/crm"
    result = subprocess.run([LEADSCORE, command, "--url", url], capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect"), result.stderr
    assert "127.0.0.1" in lines[0] and "s3cret-pw" not in result.stderr + result.stdout and "***" in lines[0]


def test_an_unreachable_tracking_store_or_a_missing_driver_is_bad_input(env: ScoreEnv) -> None:
    url = f"sqlite:///{env.crm_db}"
    result = runner.invoke(
        app,
        [
            "score",
            "--url",
            url,
            "--params",
            str(env.params_path),
            "--as-of",
            AS_OF,
            "--tracking-uri",
            "postgresql+psycopg://mlflow:s3cret-pw@127.0.0.1:1/mlflow",
        ],
    )
    refused(result.exit_code, result.output, "MLflow tracking store: cannot connect", "127.0.0.1", "***")
    assert "s3cret-pw" not in result.output

    result = runner.invoke(app, ["validate", "--url", "mysql://crm@db/crm"])
    refused(result.exit_code, result.output, "not a usable database URL mysql://crm@db/crm", "driver")


def test_the_command_line_is_quiet_versioned_and_verbose_on_request(env: ScoreEnv) -> None:
    url = f"sqlite:///{env.crm_db}"
    version = subprocess.run([LEADSCORE, "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("leadscore ")

    normal = subprocess.run([LEADSCORE, "validate", "--url", url], capture_output=True, text=True, timeout=120)
    assert normal.returncode == 0 and "valid" in normal.stdout
    assert "Warning" not in normal.stderr and "DEBUG" not in normal.stderr, normal.stderr

    verbose = subprocess.run([LEADSCORE, "-v", "validate", "--url", url], capture_output=True, text=True, timeout=120)
    assert "DEBUG pipelines.crm.db: read 600 rows of leads" in verbose.stderr, verbose.stderr
    assert "Warning" not in verbose.stderr

    quiet = subprocess.run(
        [
            LEADSCORE,
            "-q",
            "score",
            "--url",
            url,
            "--params",
            str(env.params_path),
            "--tracking-uri",
            env.tracking_uri,
            "--as-of",
            AS_OF,
            "--scores-url",
            f"sqlite:///{env.root / 'quiet_scores.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert " INFO " not in quiet.stderr and "Warning" not in quiet.stderr, quiet.stderr
    assert "scored" in quiet.stdout


def test_an_unexpected_error_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pipelines.cli as cli

    def broken() -> None:
        raise RuntimeError("something nobody foresaw\nsecond line")

    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: something nobody foresaw" in err and "Traceback" not in err


def test_files_that_are_not_what_they_claim_are_bad_input(env: ScoreEnv, tmp_path: Path) -> None:
    not_a_db = tmp_path / "crm.db"
    not_a_db.write_text("a spreadsheet export saved under the wrong name\n")
    result = runner.invoke(app, ["validate", "--url", f"sqlite:///{not_a_db}"])
    refused(result.exit_code, result.output, "is not a usable SQLite database", "file is not a database")

    empty = tmp_path / "empty.db"
    shutil.copy(env.crm_db, empty)
    _delete_leads(f"sqlite:///{empty}", "1 = 1")
    result = runner.invoke(app, ["validate", "--url", f"sqlite:///{empty}"])
    refused(result.exit_code, result.output, "table 'leads'", "is empty")

    raw = tmp_path / "raw"
    assert (
        runner.invoke(
            app, ["extract", "--url", f"sqlite:///{env.crm_db}", "--out", str(raw), "--params", str(env.params_path)]
        ).exit_code
        == 0
    )
    (raw / "activities.parquet").write_bytes(b"truncated")
    result = runner.invoke(
        app, ["features", "--raw", str(raw), "--out", str(tmp_path / "features"), "--params", str(env.params_path)]
    )
    refused(result.exit_code, result.output, "activities.parquet is not a readable snapshot table")
