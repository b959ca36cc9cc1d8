"""The latest-nightly-run reader on hand-made scoring tables in a temporary SQLite database (docs/scoring.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from report_frames import report_params

from pipelines.config import ScoreTables, load_params
from pipelines.crm.schema import validate_crm
from pipelines.report import core
from pipelines.report.nightly import attributes_of, join_attributes, parse_reasons, read_latest_run

REPO = Path(__file__).resolve().parents[3]
TABLES = ScoreTables(scores="lead_scores", runs="scoring_runs", latest="lead_scores_latest")


def _score_row(
    run: str,
    lead: int,
    as_of: str,
    prob: float,
    stage: str,
    grade: str,
    rule_mql: bool,
    positive: list[str],
    negative: list[str],
) -> dict[str, object]:
    return {
        "run_id": run,
        "lead_id": lead,
        "as_of": as_of,
        "scored_at": as_of,
        "model_name": "lead-scoring",
        "model_version": "3",
        "probability": prob,
        "stage": stage,
        "grade": grade,
        "rule_score": 70.0 * rule_mql,
        "rule_mql": rule_mql,
        "reasons_positive": json.dumps(positive),
        "reasons_negative": json.dumps(negative),
    }


def _run_row(run: str, as_of: str, finished: str) -> dict[str, object]:
    return {
        "run_id": run,
        "as_of": as_of,
        "started_at": as_of,
        "finished_at": finished,
        "model_name": "lead-scoring",
        "model_version": "3",
        "model_uri": "models:/lead-scoring@champion",
        "engine": "pandas",
        "status": "drift_warning",
        "leads_read": 3,
        "leads_scored": 3,
        "n_mql": 1,
        "n_sal": 0,
        "n_sql": 0,
        "n_rule_mql": 1,
        "mean_probability": 0.1,
        "seconds_total": 1.5,
        "rows_per_second": 2.0,
        "psi_score": 0.3,
        "psi_max": 0.31,
        "psi_max_feature": "n_web_visit_30d",
        "drift": "{}",
    }


def _write_scores(url: str) -> None:
    """Two complete runs written by the scorer's own publisher; the view keeps the later one (greatest as_of)."""
    from pipelines.crm.db import make_engine
    from pipelines.score.store import publish_run

    old, new = "2026-11-19 02:00:00", "2026-11-20 02:00:00"
    engine = make_engine(url, create_dirs=True)
    for run, as_of, rows in (
        ("r1", old, [_score_row("r1", 1, old, 0.5, "SAL", "B", True, [], [])]),
        (
            "r2",
            new,
            [
                _score_row(
                    "r2",
                    1,
                    new,
                    0.02,
                    "none",
                    "D",
                    True,
                    ["requested a demo 1 times in total"],
                    ["intern or student title"],
                ),
                _score_row(
                    "r2", 2, new, 0.2, "SAL", "B", False, ["VP-level title", "company in the ideal profile"], []
                ),
                _score_row("r2", 3, new, 0.01, "none", "D", False, [], []),
            ],
        ),
    ):
        frame = pd.DataFrame(rows)
        for col in ("as_of", "scored_at"):
            frame[col] = pd.to_datetime(frame[col], utc=True)
        meta = _run_row(run, as_of, as_of.replace("02:00", "02:05"))
        publish_run(
            engine,
            TABLES,
            {**meta, **{k: pd.Timestamp(meta[k], tz="UTC") for k in ("as_of", "started_at", "finished_at")}},
            [frame],
        )
    engine.dispose()


def test_a_missing_database_file_means_no_run_yet_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "scores.db"

    assert read_latest_run(f"sqlite:///{path}", TABLES) is None
    assert not path.exists()


def test_a_database_without_the_scoring_tables_means_no_run_yet(tiny_crm_sqlite: str) -> None:
    assert read_latest_run(tiny_crm_sqlite, TABLES) is None


def test_an_empty_latest_view_means_no_run_yet(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    _write_scores(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM lead_scores"))
    engine.dispose()

    assert read_latest_run(url, TABLES) is None


def test_the_latest_run_is_read_with_its_metadata_and_reasons_in_words(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    _write_scores(url)

    latest = read_latest_run(url, TABLES)

    assert latest is not None
    assert latest.run["run_id"] == "r2" and latest.run["status"] == "drift_warning"
    assert latest.run["as_of"] == pd.Timestamp("2026-11-20 02:00", tz="UTC")
    assert sorted(latest.scores["lead_id"]) == [1, 2, 3]
    assert latest.scores["rule_mql"].dtype == bool
    row = latest.scores.set_index("lead_id").loc[2]
    assert row["reasons_positive"] == "VP-level title; company in the ideal profile"


def test_table_names_are_checked_before_any_sql() -> None:
    with pytest.raises(ValueError, match="not allowed"):
        read_latest_run("sqlite://", ScoreTables.model_construct(scores="s", runs="runs; drop", latest="v"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["a", "b"]', "a; b"),
        ("[]", ""),
        (None, ""),
        ("not json", "not json"),
        (["x"], "x"),
    ],
)
def test_reasons_json_becomes_one_line(value: object, expected: str) -> None:
    assert parse_reasons(value) == expected


def test_lead_attributes_hold_codes_and_names_of_campaigns_but_no_personal_data(tiny_crm: dict) -> None:
    tables = validate_crm(tiny_crm)
    attributes = attributes_of(tables, load_params(REPO / "params.yaml").features).set_index("lead_id")

    assert attributes.loc[1, "seniority"] == "vp" and attributes.loc[1, "region"] == "NA"
    assert bool(attributes.loc[1, "fit"]) is True  # Software, 250 employees, NA: the ideal profile
    assert attributes.loc[2, "seniority"] == "intern_student" and attributes.loc[2, "campaign"] == "Trade show Berlin"
    assert pd.isna(attributes.loc[3, "campaign"])
    text = attributes.to_csv()
    for personal in ("Ada", "Lovelace", "ada@acme.com", "555", "VP Mktg", "Marketing intern"):
        assert personal not in text


def test_the_nightly_section_of_a_hand_made_run_with_the_crm_joined(tmp_path: Path, tiny_crm: dict) -> None:
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    _write_scores(url)
    latest = read_latest_run(url, TABLES)
    assert latest is not None
    attributes = attributes_of(validate_crm(tiny_crm), load_params(REPO / "params.yaml").features)

    section = core.nightly_section(join_attributes(latest.scores, attributes), latest.run, report_params())

    cells = section.agreement.set_index("key")["leads"].to_dict()
    assert cells == {"both": 0, "rule_only": 1, "model_only": 1, "neither": 1}
    assert section.rule_only["lead_id"].tolist() == [1] and section.model_only["lead_id"].tolist() == [2]
    assert section.rule_only["reasons_negative"].iloc[0] == "intern or student title"
    assert section.by_campaign.set_index("campaign")["leads"].to_dict() == {
        "(no campaign)": 1,
        "Spring webinar": 1,
        "Trade show Berlin": 1,
    }
    assert section.grades.set_index("grade")["rows"].to_dict() == {"A": 0, "B": 1, "C": 0, "D": 2}
