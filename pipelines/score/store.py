"""Where nightly scores live: the `lead_scores` history, the `scoring_runs` log, the latest-run view, the run lock.

A run becomes visible in one transaction: the previous rows of the same (as_of, model name, model version,
production or not) are deleted, the new rows inserted (COPY on PostgreSQL) and the run logged, all or nothing. A
crash or `kill -9` before the commit leaves the last complete run as it was. Names come from params, are checked as
plain identifiers and are quoted by the dialect; values always travel as bound parameters.

The latest view shows production runs only (`scoring_runs.production`: the champion, outside `dvc exp run`); runs
logged before that column existed have NULL there and count as production, which is what they were meant to be.

Migration: the same transaction first adds (nullable, `ALTER TABLE ... ADD COLUMN`) any column of SCORE_COLUMNS or
RUN_COLUMNS an existing table lacks, and re-creates the latest view when its definition is not this version's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd
import sqlalchemy as sa
from filelock import FileLock, Timeout
from sqlalchemy.engine import Connection, Engine

from pipelines.config import ScoreTables
from pipelines.crm.db import check_identifier, display_url, insert_frame
from pipelines.errors import BadInputError

log = logging.getLogger(__name__)

#: lead_scores columns, in order.
SCORE_COLUMNS: Final[dict[str, sa.types.TypeEngine[Any]]] = {
    "run_id": sa.Text(),
    "lead_id": sa.BigInteger(),
    "as_of": sa.DateTime(timezone=True),
    "scored_at": sa.DateTime(timezone=True),
    "model_name": sa.Text(),
    "model_version": sa.Text(),
    "probability": sa.Float(),
    "stage": sa.Text(),
    "grade": sa.Text(),
    "rule_score": sa.Float(),
    "rule_mql": sa.Boolean(),
    "reasons_positive": sa.Text(),
    "reasons_negative": sa.Text(),
    "crm_id": sa.Text(),  # the CRM's own lead id (an imported CRM's text key), for `leadscore export`
}
#: scoring_runs columns, in order.
RUN_COLUMNS: Final[dict[str, sa.types.TypeEngine[Any]]] = {
    "run_id": sa.Text(),
    "as_of": sa.DateTime(timezone=True),
    "started_at": sa.DateTime(timezone=True),
    "finished_at": sa.DateTime(timezone=True),
    "model_name": sa.Text(),
    "model_version": sa.Text(),
    "model_uri": sa.Text(),
    "engine": sa.Text(),
    "status": sa.Text(),
    "leads_read": sa.BigInteger(),
    "production": sa.Boolean(),
    "leads_scored": sa.BigInteger(),
    "n_mql": sa.BigInteger(),
    "n_sal": sa.BigInteger(),
    "n_sql": sa.BigInteger(),
    "n_rule_mql": sa.BigInteger(),
    "mean_probability": sa.Float(),
    "chunks": sa.BigInteger(),
    "seconds_read": sa.Float(),
    "seconds_features": sa.Float(),
    "seconds_predict": sa.Float(),
    "seconds_write": sa.Float(),
    "seconds_total": sa.Float(),
    "rows_per_second": sa.Float(),
    "psi_score": sa.Float(),
    "psi_max": sa.Float(),
    "psi_max_feature": sa.Text(),
    "drift": sa.Text(),
    "replaced_run_id": sa.Text(),
    "stage_volumes": sa.Text(),
}


class ScoringLockedError(RuntimeError):
    """Another scoring run holds the lock on the scores database."""


class ScoresTableError(BadInputError):
    """An existing scores table does not have the columns this version writes."""


def check_names(tables: ScoreTables) -> None:
    """Refuse table names that are not plain SQL identifiers (they come from params) or that are CRM tables
    (scores often go to the CRM's own database), before anything runs."""
    from pipelines.crm.attributes import ATTRIBUTES_TABLE
    from pipelines.crm.schema import TABLES

    reserved = {name.lower() for name in (*TABLES, ATTRIBUTES_TABLE)}
    for key in ("scores", "runs", "latest"):
        try:
            check_identifier(getattr(tables, key))
        except ValueError as exc:
            raise ScoresTableError(f"score.tables.{key}: {exc}") from None
        if getattr(tables, key).lower() in reserved:
            raise ScoresTableError(
                f"score.tables.{key}: '{getattr(tables, key)}' is a CRM table; choose a name that "
                f"is none of {sorted(reserved)}"
            )


def check_existing_names(engine: Engine, tables: ScoreTables) -> None:
    """Before a run does any work: names already taken in the scores database by something that is not ours
    (a table where the view goes, a view where a table goes, a table without the run's key columns)."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and (database in (None, "", ":memory:") or not Path(database).exists()):
        return  # a new scores database: nothing can clash, and looking would create the file
    inspector = sa.inspect(engine)
    views = set(inspector.get_view_names())
    where = display_url(engine.url)
    if inspector.has_table(tables.latest) and tables.latest not in views:
        raise ScoresTableError(
            f"'{tables.latest}' is a table in {where}, not the latest-scores view: choose another "
            "name (score.tables.latest)"
        )
    for key, columns in (("scores", ("run_id", "lead_id")), ("runs", ("run_id", "as_of"))):
        name = getattr(tables, key)
        if name in views:
            raise ScoresTableError(
                f"'{name}' is a view in {where}, not a table: choose another name (score.tables.{key})"
            )
        if inspector.has_table(name):
            have = {c["name"] for c in inspector.get_columns(name)}
            if not set(columns) <= have:
                raise ScoresTableError(
                    f"table '{name}' in {where} is not a scores table (no {list(columns)} "
                    f"columns): choose another name (score.tables.{key})"
                )


def _tables(tables: ScoreTables) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    scores = sa.Table(
        check_identifier(tables.scores),
        metadata,
        *(
            sa.Column(name, kind, primary_key=name in ("run_id", "lead_id"), autoincrement=False)
            for name, kind in SCORE_COLUMNS.items()
        ),
    )
    runs = sa.Table(
        check_identifier(tables.runs),
        metadata,
        *(sa.Column(name, kind, primary_key=name == "run_id") for name, kind in RUN_COLUMNS.items()),
    )
    sa.Index(check_identifier(f"ix_{tables.scores}_lead_id"[:63], "index"), scores.c.lead_id)
    return metadata, scores, runs


def _add_missing_columns(conn: Connection, table: sa.Table) -> list[str]:
    """Add the columns an existing table lacks (nullable; old rows get NULL); a missing key column is refused."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(table.name):
        return []
    have = {c["name"] for c in inspector.get_columns(table.name)}
    missing = [c for c in table.columns if c.name not in have]
    keys = [c.name for c in missing if c.primary_key]
    if keys:
        raise ScoresTableError(
            f"table '{table.name}' exists in {display_url(conn.engine.url)} but lacks key column(s) {keys}: "
            "point score.tables at another name, or rename the old table"
        )
    preparer = conn.dialect.identifier_preparer
    for column in missing:
        kind = column.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(
            f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
            f"{preparer.quote(check_identifier(column.name, 'column'))} {kind}"
        )
    if missing:
        log.info(
            "migrated table %s: added column(s) %s (NULL in existing rows)",
            table.name,
            ", ".join(c.name for c in missing),
        )
    return [c.name for c in missing]


def latest_view_sql(conn: Connection, tables: ScoreTables) -> str:
    """CREATE VIEW of the latest complete production run's rows, identifiers quoted by the dialect.

    A run is production when `production` is true, or NULL (runs logged before the column existed)."""
    q = conn.dialect.identifier_preparer.quote
    scores, runs, view = (q(check_identifier(n)) for n in (tables.scores, tables.runs, tables.latest))
    production = q("production")
    return (
        f"CREATE VIEW {view} AS SELECT s.* FROM {scores} s WHERE s.run_id = "
        f"(SELECT r.run_id FROM {runs} r WHERE r.{production} IS NULL OR r.{production} "
        "ORDER BY r.as_of DESC, r.finished_at DESC LIMIT 1)"
    )


def _view_marker(sql: str) -> str:
    """A stamp of the view's definition, kept as the view's comment where the database rewrites view SQL."""
    return f"leadscore latest view {hashlib.sha256(sql.encode()).hexdigest()[:16]}"


def _view_is_current(conn: Connection, view: str, sql: str) -> bool:
    """Whether the existing view is this version's: SQLite keeps the SQL as written; PostgreSQL rewrites it, so
    there the comment set at creation (`_view_marker`) tells."""
    inspector = sa.inspect(conn)
    definition = inspector.get_view_definition(view) or ""
    if " ".join(definition.split()).rstrip(";") == " ".join(sql.split()):
        return True
    if conn.dialect.name == "postgresql":
        return (inspector.get_table_comment(view).get("text") or "") == _view_marker(sql)
    return False


def ensure_schema(conn: Connection, tables: ScoreTables) -> tuple[sa.Table, sa.Table]:
    """Create or migrate the scores and runs tables and the latest view (inside the caller's transaction)."""
    metadata, scores, runs = _tables(tables)
    added = _add_missing_columns(conn, scores)  # PostgreSQL expands s.* at creation: new columns need a new view
    _add_missing_columns(conn, runs)
    metadata.create_all(conn, checkfirst=True)
    inspector = sa.inspect(conn)
    sql = latest_view_sql(conn, tables)
    view = conn.dialect.identifier_preparer.quote(check_identifier(tables.latest))
    if tables.latest in inspector.get_view_names():
        if not added and _view_is_current(conn, tables.latest, sql):
            return scores, runs
        conn.exec_driver_sql(f"DROP VIEW {view}")
        log.info("re-created view %s with this version's definition", tables.latest)
    elif inspector.has_table(tables.latest):
        raise ScoresTableError(f"'{tables.latest}' is a table, not the latest-scores view: choose another name")
    conn.exec_driver_sql(sql)
    if conn.dialect.name == "postgresql":  # the marker is hex digits and spaces: safe as a literal
        conn.exec_driver_sql(f"COMMENT ON VIEW {view} IS '{_view_marker(sql)}'")
    return scores, runs


def _same_run(
    conn: Connection, runs: sa.Table, as_of: pd.Timestamp, model_name: str, model_version: str, production: bool = True
) -> list[str]:
    """Run ids already stored for this as_of time, model version and kind (production or not; NULL counts as
    production), timestamps compared as UTC instants. An experiment's run never replaces a production one."""
    kind = (
        sa.or_(runs.c.production.is_(None), runs.c.production.is_(True)) if production else runs.c.production.is_(False)
    )
    query = sa.select(runs.c.run_id, runs.c.as_of).where(
        runs.c.model_name == model_name, runs.c.model_version == model_version, kind
    )
    found = conn.execute(query).all()
    if not found:
        return []
    stamps = pd.to_datetime(pd.Series([row.as_of for row in found]), utc=True, format="ISO8601")
    return [row.run_id for row, stamp in zip(found, stamps, strict=True) if stamp == as_of]


def publish_run(
    engine: Engine, tables: ScoreTables, run: Mapping[str, Any], chunks: Iterable[pd.DataFrame]
) -> list[str]:
    """Make a run visible atomically, replacing any earlier run of the same as_of and model version.

    Returns the replaced run ids. Nothing is visible to readers until the commit; on any error nothing changes.
    """
    as_of = pd.Timestamp(run["as_of"])
    with engine.begin() as conn:
        scores, runs = ensure_schema(conn, tables)
        replaced = _same_run(
            conn, runs, as_of, str(run["model_name"]), str(run["model_version"]), run.get("production") is not False
        )
        if replaced:
            conn.execute(scores.delete().where(scores.c.run_id.in_(replaced)))
            conn.execute(runs.delete().where(runs.c.run_id.in_(replaced)))
            log.info("replacing earlier run(s) %s of the same as-of time and model version", ", ".join(replaced))
        written = 0
        with _page_cache(conn):
            for chunk in chunks:
                insert_frame(conn, scores, chunk.reindex(columns=list(SCORE_COLUMNS)))  # optional columns: NULL
                written += len(chunk)
        row = {**run, "replaced_run_id": ",".join(replaced) or None}
        insert_frame(conn, runs, pd.DataFrame([{c: row.get(c) for c in RUN_COLUMNS}]).astype(_run_dtypes()))
    log.info("published run %s: %s rows in %s", run["run_id"], f"{written:,}", tables.scores)
    return replaced


#: SQLite page cache while a run's rows go in (KiB): the history's primary key and lead_id index are B-trees far
#: larger than the default 2 MiB cache, and each chunk's rows (sorted by lead) sweep them once; measured at 1M
#: leads, the second night's 824,007 rows into a history holding the first night's: 10.3 s from the last chunk to
#: the commit staged in account order with the default cache, 7.3 s with this cache, 6.1 s sorted by lead, 5.7 s
#: sorted with this cache (BENCHMARKS.md).
_SQLITE_PUBLISH_CACHE_KIB: Final = 131_072


@contextmanager
def _page_cache(conn: Connection) -> Iterator[None]:
    """A larger SQLite page cache on this connection for the block, the previous size put back afterwards."""
    if conn.dialect.name != "sqlite":
        yield
        return
    previous = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size = -{_SQLITE_PUBLISH_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {-2000 if previous is None else int(previous)}")


def set_run_value(engine: Engine, tables: ScoreTables, run_id: str, column: str, value: object) -> None:
    """Update one column of one logged run (its own small transaction)."""
    if column not in RUN_COLUMNS:
        raise ValueError(f"scoring_runs has no column {column!r}")
    _, _, runs = _tables(tables)
    with engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.run_id == run_id).values({column: value}))


