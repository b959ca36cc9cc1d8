"""The extract stage: a faithful Parquet snapshot with a manifest, written all-or-nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from pipelines.atomic import atomic_directory
from pipelines.crm.schema import TABLES, validate_crm
from pipelines.errors import CrmDataError
from pipelines.extract import extract, history_end, read_manifest, read_snapshot, write_snapshot


@pytest.fixture
def crm(tiny_crm: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return validate_crm(tiny_crm)


def test_snapshot_round_trips_every_table_with_canonical_dtypes(crm: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    write_snapshot(crm, tmp_path / "raw", source="test")

    tables, manifest = read_snapshot(tmp_path / "raw")

    for name, frame in crm.items():
        pd.testing.assert_frame_equal(tables[name], frame, check_dtype=True)
    assert manifest["tables"]["activities"] == {"file": "activities.parquet", "rows": 3}


def test_manifest_records_counts_times_and_the_end_of_history(crm: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    when = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)

    write_snapshot(crm, tmp_path / "raw", source="sqlite:///crm.db", extracted_at=when)

    raw = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert raw["extracted_at"] == "2025-07-01T12:00:00+00:00"
    assert raw["source"] == "sqlite:///crm.db"
    assert {name: meta["rows"] for name, meta in raw["tables"].items()} == {
        "campaigns": 2,
        "accounts": 2,
        "leads": 3,
        "activities": 3,
        "stage_history": 3,
    }
    assert raw["history_end"] == "2025-06-01T08:00:00+00:00"  # lead 3's creation, the latest event
    assert read_manifest(tmp_path / "raw")["history_end"] == pd.Timestamp("2025-06-01 08:00", tz="UTC")


def test_history_end_ignores_campaign_dates(crm: dict[str, pd.DataFrame]) -> None:
    crm["campaigns"].loc[0, "end_date"] = pd.Timestamp("2030-01-01", tz="UTC")

    assert history_end(crm) == pd.Timestamp("2025-06-01 08:00", tz="UTC")


def test_a_failed_write_keeps_the_previous_snapshot(
    crm: dict[str, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "raw"
    write_snapshot(crm, out, source="first")
    calls = {"n": 0}
    original = pq.ParquetWriter.write_table

    def flaky(self: pq.ParquetWriter, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # the third table's rows
            raise OSError("disk full")
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pq.ParquetWriter, "write_table", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_snapshot(crm, out, source="second")

    assert read_manifest(out)["source"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no temporary folder left behind


def test_atomic_directory_creates_and_replaces(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("1")
    with atomic_directory(out) as tmp:
        (tmp / "b.txt").write_text("2")

    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_reading_something_that_is_not_a_snapshot_fails_clearly(crm: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    with pytest.raises(CrmDataError, match="run `leadscore extract` first"):
        read_snapshot(tmp_path)
    write_snapshot(crm, tmp_path / "raw", source="test")
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    manifest["tables"]["leads"]["rows"] = 4
    (tmp_path / "raw" / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(CrmDataError, match="inconsistent"):
        read_snapshot(tmp_path / "raw")


def test_selected_columns_and_dictionary_columns(crm: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    write_snapshot(crm, tmp_path / "raw", source="test")

    tables, _ = read_snapshot(
        tmp_path / "raw", {"activities": ("lead_id", "activity_type")}, {"activities": ("activity_type",)}
    )

    assert list(tables["activities"].columns) == ["lead_id", "activity_type"]
    assert isinstance(tables["activities"]["activity_type"].dtype, pd.CategoricalDtype)
    assert list(tables["leads"].columns) == list(crm["leads"].columns)


def test_extract_reads_validates_and_snapshots_a_database(tiny_crm_sqlite: str, tmp_path: Path) -> None:
    manifest = extract(tiny_crm_sqlite, tmp_path / "raw")

    tables, _ = read_snapshot(tmp_path / "raw")
    assert manifest["tables"]["leads"]["rows"] == 3
    assert str(tables["activities"]["occurred_at"].dtype) == "datetime64[ns, UTC]"
    assert manifest["source"] == tiny_crm_sqlite


def test_extract_in_batches_writes_the_same_tables_as_a_whole_table_snapshot(
    tiny_crm_sqlite: str, crm: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    manifest = extract(tiny_crm_sqlite, tmp_path / "raw", batch_rows=dict.fromkeys(TABLES, 1))
    write_snapshot(crm, tmp_path / "whole", source="test")

    streamed, _ = read_snapshot(tmp_path / "raw")
    whole, expected = read_snapshot(tmp_path / "whole")
    for name in TABLES:
        pd.testing.assert_frame_equal(streamed[name], whole[name], obj=name)
    assert pq.ParquetFile(tmp_path / "raw" / "activities.parquet").metadata.num_row_groups == 3  # a row group a batch
    assert manifest["history_end"] == expected["history_end"].isoformat()
    assert manifest["tables"] == {name: {"file": f"{name}.parquet", "rows": len(crm[name])} for name in TABLES}


def test_future_events_in_a_late_batch_leave_the_previous_snapshot(tiny_crm_sqlite: str, tmp_path: Path) -> None:
    out = tmp_path / "raw"
    extract(tiny_crm_sqlite, out, source="first")
    engine = sa.create_engine(tiny_crm_sqlite)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE activities SET occurred_at = '2099-01-01 00:00:00' WHERE activity_id = 102")
    engine.dispose()

    with pytest.raises(CrmDataError, match=r"'occurred_at': 1 row\(s\) lie in the future .* activity_id=102"):
        extract(tiny_crm_sqlite, out, future_tolerance_minutes=60, batch_rows=dict.fromkeys(TABLES, 1))

    assert read_manifest(out)["source"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crm.db", "raw"]


def test_an_empty_table_still_gets_its_file_and_dtypes(tiny_crm_sqlite: str, tmp_path: Path) -> None:
    engine = sa.create_engine(tiny_crm_sqlite)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM stage_history")
    engine.dispose()

    manifest = extract(tiny_crm_sqlite, tmp_path / "raw")

    tables, _ = read_snapshot(tmp_path / "raw")
    assert manifest["tables"]["stage_history"]["rows"] == 0
    assert str(tables["stage_history"]["entered_at"].dtype) == "datetime64[ns, UTC]"
