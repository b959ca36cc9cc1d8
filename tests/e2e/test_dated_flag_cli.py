"""Dated leads with a won flag and no conversion dates, end to end through the CLI: `leadscore import` keeps the
creation dates, the features stage labels each lead at creation and leaves the censored (too recent) leads out, and
train, calibrate and evaluate split out of time by creation date, which the metrics and the model card state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.registry.card import model_card

REPO = Path(__file__).resolve().parents[2]
N = 2400
EXPORT = pd.Timestamp("2024-12-31")
MATURATION = 60


def _export(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(7)
    created = (
        EXPORT
        - pd.to_timedelta(rng.integers(0, 540, N), unit="D")
        - pd.to_timedelta(rng.integers(0, 86_400, N), unit="s")
    )
    minutes = rng.gamma(2.0, 20.0, N)
    won = rng.random(N) < 1 / (1 + np.exp(-(minutes - 60) / 15))
    pd.DataFrame(
        {
            "Id": [f"00Q{i:015X}" for i in range(N)],  # string ids, as Salesforce's
            "CreatedDate": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Minutes": minutes.round(1).astype(str),
            "IsWon": np.where(won, "true", "false"),
        }
    ).to_csv(tmp_path / "leads.csv", index=False)
    mapping = {
        "ids": "text",
        "snapshot_date": str(EXPORT.date()),
        "target": {
            "column": "IsWon",
            "positive": ["true"],
            "negative": ["false"],
            "stage": "Won",
            "maturation_days": MATURATION,
        },
        "tables": {
            "leads": {
                "source": {"path": str(tmp_path / "leads.csv")},
                "columns": {"Id": "lead_id", "CreatedDate": "created_at"},
                "constants": {"lead_source": "organic_search"},
                "attributes": {"minutes": {"column": "Minutes", "kind": "numeric"}},
                "derived": {"created_weekday": {"column": "created_at", "part": "weekday"}},
            }
        },
    }
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["features"]["target_stage"] = "Won"
    params["mapping"]["file"] = str(path)
    params["train"] |= {"min_positives": 20, "min_child_samples": 20, "exclude_features": []}
    # one row per lead at its creation: every creation time is a snapshot, so lists are counted per snapshot (the
    # standing list) and the rules, which see no activity in this export, cannot set the MQL volume
    params["calibrate"] |= {
        "volume": "standing",
        "thresholds": {
            "MQL": {"policy": "capacity", "leads_per_week": 0.5},
            "SAL": {"policy": "capacity", "leads_per_week": 0.3},
            "SQL": {"policy": "capacity", "leads_per_week": 0.1},
        },
    }
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    return path, params_path


def test_a_dated_export_with_a_won_flag_gets_an_out_of_time_split_by_creation(tmp_path: Path) -> None:
    _, params = _export(tmp_path)
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    runner = CliRunner()

    def run(*args: str) -> None:
        done = runner.invoke(app, [*args, "--params", str(params)])
        assert done.exit_code == 0, done.output

    run("import", "--url", url)
    run("extract", "--url", url, "--out", str(tmp_path / "raw"))
    run("features", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "features"))
    summary = json.loads((tmp_path / "features" / "summary.json").read_text())
    leads = pd.read_csv(tmp_path / "leads.csv")
    created = pd.to_datetime(leads["CreatedDate"], utc=True)
    mature = created <= EXPORT.tz_localize("UTC") + pd.Timedelta(days=1 - MATURATION)
    censored = int((~mature).sum())
    assert summary["dated_flag"] is True and summary["censored_leads"] == censored > 0
    assert summary["rows"] == N - censored and summary["snapshot_dates"] > 100
    rows = pd.read_parquet(tmp_path / "features" / "snapshots.parquet")
    assert set(rows["created_weekday"].dropna()) <= {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}
    # each lead is labelled at its own creation with the flag
    assert int(rows["label"].sum()) == int((leads["IsWon"] & mature).sum())
    at = rows["snapshot_at"].sort_values().to_numpy()
    assert (at == created[mature].sort_values().dt.floor("s").to_numpy()).all()
    run(
        "rules",
        "--raw",
        str(tmp_path / "raw"),
        "--snapshots",
        str(tmp_path / "features" / "snapshots.parquet"),
        "--out",
        str(tmp_path / "rules.parquet"),
    )
    run("train", "--features", str(tmp_path / "features"), "--out", str(tmp_path / "models"))
    run(
        "calibrate",
        "--features",
        str(tmp_path / "features"),
        "--models",
        str(tmp_path / "models"),
        "--rules",
        str(tmp_path / "rules.parquet"),
    )
    run(
        "evaluate",
        "--features",
        str(tmp_path / "features"),
        "--models",
        str(tmp_path / "models"),
        "--rules",
        str(tmp_path / "rules.parquet"),
        "--metrics",
        str(tmp_path / "metrics"),
        "--plots",
        str(tmp_path / "plots"),
    )
    split = json.loads((tmp_path / "models" / "split.json").read_text())
    assert split["kind"] == "time" and split["gap_days"] == MATURATION
    b = split["boundaries"]
    assert b["fit"][1] < b["calibration"][0] < b["calibration"][1] < b["test"][0]  # by creation time
    gap = pd.Timestamp(b["test"][0]) - pd.Timestamp(b["calibration"][1])
    assert gap > pd.Timedelta(days=MATURATION)
    metrics = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert "out-of-time split by lead creation date" in metrics["split"]
    assert f"{censored:,} leads younger" in metrics["split"]
    assert metrics["roc_auc"] > 0.75  # the flag follows the minutes: the model must find it
    card = model_card("m", "1", "r", {}, {"target_stage": "Won", "horizon_days": 30}, split, metrics, {}, None)
    assert "out-of-time split by lead creation date" in card and "NOT an out-of-time" not in card


def test_rows_ordered_in_time_without_dates_get_an_out_of_time_split_by_order(tmp_path: Path) -> None:
    mapping, params = _export(tmp_path)
    raw = yaml.safe_load(mapping.read_text())
    leads = pd.read_csv(tmp_path / "leads.csv", dtype=str)
    created = pd.to_datetime(leads["CreatedDate"], utc=True)
    leads = (
        leads.assign(Seq=created.rank(method="first").astype(int))
        .drop(columns="CreatedDate")
        .sample(frac=1.0, random_state=1)
    )  # the file is shuffled: the order column, not the row order, says when
    leads.to_csv(tmp_path / "leads.csv", index=False)
    del raw["tables"]["leads"]["columns"]["CreatedDate"], raw["tables"]["leads"]["derived"]
    del raw["target"]["maturation_days"]
    raw["order"] = {"column": "Seq"}
    mapping.write_text(yaml.safe_dump(raw))
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    runner = CliRunner()
    for args in (
        ["import", "--url", url],
        ["extract", "--url", url, "--out", str(tmp_path / "raw")],
        ["features", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "features")],
        ["train", "--features", str(tmp_path / "features"), "--out", str(tmp_path / "models")],
    ):
        done = runner.invoke(app, [*args, "--params", str(params)])
        assert done.exit_code == 0, done.output
    split = json.loads((tmp_path / "models" / "split.json").read_text())
    assert split["kind"] == "time" and "out-of-time split by row order" in split["note"] and split["gap_days"] == 0
    rows = pd.read_parquet(tmp_path / "features" / "snapshots.parquet")
    assert len(rows) == N  # nothing censored: the order has no maturation window
    from pipelines.crm.db import make_engine, read_table
    from pipelines.crm.mapping import CRM_IDS_TABLE
    from pipelines.modeling import SplitPlan, assign_slices

    ids = read_table(make_engine(url), CRM_IDS_TABLE).set_index("lead_id")["crm_id"]
    seq = leads.set_index("Id")["Seq"]
    slices = pd.Series(assign_slices(rows, SplitPlan.from_dict(split)), index=rows["lead_id"].map(ids).map(seq))
    assert slices[slices == "fit"].index.max() < slices[slices == "test"].index.min()  # earlier rows train
