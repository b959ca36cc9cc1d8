"""`leadscore demo-crm` end to end: the real console script writes a CRM that `validate` accepts."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import DemoCrmParams
from pipelines.crm import demo
from pipelines.crm import truth as ground_truth
from tests.support.params import demo_icp

LEADSCORE = shutil.which("leadscore", path=str(Path(sys.executable).parent)) or shutil.which("leadscore")


@pytest.mark.skipif(LEADSCORE is None, reason="the leadscore console script is not installed (pip install -e .)")
def test_demo_crm_writes_a_valid_database_and_truth_beside_it(tmp_path: Path) -> None:
    db = tmp_path / "out" / "crm.db"
    url = f"sqlite:///{db}"
    run = subprocess.run(
        [LEADSCORE, "demo-crm", "--url", url, "--leads", "1500", "--seed", "3", "--end-date", "2026-11-20"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    truth = ground_truth.read_truth(tmp_path / "out" / "crm_truth.parquet")
    assert len(truth) == 1500
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
        leads = pd.read_sql_query("select lead_id from leads", conn)
    assert tables == {"campaigns", "accounts", "leads", "activities", "stage_history"}
    assert set(leads["lead_id"]) == set(truth["lead_id"])
    check = subprocess.run([LEADSCORE, "validate", "--url", url], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert "valid" in check.stdout


def test_demo_crm_rerun_replaces_the_tables_not_appends(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    url = f"sqlite:///{tmp_path / 'crm.db'}"
    args = [
        "demo-crm",
        "--url",
        url,
        "--leads",
        "400",
        "--seed",
        "5",
        "--end-date",
        "2026-11-20",
        "--history-days",
        "200",
        "--truth",
        str(tmp_path / "truth.parquet"),
    ]
    for _ in range(2):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "crm.db") as conn:
        assert conn.execute("select count(*) from leads").fetchone()[0] == 400


def test_demo_crm_rejects_a_bad_end_date(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(app, ["demo-crm", "--url", f"sqlite:///{tmp_path / 'x.db'}", "--end-date", "20-11"])
    assert result.exit_code == 2
    assert not (tmp_path / "x.db").exists()


@pytest.mark.postgres
def test_demo_crm_writes_to_postgresql_and_validates(pg_schema_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.crm.db import make_engine, read_crm

    truth_path = tmp_path / "truth.parquet"
    result = CliRunner().invoke(
        app,
        [
            "demo-crm",
            "--url",
            pg_schema_url,
            "--leads",
            "600",
            "--seed",
            "11",
            "--end-date",
            "2026-11-20",
            "--history-days",
            "300",
            "--truth",
            str(truth_path),
        ],
    )
    assert result.exit_code == 0, result.output
    tables = read_crm(make_engine(pg_schema_url))
    expected = demo.generate(
        DemoCrmParams(leads=600, seed=11, end_date=pd.Timestamp("2026-11-20").date(), history_days=300), demo_icp()
    ).tables
    for name, frame in expected.items():
        assert len(tables[name]) == len(frame), name
    pd.testing.assert_series_equal(
        tables["activities"]["occurred_at"], expected["activities"]["occurred_at"], check_names=False
    )
    assert CliRunner().invoke(app, ["validate", "--url", pg_schema_url]).exit_code == 0


def test_a_big_demo_streams_in_batches_into_one_crm_that_equals_the_in_memory_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.crm.db import make_engine, read_crm
    from pipelines.crm.schema import validate_crm

    params = DemoCrmParams(leads=900, seed=4, end_date=date(2026, 11, 20), history_days=150, batch_leads=400)
    assert demo.batch_sizes(900, 400) == [300, 300, 300]
    db = tmp_path / "crm.db"
    result = CliRunner().invoke(
        app,
        [
            *("demo-crm", "--url", f"sqlite:///{db}", "--leads", "900", "--seed", "4", "--end-date", "2026-11-20"),
            *("--history-days", "150", "--batch-leads", "400"),
        ],
    )
    assert result.exit_code == 0, result.output
    written = read_crm(make_engine(f"sqlite:///{db}"))
    expected = demo.generate(params, demo_icp())
    for name, frame in validate_crm(expected.tables).items():
        pd.testing.assert_frame_equal(
            written[name].sort_values(list(frame.columns[:1])).reset_index(drop=True),
            frame.reset_index(drop=True),
            check_dtype=False,
            check_like=True,
        )
    truth = ground_truth.read_truth(tmp_path / "crm_truth.parquet")
    assert truth["lead_id"].tolist() == expected.truth["lead_id"].tolist() == list(range(1, 901))
    # every batch has its own accounts, ids follow on; the first batch is the 300-lead CRM of the same seed
    first = demo.generate(params.model_copy(update={"leads": 300}), demo_icp())
    batches = list(demo.iter_batches(params, demo_icp()))
    assert [len(b.tables["leads"]) for b in batches] == [300, 300, 300]
    for name in first.tables:
        pd.testing.assert_frame_equal(batches[0].tables[name], first.tables[name])
    assert expected.tables["accounts"]["account_id"].is_unique
    assert expected.tables["activities"]["activity_id"].tolist() == list(
        range(1, len(expected.tables["activities"]) + 1)
    )
    later = expected.tables["leads"].iloc[300:]
    assert later["account_id"].dropna().min() > first.tables["accounts"]["account_id"].max()
    assert batches[1].tables["leads"]["created_at"].tolist() != first.tables["leads"]["created_at"].tolist()


def test_a_demo_that_fits_one_batch_is_the_same_whatever_the_batch_size() -> None:
    small = DemoCrmParams(leads=400, seed=9, end_date=date(2026, 11, 20), history_days=150, batch_leads=400)
    a = demo.generate(small, demo_icp())
    b = demo.generate(small.model_copy(update={"batch_leads": 10_000}), demo_icp())
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    pd.testing.assert_frame_equal(a.truth, b.truth)
