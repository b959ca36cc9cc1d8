"""The Arrow reader scores exactly like the SQLAlchemy reader; reasons go to the leads handed to a team by default,
and anyone else's come on demand from `leadscore explain`, the same words as a run that explains everyone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from score_env import AS_OF, ScoreEnv, build_env, fresh_crm
from typer.testing import CliRunner

from pipelines.cli import EXIT_BAD_INPUT, app
from pipelines.config import ScoreTables
from pipelines.crm.db import make_engine
from pipelines.score import arrow_reader, store

pytestmark = pytest.mark.slow
runner = CliRunner()
TABLES = ScoreTables(scores="lead_scores", runs="scoring_runs", latest="lead_scores_latest")
COMPARED = [
    "lead_id",
    "probability",
    "stage",
    "grade",
    "rule_score",
    "rule_mql",
    "reasons_positive",
    "reasons_negative",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScoreEnv]:
    built = build_env(tmp_path_factory.mktemp("reader"), leads=900, chunk_leads=200)
    yield built
    mlflow.set_tracking_uri(None)


@pytest.fixture(params=["sqlite", "postgres"])
def crm(request: pytest.FixtureRequest, env: ScoreEnv, tmp_path: Path) -> str:
    return fresh_crm(request.param, env, tmp_path, request)


def _params(env: ScoreEnv, tmp_path: Path, reasons_for: str) -> Path:
    raw = yaml.safe_load(env.params_path.read_text())
    raw["score"]["reasons_for"] = reasons_for
    path = tmp_path / f"params_{reasons_for}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _score(env: ScoreEnv, crm: str, out: Path, params: Path) -> pd.DataFrame:
    url = f"sqlite:///{out}"
    result = runner.invoke(
        app,
        [
            "score",
            "--url",
            crm,
            "--scores-url",
            url,
            "--params",
            str(params),
            "--tracking-uri",
            env.tracking_uri,
            "--as-of",
            AS_OF,
        ],
    )
    assert result.exit_code == 0, result.output
    frame = store.read_scores(make_engine(url), TABLES, latest=False)
    return frame[COMPARED].sort_values("lead_id").reset_index(drop=True)


def test_the_arrow_reader_scores_exactly_as_the_row_reader(
    env: ScoreEnv, crm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = _params(env, tmp_path, "all")
    arrow = _score(env, crm, tmp_path / "arrow.db", params)
    with monkeypatch.context() as m:
        m.setattr(arrow_reader, "supports", lambda conn: False)
        rows = _score(env, crm, tmp_path / "rows.db", params)

    assert len(arrow) > 100
    pd.testing.assert_frame_equal(arrow, rows)  # exact: same probabilities, stages, grades and reasons


def test_reasons_go_to_the_handed_leads_and_explain_gives_anyone_elses(env: ScoreEnv, tmp_path: Path) -> None:
    crm = env.crm_url
    everyone = _score(env, crm, tmp_path / "all.db", _params(env, tmp_path, "all"))
    handed = _score(env, crm, tmp_path / "handed.db", _params(env, tmp_path, "handed"))

    staged = handed["stage"].ne("none").to_numpy()
    assert 0 < staged.sum() < len(handed)
    cols = ["lead_id", "probability", "stage", "grade", "rule_score", "rule_mql"]
    pd.testing.assert_frame_equal(handed[cols], everyone[cols])
    reasons = ["reasons_positive", "reasons_negative"]
    pd.testing.assert_frame_equal(handed.loc[staged, reasons], everyone.loc[staged, reasons])
    assert handed.loc[~staged, "reasons_positive"].map(len).eq(0).all()
    assert handed.loc[~staged, "reasons_negative"].map(len).eq(0).all()

    lead = everyone.loc[~staged].iloc[0]
    result = runner.invoke(app, [*_explain(env), "--lead", str(int(lead["lead_id"])), "--as-of", AS_OF])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert f"lead {int(lead['lead_id'])} as of 2026-11-20 00:00:00Z" in lines[0]
    assert f"probability {lead['probability']:.3f}, stage none, grade {lead['grade']}" in lines[0]
    said = [line.strip() for line in lines[1:]]
    expected = [f"+ {r}" for r in lead["reasons_positive"]]
    expected += [f"- {r}" for r in lead["reasons_negative"]]
    assert said == expected and expected


def _explain(env: ScoreEnv) -> list[str]:
    return ["explain", "--url", env.crm_url, "--params", str(env.params_path), "--tracking-uri", env.tracking_uri]


def test_explain_refuses_an_unknown_lead_and_one_not_open_at_the_time(env: ScoreEnv) -> None:
    result = runner.invoke(app, [*_explain(env), "--lead", "987654321", "--as-of", AS_OF])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "no lead '987654321'" in result.output and "table 'leads'" in result.output

    leads = env.tables["leads"]
    first = leads.sort_values("created_at").iloc[-1]  # the newest lead did not exist a year earlier
    result = runner.invoke(app, [*_explain(env), "--lead", str(int(first["lead_id"])), "--as-of", "2025-11-20"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert f"lead {int(first['lead_id'])} is not open" in result.output
