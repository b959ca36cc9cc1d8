"""The CRM read table by table in validated batches, with memory bounded by the batch, not by the CRM.

`read_crm_batches` streams each of the five tables whole, in the database's own order (no ORDER BY: the database
never sorts), through ADBC as Arrow when a driver is installed (SQLite, PostgreSQL; `pipelines.crm.arrow`), else
through SQLAlchemy cursors, and hands out batches of about `BATCH_CELLS` values. One read transaction covers
every table, so the tables describe one state of the database; the rows read are compared with the counts taken
at its start.

`CrmChecker` applies the CRM contract of `pipelines.crm.schema.validate_crm` to such a stream: each batch is
validated with its table's schema (canonical dtypes out, errors naming table, column and rows), and what spans
batches is checked on the way: primary keys unique over the whole table, and references (a lead's account and
campaign, an event's lead) to the tables read before (campaigns, accounts and leads come first). The keys are
kept as bitmaps, one bit per possible id: 14 MB for 112 million activity ids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from tqdm.auto import tqdm

from pipelines.crm import arrow
from pipelines.crm.db import check_columns, read_errors
from pipelines.crm.schema import FOREIGN_KEYS, PRIMARY_KEYS, SCHEMAS, TABLES, CrmDataError, validate_table

log = logging.getLogger(__name__)

#: Values per batch (rows x columns): about 400,000 activities or 130,000 leads at a time.
BATCH_CELLS: Final = 2_000_000
#: Keys below this live in a bitmap (at most 256 MiB); larger ones, rare, are kept as values.
_BITMAP_KEYS: Final = 1 << 31
_EXAMPLES: Final = 5


class KeySet:
    """Non-negative integer keys seen so far: a bitmap of the keys below `_BITMAP_KEYS` (one bit per possible
    key up to the largest seen), the larger ones as a sorted array."""

    def __init__(self) -> None:
        self._bits = np.zeros(0, dtype=np.uint8)
        self._large = np.zeros(0, dtype=np.int64)

    def add(self, keys: np.ndarray) -> np.ndarray:
        """Add `keys` (distinct among themselves); return those that were already in the set."""
        keys = np.asarray(keys, dtype=np.int64)
        small = keys[keys < _BITMAP_KEYS]
        large = keys[keys >= _BITMAP_KEYS]
        seen = self.contains(keys)
        if len(small):
            need = int(small.max() >> 3) + 1
            if need > len(self._bits):  # grow geometrically: a few copies over a whole table
                grown = np.zeros(max(need, min(2 * len(self._bits), _BITMAP_KEYS >> 3)), dtype=np.uint8)
                grown[: len(self._bits)] = self._bits
                self._bits = grown
            np.bitwise_or.at(self._bits, small >> 3, np.left_shift(1, small & 7).astype(np.uint8))
        if len(large):
            self._large = np.union1d(self._large, large)
        repeated: np.ndarray = keys[seen]
        return repeated

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Whether each key is in the set."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.zeros(len(keys), dtype=bool)
        small = (keys >= 0) & (keys < len(self._bits) * 8)
        k = keys[small]
        out[small] = (self._bits[k >> 3] >> (k & 7).astype(np.uint8)) & 1 == 1
        large = keys >= _BITMAP_KEYS
        if large.any() and len(self._large):
            out[large] = np.isin(keys[large], self._large)
        return out

    def values(self) -> np.ndarray:
        """Every key, sorted."""
        small = np.flatnonzero(np.unpackbits(self._bits, bitorder="little")).astype(np.int64)
        return np.concatenate([small, self._large])


class _Found:
    """A count of offending rows and the first few as text."""

    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def add(self, count: int, examples: list[str]) -> None:
        self.count += count
        self.examples += examples[: _EXAMPLES - len(self.examples)]


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


class CrmChecker:
    """The CRM contract over a stream of batches, table after table (`TABLES` order: referenced tables first)."""

    def __init__(self) -> None:
        self.keys: dict[str, KeySet] = {}
        self.rows: dict[str, int] = {}
        self._repeated: dict[str, _Found] = {}
        self._orphans: dict[tuple[str, str], _Found] = {}
        self._done: set[str] = set()

    def batch(self, table: str, frame: pd.DataFrame) -> pd.DataFrame:
        """One batch validated with its table's schema and canonical dtypes; keys and references are noted."""
        checked = validate_table(table, frame)
        key = PRIMARY_KEYS[table]
        ids = checked[key].to_numpy(dtype=np.int64)
        repeated = self.keys.setdefault(table, KeySet()).add(ids)
        if len(repeated):
            found = self._repeated.setdefault(table, _Found())
            found.add(len(repeated), [f"{key}={int(v)}" for v in repeated[:_EXAMPLES]])
        for (child, column), (parent, _) in FOREIGN_KEYS.items():
            if child != table:
                continue
            if parent not in self._done:
                raise RuntimeError(f"table '{parent}' must be read before '{table}' refers to it")
            values = checked[column]
            present = np.flatnonzero(values.notna().to_numpy())
            refs = values.iloc[present].to_numpy(dtype=np.int64)
            orphan = present[~self.keys[parent].contains(refs)]
            if len(orphan):
                rows = checked.iloc[orphan[:_EXAMPLES]]
                shown = [f"{key}={_plain(r[key])!r}: {column}={_plain(r[column])!r}" for _, r in rows.iterrows()]
                self._orphans.setdefault((table, column), _Found()).add(len(orphan), shown)
        self.rows[table] = self.rows.get(table, 0) + len(checked)
        return checked

    def table_done(self, table: str) -> None:
        """The table is read whole: its keys must have been unique."""
        found = self._repeated.get(table)
        if found is not None:
            key = PRIMARY_KEYS[table]
            raise CrmDataError(
                f"table '{table}', column '{key}': {found.count:,} row(s) repeat the {key} of an earlier row (it "
                f"must be unique); e.g. {', '.join(found.examples)}"
            )
        self.keys.setdefault(table, KeySet())
        self._done.add(table)

    def finish(self) -> None:
        """Every table is read: references to rows that do not exist are refused, all at once."""
        problems = [
            f"table '{table}', column '{column}': {found.count} row(s) refer to no row of "
            f"'{FOREIGN_KEYS[(table, column)][0]}.{FOREIGN_KEYS[(table, column)][1]}'; e.g. {', '.join(found.examples)}"
            for (table, column), found in self._orphans.items()
        ]
        if problems:
            raise CrmDataError("\n".join(problems))


