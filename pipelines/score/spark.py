"""The Spark engine of the nightly scorer: the registered model runs on Spark executors via `mlflow.pyfunc.spark_udf`.

Features are still built on the driver, chunk by chunk, by the same code as training (pipelines.score.run); each
conformed chunk becomes a Spark DataFrame, the model scores it on the executors (one UDF per run, the current
Python environment: env_manager="local"), and the rows come back in their input order. What `predict` returns is
exactly what the in-process `ScoringModel.predict` returns: probability, stage, grade and the two reason lists.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import numpy as np
import pandas as pd

from pipelines.errors import BadInputError
from pipelines.score.core import MODEL_OUTPUT, ScoringModel

log = logging.getLogger(__name__)

#: The UDF's result: the model's five outputs (pipelines.registry.model.OUTPUT_COLUMNS) as one struct.
RESULT_TYPE: Final = (
    "probability double, stage string, grade string, reasons_positive array<string>, reasons_negative array<string>"
)
#: Column carrying each input row's position through Spark, so the input order is restored after the UDF.
ROW_INDEX: Final = "__leadscore_row"
_RESULT: Final = "__leadscore_scored"
#: Rows per Spark task at least (Arrow's default batch): a small chunk is not split over tasks, each of which pays
#: a Python worker's cold start (import MLflow, load the model: seconds) for a few milliseconds of scoring.
ROWS_PER_TASK: Final = 10_000
#: pyspark.pandas warns this on every Arrow conversion under pandas 3 (pandera imports it too); it is noise here.
_PANDAS3_WARNING: Final = "PySpark does not yet fully support pandas"
_INSTALL_HINT: Final = 'pip install "lead-scoring[spark]" and Java 17 or later (JAVA_HOME or java on PATH)'


class SparkUnavailableError(BadInputError):
    """The Spark engine was asked for but cannot start here (pyspark not installed, or no Java)."""


@contextmanager
def _quiet_pandas3() -> Iterator[None]:
    """Hide pyspark's pandas-3 warnings (repeated on every conversion; nothing we can act on) while Spark runs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PANDAS3_WARNING, category=FutureWarning)
        warnings.filterwarnings("ignore", message="The copy keyword is deprecated", module=r"pyspark\.")
        yield


def _check_spark_available() -> None:
    """Fail with one clear message when pyspark or the Java runtime it drives is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailableError(
            '--engine spark needs pyspark, which is not installed: pip install "lead-scoring[spark]" '
            "(or score with --engine pandas)"
        ) from None
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        if not os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
            raise SparkUnavailableError(
                f"--engine spark needs Java 17+: JAVA_HOME={java_home} has no bin/java; "
                "point JAVA_HOME at a Java 17+ runtime (or score with --engine pandas)"
            )
    elif shutil.which("java") is None:
        raise SparkUnavailableError(
            "--engine spark needs Java 17+, and no java is on PATH and JAVA_HOME is not set: "
            "install a Java 17+ runtime (or score with --engine pandas)"
        )


def _session_builder(master: str) -> Any:
    """A SparkSession builder: quiet, Arrow on (no silent fallback), UTC, no UI, executors on this Python."""
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName("leadscore-score")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.fallback.enabled", "false")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .config("spark.executorEnv.PYTHONWARNINGS", f"ignore:{_PANDAS3_WARNING}:FutureWarning")
    )
    if master.startswith("local"):
        # local mode: keep the driver on the loopback interface (no hostname lookups, nothing listening outside)
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    return builder


@contextmanager
def _session(master: str) -> Iterator[Any]:
    """The active SparkSession if there is one (left running), else a new one on `master` (stopped on exit)."""
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        running = active.sparkContext.master
        if running != master:
            log.warning("reusing the running Spark session on %s (score.spark_master %s is ignored)", running, master)
        else:
            log.info("reusing the running Spark session on %s", running)
        yield active
        return
    t0 = time.perf_counter()
    # PySpark picks the workers' Python from PYSPARK_PYTHON (default: `python3` on PATH, which outside an
    # activated venv is a Python without this project's packages), not from spark.pyspark.python
    saved = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = saved or sys.executable
    try:
        with _quiet_pandas3():
            spark = _session_builder(master).getOrCreate()
    except PySparkRuntimeError as exc:  # the JVM did not come up: usually a missing or too old Java
        if "JAVA" not in str(exc).upper():
            raise
        raise SparkUnavailableError(f"Spark could not start on {master} ({exc}); it needs {_INSTALL_HINT}") from None
    finally:
        if saved is None:
            os.environ.pop("PYSPARK_PYTHON", None)
    try:
        spark.sparkContext.setLogLevel("ERROR")
        log.info("started Spark %s on %s in %.1f s", spark.version, master, time.perf_counter() - t0)
        yield spark
    finally:
        spark.stop()
        log.info("stopped the Spark session on %s", master)


def _input_schema(model: ScoringModel) -> Any:
    """The Spark schema of a chunk: the row index, then the model's inputs, all nullable (missing values are
    allowed; MLflow checks them against the signature inside the UDF, as in process)."""
    from pyspark.sql.types import LongType, StructField, StructType

    fields = [StructField(ROW_INDEX, LongType(), nullable=False)]
    for field in model.schema.as_spark_schema().fields:
        fields.append(StructField(field.name, field.dataType, nullable=True))
    return StructType(fields)


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _as_list(value: Any) -> list[str]:
    """A reasons cell from Arrow (numpy array, list or None) as a plain list of str, like the in-process model."""
    if value is None:
        return []
    return [str(v) for v in value]


def _restore(collected: pd.DataFrame, n: int) -> pd.DataFrame:
    """The UDF's rows back in input order, typed as `ScoringModel.predict` returns them."""
    ordered = collected.sort_values(ROW_INDEX, kind="stable").reset_index(drop=True)
    rows = ordered[ROW_INDEX].to_numpy(dtype=np.int64)
    if len(ordered) != n or not np.array_equal(rows, np.arange(n)):
        raise RuntimeError(f"Spark returned {len(ordered)} scored rows for {n} input rows (or lost some of them)")
    return pd.DataFrame(
        {
            "probability": ordered["probability"].to_numpy(dtype=float),
            "stage": ordered["stage"].astype(object).to_numpy(),
            "grade": ordered["grade"].astype(object).to_numpy(),
            "reasons_positive": [_as_list(v) for v in ordered["reasons_positive"]],
            "reasons_negative": [_as_list(v) for v in ordered["reasons_negative"]],
        },
        columns=list(MODEL_OUTPUT),
    )


