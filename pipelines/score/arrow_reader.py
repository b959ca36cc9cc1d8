"""Read the CRM for scoring as Arrow tables through ADBC (SQLite, PostgreSQL): whole-account chunks, no Python rows.

The plan: one grouped pass over `leads` (its account index) cuts the accounts into ranges of at least
`chunk_leads` leads, then the leads without an account into lead-id ranges; each chunk is then one range query
per table (`leads` by its account index, `activities` and `stage_history` joined to those leads by their
`lead_id` index, `accounts` by its key), fetched as one Arrow table. The database never sorts the event tables
and the client never holds more than a chunk and the ranges. The indexes that plan needs are
`pipelines.crm.db.SCORING_INDEXES` (docs/scoring.md); the demo writer creates them.

Each Arrow table is checked before it becomes a frame (key columns integers without NULLs, text valid UTF-8) and
then passes the CRM schemas like every other read, so a bad value is refused the same way: exit 2 naming table,
column and rows. The ADBC connection reads the state the preflight checked: on PostgreSQL it adopts the
preflight transaction's exported snapshot; on SQLite the preflight's open read transaction holds off writers
(rollback journal), and the table counts are compared once more in WAL mode.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy.engine import Connection

from pipelines.crm.db import check_identifier, display_url, undecodable_text
from pipelines.crm.schema import PRIMARY_KEYS, CrmDataError
from pipelines.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

#: SQLite infers each Arrow column's type from the first batch: one batch per query, so a column is typed from
#: all its values (a later batch of another type would be an error, not a value the schemas can name).
_SQLITE_BATCH_ROWS: Final = 2**30
_SNAPSHOT: Final = re.compile(r"^[0-9A-Fa-f]+-[0-9A-Fa-f]+(?:-[0-9]+)?$")
_MISMATCH: Final = re.compile(r"Type mismatch in column (?P<index>\d+)")
_EXAMPLES: Final = 5


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


def _q(name: str, what: str = "column") -> str:
    """A checked identifier, double-quoted (both dialects): names come from code, never pasted unchecked."""
    return f'"{check_identifier(name, what)}"'


@contextmanager
def connect(conn: Connection, counts: dict[str, int] | None = None) -> Iterator[Any]:
    """An ADBC connection reading what `conn` (the preflight's open read transaction) reads."""
    url = conn.engine.url
    if conn.dialect.name == "postgresql":
        import adbc_driver_postgresql.dbapi as driver

        snapshot = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar())
        if not _SNAPSHOT.fullmatch(snapshot):
            raise RuntimeError(f"unexpected snapshot id {snapshot!r} from PostgreSQL")
        adbc = _open(driver, url.set(drivername="postgresql").render_as_string(hide_password=False), url)
        try:
            with adbc.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # checked above: hex digits and dashes
            yield adbc
        finally:
            adbc.close()
        return
    import adbc_driver_sqlite.dbapi as driver

    path = urllib.parse.quote(str(url.database))
    adbc = _open(driver, f"file:{path}?mode=ro", url)
    try:
        if counts is not None and str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() == "wal":
            # WAL lets a writer commit between the preflight and this connection's first read: same counts or stop
            with adbc.cursor() as cur:
                for table, n in counts.items():
                    cur.execute(f"SELECT COUNT(*) FROM {_q(table, 'table')}")
                    if int(cur.fetchone()[0]) != n:
                        raise CrmDataError(
                            f"table '{table}' changed while the scoring run started ({n:,} rows at the check, "
                            "then a different count): run again once the CRM load has finished"
                        )
        yield adbc
    finally:
        adbc.close()


def _open(driver: Any, uri: str, url: Any) -> Any:
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


def _undecodable(conn: Connection, table: str, columns: Sequence[str]) -> str:
    return undecodable_text(conn, {table: list(columns)}) or f"a text value is not UTF-8 in table '{table}'"


def _mixed_types(conn: Connection, table: str, column: str) -> str:
    """SQLite keeps any value in any column: name the values whose storage type is not the column's usual one."""
    key = PRIMARY_KEYS[table]
    t, c, k = _q(table, "table"), _q(column), _q(key)
    kinds = conn.exec_driver_sql(
        f"SELECT typeof({c}) AS kind, COUNT(*) AS n FROM {t} WHERE {c} IS NOT NULL GROUP BY kind ORDER BY n DESC"
    ).all()
    usual, rare = kinds[0][0], [str(r[0]) for r in kinds[1:]]
    rows = conn.exec_driver_sql(
        f"SELECT {k}, {c} FROM {t} WHERE {c} IS NOT NULL AND typeof({c}) != ? LIMIT {_EXAMPLES}", (usual,)
    ).all()
    total = sum(int(r[1]) for r in kinds[1:])
    shown = ", ".join(f"{key}={r[0]!r}: {r[1]!r}" for r in rows)
    return f"table '{table}', column '{column}': {total} value(s) are {'/'.join(rare)}, not {usual}; e.g. {shown}"


def check_arrow(table: str, data: pa.Table, keys: Sequence[str], not_null: Sequence[str]) -> None:
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


def to_frame(data: pa.Table) -> pd.DataFrame:
    """The Arrow table as a frame without Python objects per value: integers nullable, text Arrow-backed."""
    frame: pd.DataFrame = data.to_pandas(types_mapper=lambda t: pd.Int64Dtype() if pa.types.is_integer(t) else None)
    return frame


