"""Read the CRM for scoring in chunks of whole accounts, in one pass, with memory bounded by the chunk size.

The database sorts: leads, their activities and stage entries, and accounts stream in the same order (account,
then lead; leads without an account form their own group after the accounts), each through one cursor of one
read transaction, so every chunk sees the same consistent state and the client never holds more than a chunk.
A chunk holds at least `chunk_leads` leads (whole accounts: account features need every lead of the account).

Before the first chunk, `preflight` checks what per-chunk validation cannot see: every table and column is
there, and no activity or stage entry points at a lead that does not exist.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipelines.crm.db import display_url
from pipelines.crm.schema import SCHEMAS, CrmDataError, validate_crm
from pipelines.features.columns import INPUT_COLUMNS

log = logging.getLogger(__name__)

_FETCH: Final = 20_000
#: Group key: (no account, account id or, without an account, lead id), packed into one int64.
_KEY_SHIFT: Final = 62


def _columns(table: str) -> list[str]:
    """The columns scoring reads: the features' and rules' explicit list, never whole tables (no status)."""
    return list(INPUT_COLUMNS[table])


def _relation(table: str, extra: Sequence[str] = ()) -> sa.TableClause:
    """An untyped table clause: values come back as the driver returns them (no per-value conversion)."""
    return sa.table(table, *(sa.column(c) for c in dict.fromkeys([*_columns(table), *extra])))


def preflight(conn: Connection) -> dict[str, int]:
    """Check tables, columns and lead references; return each table's row count. CrmDataError names the problem."""
    inspector = sa.inspect(conn)
    url = display_url(conn.engine.url)
    counts = {}
    for table in SCHEMAS:
        if not inspector.has_table(table):
            raise CrmDataError(f"table '{table}' not found in {url}")
        have = {c["name"] for c in inspector.get_columns(table)}
        missing = [c for c in _columns(table) if c not in have]
        if missing:
            raise CrmDataError(f"table '{table}' is missing column(s) {missing}; it has {sorted(have)}")
        counts[table] = int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar() or 0)
    leads = _relation("leads")
    for table, key in (("activities", "activity_id"), ("stage_history", "stage_history_id")):
        child = _relation(table, (key,))
        orphans = (sa.select(child.c[key], child.c.lead_id)
                   .select_from(child.outerjoin(leads, child.c.lead_id == leads.c.lead_id))
                   .where(leads.c.lead_id.is_(None)))
        rows = conn.execute(orphans.limit(5)).all()
        if rows:
            total = conn.execute(sa.select(sa.func.count()).select_from(orphans.subquery())).scalar()
            examples = ", ".join(f"{key}={r[0]} (lead_id={r[1]})" for r in rows)
            raise CrmDataError(f"table '{table}', column 'lead_id': {total} row(s) refer to leads that do not exist "
                               f"in 'leads', e.g. {examples}")
    return counts


def _group_key(leads: sa.TableClause) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    no_account = sa.case((leads.c.account_id.is_(None), 1), else_=0)
    return no_account.label("_g0"), sa.func.coalesce(leads.c.account_id, leads.c.lead_id).label("_g1")


class _Stream:
    """One ordered cursor read in batches, handing out rows up to a group key (a peek buffer keeps the rest)."""

    def __init__(self, conn: Connection, query: sa.Select, columns: list[str]) -> None:
        self.result = conn.execution_options(stream_results=True, yield_per=_FETCH).execute(query)
        self.columns = columns
        self.buffer: pd.DataFrame | None = None
        self.done = False

    def _fetch(self) -> pd.DataFrame | None:
        if self.done:
            return None
        rows = self.result.fetchmany(_FETCH)
        if not rows:
            self.done = True
            self.result.close()
            return None
        # column-wise from plain tuples: DataFrame.from_records probes each Row object and is 10x slower
        columns = list(zip(*rows, strict=True))
        frame = pd.DataFrame({name: pd.Series(values, dtype=object)
                              for name, values in zip([*self.columns, "_g0", "_g1"], columns, strict=True)})
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


def iter_chunks(conn: Connection, chunk_leads: int, campaigns: pd.DataFrame | None = None) -> Iterator[CrmChunk]:
    """The CRM in chunks of whole accounts, each validated with the CRM schemas (errors name table, column, row).

    `conn` should hold a read transaction so that all streams see one state of the database.
    """
    leads = _relation("leads")
    g0, g1 = _group_key(leads)
    order = (g0, g1, leads.c.lead_id)
    lead_stream = _Stream(conn, sa.select(*(leads.c[c] for c in _columns("leads")), g0, g1).order_by(*order),
                          _columns("leads"))
    children = {}
    for table in ("activities", "stage_history"):
        child = _relation(table)
        query = (sa.select(*(child.c[c] for c in _columns(table)), g0, g1)
                 .select_from(child.join(leads, child.c.lead_id == leads.c.lead_id)).order_by(*order))
        children[table] = _Stream(conn, query, _columns(table))
    accounts = _relation("accounts")
    account_stream = _Stream(conn, sa.select(*(accounts.c[c] for c in _columns("accounts")),
                                             sa.literal(0).label("_g0"), accounts.c.account_id.label("_g1"))
                             .order_by(accounts.c.account_id), _columns("accounts"))
    if campaigns is None:
        camp = _relation("campaigns")
        campaigns = pd.DataFrame.from_records(conn.execute(sa.select(*(camp.c[c] for c in _columns("campaigns"))))
                                              .all(), columns=_columns("campaigns"))
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
            yield CrmChunk(index=index, tables=validate_crm(tables, INPUT_COLUMNS))
            index += 1
    finally:
        for stream in streams:
            stream.close()
