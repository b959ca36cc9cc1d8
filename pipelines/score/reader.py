"""Read the CRM for scoring in chunks of whole accounts, in one pass, with memory bounded by the chunk size.

The database sorts: leads, their activities and stage entries, and accounts stream in the same order (account,
then lead; leads without an account form their own group after the accounts), each through one cursor of one
read transaction, so every chunk sees the same consistent state and the client never holds more than a chunk.
A chunk holds at least `chunk_leads` leads (whole accounts: account features need every lead of the account).

Before the first chunk, `preflight` checks what per-chunk validation cannot see: every table and column is
there, the key columns the database sorts and joins on hold integers, no key is NULL or used twice anywhere in
its table (a duplicate lead could otherwise land in two chunks), and no activity or stage entry points at a lead
that does not exist.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipelines.crm.db import display_url, read_errors
from pipelines.crm.schema import PERSONAL_COLUMNS, PRIMARY_KEYS, SCHEMAS, CrmDataError, validate_crm
from pipelines.features.columns import INPUT_COLUMNS
from pipelines.score import arrow_reader

log = logging.getLogger(__name__)
T = TypeVar("T")

_FETCH: Final = 20_000
#: Group key: (no account, account id or, without an account, lead id), packed into one int64.
_KEY_SHIFT: Final = 62
_EXAMPLES: Final = 5
#: Integer columns the database sorts, groups and joins on while streaming: checked over whole tables first.
KEY_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "campaigns": ("campaign_id",),
    "accounts": ("account_id",),
    "leads": ("lead_id", "account_id"),
    "activities": ("activity_id", "lead_id"),
    "stage_history": ("stage_history_id", "lead_id"),
}


def _columns(table: str) -> list[str]:
    """The columns scoring reads: the keys, then the features' and rules' explicit list, never whole tables (no
    status); the keys name the rows of any error."""
    return list(dict.fromkeys([*KEY_COLUMNS[table], *INPUT_COLUMNS[table]]))


def _relation(table: str, extra: Sequence[str] = ()) -> sa.TableClause:
    """An untyped table clause: values come back as the driver returns them (no per-value conversion)."""
    return sa.table(table, *(sa.column(c) for c in dict.fromkeys([*_columns(table), *extra])))


def preflight(conn: Connection) -> dict[str, int]:
    """Check tables, columns, keys and lead references; return each table's row count. CrmDataError names the
    table, the column and example rows of the first problem found."""
    inspector = sa.inspect(conn)
    url = display_url(conn.engine.url)
    counts = {}
    declared: dict[str, dict[str, Any]] = {}
    for table in SCHEMAS:
        if not inspector.has_table(table):
            raise CrmDataError(f"table '{table}' not found in {url}")
        declared[table] = {c["name"]: c["type"] for c in inspector.get_columns(table)}
        missing = [c for c in _columns(table) if c not in declared[table]]
        if missing:
            raise CrmDataError(f"table '{table}' is missing column(s) {missing}; it has {sorted(declared[table])}")
        counts[table] = int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar() or 0)
    for table, columns in KEY_COLUMNS.items():
        if table not in _EVENT_TABLES or conn.dialect.name != "sqlite":  # elsewhere the declared types say it all
            _check_keys(conn, table, columns, declared[table])
        _check_unique(conn, inspector, table, PRIMARY_KEYS[table])
    leads = _relation("leads")
    for table in _EVENT_TABLES:
        key = PRIMARY_KEYS[table]
        child = _relation(table, (key,))
        unknown = ~sa.exists().where(leads.c.lead_id == child.c.lead_id)
        # counted on lead_id alone (the lead_id index covers it: a fifth of a scan of the rows), examples only
        # when there is something to show
        total = conn.execute(sa.select(sa.func.count()).select_from(child).where(unknown)).scalar()
        if total:
            _check_keys(conn, table, KEY_COLUMNS[table], declared[table])  # a NULL or text lead_id, named as such
            rows = conn.execute(sa.select(child.c[key], child.c.lead_id).where(unknown).limit(_EXAMPLES)).all()
            examples = ", ".join(f"{key}={r[0]} (lead_id={r[1]})" for r in rows)
            raise CrmDataError(
                f"table '{table}', column 'lead_id': {total} row(s) refer to leads that do not exist "
                f"in 'leads', e.g. {examples}"
            )
    log.debug("preflight of %s: %s", url, ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    return counts


#: The event tables: every row with a known lead is read (and its keys checked, `arrow_reader.check_arrow` or the
#: schemas) in that lead's chunk, so on SQLite the whole-table key scan is needed only for rows of no known lead,
#: which the reference check counts anyway (a NULL or text lead_id matches no lead): the scan runs only then, to
#: name the problem exactly. At 1M leads that is 3 of the preflight's 9 s of CPU.
_EVENT_TABLES: Final[tuple[str, ...]] = ("activities", "stage_history")


def _check_keys(conn: Connection, table: str, columns: Sequence[str], declared: dict[str, Any]) -> None:
    """The key columns hold integers and the primary key and lead_id no NULL (one scan; details only for a
    problem)."""
    not_null = [c for c in columns if c in (PRIMARY_KEYS[table], "lead_id")]
    bad_types, nulls = _scan_keys(conn, table, columns, not_null)
    for column in columns:
        if bad_types.get(column) or conn.dialect.name != "sqlite":
            _check_integers(conn, table, column, declared[column])
    for column in not_null:
        if nulls.get(column):
            _check_not_null(conn, table, column)


def _problem(
    conn: Connection, query: sa.Select[*tuple[Any, ...]], table: str, column: str, what: str, show: Any
) -> None:
    """Raise CrmDataError with the count and first rows of `query` (rows that break a rule), if there are any."""
    rows = conn.execute(query.limit(_EXAMPLES)).all()
    if rows:
        total = conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar()
        raise CrmDataError(
            f"table '{table}', column '{column}': {total} {what}; e.g. " + ", ".join(show(r) for r in rows)
        )


def _scan_keys(
    conn: Connection, table: str, columns: Sequence[str], not_null: Sequence[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Per column, how many values are not integers (SQLite only) and how many are NULL: one scan of the table."""
    rel = _relation(table, KEY_COLUMNS[table])
    counts = []
    if conn.dialect.name == "sqlite":
        counts += [
            sa.func.sum(sa.case((sa.func.typeof(rel.c[c]).not_in(["integer", "null"]), 1), else_=0)) for c in columns
        ]
    counts += [sa.func.sum(sa.case((rel.c[c].is_(None), 1), else_=0)) for c in not_null]
    row = conn.execute(sa.select(*counts).select_from(rel)).one()
    values = [int(v or 0) for v in row]
    types = dict(zip(columns, values, strict=False)) if conn.dialect.name == "sqlite" else {}
    return types, dict(zip(not_null, values[len(types) :], strict=True))


