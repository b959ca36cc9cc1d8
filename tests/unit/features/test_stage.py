"""The features stage's I/O shell: a snapshot folder in, one Parquet file of feature rows and a summary out."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from crm_builder import build_crm, lead, params

from pipelines.config import DemoCrmParams, load_params
from pipelines.crm.demo import generate
from pipelines.extract import write_snapshot
from pipelines.features.build import lead_groups, plan_chunks
from pipelines.features.partition import IdLookup, plan_parts
from pipelines.features.spec import ACCOUNT, SNAPSHOTS_FILE
from pipelines.features.stage import run_features
from tests.support.params import demo_icp


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


REPO_PARAMS = Path(__file__).resolve().parents[3] / "params.yaml"


@pytest.fixture(scope="module")
def demo_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 600-lead demo CRM snapshot: leads with and without accounts, a year of history."""
    tables = generate(
        DemoCrmParams(leads=600, seed=5, end_date=date(2026, 11, 20), history_days=365), demo_icp()
    ).tables
    raw = tmp_path_factory.mktemp("demo") / "raw"
    write_snapshot(tables, raw, source="demo")
    return raw


def _features(raw: Path, out: Path, **changes: object) -> tuple[pd.DataFrame, dict[str, object]]:
    base = load_params(REPO_PARAMS).features.model_copy(update={"chunk_leads": 40, **changes})
    summary = run_features(raw, out, base, progress=False)
    return pd.read_parquet(out / SNAPSHOTS_FILE), summary


@pytest.mark.parametrize("sample_leads", [None, 150])
def test_parts_give_the_rows_of_the_whole_snapshot_in_the_same_order(
    demo_raw: Path, tmp_path: Path, sample_leads: int | None
) -> None:
    whole, whole_summary = _features(demo_raw, tmp_path / "whole", part_leads=10_000, sample_leads=sample_leads)
    parts, parts_summary = _features(demo_raw, tmp_path / "parts", part_leads=100, sample_leads=sample_leads)

    pd.testing.assert_frame_equal(parts, whole)
    assert parts_summary == whole_summary
    assert (tmp_path / "parts" / "feature_list.json").read_text() == (
        tmp_path / "whole" / "feature_list.json"
    ).read_text()
    if sample_leads is not None:
        assert whole["lead_id"].nunique() == sample_leads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts", "whole"]  # the parts' files are gone


def test_a_part_is_chunked_as_the_whole_crm_is(demo_raw: Path) -> None:
    params = load_params(REPO_PARAMS).features.model_copy(update={"chunk_leads": 40, "part_leads": 100})
    leads = pq.read_table(demo_raw / "leads.parquet", columns=["lead_id", "account_id"])

    plan = plan_parts(leads, params)

    group = lead_groups(pd.Series(leads.column("account_id").to_pandas(), dtype="Int64"))
    chunks = plan_chunks(np.sort(group, kind="stable"), 40)
    assert set(plan.starts[:-1]) <= set(chunks[:-1])  # every part starts at a chunk
    assert plan.starts[-1] == len(group) and plan.count == len(set(chunks[:-1] // 100))
    assert plan.chunks == len(chunks) - 1
    ids = leads.column("lead_id").to_numpy()
    parts = plan.lead_part(ids)
    assert plan.count > 3 and (group < 0).any()  # several parts; some leads without an account
    assert np.bincount(parts).tolist() == np.diff(plan.starts).tolist()
    accounts = leads.column("account_id").to_pandas().dropna().astype("int64").to_numpy()
    with_account = parts[leads.column("account_id").is_valid().to_numpy(zero_copy_only=False)]
    assert (plan.account_part(accounts) == with_account).all()  # an account's leads share its part


def test_leads_only_data_is_one_snapshot_in_parts_too(tmp_path: Path) -> None:
    tables = build_crm(
        [lead(i, account_id=10 + i % 2) for i in range(1, 7)],
        stages=[(1, 5, "SQL"), (2, 9, "Won")],
    )
    write_snapshot(tables, tmp_path / "raw", source="test")

    whole = run_features(tmp_path / "raw", tmp_path / "a", params(chunk_leads=1, part_leads=100), progress=False)
    parts = run_features(tmp_path / "raw", tmp_path / "b", params(chunk_leads=1, part_leads=1), progress=False)

    assert parts == whole and whole["single_snapshot"] is True
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "b" / SNAPSHOTS_FILE), pd.read_parquet(tmp_path / "a" / SNAPSHOTS_FILE)
    )


def test_an_id_lookup_answers_dense_and_sparse_ids() -> None:
    dense = IdLookup(np.array([3, 1, 2]), np.array([30, 10, 20]))
    sparse = IdLookup(np.array([10**12, 5, 10**15]), np.array([1, 2, 3]))

    assert dense(np.array([1, 2, 3, 0, 99, -4])).tolist() == [10, 20, 30, -1, -1, -1]
    assert sparse(np.array([5, 10**15, 10**12, 6, 10**16])).tolist() == [2, 3, 1, -1, -1]
    assert IdLookup(np.zeros(0), np.zeros(0))(np.array([1])).tolist() == [-1]
