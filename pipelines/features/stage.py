"""The features stage's I/O shell: CRM snapshot in, labelled feature snapshots and their feature list out.

Reads the extract stage's Parquet snapshot (part by part when it holds more than `features.part_leads` leads:
`pipelines.features.partition`), builds the snapshot grid with labels (censored at the manifest's `history_end`),
computes features chunk by chunk and streams them into one Parquet file while the next chunk is computed (the
writer runs in a thread; Arrow releases the GIL). The output folder is swapped in atomically:
`snapshots.parquet` (lead_id, snapshot_at, label, weight, account_id (a key for the bootstrap, never a feature),
features; no personal data), `feature_list.json` (name, kind, family per feature) and `summary.json` (row counts,
positive rate, dates).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipelines.atomic import atomic_directory
from pipelines.config import FeaturesParams
from pipelines.errors import CrmDataError
from pipelines.extract import read_extra_tables_of, read_manifest, snapshot_file
from pipelines.features import timeline as tl
from pipelines.features.attributes import attribute_specs
from pipelines.features.build import FeatureChunk, feature_specs, iter_feature_chunks, personal_columns
from pipelines.features.columns import INPUT_COLUMNS
from pipelines.features.partition import Part, snapshot_parts
from pipelines.features.snapshots import (
    dated_flag_grid,
    is_single_snapshot,
    sample_cut,
    sample_keys,
    single_snapshot_grid,
    snapshot_grid,
)
from pipelines.features.spec import ACCOUNT, FEATURE_LIST_FILE, SNAPSHOTS_FILE, WEIGHT

log = logging.getLogger(__name__)

SUMMARY_FILE: Final = "summary.json"
#: Only the columns the features read (the one list, shared with the scoring reader); personal data is read for
#: derived signals and never written.
RAW_COLUMNS: Final[dict[str, tuple[str, ...]]] = INPUT_COLUMNS
#: Repetitive text read as Parquet dictionaries (pandas categoricals) to save memory at millions of rows.
DICTIONARY_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "activities": ("activity_type", "detail"),
    "stage_history": ("stage",),
}


def file_schema(first: pa.Schema) -> pa.Schema:
    """The output file's schema: the first chunk's, with the account key nullable whatever that chunk held.

    A chunk's Arrow fields are non-nullable when it has no missing value (cheaper Parquet encoding); the account
    key is missing for leads without an account, which some chunks hold and others not, so every chunk is cast
    to one schema in which it is nullable.
    """
    return pa.schema([f.with_nullable(True) if f.name == ACCOUNT else f for f in first], metadata=first.metadata)


def write_feature_rows(chunks: Iterable[FeatureChunk], path: Path) -> int:
    """Stream every chunk's rows into one Parquet file (lz4, dictionaries only for categoricals); rows written.

    The next chunk is computed while a writer thread writes this one (Arrow releases the GIL).
    """
    writer: pq.ParquetWriter | None = None
    pending: Future[None] | None = None
    rows = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet") as pool:
        try:
            for chunk in chunks:
                table = chunk.to_arrow()
                if writer is None:
                    categorical = [f.name for f in table.schema if pa.types.is_dictionary(f.type)]
                    schema = file_schema(table.schema)
                    writer = pq.ParquetWriter(
                        path,
                        schema,
                        compression="lz4",
                        use_dictionary=categorical,
                        write_statistics=["lead_id", "snapshot_at", "label"],
                    )
                if not table.schema.equals(writer.schema):  # a chunk without leads lacking an account
                    table = table.cast(writer.schema)
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write_table, table)
                rows += table.num_rows
            if pending is not None:
                pending.result()
        finally:
            if writer is not None:
                writer.close()
    return rows


def with_account(grid: pd.DataFrame, leads: pd.DataFrame) -> pd.DataFrame:
    """The grid with each lead's account id (`ACCOUNT`, empty without one) carried as a key column, never a feature:
    the model stages resample accounts for every interval (leads of one account share its buying state)."""
    account = pd.Series(leads["account_id"].to_numpy(), index=leads["lead_id"].to_numpy())
    return grid.assign(**{ACCOUNT: grid["lead_id"].map(account).astype("Int64")})


class GridTotals:
    """The summary's counts over the grids of every part (exact: weights are whole numbers)."""

    def __init__(self) -> None:
        self.rows = 0
        self.lead_weeks = 0.0
        self.leads = 0
        self.positives = 0
        self.positive_lead_weeks = 0.0
        self.dates: set[int] = set()

    def add(self, grid: pd.DataFrame) -> None:
        """Count one part's grid (its leads are in no other part)."""
        weight = grid[WEIGHT].to_numpy(dtype=float)
        label = grid["label"].to_numpy()
        self.rows += len(grid)
        self.lead_weeks += float(weight.sum())
        self.leads += int(grid["lead_id"].nunique())
        self.positives += int(label.sum())
        self.positive_lead_weeks += float((label * weight).sum())
        self.dates.update(tl.nanoseconds(grid["snapshot_at"]).tolist())

    def first(self) -> pd.Timestamp:
        return pd.Timestamp(min(self.dates), tz="UTC")

    def last(self) -> pd.Timestamp:
        return pd.Timestamp(max(self.dates), tz="UTC")