def _check_integers(conn: Connection, table: str, column: str, declared: Any) -> None:
    """A key column must hold integers: SQLite keeps any value in any column, other databases keep the type."""
    key = PRIMARY_KEYS[table]
    rel = _relation(table, KEY_COLUMNS[table])
    if conn.dialect.name == "sqlite":
        query = sa.select(rel.c[key], rel.c[column]).where(
            rel.c[column].is_not(None), sa.func.typeof(rel.c[column]) != "integer"
        )
        shown = (lambda r: f"{key}={r[0]!r}") if column == key else (lambda r: f"{key}={r[0]!r}: {r[1]!r}")
        _problem(conn, query, table, column, "value(s) are not integers", shown)
    elif not isinstance(declared, sa.Integer):
        raise CrmDataError(
            f"table '{table}', column '{column}' has type {declared}; this key column needs an integer type (BIGINT)"
        )


def _check_not_null(conn: Connection, table: str, column: str) -> None:
    rel = _relation(table, KEY_COLUMNS[table])
    context = [c for c in _columns(table) if c != column and c not in PERSONAL_COLUMNS.get(table, ())][:3]
    query = sa.select(*(rel.c[c] for c in context)).where(rel.c[column].is_(None))
    _problem(
        conn,
        query,
        table,
        column,
        "row(s) have no value (NULL)",
        lambda r: "(" + ", ".join(f"{c}={v!r}" for c, v in zip(context, r, strict=True)) + ")",
    )


