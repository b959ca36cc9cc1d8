"""Read the CRM for scoring as Arrow tables through ADBC (SQLite, PostgreSQL): whole-account chunks, no Python rows.

The plan: one grouped pass over `leads` (its account index) cuts the accounts into ranges of at least
`chunk_leads` leads, then the leads without an account into lead-id ranges; each chunk is then one range query
per table (`leads` by its account index, `activities` and `stage_history` joined to those leads by their
`lead_id` index, `accounts` by its key), fetched as one Arrow table. The database never sorts the event tables
and the client never holds more than a chunk and the ranges. The indexes that plan needs are
`pipelines.crm.db.SCORING_INDEXES` (docs/scoring.md); the demo writer creates them.

Each Arrow table is checked before it becomes a frame (key columns integers without NULLs, text valid UTF-8) and
then passes the CRM schemas like every other read, so a bad value is refused the same way: exit 2 naming table,
column and rows. The ADBC connection reads the state the preflight checked. The connection, the checks and the
conversion to frames are `pipelines.crm.arrow`'s, shared with the extract stage (re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy.engine import Connection

from pipelines.crm.arrow import check_arrow, connect, fetch, supports, to_frame, whole_table
from pipelines.crm.arrow import quoted as _q

log = logging.getLogger(__name__)


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
