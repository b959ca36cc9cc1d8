"""Read CRM tables as Arrow through ADBC (SQLite, PostgreSQL): typed column-wise batches, no Python row objects.

Shared by the extract stage (every table streamed in batches, `stream_table`) and nightly scoring's chunk reader
(`pipelines.score.arrow_reader`: one query per chunk and table, `fetch`). Every Arrow batch is checked before it
becomes a frame (text valid UTF-8; `check_arrow`: key columns integers without NULLs) and then passes the CRM
schemas like every other read, so a bad value is refused the same way: exit 2 naming table, column and rows.

The ADBC connection reads the state its SQLAlchemy connection holds: on PostgreSQL it adopts that transaction's
exported snapshot; on SQLite an open read transaction holds off writers (rollback journal), and the table counts
are compared once more in WAL mode.

SQLite's driver types each column of a result from its first batch (a column whose first rows are all NULL reads
as integers, and a later text value is then an error). `stream_table` therefore puts one row of typed constants
before the table's rows (dropped again), so each column takes the kind its schema declares, whatever the first
rows hold; `fetch` reads a whole query as one batch.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy.engine import Connection

from pipelines.crm.db import check_identifier, display_url, undecodable_text
from pipelines.crm.schema import PRIMARY_KEYS, SCHEMAS, TIMESTAMP_COLUMNS, CrmDataError
from pipelines.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

#: `fetch` reads one batch per query, so a column is typed from all its values (a later batch of another type
#: would be an error, not a value the schemas can name).
_SQLITE_BATCH_ROWS: Final = 2**30
_SNAPSHOT: Final = re.compile(r"^[0-9A-Fa-f]+-[0-9A-Fa-f]+(?:-[0-9]+)?$")
_MISMATCH: Final = re.compile(r"Type mismatch in column (?P<index>\d+)")
_EXAMPLES: Final = 5
#: SQLite storage classes (`typeof`) each kind of column accepts when streamed (integers read into real columns).
_STORED_AS: Final[dict[str, tuple[str, ...]]] = {
    "integer": ("integer",),
    "real": ("real", "integer"),
    "text": ("text",),
}


def supports(conn: Connection) -> bool:
    """Whether this connection's database has an ADBC driver installed (else the SQLAlchemy reader runs)."""
    name = conn.dialect.name
    try:
        if name == "sqlite":
            import adbc_driver_sqlite.dbapi  # noqa: F401

            return conn.engine.url.database not in (None, "", ":memory:")
        if name == "postgresql":
            import adbc_driver_postgresql.dbapi  # noqa: F401

            return True
    except ImportError:
        log.info("no ADBC driver for %s installed: reading through SQLAlchemy rows (slower)", name)
    return False


def quoted(name: str, what: str = "column") -> str:
    """A checked identifier, double-quoted (both dialects): names come from code, never pasted unchecked."""
    return f'"{check_identifier(name, what)}"'


@contextmanager
def connect(conn: Connection, counts: Mapping[str, int] | None = None) -> Iterator[Any]:
    """An ADBC connection reading what `conn` (an open read transaction) reads."""
    url = conn.engine.url
    if conn.dialect.name == "postgresql":
        import adbc_driver_postgresql.dbapi as pg_driver

        snapshot = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar())
        if not _SNAPSHOT.fullmatch(snapshot):
            raise RuntimeError(f"unexpected snapshot id {snapshot!r} from PostgreSQL")
        adbc = open_adbc(pg_driver, url.set(drivername="postgresql").render_as_string(hide_password=False), url)
        try:
            with adbc.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # checked above: hex digits and dashes
            yield adbc
        finally:
            adbc.close()
        return
    import adbc_driver_sqlite.dbapi as sqlite_driver

    path = urllib.parse.quote(str(url.database))
    adbc = open_adbc(sqlite_driver, f"file:{path}?mode=ro", url)
    try:
        if counts is not None and str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() == "wal":
            # WAL lets a writer commit between the check and this connection's first read: same counts or stop
            with adbc.cursor() as cur:
                for table, n in counts.items():
                    cur.execute(f"SELECT COUNT(*) FROM {quoted(table, 'table')}")
                    if int(cur.fetchone()[0]) != n:
                        raise CrmDataError(
                            f"table '{table}' changed while the run started ({n:,} rows at the check, "
                            "then a different count): run again once the CRM load has finished"
                        )
        yield adbc
    finally:
        adbc.close()