def _check_unique(conn: Connection, inspector: Any, table: str, key: str) -> None:
    """No key value twice in the whole table (skipped when a primary key or unique index already guarantees it)."""
    if (
        inspector.get_pk_constraint(table).get("constrained_columns") == [key]
        or any(u.get("column_names") == [key] for u in inspector.get_unique_constraints(table))
        or any(i.get("unique") and i.get("column_names") == [key] for i in inspector.get_indexes(table))
    ):
        return
    rel = _relation(table, KEY_COLUMNS[table])
    query = (
        sa.select(rel.c[key], sa.func.count().label("n"))
        .group_by(rel.c[key])
        .having(sa.func.count() > 1)
        .order_by(rel.c[key])
    )
    _problem(conn, query, table, key, "value(s) occur more than once", lambda r: f"{key}={r[0]!r} ({r[1]} rows)")


def _group_key(leads: sa.TableClause) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    no_account = sa.case((leads.c.account_id.is_(None), 1), else_=0)
    return no_account.label("_g0"), sa.func.coalesce(leads.c.account_id, leads.c.lead_id).label("_g1")


class _Stream:
    """One ordered cursor read in batches, handing out rows up to a group key (a peek buffer keeps the rest)."""

    def __init__(self, conn: Connection, query: sa.Select[*tuple[Any, ...]], columns: list[str], table: str) -> None:
        self.conn, self.table = conn, table
        with read_errors(conn, {table: columns}):
            self.result = conn.execution_options(stream_results=True, yield_per=_FETCH).execute(query)
        self.columns = columns
        self.buffer: pd.DataFrame | None = None
        self.done = False

    def _fetch(self) -> pd.DataFrame | None:
        if self.done:
            return None
        with read_errors(self.conn, {self.table: self.columns}):
            rows = self.result.fetchmany(_FETCH)
        if not rows:
            self.done = True
            self.result.close()
            return None
        # column-wise from plain tuples: DataFrame.from_records probes each Row object and is 10x slower
        columns = list(zip(*rows, strict=True))
        frame = pd.DataFrame(
            {
                name: pd.Series(values, dtype=object)
                for name, values in zip([*self.columns, "_g0", "_g1"], columns, strict=True)
            }
        )
        frame["_key"] = (frame["_g0"].to_numpy(dtype=np.int64) << _KEY_SHIFT) | frame["_g1"].to_numpy(dtype=np.int64)
        return frame.drop(columns=["_g0", "_g1"])

    def take_upto(self, last_key: int) -> pd.DataFrame:
        """Every remaining row whose group key is <= last_key."""
        parts = []
        while True:
            if self.buffer is None:
                self.buffer = self._fetch()
                if self.buffer is None:
                    break
            keys = self.buffer["_key"].to_numpy()
            cut = int(np.searchsorted(keys, last_key, side="right"))
            parts.append(self.buffer.iloc[:cut])
            if cut < len(self.buffer):
                self.buffer = self.buffer.iloc[cut:]
                break
            self.buffer = None
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*self.columns, "_key"])

    def take_groups(self, at_least: int) -> tuple[pd.DataFrame, int | None]:
        """At least `at_least` rows (or all that remain), ending at a group boundary; and the last group key."""
        parts, n = [], 0
        while n < at_least:
            batch = self.buffer if self.buffer is not None else self._fetch()
            self.buffer = None
            if batch is None:
                break
            parts.append(batch)
            n += len(batch)
        if not parts:
            return pd.DataFrame(columns=[*self.columns, "_key"]), None
        frame = pd.concat(parts, ignore_index=True)
        keys = frame["_key"].to_numpy()
        if len(frame) > at_least:
            # cut after the group holding row `at_least`; the rest starts a new group and waits in the buffer
            last_key = int(keys[at_least - 1])
            cut = int(np.searchsorted(keys, last_key, side="right"))
            if cut < len(frame):
                self.buffer = frame.iloc[cut:].reset_index(drop=True)
                return frame.iloc[:cut], last_key
        last_key = int(keys[-1])
        # the last group may continue in the stream: read on until it ends
        frame = pd.concat([frame, self.take_upto(last_key)], ignore_index=True)
        return frame, last_key

    def close(self) -> None:
        """Release the cursor (also when the run stops early)."""
        if not self.done:
            self.result.close()
            self.done = True


