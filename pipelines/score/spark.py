"""The Spark engine of the nightly scorer: the whole run (read, features, rules, model) on Spark executors.

The driver reads the CRM into Spark (the extract stage's validated Parquet snapshot, or PostgreSQL through JDBC),
checks what per-group validation cannot see (keys, lead references, the snapshot's row counts), and packs the
tables by whole-account groups (`score.chunk_leads` leads a group, on average). The executors run
`groupBy(group).applyInArrow` (the Arrow form of applyInPandas: nullable ids and nanosecond timestamps arrive
exactly) over `pipelines.score.groups.score_group`, i.e. the pandas engine's own core: features, rules, the model
(shipped to the executors with SparkContext.addFile and loaded there once per Python worker), the previous
cadence's stages. Spark writes the rows as Parquet into the run's staging folder; the driver reads them back in
bounded batches for the run's totals and drift and publishes through the same transaction as the pandas engine.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import Params
from pipelines.crm.schema import PRIMARY_KEYS, TABLES, UTC_NS
from pipelines.drift import SCORE
from pipelines.errors import BadInputError, CrmDataError
from pipelines.extract import read_manifest
from pipelines.rules import RuleSet, load_rules
from pipelines.score.core import ScoringModel
from pipelines.score.groups import (
    DRIFT_PREFIX,
    GROUP,
    GROUPED,
    PREV_RULE_MQL,
    PREV_STAGE,
    SECONDS_FEATURES,
    SECONDS_PREDICT,
    TAG,
    packed,
    read_columns,
    score_group,
    timestamp_columns,
    unpack,
)

log = logging.getLogger(__name__)

#: Group key of a lead without an account: its lead id above every account id (as the pandas engine's reader).
_KEY_SHIFT: Final = 62
_EXAMPLES: Final = 5
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


def _session_builder(master: str, jars: Sequence[str] = ()) -> Any:
    """A SparkSession builder: quiet, Arrow on (no silent fallback), UTC, no UI, executors on this Python, `jars`
    (a JDBC driver) on the classpath."""
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
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    if master.startswith("local"):
        # local mode: keep the driver on the loopback interface (no hostname lookups, nothing listening outside)
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    return builder


@contextmanager
def _session(master: str, jars: Sequence[str] = ()) -> Iterator[Any]:
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
            spark = _session_builder(master, jars).getOrCreate()
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


# ----------------------------------------------------------------------------------------------------------------
# Reading the CRM into Spark: the extract stage's Parquet snapshot, or the database through JDBC
# ----------------------------------------------------------------------------------------------------------------


def jdbc_options(crm_url: str) -> dict[str, str]:
    """Spark JDBC options (url, driver, user, password) of a PostgreSQL SQLAlchemy URL; SQLite and other
    databases are read through the Parquet snapshot (`leadscore extract`, then `--snapshot`)."""
    import sqlalchemy as sa

    url = sa.make_url(crm_url)
    if url.get_backend_name() != "postgresql":
        raise BadInputError(
            f"--engine spark reads a {url.get_backend_name()} CRM through its Parquet snapshot: run `leadscore "
            "extract --out data/raw` and score with --snapshot data/raw (JDBC is used for PostgreSQL only)"
        )
    query = dict(url.query)
    jdbc = f"jdbc:postgresql://{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
    options = {"url": jdbc, "driver": "org.postgresql.Driver", "user": url.username or os.environ.get("USER", "")}
    if url.password is not None:
        options["password"] = str(url.password)
    search_path = re.fullmatch(r"-csearch_path=(\w+)", str(query.get("options", "")))
    if search_path:
        options["currentSchema"] = search_path[1]
    return options


def _as_nanoseconds(sdf: Any, table: str) -> Any:
    """The table's read columns, timestamps as int64 nanoseconds (Parquet nanoseconds load as such already)."""
    from pyspark.sql import functions as F  # noqa: N812
    from pyspark.sql.types import TimestampNTZType, TimestampType

    types = {f.name: f.dataType for f in sdf.schema.fields}
    missing = [c for c in read_columns(table) if c not in types]
    if missing:
        raise CrmDataError(f"table '{table}' is missing column(s) {missing}; it has {sorted(types)}")
    columns = []
    for column in read_columns(table):
        if column in timestamp_columns(table) and isinstance(types[column], TimestampType | TimestampNTZType):
            columns.append((F.unix_micros(F.col(column).cast("timestamp")) * 1000).alias(column))
        else:
            columns.append(F.col(column))
    return sdf.select(*columns)