class GridMaker:
    """The snapshot grid of a part of the CRM: the same rows as the whole CRM's grid holds for its leads."""

    def __init__(self, params: FeaturesParams, manifest: Mapping[str, Any], single: bool, parts: int) -> None:
        self.params = params
        self.end: pd.Timestamp = manifest["history_end"]
        self.label: Mapping[str, Any] = manifest.get("label") or {}
        self.dated_flag = self.label.get("label") == "dated_flag"  # dates plus a won flag, no conversion dates
        self.single = single  # leads-only data (no dates): one snapshot
        self.log_level = logging.INFO if parts == 1 else logging.DEBUG  # per-part lines only in the debug log
        self.sample_below: int | None = None
        self.censored = 0

    def sample(self, parts: list[Part]) -> None:
        """With `features.sample_leads` and several parts, pick the sample over the whole CRM first."""
        k = self.params.sample_leads
        if k is None or len(parts) == 1 or self.dated_flag or self.single:
            return
        keys = np.concatenate(
            [sample_keys(part.tables(SAMPLE_COLUMNS), self.params, self.end) for part in parts] or [np.zeros(0)]
        )
        self.sample_below = sample_cut(keys, k)
        log.info(
            "training rows for a sample of %s of %s leads (features.sample_leads)",
            f"{min(k, len(keys)):,}",
            f"{len(keys):,}",
        )

    def grid(self, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        """The grid of these tables' leads, with labels and each lead's account."""
        if self.dated_flag:
            grid, censored = dated_flag_grid(tables, self.params, int(self.label["maturation_days"]), self.end)
            self.censored += censored
        elif self.single:
            grid = single_snapshot_grid(tables, self.params)
        else:
            grid = snapshot_grid(tables, self.params, self.end, self.sample_below, self.log_level)
        return with_account(grid, tables["leads"])


#: What picking the sample reads of each part: the leads' creation and the stage entries.
SAMPLE_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "leads": ("lead_id", "created_at"),
    "stage_history": ("stage_history_id", "lead_id", "stage", "entered_at"),
}


def _chunks(
    parts: list[Part], maker: GridMaker, totals: GridTotals, params: FeaturesParams, progress: bool
) -> Iterator[FeatureChunk]:
    """Every part's feature chunks, in the whole CRM's chunk order; the grids are counted into `totals`."""
    single_part = len(parts) == 1
    for part in tqdm(parts, desc="features", unit="part", disable=single_part or not progress):
        tables = part.tables()
        grid = maker.grid(tables)
        totals.add(grid)
        if grid.empty:
            continue
        yield from iter_feature_chunks(
            tables, grid, params, progress=progress and single_part, first_position=part.first_position
        )