@dataclass(frozen=True)
class CrmChunk:
    """One chunk's five CRM tables (validated, canonical dtypes) and its position in the run."""

    index: int
    tables: dict[str, pd.DataFrame]


def iter_chunks(
    conn: Connection,
    chunk_leads: int,
    campaigns: pd.DataFrame | None = None,
    counts: dict[str, int] | None = None,
    arrow: bool | None = None,
) -> Iterator[CrmChunk]:
    """The CRM in chunks of whole accounts, each validated with the CRM schemas (errors name table, column, row).

    `conn` should hold a read transaction (the preflight's, whose row `counts` it returned) so that all reads see
    one state of the database. SQLite and PostgreSQL are read as Arrow through ADBC when its driver is installed
    (`arrow`: None = whenever possible); other databases through SQLAlchemy's ordered cursors.
    """
    if arrow or (arrow is None and arrow_reader.supports(conn)):
        yield from _iter_arrow_chunks(conn, chunk_leads, campaigns, counts)
        return
    yield from _iter_row_chunks(conn, chunk_leads, campaigns)


def read_ahead(items: Iterator[T], depth: int = 1) -> Generator[T, None, None]:
    """`items`, produced in a background thread up to `depth` ahead of the consumer.

    Reading a chunk is mostly the database's and the Arrow driver's work, which release the GIL: on a machine with
    two cores the next chunk is read while this one is scored, so the run waits for the database only for the
    first chunk. Memory holds at most `depth` + 2 chunks (the one being scored, the queued ones, the one being
    read). An error in the reader reaches the consumer at the item where it happened; when the consumer stops
    early, the reader stops at its next item and `items` is closed in its own thread.
    """
    done = object()
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    break
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            put((done, exc))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        put((done, None))

    worker = threading.Thread(target=produce, name="leadscore-reader", daemon=True)
    worker.start()
    try:
        while True:
            item, error = handoff.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        worker.join()


#: Per table, the row order of a chunk read as Arrow: leads as the ordered cursors give them, events per lead.
_ARROW_ORDER: Final[dict[str, tuple[str, ...]]] = {
    "campaigns": (),
    "accounts": ("account_id",),
    "leads": ("account_id", "lead_id"),
    "activities": ("lead_id", "activity_id"),
    "stage_history": ("lead_id", "stage_history_id"),
}


def _not_null(table: str) -> list[str]:
    return [c for c in KEY_COLUMNS[table] if c in (PRIMARY_KEYS[table], "lead_id")]


def _iter_arrow_chunks(
    conn: Connection, chunk_leads: int, campaigns: pd.DataFrame | None, counts: dict[str, int] | None
) -> Iterator[CrmChunk]:
    """`iter_chunks` through ADBC: one range query per table and chunk, Arrow tables checked, then frames."""
    columns = {table: _columns(table) for table in SCHEMAS}
    with arrow_reader.connect(conn, counts) as adbc:
        if campaigns is None:
            data = arrow_reader.fetch(
                adbc,
                conn,
                arrow_reader.whole_table("campaigns", columns["campaigns"]),
                "campaigns",
                columns["campaigns"],
            )
            arrow_reader.check_arrow("campaigns", data, KEY_COLUMNS["campaigns"], _not_null("campaigns"))
            campaigns = arrow_reader.to_frame(data)
        chunks = arrow_reader.plan(adbc, conn, chunk_leads)
        log.debug("reading %d chunk(s) as Arrow", len(chunks))
        for index, (kind, first, last) in enumerate(chunks):
            tables = {"campaigns": campaigns, "accounts": pd.DataFrame(columns=columns["accounts"])}
            for table, sql in arrow_reader.chunk_queries(kind, first, last, columns, conn.dialect.name).items():
                data = arrow_reader.fetch(adbc, conn, sql, table, columns[table])
                arrow_reader.check_arrow(table, data, KEY_COLUMNS[table], _not_null(table))
                tables[table] = arrow_reader.to_frame(arrow_reader.sort_by(data, _ARROW_ORDER[table]))
            yield CrmChunk(index=index, tables=validate_crm(tables, columns))


