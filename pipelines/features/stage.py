"""The features stage's I/O shell: CRM snapshot in, labelled feature snapshots and their feature list out.

Reads the extract stage's Parquet snapshot, builds the snapshot grid with labels (censored at the manifest's
`history_end`), computes features chunk by chunk and streams them into one Parquet file while the next chunk is
computed (the writer runs in a thread; Arrow releases the GIL). The output folder is swapped in atomically:
`snapshots.parquet` (lead_id, snapshot_at, label, weight, account_id (a key for the bootstrap, never a feature),
features; no personal data), `feature_list.json` (name, kind, family per feature) and `summary.json` (row counts,
positive rate, dates).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.atomic import atomic_directory
from pipelines.config import FeaturesParams
from pipelines.errors import CrmDataError
from pipelines.extract import read_snapshot
from pipelines.features.attributes import attribute_specs
from pipelines.features.build import feature_specs, iter_feature_chunks, personal_columns
from pipelines.features.columns import INPUT_COLUMNS
from pipelines.features.snapshots import dated_flag_grid, is_single_snapshot, single_snapshot_grid, snapshot_grid
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


def write_feature_rows(
    tables: Mapping[str, pd.DataFrame], grid: pd.DataFrame, params: FeaturesParams, path: Path, progress: bool = True
) -> int:
    """Stream every chunk's rows into one Parquet file (lz4, dictionaries only for categoricals); rows written."""
    writer: pq.ParquetWriter | None = None
    pending: Future[None] | None = None
    rows = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet") as pool:
        try:
            for chunk in iter_feature_chunks(tables, grid, params, progress=progress):
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


def run_features(raw: Path, out: Path, params: FeaturesParams, progress: bool = True) -> dict[str, Any]:
    """The features stage: read the snapshot at `raw`, write snapshots, feature list and summary into `out`."""
    tables, manifest = read_snapshot(raw, RAW_COLUMNS, DICTIONARY_COLUMNS)
    end = manifest["history_end"]
    label = manifest.get("label") or {}
    dated_flag = label.get("label") == "dated_flag"  # dates plus a won flag, no conversion dates (docs/mapping.md)
    single = not dated_flag and is_single_snapshot(tables)  # leads-only data (no dates): one snapshot
    censored = 0
    if dated_flag:
        maturation = int(label["maturation_days"])
        grid, censored = dated_flag_grid(tables, params, maturation, end)
    else:
        grid = single_snapshot_grid(tables, params) if single else snapshot_grid(tables, params, end)
    log.debug(
        "snapshot grid: %s rows of %s leads at %d snapshot dates (history ends %s)",
        f"{len(grid):,}",
        f"{grid['lead_id'].nunique():,}",
        grid["snapshot_at"].nunique(),
        end,
    )
    if grid.empty:
        raise CrmDataError(
            f"no training examples: no lead is open on a snapshot date whose {params.horizon_days}-day horizon "
            f"ends by {end} (history too short, or features.max_lead_age_days / cadence_days too small)"
        )
    grid = with_account(grid, tables["leads"])
    specs = feature_specs(params)
    extra = attribute_specs(tables)
    clash = sorted({s.name for s in specs} & {s.name for s in extra})
    if clash:
        raise CrmDataError(f"table 'lead_attributes': column(s) {clash} clash with built-in feature names; rename them")
    specs += extra
    leaked = personal_columns() & {s.name for s in specs}
    if leaked:  # a programming error, checked here too because the file leaves the pipeline
        raise RuntimeError(f"personal-data columns among the features: {sorted(leaked)}")
    with atomic_directory(out) as tmp:
        started = time.perf_counter()
        rows = write_feature_rows(tables, grid, params, tmp / SNAPSHOTS_FILE, progress=progress)
        log.debug("built and wrote %s feature rows in %.1f s", f"{rows:,}", time.perf_counter() - started)
        feature_list = [s.to_dict() for s in specs]
        (tmp / FEATURE_LIST_FILE).write_text(json.dumps(feature_list, indent=2) + "\n")
        weight = grid[WEIGHT].to_numpy(dtype=float)
        summary = {
            "rows": rows,
            "lead_weeks": float(weight.sum()),
            "leads": int(grid["lead_id"].nunique()),
            "positives": int(grid["label"].sum()),
            "positive_lead_weeks": float((grid["label"] * weight).sum()),
            "positive_rate": float((grid["label"] * weight).sum() / weight.sum()),
            "snapshot_dates": int(grid["snapshot_at"].nunique()),
            "first_snapshot": grid["snapshot_at"].min().isoformat(),
            "last_snapshot": grid["snapshot_at"].max().isoformat(),
            "history_end": end.isoformat(),
            "features": len(specs),
            "target_stage": params.target_stage,
            "horizon_days": params.horizon_days,
        }
        if dated_flag:
            summary["dated_flag"] = True
            summary["label_window_days"] = maturation
            summary["censored_leads"] = censored
            if label.get("basis") == "order":
                summary["order_column"] = label.get("order_column")
            summary["label"] = (
                f"dated leads with a target flag and no conversion dates: one row per lead at its "
                f"creation; label = reached {params.target_stage} by the export "
                f"({label.get('export_date')}); leads younger than {maturation} days at the export "
                f"({censored:,}) left out as censored; horizon_days does not apply"
            )
        if single:
            summary["single_snapshot"] = True
            summary["label"] = (
                f"leads-only data: one snapshot; label = reached {params.target_stage} at any time "
                "(no dates, so horizon_days does not apply)"
            )
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
