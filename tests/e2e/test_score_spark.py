"""The Spark engine of nightly scoring gives the pandas engine's scores: same leads, probabilities within 1e-9,
identical stage, grade and reasons, in the input order; and it says clearly what is missing when it cannot run.

The Spark tests need pyspark and Java 17+ (pip install "lead-scoring[spark]") and are skipped without them; the
error-message tests run everywhere.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from score_env import AS_OF, ScoreEnv, build_env
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, app
from pipelines.config import ScoreTables
from pipelines.crm.db import make_engine
from pipelines.features.build import features_as_of
from pipelines.registry.model import conform
from pipelines.score import store

runner = CliRunner()
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


def score(env: ScoreEnv, scores_url: str, engine: str) -> tuple[int, str]:
    result = runner.invoke(
        app,
        [
            "score",
            "--url",
            env.crm_url,
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
        ],
    )
    return result.exit_code, result.output


@pytest.mark.slow
@needs_spark
def test_spark_engine_writes_the_scores_of_the_pandas_engine(env: ScoreEnv, tmp_path: Path) -> None:
    from pyspark.sql import SparkSession

    written = {}
    for engine in ("pandas", "spark"):
        url = f"sqlite:///{tmp_path / f'scores-{engine}.db'}"
        code, out = score(env, url, engine)
        assert code == 0, out
        runs = store.read_runs(make_engine(url), TABLES)
        assert len(runs) == 1 and runs.iloc[0]["engine"] == engine
        assert runs.iloc[0]["chunks"] >= 3  # 900 leads in chunks of >= 300: one UDF, several Spark jobs
        written[engine] = store.read_scores(make_engine(url), TABLES).set_index("lead_id").sort_index()
    assert SparkSession.getActiveSession() is None, "the session the run started is stopped"

    pandas_rows, spark_rows = written["pandas"], written["spark"]
    assert len(pandas_rows) > 0 and list(spark_rows.index) == list(pandas_rows.index)
    assert np.abs(spark_rows["probability"] - pandas_rows["probability"]).max() <= 1e-9
    for col in ("stage", "grade", "reasons_positive", "reasons_negative", "rule_score", "rule_mql"):
        assert spark_rows[col].tolist() == pandas_rows[col].tolist(), col
    assert pandas_rows["reasons_positive"].map(len).gt(0).any()  # the reasons are really compared


@pytest.mark.slow
@needs_spark
def test_spark_predictor_keeps_the_input_order_and_returns_what_the_model_returns(env: ScoreEnv) -> None:
    from mlflow import MlflowClient
    from pyspark.sql import SparkSession

    from pipelines.score.core import MODEL_OUTPUT, load_scoring_model
    from pipelines.score.spark import spark_predictor

    mlflow.set_tracking_uri(env.tracking_uri)
    mlflow.set_registry_uri(env.tracking_uri)
    model = load_scoring_model(
        "models:/lead-scoring@champion", MlflowClient(tracking_uri=env.tracking_uri, registry_uri=env.tracking_uri)
    )
    features = features_as_of(env.tables, pd.Timestamp(AS_OF), env.params.features)
    chunk = conform(features, model.schema).sample(frac=1.0, random_state=3).head(400).reset_index(drop=True)
    strings = [s.name for s in model.schema.inputs if s.type.name == "string"]
    numbers = [n for n in model.schema.input_names() if n not in strings]
    chunk.loc[::7, strings[0]] = None  # missing category
    chunk.loc[::5, numbers[0]] = np.nan  # missing number
    expected = model.predict(chunk)

    with pytest.raises(KeyError), spark_predictor(model, "local[2]") as predict:
        got = predict(chunk)
        again = predict(chunk.iloc[::-1].reset_index(drop=True))
        empty = predict(chunk.head(0))
        predict(chunk.drop(columns=numbers[0]))  # a failing chunk ends the run: the session must still stop
    assert SparkSession.getActiveSession() is None

    assert list(got.columns) == list(MODEL_OUTPUT) and len(got) == len(chunk)
    np.testing.assert_allclose(got["probability"], expected["probability"], rtol=0, atol=1e-12)
    for col in ("stage", "grade", "reasons_positive", "reasons_negative"):
        assert got[col].tolist() == [x if isinstance(x, str) else list(x) for x in expected[col]], col
    np.testing.assert_allclose(again["probability"], expected["probability"].to_numpy()[::-1], rtol=0, atol=1e-12)
    assert again["reasons_positive"].tolist() == got["reasons_positive"].tolist()[::-1]
    assert len(empty) == 0 and list(empty.columns) == list(MODEL_OUTPUT)


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
    from score_env import table_names

    return table_names(f"sqlite:///{db}")