def open_adbc(driver: Any, uri: str, url: Any) -> Any:
    """driver.connect(uri); a refusal is one line naming the database (password masked), exit 2."""
    try:
        return driver.connect(uri)
    except Exception as exc:  # the ADBC error classes differ per driver
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatabaseUnavailableError(f"cannot open an ADBC connection to {display_url(url)}: {reason}") from None


def fetch(adbc: Any, conn: Connection, sql: str, table: str, columns: Sequence[str]) -> pa.Table:
    """One query as one Arrow table; driver failures on stored values become CrmDataError naming the rows."""
    with adbc.cursor() as cur:
        if conn.dialect.name == "sqlite":
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(_SQLITE_BATCH_ROWS)})
        try:
            cur.execute(sql)
            result = cur.fetch_arrow_table()
        except UnicodeDecodeError:
            raise CrmDataError(_undecodable(conn, table, columns)) from None
        except Exception as exc:  # the ADBC error classes differ per driver; only a type mismatch is ours to name
            match = _MISMATCH.search(str(exc))
            if match is None:
                raise
            raise CrmDataError(_mixed_types(conn, table, columns[int(match["index"])])) from None
    try:
        result.validate(full=True)  # UTF-8 of every string, offsets
    except pa.ArrowInvalid:
        raise CrmDataError(_undecodable(conn, table, columns)) from None
    return result.rename_columns(list(columns))


def column_kind(table: str, column: str) -> str:
    """How a CRM column is streamed: "integer", "real" or "text" (timestamps arrive as text on SQLite)."""
    if column in TIMESTAMP_COLUMNS[table]:
        return "text"
    dtype = str(SCHEMAS[table].columns[column].dtype).lower()
    if dtype.startswith("int"):
        return "integer"
    return "real" if dtype.startswith("float") else "text"


def stream_query(table: str, columns: Sequence[str], dialect: str) -> str:
    """The SELECT `stream_table` runs: the whole table in the database's own order; on SQLite text columns cast
    to text (as the schemas would coerce them) after one leading row of typed constants."""
    if dialect != "sqlite":
        return f"SELECT {', '.join(quoted(c) for c in columns)} FROM {quoted(table, 'table')}"
    constants = {"integer": "0", "real": "0.0", "text": "''"}
    header = ", ".join(constants[column_kind(table, c)] for c in columns)
    values = ", ".join(f"CAST({quoted(c)} AS TEXT)" if column_kind(table, c) == "text" else quoted(c) for c in columns)
    return f"SELECT {header} UNION ALL SELECT {values} FROM {quoted(table, 'table')}"


