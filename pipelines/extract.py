"""The extract stage: an immutable, validated Parquet snapshot of the five CRM tables, plus a manifest.

Everything downstream reads this snapshot instead of the live CRM, so a run is reproducible and DVC can hash
its input. The tables pass the schemas on the way out of the database (`read_crm` validates), and the manifest
records row counts, when the snapshot was taken and `history_end`, the latest event timestamp in the CRM: label
windows that reach past it are not observed yet. The folder is written beside its final place and renamed over
it, so a failed run never leaves half a snapshot, nor destroys the previous good one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.atomic import atomic_directory
from pipelines.crm.schema import PRIMARY_KEYS, SCHEMAS, TABLES
from pipelines.errors import CrmDataError

log = logging.getLogger(__name__)

MANIFEST_FILE: Final = "manifest.json"
#: Optional tables a snapshot may hold beside the five (`pipelines.crm.attributes`: a mapped CRM's extra features).
EXTRA_TABLES: Final[tuple[str, ...]] = ("lead_attributes",)
#: Timestamp columns that show how far the CRM's history reaches (campaign dates are plans, so they do not count).
HISTORY_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("leads", "created_at"),
    ("leads", "updated_at"),
    ("activities", "occurred_at"),
    ("stage_history", "entered_at"),
)


def history_end(tables: Mapping[str, pd.DataFrame]) -> pd.Timestamp:
    """The latest event timestamp in the CRM: outcomes are known up to here and no further."""
    latest = [tables[t][c].max() for t, c in HISTORY_COLUMNS if t in tables and len(tables[t])]
    latest = [ts for ts in latest if pd.notna(ts)]
    if not latest:
        raise CrmDataError("the CRM holds no event timestamps (no leads, activities or stage entries)")
    return pd.Timestamp(max(latest)).tz_convert("UTC")


def check_no_future_events(
    tables: Mapping[str, pd.DataFrame], tolerance_minutes: int, now: datetime | None = None
) -> None:
    """Refuse events later than now plus the clock-skew tolerance: they would move `history_end` past the data
    and let label windows run into a future nobody has observed. The message names table, column and rows."""
    limit = pd.Timestamp(now or datetime.now(UTC)).tz_convert("UTC") + pd.Timedelta(minutes=tolerance_minutes)
    problems = []
    for table, column in HISTORY_COLUMNS:
        if table not in tables or not len(tables[table]):
            continue
        frame = tables[table]
        future = frame[column] > limit
        if future.any():
            key = PRIMARY_KEYS[table]
            rows = frame.loc[future].nlargest(5, column)
            examples = ", ".join(f"{key}={r[key]!r}: {r[column]:%Y-%m-%d %H:%M:%S}" for _, r in rows.iterrows())
            problems.append(
                f"table '{table}', column '{column}': {int(future.sum()):,} row(s) lie in the future "
                f"(after now + {tolerance_minutes} min, {limit:%Y-%m-%d %H:%M:%S}Z; "
                f"base.future_tolerance_minutes); e.g. {examples}"
            )
    if problems:
        raise CrmDataError("\n".join(problems))


def build_manifest(tables: Mapping[str, pd.DataFrame], extracted_at: datetime, source: str) -> dict[str, Any]:
    """Row counts, extraction time and end of history of a snapshot (JSON-ready)."""
    return {
        "extracted_at": pd.Timestamp(extracted_at).tz_convert("UTC").isoformat(),
        "history_end": history_end(tables).isoformat(),
        "source": source,
        "tables": {name: {"file": f"{name}.parquet", "rows": len(tables[name])} for name in TABLES},
    }


def write_snapshot(
    tables: Mapping[str, pd.DataFrame],
    out: Path,
    source: str,
    extracted_at: datetime | None = None,
    label: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write `<out>/<table>.parquet` for the five (validated) tables and `<out>/manifest.json`, atomically.

    `label` (a mapped CRM's `crm_import` row) goes into the manifest as `label`: how the features stage labels.
    """
    manifest = build_manifest(tables, extracted_at or datetime.now(UTC), source)
    if label is not None:
        manifest["label"] = dict(label)
    extras = [name for name in EXTRA_TABLES if name in tables]  # a mapped CRM's lead attributes
    manifest["tables"].update({name: {"file": f"{name}.parquet", "rows": len(tables[name])} for name in extras})
    with atomic_directory(out) as tmp:
        for name in (*TABLES, *extras):
            tables[name].to_parquet(tmp / f"{name}.parquet", index=False, compression="zstd")
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info(
        "snapshot of %s written to %s (history ends %s)",
        ", ".join(f"{n} {m['rows']:,}" for n, m in manifest["tables"].items()),
        out,
        manifest["history_end"],
    )
    return manifest