def _run_dtypes() -> dict[str, str]:
    out = {}
    for name, kind in RUN_COLUMNS.items():
        if isinstance(kind, sa.DateTime):
            out[name] = "datetime64[ns, UTC]"
        elif isinstance(kind, sa.BigInteger):
            out[name] = "Int64"
        elif isinstance(kind, sa.Float):
            out[name] = "float64"
        else:
            out[name] = "object"
    return out


def read_runs(engine: Engine, tables: ScoreTables) -> pd.DataFrame:
    """The scoring_runs log (empty when no run happened yet), timestamps as UTC."""
    name = check_identifier(tables.runs)
    if not sa.inspect(engine).has_table(name):
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    _, _, runs = _tables(tables)
    have = {c["name"] for c in sa.inspect(engine).get_columns(name)}  # a table not migrated yet lacks new ones
    with engine.connect() as conn:
        frame = pd.read_sql_query(
            sa.select(*(c for c in runs.columns if c.name in have)).order_by(runs.c.as_of, runs.c.finished_at), conn
        )
    frame = frame.reindex(columns=list(RUN_COLUMNS))
    for col, kind in RUN_COLUMNS.items():
        if isinstance(kind, sa.DateTime):
            frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    return frame


def read_scores(engine: Engine, tables: ScoreTables, latest: bool = False) -> pd.DataFrame:
    """Stored scores (the whole history, or only the latest view), reasons decoded into lists."""
    name = check_identifier(tables.latest if latest else tables.scores)
    inspector = sa.inspect(engine)
    if not (inspector.has_table(name) or name in inspector.get_view_names()):
        return pd.DataFrame(columns=list(SCORE_COLUMNS))
    have = {c["name"] for c in inspector.get_columns(name)}  # a view made before crm_id existed lacks it
    relation = sa.table(name, *(sa.column(c) for c in SCORE_COLUMNS if c in have))
    with engine.connect() as conn:
        frame = pd.read_sql_query(sa.select(relation), conn)
    if "crm_id" not in frame.columns:
        frame["crm_id"] = None
    for col in ("as_of", "scored_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    frame["rule_mql"] = frame["rule_mql"].astype(bool)
    for col in ("reasons_positive", "reasons_negative"):
        frame[col] = frame[col].map(lambda text: json.loads(text) if isinstance(text, str) else [])
    return frame


def read_export_run(engine: Engine, tables: ScoreTables) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the run, its rows) to export: the latest run whose `production` column is true when the runs table has
    that column (runs of the champion), else the latest run. Only published (complete) runs are ever in the log."""
    runs_name, scores_name = check_identifier(tables.runs), check_identifier(tables.scores)
    inspector = sa.inspect(engine)
    if not inspector.has_table(runs_name) or not inspector.has_table(scores_name):
        raise ScoresTableError(f"no scoring run in {display_url(engine.url)}: run `leadscore score` first")
    run_columns = {c["name"] for c in inspector.get_columns(runs_name)}
    score_columns = {c["name"] for c in inspector.get_columns(scores_name)}
    runs = sa.table(runs_name, *(sa.column(c) for c in run_columns))
    query = sa.select(*runs.c).order_by(runs.c.as_of.desc(), runs.c.finished_at.desc()).limit(1)
    if "production" in run_columns:
        query = query.where(runs.c.production == sa.true())
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
        if row is None:
            what = "production (champion) run" if "production" in run_columns else "scoring run"
            raise BadInputError(f"no {what} in {display_url(engine.url)}: run `leadscore score` first")
        wanted = [c for c in SCORE_COLUMNS if c in score_columns]
        scores = sa.table(scores_name, *(sa.column(c) for c in wanted))
        frame = pd.read_sql_query(
            sa.select(*scores.c).where(scores.c.run_id == row["run_id"]).order_by(scores.c.lead_id), conn
        )
    if "crm_id" not in frame.columns:
        frame["crm_id"] = None
    for col in ("reasons_positive", "reasons_negative"):
        frame[col] = frame[col].map(lambda text: json.loads(text) if isinstance(text, str) else [])
    run = dict(row)
    run["as_of"] = pd.Timestamp(pd.to_datetime(run["as_of"], utc=True, format="ISO8601"))
    return run, frame


# ----------------------------------------------------------------------------------------------------------------
# The run lock
# ----------------------------------------------------------------------------------------------------------------


def _lock_key(database: str, schema: str, tables: ScoreTables) -> int:
    """A stable signed 64-bit advisory-lock key per scores table of one schema of one database."""
    digest = hashlib.sha256(f"leadscore.score:{database}:{schema}:{tables.scores}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _sqlite_lock_path(engine: Engine) -> Path | None:
    database = engine.url.database
    if database in (None, "", ":memory:"):
        return None
    return Path(database).with_name(Path(database).name + ".score.lock")


@contextmanager
def run_lock(engine: Engine, tables: ScoreTables) -> Iterator[None]:
    """Hold the scoring lock of the scores database for the block, or raise ScoringLockedError at once.

    PostgreSQL: a session advisory lock; SQLite: a `filelock` lock on `<db>.score.lock` beside the file (flock on
    POSIX, LockFileEx on Windows). Both die with the process, so a `kill -9` never leaves a stale lock behind.
    """
    dialect = engine.dialect.name
    if dialect == "postgresql":
        conn = engine.connect()
        try:
            database, schema = conn.execute(sa.text("SELECT current_database(), current_schema()")).one()
            key = _lock_key(database, schema or "", tables)
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
            conn.commit()
            if not got:
                locker = conn.execute(
                    sa.text(
                        "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a "
                        "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND "
                        "l.classid::text::bigint = :hi AND l.objid::text::bigint = :lo AND "
                        "l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                    ),
                    {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
                ).first()
                who = (
                    f" (backend pid {locker.pid}, connected {locker.backend_start:%Y-%m-%d %H:%M:%S})" if locker else ""
                )
                raise ScoringLockedError(
                    f"another scoring run is writing to {display_url(engine.url)} (database "
                    f"{database}, schema {schema}, table {tables.scores}){who}; this run "
                    "stopped without writing anything. Try again when it has finished."
                )
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
        finally:
            conn.close()
        return
    path = _sqlite_lock_path(engine) if dialect == "sqlite" else None
    if path is None:
        if dialect != "sqlite":
            log.warning("no run lock for %s databases: make sure only one scoring run writes at a time", dialect)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = path.with_name(path.name + ".holder")  # beside the lock: a failed attempt may truncate the lock file
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            who = holder.read_text().strip() or "unknown process"
        except FileNotFoundError:
            who = "a run that just finished"
        raise ScoringLockedError(
            f"another scoring run is writing to {display_url(engine.url)} ({who}, lock "
            f"file {path}); this run stopped without writing anything. Try again when it "
            "has finished."
        ) from None
    try:
        holder.write_text(
            f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n"
        )
        yield
    finally:
        holder.unlink(missing_ok=True)
        # removed while still held (a run that opened the old file notices and tries again); Windows refuses to
        # remove an open file, and filelock removes it there on release
        with suppress(OSError):
            path.unlink()
        lock.release()


# ----------------------------------------------------------------------------------------------------------------
# Backtests: one row per judged run (`leadscore backtest`, pipelines/backtest/)
# ----------------------------------------------------------------------------------------------------------------

#: SQL type of each kind of backtest field (`pipelines.backtest.core.FIELDS`).
_KIND_TYPES: Final[dict[str, sa.types.TypeEngine[Any]]] = {
    "text": sa.Text(),
    "timestamp": sa.DateTime(timezone=True),
    "bool": sa.Boolean(),
    "int": sa.BigInteger(),
    "float": sa.Float(),
}


def check_backtest_name(tables: ScoreTables, name: str) -> str:
    """The backtests table name (from params) if it is a plain identifier and none of the scores or CRM tables."""
    from pipelines.crm.attributes import ATTRIBUTES_TABLE
    from pipelines.crm.schema import TABLES

    try:
        check_identifier(name)
    except ValueError as exc:
        raise ScoresTableError(f"backtest.table: {exc}") from None
    taken = {n.lower() for n in (*TABLES, ATTRIBUTES_TABLE, tables.scores, tables.runs, tables.latest)}
    if name.lower() in taken:
        raise ScoresTableError(f"backtest.table: '{name}' is already a CRM or scores table; choose another name")
    return name


def _backtests_table(name: str, fields: Mapping[str, str]) -> sa.Table:
    return sa.Table(
        check_identifier(name),
        sa.MetaData(),
        *(sa.Column(field, _KIND_TYPES[kind], primary_key=field == "run_id") for field, kind in fields.items()),
    )


def write_backtests(
    engine: Engine, name: str, fields: Mapping[str, str], frame: pd.DataFrame, drop_run_ids: Iterable[str] = ()
) -> list[str]:
    """Replace the backtest rows of `frame`'s runs (and delete those of `drop_run_ids`: runs no longer stored) in
    one transaction: all or nothing. Creates the table, or adds columns an older one lacks. Returns the run ids
    whose earlier row was replaced."""
    table = _backtests_table(name, fields)
    run_ids = [str(r) for r in frame["run_id"]]
    with engine.begin() as conn:
        _add_missing_columns(conn, table)
        table.create(conn, checkfirst=True)
        replaced = [r for (r,) in conn.execute(sa.select(table.c.run_id).where(table.c.run_id.in_(run_ids)))]
        gone = [str(r) for r in drop_run_ids]
        conn.execute(table.delete().where(table.c.run_id.in_([*run_ids, *gone])))
        if len(frame):
            insert_frame(conn, table, frame.reindex(columns=list(fields)))
    if gone:
        log.info("removed the backtests of %d run(s) no longer in the runs log: %s", len(gone), ", ".join(gone))
    log.info("wrote %d backtest row(s) to %s (%d replaced)", len(frame), name, len(replaced))
    return replaced


def read_backtests(engine: Engine, name: str, fields: Mapping[str, str]) -> pd.DataFrame:
    """The backtests table (empty with `fields`' columns when absent), timestamps as UTC."""
    check_identifier(name)
    if not sa.inspect(engine).has_table(name):
        return pd.DataFrame(columns=list(fields))
    have = {c["name"] for c in sa.inspect(engine).get_columns(name)}
    table = _backtests_table(name, fields)
    with engine.connect() as conn:
        frame = pd.read_sql_query(sa.select(*(c for c in table.columns if c.name in have)), conn)
    frame = frame.reindex(columns=list(fields))
    for field, kind in fields.items():
        if kind == "timestamp":
            frame[field] = pd.to_datetime(frame[field], utc=True, format="ISO8601")
    return frame


def read_run_scores(engine: Engine, tables: ScoreTables, run_id: str, columns: Iterable[str]) -> pd.DataFrame:
    """The named `lead_scores` columns of one run's rows (one run at a time: memory bounded by a night's list)."""
    wanted = [c for c in columns if c in SCORE_COLUMNS]
    scores = sa.table(check_identifier(tables.scores), *(sa.column(c) for c in dict.fromkeys(["run_id", *wanted])))
    with engine.connect() as conn:
        frame = pd.read_sql_query(sa.select(*(scores.c[c] for c in wanted)).where(scores.c.run_id == run_id), conn)
    if "rule_mql" in frame.columns:
        frame["rule_mql"] = frame["rule_mql"].astype(bool)
    return frame
