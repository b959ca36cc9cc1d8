"""Database I/O for the CRM through SQLAlchemy: engines, safe identifiers, atomic bulk writes, typed reads.

The only module that talks to a database. Table and column names are checked against a strict identifier
pattern and quoted by the dialect; values always travel as bound parameters or through COPY. Passwords are
masked whenever a URL is shown.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import PoolProxiedConnection

from pipelines.crm.schema import PRIMARY_KEYS, SCHEMAS, TABLES, CrmDataError, validate_crm, validate_table
from pipelines.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_INSERT_BATCH: Final = 200_000
#: (table, columns) of the indexes nightly scoring's chunk plan reads through (docs/scoring.md): the accounts'
#: leads by account, each lead's events by lead. Written with the CRM tables by the demo and the import.
SCORING_INDEXES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("leads", ("account_id", "lead_id")),
    ("activities", ("lead_id",)),
    ("stage_history", ("lead_id",)),
)
#: On SQLite the event indexes also carry every other column the scoring reader selects of their table
#: (`pipelines.score.reader`; a test keeps the two in step), so a chunk's events come from the index alone, in
#: (lead, time) order, without a visit to the table per row: a third of the reading work. PostgreSQL keeps them to
#: the key (a long `detail` could pass its index-row size limit).
COVERING_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "activities": ("occurred_at", "activity_type", "detail", "activity_id"),
    "stage_history": ("entered_at", "stage", "stage_history_id"),
}


def scoring_indexes(dialect: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`SCORING_INDEXES` as this database gets them: covering the reader's columns on SQLite."""
    if dialect != "sqlite":
        return SCORING_INDEXES
    return tuple((table, (*columns, *COVERING_COLUMNS.get(table, ()))) for table, columns in SCORING_INDEXES)


_MAX_EXAMPLES: Final = 5
_NOT_SQLITE: Final = frozenset({"file is not a database", "database disk image is malformed"})
#: SQLite's message when a TEXT value holds bytes that are not UTF-8 (it names the column, not the table).
_UNDECODABLE: Final = re.compile(r"Could not decode to UTF-8(?: column '(?P<column>[^']*)')?")


def check_identifier(name: str, what: str = "table") -> str:
    """`name` unchanged if it is a plain SQL identifier, else a ValueError that says why."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"{what} name {name!r} is not allowed: use letters, digits and underscores, starting with a letter "
            "or underscore, at most 63 characters"
        )
    return name


def display_url(url: str | sa.URL) -> str:
    """The URL with any password masked, fit for logs and error messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a non-numeric port
        return "<unparseable database URL>"


