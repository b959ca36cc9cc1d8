"""Reading a big snapshot part by part: the features stage holds one part of the CRM in memory, not all of it.

A part is a run of consecutive chunks in the feature code's lead order (`build.lead_groups`, `build.plan_chunks`:
whole accounts, leads without an account first): its leads, their accounts, their activities and stage entries.
One pass over the snapshot routes the rows of those four tables to their parts: in a temporary Parquet file per
table, each batch read holds one row group per part, and an index says which row groups are a part's. A part is
then read back as those row groups, in the snapshot's own row order, and handed to the feature code with the
position where its leads start in the whole CRM's order, so it is chunked (and its rows come out) exactly as if
the whole snapshot had been read. Memory holds one part and one batch, plus a few bytes per lead for the routing
(lead and account ids to parts). A snapshot of at most `features.part_leads` leads is one part, read directly.

Campaigns (a few rows) and a mapped CRM's `lead_attributes` (its categorical levels span every lead) go whole
with every part.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipelines.config import FeaturesParams
from pipelines.errors import CrmDataError
from pipelines.extract import (
    read_extra_tables_of,
    read_manifest,
    read_snapshot,
    read_snapshot_table,
    snapshot_file,
    unreadable,
)
from pipelines.features.build import lead_groups, plan_chunks

log = logging.getLogger(__name__)

#: Rows per batch of the routing pass (one batch of one table in memory at a time).
ROUTE_ROWS: Final = 1_000_000
#: Tables routed to parts, each by the key that names its part.
ROUTED: Final[dict[str, str]] = {
    "leads": "lead_id",
    "accounts": "account_id",
    "activities": "lead_id",
    "stage_history": "lead_id",
}


class IdLookup:
    """Values by integer id (-1 for an id it does not know): a flat table when the ids are dense, else a search."""

    def __init__(self, ids: np.ndarray, values: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        values = np.asarray(values, dtype=np.int32)
        self._table: np.ndarray | None = None
        if len(ids) and ids.min() >= 0 and ids.max() < 4 * len(ids) + 1024:
            self._table = np.full(int(ids.max()) + 1, -1, dtype=np.int32)
            self._table[ids] = values
        else:
            order = np.argsort(ids, kind="stable")
            self._ids, self._values = ids[order], values[order]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full(len(ids), -1, dtype=np.int32)
        if self._table is not None:
            inside = (ids >= 0) & (ids < len(self._table))
            out[inside] = self._table[ids[inside]]
            return out
        at = np.minimum(np.searchsorted(self._ids, ids), max(len(self._ids) - 1, 0))
        found = (self._ids[at] == ids) if len(self._ids) else np.zeros(len(ids), dtype=bool)
        out[found] = self._values[at[found]]
        return out


#: Reads a part's tables: (part, the tables and columns wanted or None for all) -> frames.
Reader = Callable[[int, Mapping[str, Sequence[str]] | None], dict[str, pd.DataFrame]]


@dataclass(frozen=True)
class Part:
    """One part: where its leads start in the whole CRM's lead order, how many leads it has, and its tables."""

    index: int
    first_position: int
    leads: int
    _read: Reader = field(repr=False)

    def tables(self, columns: Mapping[str, Sequence[str]] | None = None) -> dict[str, pd.DataFrame]:
        """The part's tables with every column the stage reads, campaigns and extras whole; or only the tables and
        columns named (a part of several; a single part always has all of them)."""
        tables: dict[str, pd.DataFrame] = self._read(self.index, columns)
        return tables


@dataclass(frozen=True)
class Plan:
    """The whole CRM's lead order cut into parts of whole chunks (`starts`: part p holds positions
    starts[p] .. starts[p + 1] - 1), with each lead's and each account's part."""

    starts: np.ndarray
    chunks: int
    lead_part: IdLookup
    account_part: IdLookup

    @property
    def count(self) -> int:
        return len(self.starts) - 1


def plan_parts(leads: pa.Table, params: FeaturesParams) -> Plan:
    """Parts of whole chunks for the leads (lead_id, account_id, in table order): a new part starts at the first
    chunk that begins past a multiple of `features.part_leads`, as a chunk starts at the first account that
    begins past a multiple of `features.chunk_leads`."""
    lead_ids = leads.column("lead_id").to_numpy(zero_copy_only=False).astype(np.int64)
    account = pd.Series(leads.column("account_id").to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get))
    group = lead_groups(account)
    order = np.argsort(group, kind="stable")
    bounds = plan_chunks(group[order], params.chunk_leads)
    del group
    chunk_starts = bounds[:-1]
    part_of_chunk = chunk_starts // params.part_leads
    firsts = chunk_starts[np.r_[True, part_of_chunk[1:] != part_of_chunk[:-1]]] if len(chunk_starts) else chunk_starts
    starts = np.r_[firsts, len(lead_ids)].astype(np.int64)
    part_of_row = np.empty(len(lead_ids), dtype=np.int32)
    part_of_row[order] = np.repeat(np.arange(len(starts) - 1, dtype=np.int32), np.diff(starts))
    has_account = account.notna().to_numpy()
    accounts, first = np.unique(account.to_numpy(dtype=np.int64, na_value=-1)[has_account], return_index=True)
    return Plan(
        starts=starts,
        chunks=len(chunk_starts),
        lead_part=IdLookup(lead_ids, part_of_row),
        account_part=IdLookup(accounts, part_of_row[has_account][first]),
    )


