"""The Spark engine of nightly scoring (read, features, rules and model on the executors) gives the pandas engine's
run: same leads, probabilities within 1e-9, identical stage, grade, reasons, totals and drift; bad input is exit 2
naming table and rows; and it says clearly what is missing when it cannot run.

The Spark tests need pyspark and Java 17+ (pip install "lead-scoring[spark]") and are skipped without them; the
error-message tests run everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from score_env import AS_OF, ScoreEnv, build_env, fresh_crm, table_names
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, app
from pipelines.config import ScoreTables
from pipelines.crm.db import make_engine
from pipelines.extract import extract
from pipelines.score import store

runner = CliRunner()
LEADSCORE = shutil.which("leadscore", path=str(Path(sys.executable).parent)) or shutil.which("leadscore")
TABLES = ScoreTables(scores="lead_scores", runs="scoring_runs", latest="lead_scores_latest")


def _has_pyspark() -> bool:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return False
    return True


_ENABLE = 'enable with pip install "lead-scoring[spark]" and a Java 17 runtime (java on PATH or JAVA_HOME)'
needs_pyspark = pytest.mark.skipif(not _has_pyspark(), reason=f"pyspark is not installed: {_ENABLE}")
needs_spark = pytest.mark.skipif(
    not _has_pyspark() or shutil.which("java") is None, reason=f"pyspark or java is missing: {_ENABLE}"
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScoreEnv]:
    built = build_env(tmp_path_factory.mktemp("score-spark"), leads=900, chunk_leads=300)
    yield built
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def score(env: ScoreEnv, scores_url: str, engine: str, *extra: str, crm_url: str | None = None) -> tuple[int, str]:
    result = runner.invoke(
        app,
        [
            "score",
            "--url",
            crm_url or env.crm_url,
            "--scores-url",
            scores_url,
            "--params",
            str(env.params_path),
            "--tracking-uri",
            env.tracking_uri,
            "--as-of",
            AS_OF,
            "--engine",
            engine,
            *extra,
        ],
    )
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def snapshot(env: ScoreEnv) -> Path:
    """The extract stage's Parquet snapshot of the env's CRM (what the Spark engine reads)."""
    out = env.root / "raw"
    extract(env.crm_url, out)
    return out


def _written(url: str, engine: str) -> tuple[pd.Series, pd.DataFrame]:
    runs = store.read_runs(make_engine(url), TABLES)
    assert len(runs) == 1 and runs.iloc[0]["engine"] == engine
    return runs.iloc[0], store.read_scores(make_engine(url), TABLES).set_index("lead_id").sort_index()


def _assert_same_scores(pandas_rows: pd.DataFrame, spark_rows: pd.DataFrame) -> None:
    assert len(pandas_rows) > 0 and list(spark_rows.index) == list(pandas_rows.index)
    assert np.abs(spark_rows["probability"] - pandas_rows["probability"]).max() <= 1e-9
    for col in ("stage", "grade", "reasons_positive", "reasons_negative", "rule_score", "rule_mql", "crm_id"):
        assert spark_rows[col].tolist() == pandas_rows[col].tolist(), col
    assert pandas_rows["reasons_positive"].map(len).gt(0).any()  # the reasons are really compared


@pytest.mark.slow
@needs_spark
def test_spark_engine_scores_the_snapshot_on_executors_as_the_pandas_engine(
    env: ScoreEnv, snapshot: Path, tmp_path: Path
) -> None:
    from pyspark.sql import SparkSession

    pandas_url, spark_url = (f"sqlite:///{tmp_path / f'scores-{e}.db'}" for e in ("pandas", "spark"))
    code, out = score(env, pandas_url, "pandas")
    assert code == 0, out
    code, out = score(env, spark_url, "spark", "--snapshot", str(snapshot))
    assert code == 0, out
    assert SparkSession.getActiveSession() is None, "the session the run started is stopped"

    pandas_run, pandas_rows = _written(pandas_url, "pandas")
    spark_run, spark_rows = _written(spark_url, "spark")
    _assert_same_scores(pandas_rows, spark_rows)
    assert spark_run["chunks"] >= 3  # 900 leads in groups of 300 on average: several groups on the executors
    assert spark_run["seconds_features"] > 0 and spark_run["seconds_predict"] > 0
    for col in ("leads_read", "leads_scored", "n_mql", "n_sal", "n_sql", "n_rule_mql", "status", "psi_max_feature"):
        assert spark_run[col] == pandas_run[col], col
    assert spark_run["mean_probability"] == pytest.approx(pandas_run["mean_probability"], abs=1e-12)
    assert json.loads(spark_run["drift"]) == pytest.approx(json.loads(pandas_run["drift"]), abs=1e-12)
    assert json.loads(spark_run["stage_volumes"]) == json.loads(pandas_run["stage_volumes"])
    assert not any(tmp_path.glob("leadscore-score-*")), "the staging folder is removed"


@pytest.mark.slow
@needs_spark
def test_a_bad_snapshot_is_bad_input_naming_table_and_rows(env: ScoreEnv, snapshot: Path, tmp_path: Path) -> None:
    broken = tmp_path / "raw"
    shutil.copytree(snapshot, broken)
    activities = pd.read_parquet(broken / "activities.parquet")
    activities.loc[activities.index[:3], "lead_id"] = 10_000_000  # no such lead
    activities.to_parquet(broken / "activities.parquet", index=False)
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    code, out = score(env, url, "spark", "--snapshot", str(broken))
    assert code == EXIT_BAD_INPUT, out
    assert "table 'activities', column 'lead_id': 3 row(s) refer to leads that do not exist" in out
    assert "Traceback" not in out and "lead_scores" not in table_names(url)


def test_snapshot_is_for_the_spark_engine_only(env: ScoreEnv, tmp_path: Path) -> None:
    code, out = score(env, f"sqlite:///{tmp_path / 'scores.db'}", "pandas", "--snapshot", str(tmp_path))
    assert code == EXIT_BAD_INPUT and "--engine spark only" in out


@needs_spark
def test_spark_says_how_to_score_a_sqlite_crm_or_a_folder_that_is_no_snapshot(env: ScoreEnv, tmp_path: Path) -> None:
    code, out = score(env, f"sqlite:///{tmp_path / 'scores.db'}", "spark")
    assert code == EXIT_BAD_INPUT and "leadscore extract" in out and "--snapshot" in out
    code, out = score(env, f"sqlite:///{tmp_path / 'scores.db'}", "spark", "--snapshot", str(tmp_path))
    assert code == EXIT_BAD_INPUT and "is not a CRM snapshot" in out and "Traceback" not in out


def test_without_pyspark_the_spark_engine_is_bad_input_naming_the_extra(
    env: ScoreEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    code, out = score(env, f"sqlite:///{tmp_path / 'scores.db'}", "spark")
    assert code == EXIT_BAD_INPUT, out
    assert out.count("error:") == 1 and "Traceback" not in out
    assert 'pip install "lead-scoring[spark]"' in out and "--engine pandas" in out
    assert not (tmp_path / "scores.db").exists() or "lead_scores" not in _tables(tmp_path / "scores.db")


@needs_pyspark
def test_without_java_the_spark_engine_is_bad_input_naming_java(
    env: ScoreEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    code, out = score(env, f"sqlite:///{tmp_path / 'scores.db'}", "spark")
    assert code == EXIT_BAD_INPUT, out
    assert out.count("error:") == 1 and "Java 17" in out and "Traceback" not in out

    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    code, out = score(env, f"sqlite:///{tmp_path / 'scores.db'}", "spark")
    assert code == EXIT_BAD_INPUT and "JAVA_HOME" in out and "no-jdk" in out


def _tables(db: Path) -> set[str]:
    return table_names(f"sqlite:///{db}")


def _jdbc_jar() -> Path | None:
    """The PostgreSQL JDBC driver: $LEADSCORE_TEST_JDBC_JAR, else the newest in the local Maven repository."""
    given = os.environ.get("LEADSCORE_TEST_JDBC_JAR")
    if given:
        return Path(given)
    found = sorted(
        (Path.home() / ".m2" / "repository" / "org" / "postgresql" / "postgresql").glob("*/postgresql-*.jar")
    )
    return found[-1] if found else None


@pytest.mark.slow
@pytest.mark.postgres
@needs_spark
@pytest.mark.parametrize("backend", ["postgres"])
def test_spark_engine_reads_postgresql_by_jdbc_as_the_pandas_engine(
    backend: str, env: ScoreEnv, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    jar = _jdbc_jar()
    if LEADSCORE is None:
        pytest.skip("the leadscore console script is not installed (pip install -e .)")
    if jar is None or not jar.exists():
        pytest.skip("no PostgreSQL JDBC driver jar: set LEADSCORE_TEST_JDBC_JAR or put it in ~/.m2/repository")
    crm_url = fresh_crm(backend, env, tmp_path, request)
    raw = yaml.safe_load(env.params_path.read_text())
    raw["score"]["spark_jars"] = [str(jar)]
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))

    written = {}
    for engine in ("pandas", "spark"):
        url = f"sqlite:///{tmp_path / f'scores-{engine}.db'}"
        # the console script: a fresh JVM, whose classpath takes the jar (one started earlier here would not)
        args = ["score", "--url", crm_url, "--scores-url", url, "--params", str(params_path)]
        args += ["--tracking-uri", env.tracking_uri, "--as-of", AS_OF, "--engine", engine]
        run = subprocess.run([LEADSCORE, *args], capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        written[engine] = _written(url, engine)
    _assert_same_scores(written["pandas"][1], written["spark"][1])
    assert written["spark"][0]["n_mql"] == written["pandas"][0]["n_mql"]