def make_engine(url: str, create_dirs: bool = False) -> Engine:
    """An engine whose transactions cover DDL too (SQLite needs explicit BEGIN for that)."""
    try:
        parsed = sa.make_url(url)
        parsed.get_dialect()  # an unknown dialect fails here, before any file or directory is made
    except (sa.exc.ArgumentError, ValueError, ImportError) as exc:
        raise CrmDataError(f"not a usable database URL {display_url(url)}: {exc}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if create_dirs:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CrmDataError(f"cannot create the folder of {display_url(url)}: {exc}") from None
        elif not path.exists():
            raise CrmDataError(f"database file {path} does not exist ({display_url(url)})")
    try:
        engine = sa.create_engine(parsed)
    except ImportError as exc:  # the dialect is known but its driver is not installed
        raise CrmDataError(
            f"not a usable database URL {display_url(url)}: {exc} (install the database driver)"
        ) from None

    @sa.event.listens_for(engine, "handle_error")
    def _unreachable(context: sa.engine.ExceptionContext) -> None:
        # No connection yet: the server is down, refuses us, or the database does not exist. One line, not a trace.
        text = str(context.original_exception).strip()
        reason = text.splitlines()[0] if text else type(context.original_exception).__name__
        if context.connection is None and not context.is_pre_ping:
            raise DatabaseUnavailableError(f"cannot connect to the database {display_url(parsed)}: {reason}")
        if parsed.get_backend_name() == "sqlite" and reason in _NOT_SQLITE:  # SQLite opens any file lazily
            raise DatabaseUnavailableError(f"{display_url(parsed)} is not a usable SQLite database: {reason}")

    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _no_implicit_transactions(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

    return engine


def _sql_type(dtype: np.dtype[Any] | pd.api.extensions.ExtensionDtype) -> sa.types.TypeEngine[Any]:
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return sa.DateTime(timezone=True)
    if pd.api.types.is_bool_dtype(dtype):
        return sa.Boolean()
    if pd.api.types.is_integer_dtype(dtype):
        return sa.BigInteger()
    if pd.api.types.is_float_dtype(dtype):
        return sa.Float()
    return sa.Text()


def table_for_frame(name: str, frame: pd.DataFrame, metadata: sa.MetaData, primary_key: str | None = None) -> sa.Table:
    """A SQLAlchemy table whose columns mirror the frame's dtypes."""
    check_identifier(name)
    columns = [
        sa.Column(
            check_identifier(str(col), "column"),
            _sql_type(frame[col].dtype),
            primary_key=(col == primary_key),
            autoincrement=False,
        )
        for col in frame.columns
    ]
    return sa.Table(name, metadata, *columns)


def _python_rows(frame: pd.DataFrame, dialect: str) -> Iterator[tuple[object, ...]]:
    """Rows as tuples of plain Python values with None for missing; timestamps as UTC text on SQLite."""
    columns: list[Iterable[object]] = []
    for col in frame.columns:
        values = frame[col]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            if dialect == "sqlite":
                utc = values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]")
                text = np.char.replace(np.datetime_as_string(utc, unit="us"), "T", " ").astype(object)
                text[values.isna().to_numpy()] = None
                columns.append(text)
            else:
                columns.append(values.astype(object).where(values.notna(), None).to_numpy())
        elif pd.api.types.is_integer_dtype(values.dtype) and not values.hasnans:
            columns.append(values.to_numpy(dtype=np.int64).tolist())
        else:
            columns.append(values.astype(object).where(values.notna(), None).tolist())
    return zip(*columns, strict=True)


def _copy_postgres(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    from psycopg import sql

    # An explicit NULL marker: with csv's default (an unquoted empty field) every "" would arrive as NULL.
    null = r"\N"
    # pandas-stubs leave a scalar out of DataFrame.eq's accepted types; pandas compares each cell with it
    if frame.select_dtypes(include=["object", "string"]).eq(null).any(axis=None):  # type: ignore[arg-type]
        null = f"\\N{uuid.uuid4().hex}"
    cursor = _dbapi(conn.connection).cursor()
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, NULL {})").format(
        sql.Identifier(table.name),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns),
        sql.Literal(null),
    )
    with cursor.copy(statement) as copy:
        for start in range(0, len(frame), _INSERT_BATCH):
            chunk = frame.iloc[start : start + _INSERT_BATCH]
            buffer = io.StringIO()
            chunk.to_csv(
                buffer,
                header=False,
                index=False,
                quoting=csv.QUOTE_MINIMAL,
                na_rep=null,
                date_format="%Y-%m-%d %H:%M:%S.%f%z",
            )
            copy.write(buffer.getvalue())


def _dbapi(connection: PoolProxiedConnection) -> Any:
    """The driver's own connection (psycopg, sqlite3); a checked-out pooled connection always has one."""
    driver = connection.driver_connection
    assert driver is not None, "a checked-out connection has a driver connection"
    return driver


