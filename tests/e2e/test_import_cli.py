"""`leadscore import` end to end on a tiny leads-only CSV: mapped tables in a database, then extract and features
give one snapshot with the attributes as features; a bad mapping exits with code 2 naming table, column and row."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from pipelines.cli import app

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, sources: list[str] | None = None) -> tuple[Path, Path]:
    n = 40
    pd.DataFrame(
        {
            "Id": range(1, n + 1),
            "Origin": ["form", "api"] * (n // 2),
            "Source": ["Google", "Reference", "Google", "Select"] * (n // 4),
            "Minutes": [str(i * 7) for i in range(n)],
            "Status tag": ["hot", "cold"] * (n // 2),
            "Won": [1, 0, 0, 0] * (n // 4),
        }
    ).to_csv(tmp_path / "leads.csv", index=False)
    mapping = {
        "snapshot_date": "2024-03-04",
        "target": {"column": "Won", "positive": [1], "negative": [0], "stage": "Won"},
        "tables": {
            "leads": {
                "source": {"path": str(tmp_path / "leads.csv")},
                "missing_values": ["Select"],
                "columns": {"Id": "lead_id", "Source": "lead_source"},
                "values": {
                    "lead_source": {
                        "map": {"Google": "paid_search", **({} if sources else {"Reference": "referral"})},
                        "missing": "organic_search",
                    }
                },
                "attributes": {
                    "origin": {"column": "Origin", "kind": "categorical"},
                    "minutes_on_site": {"column": "Minutes", "kind": "numeric"},
                },
                "leaky": {"Status tag": "set by sales after the first call"},
            }
        },
    }
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["features"]["target_stage"] = "Won"
    params["mapping"]["file"] = str(path)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    return path, params_path


def test_import_extract_features_give_one_snapshot_with_attributes(tmp_path: Path) -> None:
    _, params = _write(tmp_path)
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    runner = CliRunner()
    done = runner.invoke(app, ["import", "--params", str(params), "--url", url])  # mapping from the params
    assert done.exit_code == 0, done.output
    assert "leads-only (one snapshot)" in done.output
    done = runner.invoke(app, ["extract", "--params", str(params), "--url", url, "--out", str(tmp_path / "raw")])
    assert done.exit_code == 0, done.output
    done = runner.invoke(
        app, ["features", "--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "features")]
    )
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / "features" / "summary.json").read_text())
    assert summary["single_snapshot"] is True and summary["snapshot_dates"] == 1 and summary["rows"] == 40
    assert summary["positives"] == 10 and "horizon_days does not apply" in summary["label"]
    rows = pd.read_parquet(tmp_path / "features" / "snapshots.parquet").set_index("lead_id").sort_index()
    assert rows.loc[1, "label"] == 1 and rows.loc[2, "label"] == 0
    assert rows.loc[3, "minutes_on_site"] == 14.0 and rows.loc[2, "origin"] == "api"
    assert rows.loc[2, "lead_source"] == "referral" and rows.loc[4, "lead_source"] == "organic_search"
    features = {f["name"]: f for f in json.loads((tmp_path / "features" / "feature_list.json").read_text())}
    assert features["origin"]["kind"] == "categorical" and features["minutes_on_site"]["family"] == "attribute"
    assert not any(name.startswith(("status", "leaky")) for name in rows.columns)
    texts = rows.select_dtypes(include=["category", "object", "string"])
    assert not texts.isin(["hot", "cold"]).any(axis=None)  # the leaky column's values reach no feature


def test_a_bad_mapping_exits_2_naming_table_column_and_row(tmp_path: Path) -> None:
    mapping, _ = _write(tmp_path, sources=["no referral"])
    done = CliRunner().invoke(app, ["import", "--mapping", str(mapping), "--url", f"sqlite:///{tmp_path / 'x.db'}"])
    assert done.exit_code == 2
    assert "table 'leads', column 'lead_source' (source 'Source')" in done.output
    assert "['Reference']" in done.output and "row 2: 'Reference'" in done.output
    assert not (tmp_path / "x.db").exists() or "leads" not in (tmp_path / "x.db").read_bytes().decode("latin-1")


def test_ambiguous_dates_and_unknown_target_values_exit_2_naming_column_and_rows(tmp_path: Path) -> None:
    mapping, _ = _write(tmp_path)
    raw = yaml.safe_load(mapping.read_text())
    frame = pd.read_csv(tmp_path / "leads.csv")
    frame["Won"] = frame["Won"].astype(str)
    frame.loc[5, "Won"] = "TRUE"
    frame.to_csv(tmp_path / "leads.csv", index=False)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    done = CliRunner().invoke(app, ["import", "--mapping", str(mapping), "--url", url])
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert "target column 'Won'" in done.output and "row 6: 'TRUE'" in done.output
    frame.loc[5, "Won"] = "0"
    frame["Created"] = [f"{1 + i % 12:02d}/{1 + i % 9:02d}/2024" for i in range(len(frame))]  # days and months <= 12
    frame.to_csv(tmp_path / "leads.csv", index=False)
    raw["target"]["maturation_days"] = 30
    raw["tables"]["leads"]["columns"]["Created"] = "created_at"
    mapping.write_text(yaml.safe_dump(raw))
    done = CliRunner().invoke(app, ["import", "--mapping", str(mapping), "--url", url])
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert "column 'created_at' (source 'Created')" in done.output and "ambiguous dates" in done.output
    assert "row 1: '01/01/2024'" in done.output