def read_tables(spark: Any, crm_url: str, snapshot: Path | None) -> dict[str, Any]:
    """The five tables as Spark DataFrames of their read columns: Parquet files of `snapshot`, else JDBC."""
    frames = {}
    if snapshot is not None:
        manifest = read_manifest(snapshot)
        for table in TABLES:
            path = Path(snapshot) / manifest["tables"][table]["file"]
            if not path.exists():
                raise CrmDataError(f"{path} not found: the snapshot in {snapshot} is incomplete")
            frames[table] = _as_nanoseconds(spark.read.parquet(str(path.resolve())), table)
        return frames
    options = jdbc_options(crm_url)
    for table in TABLES:
        reader = spark.read.format("jdbc").options(**options).option("dbtable", table).option("fetchsize", "20000")
        frames[table] = _as_nanoseconds(reader.load(), table)
    return frames


def preflight(tables: Mapping[str, Any], snapshot: Path | None) -> dict[str, int]:
    """What per-group validation cannot see, over whole tables: integer keys, no NULL or repeated key, no activity
    or stage entry of an unknown lead, and (snapshot) the manifest's row counts. Returns the row counts."""
    from pyspark.sql import functions as F  # noqa: N812
    from pyspark.sql.types import IntegralType

    manifest = read_manifest(snapshot) if snapshot is not None else None
    counts = {}
    for table, sdf in tables.items():
        counts[table] = sdf.count()
        if manifest is not None and counts[table] != manifest["tables"][table]["rows"]:
            raise CrmDataError(
                f"table '{table}' of {snapshot} holds {counts[table]:,} rows but the manifest says "
                f"{manifest['tables'][table]['rows']:,}: the snapshot is inconsistent"
            )
        key = PRIMARY_KEYS[table]
        for column in dict.fromkeys([key, *(["lead_id"] if "lead_id" in read_columns(table) else [])]):
            if not isinstance(sdf.schema[column].dataType, IntegralType):
                raise CrmDataError(
                    f"table '{table}', column '{column}' has type {sdf.schema[column].dataType.simpleString()}; "
                    "this key column needs an integer type (BIGINT)"
                )
            nulls = sdf.where(F.col(column).isNull()).count()
            if nulls:
                raise CrmDataError(f"table '{table}', column '{column}': {nulls} row(s) have no value (NULL)")
        repeated = sdf.groupBy(key).count().where(F.col("count") > 1).orderBy(key).limit(_EXAMPLES).collect()
        if repeated:
            shown = ", ".join(f"{key}={r[key]} ({r['count']} rows)" for r in repeated)
            raise CrmDataError(f"table '{table}', column '{key}': value(s) occur more than once; e.g. {shown}")
    leads = tables["leads"].select("lead_id")
    for table in ("activities", "stage_history"):
        key = PRIMARY_KEYS[table]
        orphans = tables[table].join(leads, "lead_id", "left_anti")
        rows = orphans.orderBy(key).limit(_EXAMPLES).collect()
        if rows:
            shown = ", ".join(f"{key}={r[key]} (lead_id={r['lead_id']})" for r in rows)
            raise CrmDataError(
                f"table '{table}', column 'lead_id': {orphans.count()} row(s) refer to leads that do not exist "
                f"in 'leads', e.g. {shown}"
            )
    return counts


def pack(tables: Mapping[str, Any], groups: int) -> Any:
    """The four account-grouped tables as one tagged DataFrame (pipelines.score.groups), each row in the bucket
    of its account (or, without one, of its lead): `groups` buckets of whole accounts."""
    from pyspark.sql import functions as F  # noqa: N812

    def bucket(key: Any) -> Any:
        return F.pmod(F.xxhash64(key.cast("long")), F.lit(groups)).cast("int")

    leads = tables["leads"]
    owner = F.when(F.col("account_id").isNull(), F.lit(1 << _KEY_SHIFT) + F.col("lead_id")).otherwise(
        F.col("account_id")
    )
    keyed = {
        "accounts": tables["accounts"].withColumn(GROUP, bucket(F.col("account_id"))),
        "leads": leads.withColumn(GROUP, bucket(owner)),
    }
    lead_group = keyed["leads"].select("lead_id", GROUP)
    for table in ("activities", "stage_history"):
        keyed[table] = tables[table].join(lead_group, "lead_id", "inner")
    stacked = None
    for code, table in enumerate(GROUPED):
        columns = [F.lit(code).cast("int").alias(TAG), F.col(GROUP)]
        for column in read_columns(table):
            value = F.col(column)
            if column in timestamp_columns(table) or column.endswith("_id") or column == "employee_count":
                value = value.cast("long")
            columns.append(value.alias(packed(table, column)))
        part = keyed[table].select(*columns)
        stacked = part if stacked is None else stacked.unionByName(part, allowMissingColumns=True)
    return stacked