def batch_rows(table: str) -> int:
    """Rows per batch of a table: `BATCH_CELLS` values."""
    return max(1, BATCH_CELLS // len(SCHEMAS[table].columns))


def read_crm_batches(
    engine: Engine,
    checker: CrmChecker | None = None,
    rows: Mapping[str, int] | None = None,
    progress: bool = False,
) -> Iterator[tuple[str, pd.DataFrame]]:
    """(table, validated batch) for the five CRM tables, table after table in `TABLES` order; CrmDataError names
    table, column and rows of the first problem. `rows` overrides the rows per batch of a table (tests)."""
    checker = checker or CrmChecker()
    with engine.connect() as conn, conn.begin():
        inspector = sa.inspect(conn)
        for table in TABLES:
            check_columns(inspector, table, list(SCHEMAS[table].columns), engine.url)
        counts = {table: _count(conn, table) for table in TABLES}  # holds off writers until the end (SQLite)
        use_arrow = arrow.supports(conn)
        log.debug(
            "reading %s through %s",
            ", ".join(f"{t} {n:,}" for t, n in counts.items()),
            "ADBC" if use_arrow else "SQLAlchemy",
        )
        with arrow.connect(conn, counts) if use_arrow else nullcontext(None) as adbc:
            for table in TABLES:
                size = (rows or {}).get(table) or batch_rows(table)
                frames = _arrow_frames(adbc, conn, table, size) if adbc is not None else _row_frames(conn, table, size)
                with tqdm(total=counts[table], desc=table, unit="row", unit_scale=True, disable=not progress) as bar:
                    for frame in frames:
                        yield table, checker.batch(table, frame)
                        bar.update(len(frame))
                if checker.rows.get(table, 0) != counts[table]:
                    raise CrmDataError(
                        f"table '{table}' changed while it was read ({counts[table]:,} rows counted, "
                        f"{checker.rows.get(table, 0):,} read): run again once the CRM load has finished"
                    )
                checker.table_done(table)
    checker.finish()


def _count(conn: Connection, table: str) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar() or 0)


def _arrow_frames(adbc: Any, conn: Connection, table: str, size: int) -> Iterator[pd.DataFrame]:
    for batch in arrow.stream_table(adbc, conn, table, list(SCHEMAS[table].columns), size):
        yield arrow.to_frame(batch)


def _row_frames(conn: Connection, table: str, size: int) -> Iterator[pd.DataFrame]:
    """Databases without an ADBC driver: SQLAlchemy's streaming cursor, untyped values (as `read_table`)."""
    columns = list(SCHEMAS[table].columns)
    query: sa.Select[*tuple[Any, ...]] = sa.select(*(sa.column(c) for c in columns)).select_from(sa.table(table))
    with read_errors(conn, {table: columns}):
        yield from pd.read_sql_query(query, conn.execution_options(stream_results=True), chunksize=size)
