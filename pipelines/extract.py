"""The extract stage: an immutable, validated Parquet snapshot of the five CRM tables, plus a manifest.

Everything downstream reads this snapshot instead of the live CRM, so a run is reproducible and DVC can hash
its input. `extract` streams each table from the database in batches (`pipelines.crm.stream`: ADBC Arrow where a
driver is installed, one read transaction), validates every batch with the CRM schemas (keys unique and
references checked across batches) and appends it to the table's Parquet file, so memory holds one batch however
large the CRM. The manifest records row counts, when the snapshot was taken and `history_end`, the latest event
timestamp in the CRM (label windows that reach past it are not observed yet), both noted on the way. The folder
is written beside its final place and renamed over it, so a failed run never leaves half a snapshot, nor
destroys the previous good one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.atomic import atomic_directory
from pipelines.crm.schema import PRIMARY_KEYS, SCHEMAS, TABLES, TIMESTAMP_COLUMNS, validate_table
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
_EXAMPLES: Final = 5
#: Rows per batch when a snapshot table is read with a filter.
_FILTER_ROWS: Final = 1_000_000


def future_limit(tolerance_minutes: int, now: datetime | None = None) -> pd.Timestamp:
    """The latest time a CRM event or an as-of time may carry: now (UTC) plus the clock-skew tolerance."""
    return pd.Timestamp(now or datetime.now(UTC)).tz_convert("UTC") + pd.Timedelta(minutes=tolerance_minutes)


class EventClock:
    """What a stream of CRM batches says about time: the latest event (`history_end`) and the events later than
    a limit (now plus the clock-skew tolerance), with the five latest of them per column as examples."""

    def __init__(self, limit: pd.Timestamp | None = None, tolerance_minutes: int | None = None) -> None:
        self.limit = limit
        self.tolerance_minutes = tolerance_minutes
        self.latest: dict[tuple[str, str], pd.Timestamp] = {}
        self.future: dict[tuple[str, str], tuple[int, pd.DataFrame]] = {}

    @classmethod
    def until(cls, tolerance_minutes: int, now: datetime | None = None) -> EventClock:
        """A clock that notes events later than now + `tolerance_minutes`."""
        return cls(future_limit(tolerance_minutes, now), tolerance_minutes)

    def add(self, table: str, frame: pd.DataFrame) -> None:
        """Note one batch of `table` (canonical dtypes)."""
        for name, column in HISTORY_COLUMNS:
            if name != table or not len(frame):
                continue
            latest = frame[column].max()
            if pd.notna(latest) and ((name, column) not in self.latest or latest > self.latest[(name, column)]):
                self.latest[(name, column)] = latest
            if self.limit is None:
                continue
            future = frame[column] > self.limit
            if future.any():
                key = PRIMARY_KEYS[table]
                count, rows = self.future.get((name, column), (0, frame.iloc[:0][[key, column]]))
                rows = pd.concat([rows, frame.loc[future, [key, column]].nlargest(_EXAMPLES, column)])
                self.future[(name, column)] = (count + int(future.sum()), rows.nlargest(_EXAMPLES, column))

    def history_end(self) -> pd.Timestamp:
        """The latest event timestamp seen: outcomes are known up to here and no further."""
        if not self.latest:
            raise CrmDataError("the CRM holds no event timestamps (no leads, activities or stage entries)")
        return pd.Timestamp(max(self.latest.values())).tz_convert("UTC")

    def check(self) -> None:
        """Refuse events later than the limit: they would move `history_end` past the data and let label windows
        run into a future nobody has observed. The message names table, column and rows."""
        problems = []
        for (table, column), (count, rows) in self.future.items():
            key = PRIMARY_KEYS[table]
            examples = ", ".join(f"{key}={r[key]!r}: {r[column]:%Y-%m-%d %H:%M:%S}" for _, r in rows.iterrows())
            problems.append(
                f"table '{table}', column '{column}': {count:,} row(s) lie in the future "
                f"(after now + {self.tolerance_minutes} min, {self.limit:%Y-%m-%d %H:%M:%S}Z; "
                f"base.future_tolerance_minutes); e.g. {examples}"
            )
        if problems:
            raise CrmDataError("\n".join(problems))


def history_end(tables: Mapping[str, pd.DataFrame]) -> pd.Timestamp:
    """The latest event timestamp in the CRM: outcomes are known up to here and no further."""
    clock = EventClock()
    for table in dict.fromkeys(t for t, _ in HISTORY_COLUMNS):
        if table in tables:
            clock.add(table, tables[table])
    return clock.history_end()


def check_no_future_events(
    tables: Mapping[str, pd.DataFrame], tolerance_minutes: int, now: datetime | None = None
) -> None:
    """Refuse events later than now plus the clock-skew tolerance (`EventClock.check`)."""
    clock = EventClock.until(tolerance_minutes, now)
    for table in dict.fromkeys(t for t, _ in HISTORY_COLUMNS):
        if table in tables:
            clock.add(table, tables[table])
    clock.check()


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow types a CRM table's canonical dtypes are stored with (the same for every batch)."""
    fields = []
    for column, spec in SCHEMAS[table].columns.items():
        dtype = str(spec.dtype).lower()
        if column in TIMESTAMP_COLUMNS[table]:
            kind = pa.timestamp("ns", tz="UTC")
        elif dtype.startswith("int"):
            kind = pa.int64()
        elif dtype.startswith("float"):
            kind = pa.float64()
        else:
            kind = pa.large_string()
        fields.append(pa.field(column, kind))
    return pa.schema(fields)