# ----------------------------------------------------------------------------------------------------------------
# Scoring on the executors
# ----------------------------------------------------------------------------------------------------------------

#: Each Python worker loads the model once (workers are reused across tasks); keyed by the shipped folder's name.
_EXECUTOR_MODELS: dict[str, ScoringModel] = {}


@dataclass(frozen=True)
class ShippedModel:
    """How an executor finds the run's model: the folder shipped with SparkContext.addFile, and its identity."""

    folder: str
    uri: str
    pinned_uri: str
    name: str
    version: str


def executor_model(shipped: ShippedModel) -> ScoringModel:
    """The run's model in this Python worker (loaded from the shipped copy once, no registry needed)."""
    model = _EXECUTOR_MODELS.get(shipped.folder)
    if model is None:
        import mlflow.pyfunc
        from pyspark import SparkFiles

        pyfunc = mlflow.pyfunc.load_model(SparkFiles.get(shipped.folder))
        model = ScoringModel(
            uri=shipped.uri,
            pinned_uri=shipped.pinned_uri,
            name=shipped.name,
            version=shipped.version,
            pyfunc=pyfunc,
            schema=pyfunc.metadata.get_input_schema(),
            reference=None,
            feature_list_version=None,
        )
        _EXECUTOR_MODELS[shipped.folder] = model
    return model


def output_schema(drift: Sequence[tuple[str, str]]) -> pa.Schema:
    """The Arrow schema of the executors' rows: `lead_scores` columns, then the extras (pipelines.score.groups)."""
    stamp = pa.timestamp("us", tz="UTC")
    fields = [
        ("run_id", pa.string()),
        ("lead_id", pa.int64()),
        ("as_of", stamp),
        ("scored_at", stamp),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("probability", pa.float64()),
        ("stage", pa.string()),
        ("grade", pa.string()),
        ("rule_score", pa.float64()),
        ("rule_mql", pa.bool_()),
        ("reasons_positive", pa.string()),
        ("reasons_negative", pa.string()),
        ("crm_id", pa.string()),
        (PREV_STAGE, pa.string()),
        (PREV_RULE_MQL, pa.bool_()),
        (SECONDS_FEATURES, pa.float64()),
        (SECONDS_PREDICT, pa.float64()),
        *((DRIFT_PREFIX + name, pa.float64() if kind == "numeric" else pa.string()) for name, kind in drift),
    ]
    return pa.schema(fields)


def group_scorer(
    campaigns: pd.DataFrame,
    as_of: pd.Timestamp,
    params: Params,
    ruleset: RuleSet,
    shipped: ShippedModel,
    run: Mapping[str, Any],
    drift: Sequence[tuple[str, str]],
) -> Callable[[pa.Table], pa.Table]:
    """The function `applyInArrow` calls once per group: unpack, `score_group` (the pandas engine's core), Arrow."""
    schema = output_schema(drift)
    run = dict(run)

    def score(group: pa.Table) -> pa.Table:
        rows = score_group(unpack(group, campaigns), as_of, params, ruleset, executor_model(shipped), run, drift)
        if rows.empty:
            return schema.empty_table()
        return pa.Table.from_pandas(rows[schema.names], preserve_index=False).cast(schema)

    return score


def _bad_input(exc: Exception) -> BadInputError | None:
    """The CRM error an executor raised (Spark wraps it with the Python traceback), as the driver's own."""
    text = str(exc)
    if "ClassNotFoundException: org.postgresql.Driver" in text:
        return BadInputError(
            "Spark has no PostgreSQL JDBC driver: put its jar in score.spark_jars (e.g. postgresql-42.7.13.jar; it "
            "is loaded when the JVM starts, so not by a Spark session already running in this process), or score "
            "the Parquet snapshot with --snapshot"
        )
    for line in reversed(text.splitlines()):
        match = re.search(r"(?:CrmDataError|BadInputError): (.*)$", line)
        if match:
            return CrmDataError(match[1])
    return None


