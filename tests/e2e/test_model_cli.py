"""The model stages end to end through the console script: demo CRM -> extract -> features -> rules -> train ->
calibrate -> evaluate on a small demo, plus the cold-start refusal (exit code 2 with the counts)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

LEADSCORE = shutil.which("leadscore", path=str(Path(sys.executable).parent)) or shutil.which("leadscore")
REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(LEADSCORE is None, reason="the leadscore console script is not installed")


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LEADSCORE), *map(str, args)], capture_output=True, text=True, check=False, cwd=REPO)


def _params(tmp_path: Path, **blocks: dict[str, object]) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for block, values in blocks.items():
        raw[block].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_cold_start_exits_2_saying_how_many_positives_there_are_and_are_needed(tmp_path: Path) -> None:
    features = tmp_path / "features"
    features.mkdir()
    dates = pd.date_range("2025-01-06", periods=40, freq="7D", tz="UTC")
    frame = pd.DataFrame(
        {
            "lead_id": np.repeat(np.arange(50), 40),
            "snapshot_at": np.tile(dates, 50),
            "label": np.int8(0),
            "x": np.float32(1.0),
        }
    )
    frame.loc[:2, "label"] = 1
    frame.to_parquet(features / "snapshots.parquet")
    (features / "feature_list.json").write_text(json.dumps([{"name": "x", "kind": "numeric", "family": "fit"}]))

    run = _run("train", "--params", _params(tmp_path), "--features", features, "--out", tmp_path / "models")

    assert run.returncode == 2, run.stderr
    assert "3 positive" in run.stderr and "at least 200" in run.stderr
    assert not (tmp_path / "models" / "booster.txt").exists()


@pytest.mark.slow
def test_the_model_stages_run_end_to_end_on_a_small_demo(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    truth = tmp_path / "crm_truth.parquet"
    params = _params(
        tmp_path,
        train={
            "learning_rate": 0.1,
            "max_rounds": 200,
            "early_stopping_rounds": 20,
            "min_positives": 50,
            "logreg_max_iter": 50,
        },
        calibrate={"bootstrap": 10},
        evaluate={"bootstrap": 10},
    )
    steps = [
        (
            "demo-crm",
            "--url",
            url,
            "--truth",
            truth,
            "--leads",
            "6000",
            "--seed",
            "5",
            "--end-date",
            "2026-11-20",
            "--history-days",
            "540",
        ),
        ("extract", "--params", params, "--url", url, "--out", tmp_path / "raw"),
        ("features", "--params", params, "--raw", tmp_path / "raw", "--out", tmp_path / "features"),
        (
            "rules",
            "--params",
            params,
            "--raw",
            tmp_path / "raw",
            "--snapshots",
            tmp_path / "features" / "snapshots.parquet",
            "--out",
            tmp_path / "rules.parquet",
        ),
        (
            "train",
            "--params",
            params,
            "--features",
            tmp_path / "features",
            "--out",
            tmp_path / "models",
            "--metrics",
            tmp_path / "metrics" / "train.json",
        ),
        (
            "calibrate",
            "--params",
            params,
            "--features",
            tmp_path / "features",
            "--models",
            tmp_path / "models",
            "--rules",
            tmp_path / "rules.parquet",
        ),
        (
            "evaluate",
            "--params",
            params,
            "--features",
            tmp_path / "features",
            "--models",
            tmp_path / "models",
            "--rules",
            tmp_path / "rules.parquet",
            "--truth",
            truth,
            "--metrics",
            tmp_path / "metrics",
            "--plots",
            tmp_path / "plots",
        ),
    ]
    for step in steps:
        run = _run(*step)
        assert run.returncode == 0, f"{step[0]}: {run.stderr[-2000:]}"

    models = tmp_path / "models"
    for name in ("booster.txt", "baselines/logreg.joblib", "split.json", "calibrator.json", "thresholds.json"):
        assert (models / name).exists(), name
    thresholds = json.loads((models / "thresholds.json").read_text())
    assert set(thresholds["thresholds"]) == {"MQL", "SAL", "SQL"} and set(thresholds["grades"]) == set("ABCD")
    metrics = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    for key in ("roc_auc", "oracle_roc_auc", "ece", "brier", "oracle_brier", "sql_capture_ratio_vs_rules"):
        assert metrics[key] is not None, key
    assert 0.6 < metrics["roc_auc"] <= metrics["oracle_roc_auc"] + 0.05
    for name in ("roc.csv", "pr.csv", "calibration.csv", "gains.csv", "threshold_tradeoff.csv"):
        assert len(pd.read_csv(tmp_path / "plots" / name)) > 1, name