def insert_frame(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """Bulk insert inside the caller's transaction: COPY on PostgreSQL, batched executemany elsewhere."""
    if frame.empty:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        _copy_postgres(conn, table, frame)
        return
    preparer = conn.dialect.identifier_preparer
    placeholders = ", ".join("?" if dialect == "sqlite" else "%s" for _ in table.columns)
    statement = (
        f"INSERT INTO {preparer.format_table(table)} "
        f"({', '.join(preparer.quote(c.name) for c in table.columns)}) VALUES ({placeholders})"
    )
    cursor = _dbapi(conn.connection).cursor()
    rows = _python_rows(frame, dialect)
    while True:
        batch = [row for _, row in zip(range(_INSERT_BATCH), rows, strict=False)]
        if not batch:
            break
        cursor.executemany(statement, batch)


def index_name(table: str, columns: Sequence[str]) -> str:
    """The name of the index of `columns` on `table` this project creates (a checked identifier)."""
    return check_identifier(f"ix_{table}_{'_'.join(columns)}"[:63], "index")


def replace_tables(
    engine: Engine,
    frames: Mapping[str, pd.DataFrame],
    primary_keys: Mapping[str, str] | None = None,
    indexes: Sequence[tuple[str, Sequence[str]]] = (),
) -> None:
    """Drop-and-recreate the given tables with the frames' rows and `indexes` (those on tables among `frames`),
    all in one transaction (all or nothing)."""
    primary_keys = primary_keys or {}
    metadata = sa.MetaData()
    tables = {name: table_for_frame(name, frame, metadata, primary_keys.get(name)) for name, frame in frames.items()}
    for indexed, columns in indexes:
        if indexed in tables:  # after the rows are in: one sorted build instead of one insert per row
            sa.Index(index_name(indexed, columns), *(tables[indexed].c[check_identifier(c, "column")] for c in columns))
    with engine.begin() as conn:
        for table in reversed(list(tables.values())):
            table.drop(conn, checkfirst=True)
        for name, table in tables.items():
            built = set(table.indexes)
            table.indexes.clear()
            table.create(conn)
            insert_frame(conn, table, frames[name])
            for index in built:
                index.create(conn)
            table.indexes.update(built)
            log.info("wrote %s rows to %s", f"{len(frames[name]):,}", name)


def check_columns(inspector: Any, name: str, columns: Sequence[str] | None, url: sa.URL) -> list[str]:
    """The named columns (default: all) of table `name`; CrmDataError names a missing table or column."""
    check_identifier(name)
    if not inspector.has_table(name):
        raise CrmDataError(f"table '{name}' not found in {display_url(url)}")
    have = [c["name"] for c in inspector.get_columns(name)]
    wanted = list(columns) if columns is not None else have
    missing = [c for c in wanted if c not in have]
    if missing:
        raise CrmDataError(f"table '{name}' is missing column(s) {missing}; it has {have}")
    return wanted


def read_table(engine: Engine, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The table's rows (all or the named columns); errors name the missing table or column.

    Columns are read untyped: values arrive as the driver stores them (SQLite timestamps as text), so a bad value
    reaches the schemas, which name table, column and rows, instead of failing inside a SQLAlchemy type converter.
    """
    wanted = check_columns(sa.inspect(engine), name, columns, engine.url)
    query: sa.Select[*tuple[Any, ...]] = sa.select(*(sa.column(c) for c in wanted)).select_from(sa.table(name))
    started = time.perf_counter()
    with engine.connect() as conn, read_errors(conn, {name: wanted}):
        frame = pd.read_sql_query(query, conn)
    log.debug(
        "read %s rows of %s (%d columns) in %.2f s", f"{len(frame):,}", name, len(wanted), time.perf_counter() - started
    )
    return frame


@contextmanager
def read_errors(conn: Connection, tables: Mapping[str, Sequence[str]]) -> Iterator[None]:
    """Turn a driver's failure to decode a stored value into CrmDataError naming table, column and rows.

    SQLite stores whatever bytes it is given in a TEXT column and fails only when a row is fetched, naming neither
    the table nor the row: the message is built by scanning the text columns of `tables` (the failure path only).
    """
    try:
        yield
    except (sa.exc.OperationalError, UnicodeDecodeError) as exc:
        text = str(exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc)
        match = _UNDECODABLE.search(text)
        if match is None and not isinstance(exc, UnicodeDecodeError):
            raise
        column = match["column"] if match else None
        raise CrmDataError(
            undecodable_text(conn, tables, column)
            or f"a text value is not UTF-8 in table(s) {sorted(tables)}: {text[:200]}"
        ) from None


def undecodable_text(conn: Connection, tables: Mapping[str, Sequence[str]], column: str | None = None) -> str | None:
    """Per table and text column, how many values are not UTF-8 text and example rows (None if none are found)."""
    if conn.dialect.name != "sqlite":
        return None
    raw = conn.engine.raw_connection()
    problems = []
    try:
        driver = _dbapi(raw)
        driver.text_factory = bytes
        for table, columns in tables.items():
            check_identifier(table)
            key = PRIMARY_KEYS.get(table)
            for col in columns:
                if (column is not None and col != column) or col == key:
                    continue
                check_identifier(col, "column")
                shown = f'"{key}", ' if key else ""
                cursor = driver.execute(f'SELECT {shown}"{col}" FROM "{table}" WHERE typeof("{col}") = \'text\'')
                bad: list[str] = []
                total = 0
                for row in cursor:
                    try:
                        row[-1].decode("utf-8")
                    except UnicodeDecodeError:
                        total += 1
                        if len(bad) < _MAX_EXAMPLES:
                            bad.append(f"{key}={row[0]!r}: {row[-1]!r}" if key else repr(row[-1]))
                if total:
                    problems.append(
                        f"table '{table}', column '{col}': {total} value(s) are not UTF-8 text; e.g. {', '.join(bad)}"
                    )
    finally:
        raw.close()
    return "\n".join(problems) or None


def read_crm_ids(engine: Engine, table: str = "lead_crm_ids") -> pd.Series | None:
    """The CRM's own lead ids (text) by integer lead_id, as `leadscore import` wrote them; None when absent."""
    check_identifier(table)
    if not sa.inspect(engine).has_table(table):
        return None
    frame = read_table(engine, table, ["lead_id", "crm_id"])
    return pd.Series(
        frame["crm_id"].astype("string").to_numpy(), index=frame["lead_id"].astype("int64").to_numpy(), name="crm_id"
    )


def read_crm(engine: Engine) -> dict[str, pd.DataFrame]:
    """The five CRM tables, validated and with canonical dtypes."""
    frames = {name: read_table(engine, name, list(SCHEMAS[name].columns)) for name in TABLES}
    started = time.perf_counter()
    checked = validate_crm(frames)
    log.debug("validated the five CRM tables in %.2f s", time.perf_counter() - started)
    return checked


def read_columns(url: str, columns: Mapping[str, Sequence[str]]) -> dict[str, pd.DataFrame]:
    """Only the named columns of the named CRM tables, each validated with its schema (errors name table, column
    and rows): for jobs that need a few columns of a CRM, not all of it."""
    engine = make_engine(url)
    try:
        return {name: validate_table(name, read_table(engine, name, cols), cols) for name, cols in columns.items()}
    finally:
        engine.dispose()


def write_crm(engine: Engine, tables: Mapping[str, pd.DataFrame]) -> None:
    """Validate then atomically replace the five CRM tables (with the indexes nightly scoring reads through)."""
    checked = validate_crm(tables)
    replace_tables(engine, checked, PRIMARY_KEYS, scoring_indexes(engine.dialect.name))


def write_crm_batches(engine: Engine, batches: Iterable[Mapping[str, pd.DataFrame]]) -> dict[str, int]:
    """Replace the five CRM tables with the rows of every batch (each validated on its own; campaigns, shared,
    from the first), in one transaction: memory holds one batch. The scoring indexes are built after the rows are
    in. Returns the rows written per table."""
    metadata = sa.MetaData()
    written: dict[str, int] = {}
    with engine.begin() as conn:
        tables: dict[str, sa.Table] = {}
        for batch in batches:
            checked = validate_crm(batch)
            if not tables:
                tables = {n: table_for_frame(n, f, metadata, PRIMARY_KEYS.get(n)) for n, f in checked.items()}
                for table in reversed(list(tables.values())):
                    table.drop(conn, checkfirst=True)
                for table in tables.values():
                    table.create(conn)
            for name, frame in checked.items():
                if name == "campaigns" and name in written:
                    continue
                insert_frame(conn, tables[name], frame)
                written[name] = written.get(name, 0) + len(frame)
        for table, columns in scoring_indexes(conn.dialect.name):  # after the rows are in: one build per index
            if table in tables:
                sa.Index(
                    index_name(table, columns), *(tables[table].c[check_identifier(c, "column")] for c in columns)
                ).create(conn)
    log.info("wrote %s", ", ".join(f"{n} {c:,}" for n, c in written.items()))
    return written