#: Session settings of a run (restored afterwards, for a session that was already running): Parquet nanosecond
#: timestamps load as int64 (exact), Spark writes microsecond timestamps pyarrow reads as UTC.
_RUN_CONF: Final[dict[str, str]] = {
    "spark.sql.legacy.parquet.nanosAsLong": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.shuffle.partitions": "200",
}


@contextmanager
def _sql_conf(spark: Any, settings: Mapping[str, str]) -> Iterator[None]:
    """Set session SQL settings for the block, then put back what was there."""
    saved = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


@contextmanager
def score_on_spark(
    crm_url: str,
    snapshot: Path | None,
    as_of: pd.Timestamp,
    params: Params,
    model: ScoringModel,
    run: Mapping[str, Any],
    staging: Path,
    guard: Callable[[dict[str, int]], None] | None = None,
) -> Iterator[SparkScored]:
    """Score every open lead on Spark: read, check, pack by whole-account groups, `applyInArrow` the pandas
    engine's core on the executors, and write the rows as Parquet into `staging`; yields what was written."""
    _check_spark_available()
    import mlflow.artifacts
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    drift = [(b.name, b.kind) for b in model.reference.bins if b.name != SCORE] if model.reference else []
    if snapshot is None:
        jdbc_options(crm_url)  # a CRM Spark cannot read by JDBC is refused before a session starts
    else:
        read_manifest(snapshot)  # not a snapshot: names the folder and says to run `leadscore extract`
    with _session(params.score.spark_master, params.score.spark_jars) as spark, _sql_conf(spark, _RUN_CONF):
        t0 = time.perf_counter()
        try:
            tables = read_tables(spark, crm_url, snapshot)
            counts = preflight(tables, snapshot)
            if guard is not None:
                guard(counts)
            campaigns = tables["campaigns"].toPandas()
            groups = max(1, -(-counts["leads"] // params.score.chunk_leads))
            spark.conf.set("spark.sql.shuffle.partitions", str(groups))  # restored by _sql_conf
            folder = f"leadscore-model-{model.name}-{model.version}-{uuid.uuid4().hex[:8]}"
            local = mlflow.artifacts.download_artifacts(artifact_uri=model.pinned_uri, dst_path=str(staging / folder))
            spark.sparkContext.addFile(local, recursive=True)
            shipped = ShippedModel(Path(local).name, model.uri, model.pinned_uri, model.name, model.version)
            seconds_read = time.perf_counter() - t0
            scorer = group_scorer(
                campaigns, as_of, params, load_rules(params.rules.file, params.features.icp), shipped, run, drift
            )
            from pyspark.sql.pandas.types import from_arrow_schema

            schema = from_arrow_schema(output_schema(drift))
            out = staging / "spark-rows"
            t0 = time.perf_counter()
            with _quiet_pandas3():
                pack(tables, groups).groupBy(GROUP).applyInArrow(scorer, schema=schema).write.mode("overwrite").parquet(
                    str(out.resolve())
                )
        except (PySparkException, Py4JJavaError) as exc:
            bad = _bad_input(exc)
            if bad is None:
                raise
            raise bad from None
        log.info(
            "Spark scored %s leads in %d whole-account group(s) on %s in %.1f s (read and checks %.1f s)",
            f"{counts['leads']:,}",
            groups,
            params.score.spark_master,
            time.perf_counter() - t0,
            seconds_read,
        )
        yield SparkScored(counts=counts, groups=groups, folder=out, drift=tuple(drift), seconds_read=seconds_read)


@dataclass(frozen=True)
class SparkScored:
    """What a Spark run wrote: the tables' row counts, the number of groups, the folder of Parquet rows."""

    counts: dict[str, int]
    groups: int
    folder: Path
    drift: tuple[tuple[str, str], ...]
    seconds_read: float

    def batches(self, rows: int) -> Iterator[pd.DataFrame]:
        """The written rows, at most `rows` at a time (memory bounded whatever the partitions' sizes)."""
        for path in sorted(self.folder.glob("part-*.parquet")):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
                frame = batch.to_pandas()
                for column in ("as_of", "scored_at"):
                    frame[column] = frame[column].astype(UTC_NS)
                yield frame