def stream_table(
    adbc: Any, conn: Connection, table: str, columns: Sequence[str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Every row of a CRM table as Arrow record batches of about `batch_rows` rows, in the database's order, each
    valid UTF-8; a stored value of the wrong kind is CrmDataError naming its rows."""
    sqlite = conn.dialect.name == "sqlite"
    with adbc.cursor() as cur:
        if sqlite:
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
        first = sqlite  # the typed leading row, dropped
        empty = True
        try:
            cur.execute(stream_query(table, columns, conn.dialect.name))
            reader = cur.fetch_record_batch()
            for batch in reader:
                if first:
                    batch, first = batch.slice(1), False
                try:
                    batch.validate(full=True)  # UTF-8 of every string, offsets
                except pa.ArrowInvalid:
                    raise CrmDataError(_undecodable(conn, table, columns)) from None
                batch = pa.RecordBatch.from_arrays(batch.columns, names=list(columns))
                for start in range(0, batch.num_rows, batch_rows):  # PostgreSQL's batches follow bytes, not rows
                    empty = False
                    yield batch.slice(start, batch_rows)
            if empty:  # no rows: one empty batch, so the table still has its columns
                schema = reader.schema
                yield pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], names=list(columns))
        except UnicodeDecodeError:
            raise CrmDataError(_undecodable(conn, table, columns)) from None
        except CrmDataError:
            raise
        except Exception as exc:  # the ADBC error classes differ per driver; only a type mismatch is ours to name
            match = _MISMATCH.search(str(exc))
            if match is None:
                raise
            column = columns[int(match["index"])]
            raise CrmDataError(_mixed_types(conn, table, column, column_kind(table, column))) from None


def _undecodable(conn: Connection, table: str, columns: Sequence[str]) -> str:
    return undecodable_text(conn, {table: list(columns)}) or f"a text value is not UTF-8 in table '{table}'"


def _mixed_types(conn: Connection, table: str, column: str, expected: str | None = None) -> str:
    """SQLite keeps any value in any column: name the values whose storage type is not the `expected` kind (by
    default the column's usual one)."""
    key = PRIMARY_KEYS[table]
    t, c, k = quoted(table, "table"), quoted(column), quoted(key)
    kinds = conn.exec_driver_sql(
        f"SELECT typeof({c}) AS kind, COUNT(*) AS n FROM {t} WHERE {c} IS NOT NULL GROUP BY kind ORDER BY n DESC"
    ).all()
    allowed = _STORED_AS[expected] if expected is not None else (str(kinds[0][0]),)
    rare = [str(r[0]) for r in kinds if str(r[0]) not in allowed]
    marks = ", ".join("?" for _ in allowed)
    rows = conn.exec_driver_sql(
        f"SELECT {k}, {c} FROM {t} WHERE {c} IS NOT NULL AND typeof({c}) NOT IN ({marks}) LIMIT {_EXAMPLES}", allowed
    ).all()
    total = sum(int(r[1]) for r in kinds if str(r[0]) not in allowed)
    shown = ", ".join(f"{key}={r[0]!r}: {r[1]!r}" for r in rows)
    return f"table '{table}', column '{column}': {total} value(s) are {'/'.join(rare)}, not {allowed[0]}; e.g. {shown}"


def check_arrow(table: str, data: pa.Table | pa.RecordBatch, keys: Sequence[str], not_null: Sequence[str]) -> None:
    """Before any frame exists: key columns hold integers (or nothing) and the not-null keys no NULL."""
    key = PRIMARY_KEYS[table]
    for column in keys:
        kind = data.schema.field(column).type
        if not (pa.types.is_integer(kind) or pa.types.is_null(kind)):
            values = data.column(column).to_pandas()
            numeric = pd.to_numeric(values, errors="coerce")
            bad = values.notna() & (numeric.isna() | (numeric % 1 != 0))
            shown = ", ".join(
                f"{key}={data.column(key)[int(i)].as_py()!r}: {values.iloc[int(i)]!r}"
                for i in np.flatnonzero(bad.to_numpy())[:_EXAMPLES]
            )
            raise CrmDataError(
                f"table '{table}', column '{column}': {int(bad.sum())} value(s) are not integers "
                f"(read as {kind}); e.g. {shown}"
            )
    for column in not_null:
        nulls = data.column(column).null_count
        if nulls:
            mask = data.column(column).is_null().to_numpy(zero_copy_only=False)
            other = [c for c in data.column_names if c != column][:3]
            shown = ", ".join(
                "(" + ", ".join(f"{c}={data.column(c)[int(i)].as_py()!r}" for c in other) + ")"
                for i in np.flatnonzero(mask)[:_EXAMPLES]
            )
            raise CrmDataError(f"table '{table}', column '{column}': {nulls} row(s) have no value (NULL); e.g. {shown}")


def to_frame(data: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """The Arrow data as a frame without Python objects per value: integers nullable, text Arrow-backed."""
    frame: pd.DataFrame = data.to_pandas(types_mapper=lambda t: pd.Int64Dtype() if pa.types.is_integer(t) else None)
    return frame


def whole_table(table: str, columns: Sequence[str]) -> str:
    """SELECT of the named columns of a whole (small) table."""
    return f"SELECT {', '.join(quoted(c) for c in columns)} FROM {quoted(table, 'table')}"


__all__ = [
    "check_arrow",
    "column_kind",
    "connect",
    "fetch",
    "open_adbc",
    "quoted",
    "stream_query",
    "stream_table",
    "supports",
    "to_frame",
    "whole_table",
]