class SnapshotWriter:
    """Writes the tables of a snapshot into a folder batch by batch (zstd Parquet, one row group per batch), noting
    row counts and event times on the way; memory holds one batch."""

    def __init__(self, folder: Path, clock: EventClock) -> None:
        self.folder = folder
        self.clock = clock
        self.rows: dict[str, int] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}

    def write(self, table: str, frame: pd.DataFrame) -> None:
        """Append one batch of a CRM table (canonical dtypes, as the schemas return them)."""
        data = pa.Table.from_pandas(frame, schema=arrow_schema(table), preserve_index=False)
        if table not in self._writers:
            self._writers[table] = pq.ParquetWriter(self.folder / f"{table}.parquet", data.schema, compression="zstd")
        self._writers[table].write_table(data)
        self.rows[table] = self.rows.get(table, 0) + len(frame)
        self.clock.add(table, frame)

    def close(self) -> None:
        """Finish every file (an empty table still gets one)."""
        for table in TABLES:
            if table not in self._writers:  # no batch at all: the canonical dtypes of no rows
                self.write(table, validate_table(table, pd.DataFrame({c: [] for c in SCHEMAS[table].columns})))
        for writer in self._writers.values():
            writer.close()


def build_manifest(rows: Mapping[str, int], end: pd.Timestamp, extracted_at: datetime, source: str) -> dict[str, Any]:
    """Row counts, extraction time and end of history of a snapshot (JSON-ready)."""
    return {
        "extracted_at": pd.Timestamp(extracted_at).tz_convert("UTC").isoformat(),
        "history_end": end.isoformat(),
        "source": source,
        "tables": {name: {"file": f"{name}.parquet", "rows": rows.get(name, 0)} for name in TABLES},
    }


def _finish(
    tmp: Path,
    writer: SnapshotWriter,
    source: str,
    extracted_at: datetime | None,
    label: Mapping[str, str] | None,
    extras: Mapping[str, pd.DataFrame],
) -> dict[str, Any]:
    """Close the table files, check the clock, write the optional tables and the manifest into `tmp`."""
    writer.close()
    writer.clock.check()
    manifest = build_manifest(writer.rows, writer.clock.history_end(), extracted_at or datetime.now(UTC), source)
    if label is not None:
        manifest["label"] = dict(label)
    for name, frame in extras.items():  # a mapped CRM's lead attributes
        frame.to_parquet(tmp / f"{name}.parquet", index=False, compression="zstd")
        manifest["tables"][name] = {"file": f"{name}.parquet", "rows": len(frame)}
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _logged(manifest: dict[str, Any], out: Path) -> dict[str, Any]:
    log.info(
        "snapshot of %s written to %s (history ends %s)",
        ", ".join(f"{n} {m['rows']:,}" for n, m in manifest["tables"].items()),
        out,
        manifest["history_end"],
    )
    return manifest