def run_features(raw: Path, out: Path, params: FeaturesParams, progress: bool = True) -> dict[str, Any]:
    """The features stage: read the snapshot at `raw`, write snapshots, feature list and summary into `out`.

    A snapshot of more than `features.part_leads` leads is read part by part (`pipelines.features.partition`):
    memory holds one part, and the output is the same as if it had been read whole.
    """
    manifest = read_manifest(raw)
    end = manifest["history_end"]
    out = Path(out)
    with snapshot_parts(raw, RAW_COLUMNS, DICTIONARY_COLUMNS, params, out.parent, progress) as parts:
        first = parts[0].tables() if len(parts) == 1 else None
        dated_flag = (manifest.get("label") or {}).get("label") == "dated_flag"
        single = not dated_flag and (is_single_snapshot(first) if first is not None else single_snapshot(raw, manifest))
        maker = GridMaker(params, manifest, single, len(parts))
        specs = feature_specs(params)
        extra = attribute_specs(read_extra_tables_of(raw, manifest))
        clash = sorted({s.name for s in specs} & {s.name for s in extra})
        if clash:
            raise CrmDataError(
                f"table 'lead_attributes': column(s) {clash} clash with built-in feature names; rename them"
            )
        specs += extra
        leaked = personal_columns() & {s.name for s in specs}
        if leaked:  # a programming error, checked here too because the file leaves the pipeline
            raise RuntimeError(f"personal-data columns among the features: {sorted(leaked)}")
        maker.sample(parts)
        totals = GridTotals()
        with atomic_directory(out) as tmp:
            started = time.perf_counter()
            rows = write_feature_rows(_chunks(parts, maker, totals, params, progress), tmp / SNAPSHOTS_FILE)
            if totals.rows == 0:
                raise CrmDataError(
                    f"no training examples: no lead is open on a snapshot date whose {params.horizon_days}-day "
                    f"horizon ends by {end} (history too short, or features.max_lead_age_days / cadence_days too "
                    "small)"
                )
            log.debug("built and wrote %s feature rows in %.1f s", f"{rows:,}", time.perf_counter() - started)
            if len(parts) > 1:
                log.info(
                    "snapshot grid: %s rows standing for %s open-lead weeks (%s leads, weighted positive rate "
                    "%.2f%%) up to %s; history ends %s",
                    f"{totals.rows:,}",
                    f"{totals.lead_weeks:,.0f}",
                    f"{totals.leads:,}",
                    100 * totals.positive_lead_weeks / totals.lead_weeks,
                    totals.last(),
                    end,
                )
            feature_list = [s.to_dict() for s in specs]
            (tmp / FEATURE_LIST_FILE).write_text(json.dumps(feature_list, indent=2) + "\n")
            summary = _summary(rows, totals, maker, params, len(specs), end)
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "features: %s rows x %d features (%s positives, %.2f%%) written to %s",
        f"{rows:,}",
        len(specs),
        f"{summary['positives']:,}",
        100 * summary["positive_rate"],
        out,
    )
    return summary


def single_snapshot(raw: Path, manifest: Mapping[str, Any]) -> bool:
    """`is_single_snapshot` of a snapshot read part by part: no activities and one creation time for all leads."""
    if manifest["tables"]["activities"]["rows"] or not manifest["tables"]["leads"]["rows"]:
        return False
    created = pq.read_table(snapshot_file(raw, manifest, "leads"), columns=["created_at"]).column(0)
    return bool(pc.count_distinct(created).as_py() == 1)


def _summary(
    rows: int, totals: GridTotals, maker: GridMaker, params: FeaturesParams, features: int, end: pd.Timestamp
) -> dict[str, Any]:
    """summary.json: row counts, positive rate, dates and how the rows were labelled."""
    summary: dict[str, Any] = {
        "rows": rows,
        "lead_weeks": totals.lead_weeks,
        "leads": totals.leads,
        "positives": totals.positives,
        "positive_lead_weeks": totals.positive_lead_weeks,
        "positive_rate": totals.positive_lead_weeks / totals.lead_weeks,
        "snapshot_dates": len(totals.dates),
        "first_snapshot": totals.first().isoformat(),
        "last_snapshot": totals.last().isoformat(),
        "history_end": end.isoformat(),
        "features": features,
        "target_stage": params.target_stage,
        "horizon_days": params.horizon_days,
    }
    label = maker.label
    if maker.dated_flag:
        maturation = int(label["maturation_days"])
        summary["dated_flag"] = True
        summary["label_window_days"] = maturation
        summary["censored_leads"] = maker.censored
        if label.get("basis") == "order":
            summary["order_column"] = label.get("order_column")
        summary["label"] = (
            f"dated leads with a target flag and no conversion dates: one row per lead at its "
            f"creation; label = reached {params.target_stage} by the export "
            f"({label.get('export_date')}); leads younger than {maturation} days at the export "
            f"({maker.censored:,}) left out as censored; horizon_days does not apply"
        )
    if maker.single:
        summary["single_snapshot"] = True
        summary["label"] = (
            f"leads-only data: one snapshot; label = reached {params.target_stage} at any time "
            "(no dates, so horizon_days does not apply)"
        )
    return summary