@contextmanager
def spark_predictor(model: ScoringModel, master: str) -> Iterator[Callable[[pd.DataFrame], pd.DataFrame]]:
    """A `predict(conformed_features) -> model outputs` that scores each chunk with the model on Spark.

    One SparkSession (reused if one is running) and one `spark_udf` of the pinned model version for the whole run;
    the session is stopped on exit (also on error) when this function started it.
    """
    _check_spark_available()
    import mlflow.pyfunc
    from pyspark.sql import functions as F  # noqa: N812

    names = list(model.schema.input_names())
    if ROW_INDEX in names:
        raise BadInputError(f"{model.pinned_uri} has a feature named {ROW_INDEX!r}, which the Spark engine reserves")
    with _session(master) as spark:
        t0 = time.perf_counter()
        with _quiet_pandas3():
            udf = mlflow.pyfunc.spark_udf(spark, model.pinned_uri, result_type=RESULT_TYPE, env_manager="local")
        log.info("Spark UDF of %s ready in %.1f s", model.pinned_uri, time.perf_counter() - t0)
        schema = _input_schema(model)
        features = F.struct(*[F.col(_quoted(name)).alias(name) for name in names])
        chunks = 0

        def predict(conformed: pd.DataFrame) -> pd.DataFrame:
            nonlocal chunks
            n = len(conformed)
            if n == 0:
                return pd.DataFrame({c: pd.Series(dtype=float if c == "probability" else object) for c in MODEL_OUTPUT})
            frame = conformed[names].reset_index(drop=True)
            frame.insert(0, ROW_INDEX, np.arange(n, dtype=np.int64))
            with _quiet_pandas3():
                sdf = spark.createDataFrame(frame, schema=schema)
                tasks = -(-n // ROWS_PER_TASK)
                if tasks < spark.sparkContext.defaultParallelism:  # createDataFrame makes that many slices
                    sdf = sdf.coalesce(tasks)
                scored = sdf.select(F.col(ROW_INDEX), udf(features).alias(_RESULT)).select(ROW_INDEX, f"{_RESULT}.*")
                collected = scored.toPandas()
            out = _restore(collected, n)
            chunks += 1
            log.debug("Spark scored chunk %d: %d rows", chunks, n)
            return out

        try:
            yield predict
        finally:
            log.info("Spark engine scored %d chunk(s) with %s", chunks, model.pinned_uri)