def _route(
    raw: Path,
    manifest: Mapping[str, Any],
    plan: Plan,
    folder: Path,
    columns: Mapping[str, Sequence[str]],
    dictionary: Mapping[str, Sequence[str]],
    progress: bool,
) -> dict[str, list[list[int]]]:
    """Write each routed table's rows into `folder`, one row group per part within each batch read; returns, per
    table, each part's row groups (in the snapshot's row order)."""
    groups: dict[str, list[list[int]]] = {}
    total = sum(int(manifest["tables"][t]["rows"]) for t in ROUTED)
    with tqdm(total=total, desc="features: parts", unit="row", unit_scale=True, disable=not progress) as bar:
        for table, key in ROUTED.items():
            lookup = plan.account_part if table == "accounts" else plan.lead_part
            path = snapshot_file(raw, manifest, table)
            wanted = list(columns[table])
            parts: list[list[int]] = [[] for _ in range(plan.count)]
            written, unknown, rows = 0, 0, 0
            try:
                source = pq.ParquetFile(path, read_dictionary=dictionary.get(table))
                schema = source.schema_arrow
                target = pa.schema([schema.field(c) for c in wanted], metadata=schema.metadata)
                with pq.ParquetWriter(folder / f"{table}.parquet", target, compression="lz4") as writer:
                    for batch in source.iter_batches(batch_size=ROUTE_ROWS, columns=wanted):
                        part = lookup(batch.column(key).to_numpy(zero_copy_only=False))
                        order = np.argsort(part, kind="stable")
                        cuts = np.searchsorted(part[order], np.arange(-1, plan.count + 1))
                        routed = batch.take(pa.array(order))
                        unknown += int(cuts[1] - cuts[0])
                        for p in range(plan.count):
                            lo, hi = int(cuts[p + 1]), int(cuts[p + 2])
                            if hi > lo:
                                writer.write_batch(routed.slice(lo, hi - lo))
                                parts[p].append(written)
                                written += 1
                        rows += batch.num_rows
                        bar.update(batch.num_rows)
            except (pa.ArrowException, OSError) as exc:
                raise unreadable(path, exc) from None
            if rows != manifest["tables"][table]["rows"]:
                raise CrmDataError(
                    f"{path} holds {rows:,} rows but the manifest says {manifest['tables'][table]['rows']:,}: the "
                    "snapshot is inconsistent"
                )
            if unknown and table != "accounts":  # impossible in a validated snapshot; accounts may have no lead
                log.warning("ignoring %s rows of %s whose lead is not in the leads table", f"{unknown:,}", table)
            groups[table] = parts
    return groups


def _reader(folder: Path, groups: Mapping[str, list[list[int]]], whole: Mapping[str, pd.DataFrame]) -> Reader:
    """A function (part, columns) -> the part's tables, read back from the routed files."""

    def read(index: int, columns: Mapping[str, Sequence[str]] | None) -> dict[str, pd.DataFrame]:
        tables = dict(whole)
        for table in ROUTED:
            if columns is not None and table not in columns:
                continue
            source = pq.ParquetFile(folder / f"{table}.parquet")
            wanted = None if columns is None else list(columns[table])
            if groups[table][index]:
                data = source.read_row_groups(groups[table][index], columns=wanted)
            else:
                schema = source.schema_arrow
                names = schema.names if wanted is None else wanted
                data = pa.schema([schema.field(c) for c in names], metadata=schema.metadata).empty_table()
            tables[table] = data.to_pandas()
        return tables

    return read


@contextmanager
def snapshot_parts(
    raw: Path,
    columns: Mapping[str, Sequence[str]],
    dictionary: Mapping[str, Sequence[str]],
    params: FeaturesParams,
    scratch: Path,
    progress: bool = False,
) -> Iterator[list[Part]]:
    """The snapshot at `raw` as parts (the stage's `columns` of every table, `dictionary` columns as
    categoricals): one part read directly when it holds at most `features.part_leads` leads, else the routed
    parts, whose temporary files live in a folder under `scratch` until the block ends."""
    manifest = read_manifest(raw)
    n_leads = int(manifest["tables"]["leads"]["rows"])
    if n_leads <= params.part_leads:
        tables, _ = read_snapshot(raw, columns, dictionary)
        yield [Part(index=0, first_position=0, leads=n_leads, _read=lambda _index, _columns: tables)]
        return
    path = snapshot_file(raw, manifest, "leads")
    try:
        leads = pq.read_table(path, columns=["lead_id", "account_id"])
    except (pa.ArrowException, OSError) as exc:
        raise unreadable(path, exc) from None
    plan = plan_parts(leads, params)
    del leads
    log.info(
        "reading %s leads in %d parts of about %s (features.part_leads; %d chunks of features.chunk_leads)",
        f"{n_leads:,}",
        plan.count,
        f"{params.part_leads:,}",
        plan.chunks,
    )
    whole = {"campaigns": read_snapshot_table(raw, manifest, "campaigns", columns["campaigns"])}
    whole.update(read_extra_tables_of(raw, manifest))
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".features-parts-", dir=scratch) as folder:
        groups = _route(raw, manifest, plan, Path(folder), columns, dictionary, progress)
        read = _reader(Path(folder), groups, whole)
        yield [
            Part(
                index=p, first_position=int(plan.starts[p]), leads=int(plan.starts[p + 1] - plan.starts[p]), _read=read
            )
            for p in range(plan.count)
        ]