def write_snapshot(
    tables: Mapping[str, pd.DataFrame],
    out: Path,
    source: str,
    extracted_at: datetime | None = None,
    label: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write `<out>/<table>.parquet` for the five (validated) tables in memory and `<out>/manifest.json`,
    atomically (the extract stage streams instead: `extract`).

    `label` (a mapped CRM's `crm_import` row) goes into the manifest as `label`: how the features stage labels.
    """
    extras = {name: tables[name] for name in EXTRA_TABLES if name in tables}
    with atomic_directory(out) as tmp:
        writer = SnapshotWriter(tmp, EventClock())
        for name in TABLES:
            writer.write(name, tables[name])
        manifest = _finish(tmp, writer, source, extracted_at, label, extras)
    return _logged(manifest, out)


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


def snapshot_file(raw: Path, manifest: Mapping[str, Any], name: str) -> Path:
    """The path of one table of the snapshot at `raw`; CrmDataError when it is missing."""
    path: Path = Path(raw) / str(manifest["tables"][name]["file"])
    if not path.exists():
        raise CrmDataError(f"{path} not found: the snapshot in {raw} is incomplete")
    return path


def unreadable(path: Path, exc: Exception) -> CrmDataError:
    """The error for a truncated, overwritten or hand-edited snapshot file."""
    return CrmDataError(
        f"{path} is not a readable snapshot table ({str(exc).splitlines()[0][:200]}): run `leadscore extract` again"
    )


def read_snapshot_table(
    raw: Path,
    manifest: Mapping[str, Any],
    name: str,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    where: tuple[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """One table of the snapshot (all columns or those named; `categorical` text columns as categoricals),
    its row count checked against the manifest.

    `where` (column, values): only the rows whose column holds one of `values`, read batch by batch, so memory
    follows the rows kept, not the table.
    """
    path = snapshot_file(raw, manifest, name)
    wanted = list(columns) if columns else list(SCHEMAS[name].columns)
    as_dict = [c for c in categorical if c in wanted]
    started = time.perf_counter()
    try:
        if where is None:
            data = pq.read_table(path, columns=wanted, read_dictionary=as_dict or None)
            rows = data.num_rows
        else:
            column, values = where
            keep = pa.array(np.unique(np.asarray(values, dtype=np.int64)))
            source = pq.ParquetFile(path, read_dictionary=as_dict or None)
            batches, rows = [], 0
            for batch in source.iter_batches(batch_size=_FILTER_ROWS, columns=wanted):
                batches.append(batch.filter(pc.is_in(batch.column(column), value_set=keep)))
                rows += batch.num_rows
            schema = source.schema_arrow
            data = pa.Table.from_batches(batches, pa.schema([schema.field(c) for c in wanted], schema.metadata))
        frame: pd.DataFrame = data.to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise unreadable(path, exc) from None
    log.debug(
        "read %s of %s rows x %d columns of %s in %.2f s",
        f"{len(frame):,}",
        f"{rows:,}",
        len(wanted),
        path,
        time.perf_counter() - started,
    )
    if rows != manifest["tables"][name]["rows"]:
        raise CrmDataError(
            f"{path} holds {rows:,} rows but the manifest says "
            f"{manifest['tables'][name]['rows']:,}: the snapshot is inconsistent"
        )
    return frame


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
    tables = {
        name: read_snapshot_table(raw, manifest, name, (columns or {}).get(name), (categorical or {}).get(name, ()))
        for name in TABLES
    }
    tables.update(read_extra_tables_of(raw, manifest))
    return tables, manifest


def read_extra_tables_of(raw: Path, manifest: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The optional tables of a snapshot (lead attributes of a mapped CRM), read whole; {} when absent."""
    return {
        name: pd.read_parquet(Path(raw) / manifest["tables"][name]["file"])
        for name in EXTRA_TABLES
        if name in manifest["tables"]
    }


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


def read_extra_tables(engine: Any, lead_ids: Callable[[], np.ndarray]) -> dict[str, pd.DataFrame]:
    """The optional tables beside the five (a mapped CRM's `lead_attributes`, checked against the `lead_ids`
    the CRM has); {} when absent."""
    import sqlalchemy as sa

    from pipelines.crm.attributes import ATTRIBUTES_TABLE, canonical_attributes
    from pipelines.crm.db import read_table

    if not sa.inspect(engine).has_table(ATTRIBUTES_TABLE):
        return {}
    attributes = canonical_attributes(read_table(engine, ATTRIBUTES_TABLE), pd.Series(lead_ids(), name="lead_id"))
    return {ATTRIBUTES_TABLE: attributes}


def extract(
    url: str,
    out: Path,
    source: str | None = None,
    future_tolerance_minutes: int | None = None,
    progress: bool = False,
    batch_rows: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Stream the five tables from the database at `url`, validate every batch and write the snapshot into
    `out` as it arrives (atomically: a failure leaves the previous snapshot as it was).

    With `future_tolerance_minutes`, events later than now plus that many minutes are refused. Memory holds one
    batch (`pipelines.crm.stream`) and the keys' bitmaps; `batch_rows` overrides the rows per batch (tests).
    """
    from pipelines.crm.db import display_url, make_engine
    from pipelines.crm.stream import CrmChecker, read_crm_batches

    clock = EventClock() if future_tolerance_minutes is None else EventClock.until(future_tolerance_minutes)
    engine = make_engine(url)
    try:
        checker = CrmChecker()
        with atomic_directory(out) as tmp:
            writer = SnapshotWriter(tmp, clock)
            for table, frame in read_crm_batches(engine, checker, batch_rows, progress):
                writer.write(table, frame)
            extras = read_extra_tables(engine, checker.keys["leads"].values)
            label = read_import_label(engine)
            manifest = _finish(tmp, writer, source or display_url(url), None, label, extras)
    finally:
        engine.dispose()
    return _logged(manifest, out)