def ranges(batches: Iterable[pa.RecordBatch], at_least: int) -> list[tuple[int, int]]:
    """Inclusive (first, last) id ranges of consecutive groups, each holding at least `at_least` rows (the last
    one: what remains). `batches` hold (id, rows) in increasing id order; only the ranges are kept."""
    out: list[tuple[int, int]] = []
    first: int | None = None
    need = at_least
    last = None
    for batch in batches:
        ids = batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(ids) == 0:
            continue
        cum = np.cumsum(batch.column(1).to_numpy(zero_copy_only=False).astype(np.int64))
        done, start = 0, 0  # rows of this batch already in a range; its first id not yet in one
        while start < len(ids):
            if first is None:
                first = int(ids[start])
            pos = int(np.searchsorted(cum, done + need, side="left"))
            if pos >= len(ids):
                need -= int(cum[-1]) - done
                break
            out.append((first, int(ids[pos])))
            first, done, start, need = None, int(cum[pos]), pos + 1, at_least
        last = int(ids[-1])
    if first is not None and last is not None:
        out.append((first, last))
    return out


def plan(adbc: Any, conn: Connection, chunk_leads: int) -> list[tuple[str, int | None, int | None]]:
    """The chunks: ("account", first, last) account-id ranges, then ("lead", first, last) ranges of the leads
    without an account, each of at least `chunk_leads` leads (whole accounts). The account ranges are contiguous
    and open at both ends (None), so every account row is read and checked once, with or without leads; when no
    lead has an account, the first chunk of leads takes every account ("lead+accounts")."""
    leads, account, lead = _q("leads", "table"), _q("account_id"), _q("lead_id")
    with adbc.cursor() as cur:
        cur.execute(
            f"SELECT {account}, COUNT(*) FROM {leads} WHERE {account} IS NOT NULL GROUP BY {account} ORDER BY {account}"
        )
        cuts = [last for _, last in ranges(cur.fetch_record_batch(), chunk_leads)]
    out: list[tuple[str, int | None, int | None]] = [
        ("account", None if i == 0 else cuts[i - 1] + 1, None if i == len(cuts) - 1 else last)
        for i, last in enumerate(cuts)
    ]
    with adbc.cursor() as cur:
        cur.execute(f"SELECT {lead}, 1 FROM {leads} WHERE {account} IS NULL ORDER BY {lead}")
        alone = ranges(cur.fetch_record_batch(), chunk_leads)
    out += [("lead" if out or i else "lead+accounts", a, b) for i, (a, b) in enumerate(alone)]
    return out


def _between(column: str, lo: int | None, hi: int | None) -> list[str]:
    """SQL conditions `column` >= lo and <= hi (None: no bound); the bounds are integers, formatted as such."""
    return ([f"{column} >= {int(lo)}"] if lo is not None else []) + (
        [f"{column} <= {int(hi)}"] if hi is not None else []
    )


def chunk_queries(
    kind: str, first: int | None, last: int | None, columns: dict[str, list[str]], dialect: str = "sqlite"
) -> dict[str, str]:
    """Per table, the SELECT of one chunk's rows (see `plan`); no `accounts` query for a chunk of leads without
    an account (unless it is "lead+accounts")."""
    account, lead = _q("account_id"), _q("lead_id")
    if kind == "account":
        where = " AND ".join([f"l.{account} IS NOT NULL", *_between(f"l.{account}", first, last)])
    else:
        where = " AND ".join([f"l.{account} IS NULL", *_between(f"l.{lead}", first, last)])

    def cols(table: str, alias: str) -> str:
        return ", ".join(f"{alias}.{_q(c)}" for c in columns[table])

    out = {"leads": f"SELECT {cols('leads', 'l')} FROM {_q('leads', 'table')} l WHERE {where}"}
    for table in ("activities", "stage_history"):
        if dialect == "postgresql":
            # an index scan by the chunk's lead ids: a join would be planned as a hash join over a sequential scan
            # of the whole event table, once per chunk (quadratic in the CRM); the array hides the count
            ids = f"ARRAY(SELECT l.{lead} FROM {_q('leads', 'table')} l WHERE {where})"
            out[table] = f"SELECT {cols(table, 'c')} FROM {_q(table, 'table')} c WHERE c.{lead} = ANY({ids})"
        else:  # SQLite: the leads by the account index, then each lead's events by the lead_id index
            out[table] = (
                f"SELECT {cols(table, 'c')} FROM {_q(table, 'table')} c "
                f"JOIN {_q('leads', 'table')} l ON c.{lead} = l.{lead} WHERE {where}"
            )
    if kind in ("account", "lead+accounts"):
        bounds = _between(f"a.{account}", first, last) if kind == "account" else []
        out["accounts"] = f"SELECT {cols('accounts', 'a')} FROM {_q('accounts', 'table')} a" + (
            f" WHERE {' AND '.join(bounds)}" if bounds else ""
        )
    return out


def whole_table(table: str, columns: Sequence[str]) -> str:
    """SELECT of the named columns of a whole (small) table."""
    return f"SELECT {', '.join(_q(c) for c in columns)} FROM {_q(table, 'table')}"


def sort_by(data: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Rows in a fixed order (the database's order of a join is whatever its plan gives)."""
    return data.sort_by([(k, "ascending") for k in keys]) if data.num_rows else data


__all__ = [
    "check_arrow",
    "chunk_queries",
    "connect",
    "fetch",
    "plan",
    "ranges",
    "sort_by",
    "supports",
    "to_frame",
    "whole_table",
]