def read_manifest(raw: Path) -> dict[str, Any]:
    """The snapshot's manifest; CrmDataError when the folder is not a complete snapshot."""
    path = Path(raw) / MANIFEST_FILE
    if not path.exists():
        raise CrmDataError(f"{path} not found: {raw} is not a CRM snapshot (run `leadscore extract` first)")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
        manifest["history_end"] = pd.Timestamp(manifest["history_end"]).tz_convert("UTC")
        manifest["tables"] = {
            name: dict(manifest["tables"][name])
            for name in (*TABLES, *EXTRA_TABLES)
            if name in TABLES or name in manifest["tables"]
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise CrmDataError(f"{path} is not a valid snapshot manifest: {exc!r}") from None
    return manifest


def read_snapshot(
    raw: Path,
    columns: Mapping[str, Sequence[str]] | None = None,
    categorical: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The snapshot's tables (all columns, or those named per table) and its manifest.

    `categorical` names text columns to read as pandas categoricals (Parquet dictionaries): much less memory for
    repetitive text such as activity types at millions of rows. Row counts are checked against the manifest.
    """
    raw = Path(raw)
    manifest = read_manifest(raw)
    tables = {}
    for name in TABLES:
        path = raw / manifest["tables"][name]["file"]
        if not path.exists():
            raise CrmDataError(f"{path} not found: the snapshot in {raw} is incomplete")
        wanted = list(columns[name]) if columns and name in columns else list(SCHEMAS[name].columns)
        as_dict = [c for c in (categorical or {}).get(name, ()) if c in wanted]
        started = time.perf_counter()
        try:
            frame = pq.read_table(path, columns=wanted, read_dictionary=as_dict or None).to_pandas()
        except (pa.ArrowException, OSError) as exc:  # truncated, overwritten or hand-edited snapshot files
            raise CrmDataError(
                f"{path} is not a readable snapshot table ({str(exc).splitlines()[0][:200]}): "
                "run `leadscore extract` again"
            ) from None
        log.debug(
            "read %s rows x %d columns of %s in %.2f s",
            f"{len(frame):,}",
            len(wanted),
            path,
            time.perf_counter() - started,
        )
        if len(frame) != manifest["tables"][name]["rows"]:
            raise CrmDataError(
                f"{path} holds {len(frame):,} rows but the manifest says "
                f"{manifest['tables'][name]['rows']:,}: the snapshot is inconsistent"
            )
        tables[name] = frame
    for name in EXTRA_TABLES:  # optional tables (lead attributes of a mapped CRM) are read whole
        if name in manifest["tables"]:
            tables[name] = pd.read_parquet(raw / manifest["tables"][name]["file"])
    return tables, manifest


def read_import_label(engine: Any) -> dict[str, str] | None:
    """How a mapped CRM's labels were made (`crm_import`, written by `leadscore import`); None for other CRMs."""
    import sqlalchemy as sa

    from pipelines.crm.attributes import IMPORT_TABLE
    from pipelines.crm.db import read_table

    if not sa.inspect(engine).has_table(IMPORT_TABLE):
        return None
    rows = read_table(engine, IMPORT_TABLE)
    if len(rows) != 1:
        raise CrmDataError(f"table '{IMPORT_TABLE}' must hold one row, it holds {len(rows)}: rerun `leadscore import`")
    return {str(k): str(v) for k, v in rows.iloc[0].items() if pd.notna(v)}


def read_extra_tables(engine: Any, tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The optional tables beside the five (a mapped CRM's `lead_attributes`), checked; {} when absent."""
    import sqlalchemy as sa

    from pipelines.crm.attributes import ATTRIBUTES_TABLE, canonical_attributes
    from pipelines.crm.db import read_table

    if not sa.inspect(engine).has_table(ATTRIBUTES_TABLE):
        return {}
    attributes = canonical_attributes(read_table(engine, ATTRIBUTES_TABLE), tables["leads"]["lead_id"])
    return {ATTRIBUTES_TABLE: attributes}


def extract(
    url: str, out: Path, source: str | None = None, future_tolerance_minutes: int | None = None
) -> dict[str, Any]:
    """Read and validate the five tables from the database at `url`, and snapshot them into `out`.

    With `future_tolerance_minutes`, events later than now plus that many minutes are refused.
    """
    from pipelines.crm.db import display_url, make_engine, read_crm

    engine = make_engine(url)
    try:
        tables = read_crm(engine)
        tables.update(read_extra_tables(engine, tables))
        label = read_import_label(engine)
    finally:
        engine.dispose()
    if future_tolerance_minutes is not None:
        check_no_future_events(tables, future_tolerance_minutes)
        log.debug("no event later than now + %d min", future_tolerance_minutes)
    return write_snapshot(tables, out, source or display_url(url), label=label)
