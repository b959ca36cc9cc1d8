"""The features stage's I/O shell: a snapshot folder in, one Parquet file of feature rows and a summary out."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from crm_builder import build_crm, lead, params

from pipelines.extract import write_snapshot
from pipelines.features.spec import ACCOUNT, SNAPSHOTS_FILE
from pipelines.features.stage import run_features


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """Two leads without an account (the first chunk) and two accounts of two leads each (later chunks)."""
    tables = build_crm(
        [
            lead(1),
            lead(2, created=1),
            lead(3, account_id=10),
            lead(4, created=2, account_id=10),
            lead(5, account_id=11),
            lead(6, created=3, account_id=11),
        ],
        activities=[(1, 1, "email_open"), (3, 4, "pricing_page_visit"), (5, 9, "web_visit"), (6, 200, "email_open")],
        stages=[(4, 20, "MQL"), (4, 25, "SQL")],
    )
    write_snapshot(tables, tmp_path / "raw", source="test")
    return tmp_path / "raw"


def test_chunks_with_and_without_leads_lacking_an_account_share_one_file(raw: Path, tmp_path: Path) -> None:
    summary = run_features(raw, tmp_path / "features", params(chunk_leads=2), progress=False)

    path = tmp_path / "features" / SNAPSHOTS_FILE
    assert pq.ParquetFile(path).metadata.num_row_groups == 3  # one per chunk: no account, account 10, account 11
    frame = pd.read_parquet(path)
    assert len(frame) == summary["rows"] > 0
    without = frame["lead_id"].isin([1, 2])
    assert frame.loc[without, ACCOUNT].isna().all()
    assert frame.loc[~without, ACCOUNT].notna().all()
    assert json.loads((tmp_path / "features" / "summary.json").read_text())["leads"] == 6
