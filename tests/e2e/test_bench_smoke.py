"""The benchmark scripts still run: bench/bench_score.py and bench/bench_scale.py at a tiny size, with a tiny
registered model, so they cannot rot between the (manual, hour-long) benchmark runs.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.tiny_model import register_tiny, tiny_params

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A temporary MLflow store with the tiny model registered as lead-scoring v1 (alias champion)."""
    root = tmp_path_factory.mktemp("bench_mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    register_tiny(root, uri, seed=0, params_path=tiny_params(root))
    return uri


@pytest.fixture(scope="module")
def quick_params(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The repository's params with a short LightGBM run (the smoke test checks the plumbing, not the model)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(max_rounds=30, early_stopping_rounds=10, min_rounds=10, tune_trials=0, logreg_max_iter=30)
    raw["rules"]["file"] = str(REPO / raw["rules"]["file"])
    path = tmp_path_factory.mktemp("bench_params") / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_bench_score_runs_all_three_implementations(tmp_path: Path, tracking_uri: str, quick_params: str) -> None:
    proc = _run(
        "bench_score.py",
        "--leads",
        "1500",
        "--work",
        str(tmp_path),
        "--tracking-uri",
        tracking_uri,
        "--params",
        quick_params,
        "--sample",
        "15",
        "--reasons-for",
        "flagged",
    )
    report = json.loads((tmp_path / "bench_score_flagged.json").read_text())
    results = report["results"]
    assert set(results) == {"ours", "floor", "floor_no_reasons", "realistic", "straightforward"}
    ours = results["ours"]
    assert 0 < ours["leads"] <= ours["leads_read"] == 1500
    # every implementation scored the same open leads; ours wrote one row per lead
    assert {r["leads"] for r in results.values()} == {ours["leads"]}
    assert ours["rows_written"] == ours["leads"]
    with sqlite3.connect(tmp_path / "scores.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM lead_scores").fetchone()[0] == ours["leads"]
    assert set(ours["phases"]) == {"read", "features", "predict", "write", "total"}
    assert results["floor_no_reasons"]["explained"] == 0
    assert results["realistic"]["explained"] == results["floor"]["explained"] > 0  # the same leads get reasons
    with sqlite3.connect(tmp_path / "scores_realistic.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM lead_scores").fetchone()[0] == ours["leads"]
    assert results["straightforward"]["sample"] == 15
    assert all(r["peak_rss_mib"] > 50 and r["seconds"] > 0 for r in results.values())
    assert "| ours |" in proc.stdout and "target >= 5x" in proc.stdout


def test_bench_scale_runs_every_step(tmp_path: Path, tracking_uri: str, quick_params: str) -> None:
    proc = _run(
        "bench_scale.py",
        "--leads",
        "3000",
        "--work",
        str(tmp_path),
        "--tracking-uri",
        tracking_uri,
        "--params",
        quick_params,
        "--reasons-for",
        "flagged",
    )
    report = json.loads((tmp_path / "bench_scale.json").read_text())
    results = report["results"]
    assert list(results) == ["generate", "extract", "features", "rules", "train", "score"]
    assert results["generate"]["rows"]["leads"] == results["extract"]["rows"]["leads"] == 3000
    assert results["features"]["rows_out"] == results["rules"]["rows_out"] == results["train"]["rows_out"] > 3000
    assert 0 < results["score"]["rows_out"] <= results["score"]["leads_read"] == 3000
    assert all(r["peak_rss_mib"] > 50 and r["seconds"] > 0 and r["cpu_s"] > 0 for r in results.values())
    assert "| train |" in proc.stdout
    # the sampled variant of the model steps, beside the full ones
    _run(
        "bench_scale.py",
        "--leads",
        "3000",
        "--work",
        str(tmp_path),
        "--params",
        quick_params,
        "--steps",
        "features,rules,train",
        "--sample-leads",
        "1000",
    )
    sampled = json.loads((tmp_path / "bench_scale.json").read_text())["results"]
    assert sampled["features (sample 1000)"]["leads"] <= 1000 < results["features"]["leads"]
    assert sampled["train (sample 1000)"]["leads"] == sampled["features (sample 1000)"]["leads"]
    assert sampled["rules (sample 1000)"]["rows_out"] == sampled["features (sample 1000)"]["rows_out"]
    # a second run reuses the generated CRM instead of timing the generator again
    again = _run(
        "bench_scale.py",
        "--leads",
        "3000",
        "--work",
        str(tmp_path),
        "--tracking-uri",
        tracking_uri,
        "--steps",
        "generate",
    )
    assert "reusing the generated CRM" in again.stderr


def test_bench_tree_reports_the_peak_memory_of_the_whole_process_tree(tmp_path: Path) -> None:
    """A parent that holds little and a child that holds ~200 MiB: the tree's peak counts the child."""
    child = "import time; b = bytearray(200 * 2**20); time.sleep(1.5)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    out = tmp_path / "tree.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_tree.py"),
            "--every",
            "0.2",
            "--out",
            str(out),
            "--",
            sys.executable,
            "-c",
            parent,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == json.loads(out.read_text())
    assert report["exit_code"] == 0 and report["samples"] >= 3
    assert report["peak_tree_rss_mib"] >= 200  # the child's buffer is counted
    assert report["peak_tree_rss_mib"] > report["peak_process_rss_mib"]  # and the parent beside it