def _iter_row_chunks(conn: Connection, chunk_leads: int, campaigns: pd.DataFrame | None) -> Iterator[CrmChunk]:
    """`iter_chunks` through SQLAlchemy: one ordered cursor per table, rows fetched in batches."""
    leads = _relation("leads")
    g0, g1 = _group_key(leads)
    order = (g0, g1, leads.c.lead_id)
    lead_stream = _Stream(
        conn, sa.select(*(leads.c[c] for c in _columns("leads")), g0, g1).order_by(*order), _columns("leads"), "leads"
    )
    children = {}
    for table in ("activities", "stage_history"):
        child = _relation(table)
        query = (
            sa.select(*(child.c[c] for c in _columns(table)), g0, g1)
            .select_from(child.join(leads, child.c.lead_id == leads.c.lead_id))
            .order_by(*order)
        )
        children[table] = _Stream(conn, query, _columns(table), table)
    accounts = _relation("accounts")
    account_stream = _Stream(
        conn,
        sa.select(
            *(accounts.c[c] for c in _columns("accounts")),
            sa.literal(0).label("_g0"),
            accounts.c.account_id.label("_g1"),
        ).order_by(accounts.c.account_id),
        _columns("accounts"),
        "accounts",
    )
    if campaigns is None:
        camp = _relation("campaigns")
        with read_errors(conn, {"campaigns": _columns("campaigns")}):
            rows = conn.execute(sa.select(*(camp.c[c] for c in _columns("campaigns")))).all()
        campaigns = pd.DataFrame.from_records(rows, columns=_columns("campaigns"))
    streams = [lead_stream, account_stream, *children.values()]
    try:
        index = 0
        while True:
            chunk_leads_frame, last_key = lead_stream.take_groups(chunk_leads)
            if last_key is None:
                break
            tables = {
                "campaigns": campaigns,
                "accounts": account_stream.take_upto(last_key).drop(columns="_key"),
                "leads": chunk_leads_frame.drop(columns="_key"),
                **{name: stream.take_upto(last_key).drop(columns="_key") for name, stream in children.items()},
            }
            yield CrmChunk(index=index, tables=validate_crm(tables, {t: _columns(t) for t in tables}))
            index += 1
    finally:
        for stream in streams:
            stream.close()


def read_group(conn: Connection, lead_id: int) -> dict[str, pd.DataFrame] | None:
    """The CRM rows one lead's features need, validated: its account and all of that account's leads (account
    features count colleagues), their events, and the campaigns; None when no lead has this id."""
    leads = _relation("leads")
    with read_errors(conn, {"leads": ["account_id"]}):
        found = conn.execute(sa.select(leads.c.account_id).where(leads.c.lead_id == int(lead_id))).first()
    if found is None:
        return None
    account = found[0]
    mine = leads.c.lead_id == int(lead_id) if account is None else leads.c.account_id == account
    tables: dict[str, pd.DataFrame] = {}
    queries: dict[str, sa.Select[*tuple[Any, ...]]] = {
        "leads": sa.select(*(leads.c[c] for c in _columns("leads"))).where(mine)
    }
    for table in ("activities", "stage_history"):
        child = _relation(table)
        queries[table] = (
            sa.select(*(child.c[c] for c in _columns(table)))
            .select_from(child.join(leads, child.c.lead_id == leads.c.lead_id))
            .where(mine)
        )
    accounts = _relation("accounts")
    queries["accounts"] = sa.select(*(accounts.c[c] for c in _columns("accounts"))).where(
        accounts.c.account_id == account if account is not None else sa.false()
    )
    campaigns = _relation("campaigns")
    queries["campaigns"] = sa.select(*(campaigns.c[c] for c in _columns("campaigns")))
    for table, query in queries.items():
        with read_errors(conn, {table: _columns(table)}):
            rows = conn.execute(query).all()
        tables[table] = pd.DataFrame.from_records(
            [tuple(r) for r in rows], columns=_columns(table), coerce_float=False
        ).astype(object)
    return validate_crm(tables, {t: _columns(t) for t in tables})
