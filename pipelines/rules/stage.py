"""The rules stage: the snapshot rows scored with the rules in chunks of whole leads, streamed into Parquet.

Every rule looks at one lead, its account and its own activities, and a lead's first MQL moment at its own
snapshots, so the rows of a group of leads are scored on their own: the stage reads the snapshot keys, only the
scored leads' rows of the raw tables (`read_raw_tables`), then scores `CHUNK_ROWS` rows of whole leads at a time
and appends them to the output files, in the keys' order. Memory follows the chunk and the leads scored
(`features.sample_leads`), not the CRM; the scores are those of one call on every row. Keys whose leads' rows are
not contiguous (not the features stage's output) are scored in one chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipelines.atomic import atomic_path
from pipelines.rules.evaluation import evaluate_rules
from pipelines.rules.io import read_raw_tables, read_snapshot_keys
from pipelines.rules.schema import RuleSet
from pipelines.rules.variants import score_variants

log = logging.getLogger(__name__)

#: Snapshot rows scored at a time (whole leads): memory follows this, not the number of rows.
CHUNK_ROWS: Final = 1_000_000
#: Per-lead tables cut down to each chunk's leads (campaigns and other tables go whole).
_BY_LEAD: Final[dict[str, str]] = {"leads": "lead_id", "activities": "lead_id"}


@dataclass(frozen=True)
class RuleScores:
    """What the stage wrote: rows scored, rows MQL at their snapshot, variants scored."""

    rows: int
    mql: int
    variants: int


def chunk_bounds(lead_ids: np.ndarray, at_least: int) -> np.ndarray:
    """Row boundaries of chunks of about `at_least` rows that never split a lead's run of rows (a chunk starts at
    the first lead whose rows begin past a multiple of `at_least`); one chunk when some lead's rows are not
    contiguous (its first MQL moment needs all its snapshots together)."""
    n = len(lead_ids)
    if n == 0:
        return np.array([0, 0], dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, lead_ids[1:] != lead_ids[:-1]])
    if len(starts) != len(np.unique(lead_ids)):
        return np.array([0, n], dtype=np.int64)
    chunk_of_run = starts // at_least
    firsts = starts[np.r_[True, chunk_of_run[1:] != chunk_of_run[:-1]]]
    bounds: np.ndarray = np.r_[firsts, n].astype(np.int64)
    return bounds


def _chunk_tables(
    tables: Mapping[str, pd.DataFrame], keys: pd.DataFrame, bounds: np.ndarray
) -> Iterator[tuple[pd.DataFrame, dict[str, pd.DataFrame]]]:
    """Each chunk's keys and the tables cut down to its leads (rows in their original order)."""
    chunk_of_lead = (
        pd.Series(np.repeat(np.arange(len(bounds) - 1), np.diff(bounds)), index=keys["lead_id"].to_numpy())
        .groupby(level=0)
        .first()
    )
    grouped = {}
    for table, key in _BY_LEAD.items():
        chunk = chunk_of_lead.reindex(tables[table][key].to_numpy()).to_numpy(dtype=float, na_value=-1).astype(int)
        order = np.argsort(chunk, kind="stable")
        grouped[table] = (order, np.searchsorted(chunk[order], np.arange(-1, len(bounds))))
    for k in range(len(bounds) - 1):
        part = dict(tables)
        for table, (order, cuts) in grouped.items():
            part[table] = tables[table].iloc[order[cuts[k + 1] : cuts[k + 2]]].reset_index(drop=True)
        yield keys.iloc[bounds[k] : bounds[k + 1]].reset_index(drop=True), part


class _Appender:
    """One Parquet file written chunk by chunk with the first chunk's schema (pandas metadata included)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: pq.ParquetWriter | None = None

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        elif not table.schema.equals(self.writer.schema):
            table = table.cast(self.writer.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run_rules(
    ruleset: RuleSet,
    variants: Mapping[str, RuleSet],
    raw: Path,
    snapshots: Path,
    out: Path,
    variants_out: Path | None,
    progress: bool = True,
) -> RuleScores:
    """Score every (lead_id, snapshot_at) of `snapshots` with `ruleset` into `out` and, with `variants_out`,
    every variant into it; both files atomically (a failure leaves the previous ones)."""
    keys = read_snapshot_keys(snapshots)
    tables = read_raw_tables(raw, keys["lead_id"].to_numpy())
    bounds = chunk_bounds(keys["lead_id"].to_numpy(dtype=np.int64), CHUNK_ROWS)
    rows = mql = 0
    with ExitStack() as stack:
        scores = _Appender(stack.enter_context(atomic_path(out)))
        others = _Appender(stack.enter_context(atomic_path(variants_out))) if variants_out is not None else None
        try:
            chunks = _chunk_tables(tables, keys, bounds)
            for chunk_keys, chunk in tqdm(
                chunks, total=len(bounds) - 1, desc="rules", unit="chunk", disable=not progress or len(bounds) < 3
            ):
                scored = evaluate_rules(ruleset, chunk_keys, chunk)
                if others is not None:
                    others.write(score_variants(variants, chunk_keys, chunk))
                scores.write(scored)
                rows += len(scored)
                mql += int(scored["rule_mql"].sum())
        finally:
            scores.close()
            if others is not None:
                others.close()
    log.info(
        "rule scores: %s rows in %d chunk(s) of whole leads, %s MQL at the snapshot",
        f"{rows:,}",
        len(bounds) - 1,
        f"{mql:,}",
    )
    return RuleScores(rows=rows, mql=mql, variants=len(variants) if variants_out is not None else 0)
