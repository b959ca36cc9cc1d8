"""`leadscore validate`: exit 0 with row counts on a valid CRM, exit 2 naming table and column on bad data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, app
from pipelines.crm.db import index_name, scoring_indexes

runner = CliRunner()


def corrupt(url: str, *statements: str) -> None:
    """Run raw SQL against the CRM, as a careless upstream job would."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def test_validate_accepts_a_valid_crm_and_prints_row_counts(tiny_crm_sqlite: str) -> None:
    result = runner.invoke(app, ["validate", "--url", tiny_crm_sqlite])

    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout
    for counts in ["campaigns 2", "accounts 2", "leads 3", "activities 3", "stage_history 3"]:
        assert counts in result.stdout


def test_validate_reads_the_url_from_the_environment(tiny_crm_sqlite: str) -> None:
    result = runner.invoke(app, ["validate"], env={"LEADSCORE_DB_URL": tiny_crm_sqlite})

    assert result.exit_code == 0, result.output
    assert "leads 3" in result.stdout


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        pytest.param(
            ["UPDATE activities SET activity_type = 'telepathy' WHERE activity_id = 101"],
            ["table 'activities', column 'activity_type'", "activity_id=101: 'telepathy'"],
            id="unknown-activity-type",
        ),
        pytest.param(
            ["UPDATE accounts SET employee_count = 'lots' WHERE account_id = 11"],
            ["table 'accounts', column 'employee_count'", "account_id=11"],
            id="text-in-employee-count",
        ),
        pytest.param(
            ["UPDATE activities SET lead_id = 99 WHERE activity_id = 102"],
            ["table 'activities', column 'lead_id'", "activity_id=102: lead_id=99"],
            id="orphan-activity",
        ),
        pytest.param(["DROP TABLE stage_history"], ["table 'stage_history' not found"], id="missing-table"),
        pytest.param(
            [  # SQLite refuses to drop a column an index holds: the covering event index goes first
                f"DROP INDEX {index_name('activities', dict(scoring_indexes('sqlite'))['activities'])}",
                "ALTER TABLE activities DROP COLUMN detail",
            ],
            ["table 'activities' is missing column(s) ['detail']"],
            id="missing-column",
        ),
    ],
)
def test_validate_exits_2_naming_table_and_column_of_bad_data(
    tiny_crm_sqlite: str, statements: list[str], expected: list[str]
) -> None:
    corrupt(tiny_crm_sqlite, *statements)

    result = runner.invoke(app, ["validate", "--url", tiny_crm_sqlite])

    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    for part in expected:
        assert part in result.stderr


def test_validate_exits_2_for_a_missing_sqlite_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "--url", f"sqlite:///{tmp_path / 'nope.db'}"])

    assert result.exit_code == EXIT_BAD_INPUT
    assert "does not exist" in result.stderr
    assert not (tmp_path / "nope.db").exists()


@pytest.mark.parametrize("url", ["nodialect://u:s3cr3t@h/db", "postgresql+psycopg://u:s3cr3t@h:notaport/db"])
def test_validate_exits_2_for_an_unusable_url_without_showing_the_password(url: str) -> None:
    result = runner.invoke(app, ["validate", "--url", url])

    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "not a usable database URL" in result.stderr
    assert "s3cr3t" not in result.output


def test_validate_without_a_url_is_a_usage_error() -> None:
    result = runner.invoke(app, ["validate"], env={"LEADSCORE_DB_URL": None})

    assert result.exit_code == 2
    assert "--url" in result.output


@pytest.mark.slow  # a fresh interpreter imports pandas, pandera and SQLAlchemy: a few seconds
def test_leadscore_console_script_validates_and_fails_with_exit_2(tiny_crm_sqlite: str) -> None:
    script = Path(sys.executable).with_name("leadscore")
    assert script.exists(), f"console script not installed next to {sys.executable}; run pip install -e ."
    corrupt(tiny_crm_sqlite, "UPDATE stage_history SET stage = 'Closed Won' WHERE stage_history_id = 1002")

    done = subprocess.run(
        [str(script), "validate", "--url", tiny_crm_sqlite], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert "table 'stage_history', column 'stage'" in done.stderr
    assert "stage_history_id=1002: 'Closed Won'" in done.stderr
    assert "Traceback" not in done.stderr
