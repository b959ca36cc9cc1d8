"""`leadscore extract` and `leadscore features` as DVC calls them: exit 0 with a summary, exit 2 on bad input."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, app

runner = CliRunner()
REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def params_file(tmp_path: Path, **features: Any) -> Path:
    """The repo's params.yaml with some features keys changed."""
    raw = copy.deepcopy(yaml.safe_load(REPO_PARAMS.read_text()))
    raw["features"].update(features)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_extract_snapshots_the_database_named_by_url(tiny_crm_sqlite: str, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["extract", "--params", str(REPO_PARAMS), "--url", tiny_crm_sqlite, "--out", str(tmp_path / "raw")]
    )

    assert result.exit_code == 0, result.output
    assert "leads 3" in result.stdout and "history ends 2025-06-01T08:00:00+00:00" in result.stdout
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "accounts.parquet",
        "activities.parquet",
        "campaigns.parquet",
        "leads.parquet",
        "manifest.json",
        "stage_history.parquet",
    ]


def test_extract_defaults_to_the_params_url_and_the_environment_overrides_it(
    tiny_crm_sqlite: str, tmp_path: Path
) -> None:
    raw = copy.deepcopy(yaml.safe_load(REPO_PARAMS.read_text()))
    raw["base"]["crm_url"] = tiny_crm_sqlite
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))

    from_params = runner.invoke(app, ["extract", "--params", str(params), "--out", str(tmp_path / "a")])
    from_env = runner.invoke(
        app,
        ["extract", "--params", str(REPO_PARAMS), "--out", str(tmp_path / "b")],
        env={"LEADSCORE_DB_URL": tiny_crm_sqlite},
    )

    assert from_params.exit_code == 0, from_params.output
    assert from_env.exit_code == 0, from_env.output


def test_extract_refuses_bad_data_and_keeps_no_output(tiny_crm_sqlite: str, tmp_path: Path) -> None:
    engine = sa.create_engine(tiny_crm_sqlite)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE activities SET activity_type = 'telepathy' WHERE activity_id = 101")
    engine.dispose()

    result = runner.invoke(
        app, ["extract", "--params", str(REPO_PARAMS), "--url", tiny_crm_sqlite, "--out", str(tmp_path / "raw")]
    )

    assert result.exit_code == EXIT_BAD_INPUT
    assert "activity_type" in result.output
    assert not (tmp_path / "raw").exists()


def test_features_without_any_uncensored_snapshot_is_bad_input(tiny_crm_sqlite: str, tmp_path: Path) -> None:
    runner.invoke(
        app, ["extract", "--params", str(REPO_PARAMS), "--url", tiny_crm_sqlite, "--out", str(tmp_path / "raw")]
    )

    result = runner.invoke(
        app,
        [
            "features",
            "--params",
            str(params_file(tmp_path, horizon_days=700)),
            "--raw",
            str(tmp_path / "raw"),
            "--out",
            str(tmp_path / "features"),
        ],
    )

    assert result.exit_code == EXIT_BAD_INPUT
    assert "no training examples" in result.output
    assert not (tmp_path / "features").exists()


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"target_stage": "Opportunity"}, "features.target_stage"),
        ({"windows_days": [7, 7]}, "windows_days"),
        ({"horizon": 30}, "features.horizon: unknown key"),
    ],
)
def test_features_refuses_bad_params(tmp_path: Path, features: dict[str, Any], message: str) -> None:
    result = runner.invoke(
        app,
        [
            "features",
            "--params",
            str(params_file(tmp_path, **features)),
            "--raw",
            str(tmp_path / "raw"),
            "--out",
            str(tmp_path / "features"),
        ],
    )

    assert result.exit_code == EXIT_BAD_INPUT
    assert message in result.output


def test_features_needs_a_snapshot(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "features",
            "--params",
            str(REPO_PARAMS),
            "--raw",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "features"),
        ],
    )

    assert result.exit_code == EXIT_BAD_INPUT
    assert "leadscore extract" in result.output
