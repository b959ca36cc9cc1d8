"""The scores store without a model: production runs and the latest view, and the migration of databases written
by earlier versions (missing columns added, the old view re-created), on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.config import ScoreTables
from pipelines.crm.db import make_engine
from pipelines.score import store

TABLES = ScoreTables(scores="lead_scores", runs="scoring_runs", latest="lead_scores_latest")
#: The latest view exactly as the version before `scoring_runs.production` created it.
OLD_VIEW = (
    "CREATE VIEW lead_scores_latest AS SELECT s.* FROM lead_scores s WHERE s.run_id = "
    "(SELECT r.run_id FROM scoring_runs r ORDER BY r.as_of DESC, r.finished_at DESC LIMIT 1)"
)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'scores.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


def rows(run_id: str, as_of: str, version: str, leads: range) -> pd.DataFrame:
    stamp = pd.Timestamp(as_of, tz="UTC")
    n = len(leads)
    return pd.DataFrame(
        {
            "run_id": [run_id] * n,
            "lead_id": list(leads),
            "as_of": [stamp] * n,
            "scored_at": [stamp] * n,
            "model_name": ["lead-scoring"] * n,
            "model_version": [version] * n,
            "probability": [0.1] * n,
            "stage": ["none"] * n,
            "grade": ["D"] * n,
            "rule_score": [1.0] * n,
            "rule_mql": [False] * n,
            "reasons_positive": ["[]"] * n,
            "reasons_negative": ["[]"] * n,
        }
    ).astype({"as_of": "datetime64[ns, UTC]", "scored_at": "datetime64[ns, UTC]"})


def publish(
    url: str, run_id: str, as_of: str, version: str, production: bool | None, finished: str, leads: range = range(1, 4)
) -> list[str]:
    run = {
        "run_id": run_id,
        "as_of": pd.Timestamp(as_of, tz="UTC"),
        "started_at": pd.Timestamp(finished, tz="UTC"),
        "finished_at": pd.Timestamp(finished, tz="UTC"),
        "model_name": "lead-scoring",
        "model_version": version,
        "model_uri": f"models:/lead-scoring/{version}",
        "engine": "pandas",
        "status": "ok",
        "leads_read": 3,
        "leads_scored": len(leads),
    }
    if production is not None:
        run["production"] = production
    return store.publish_run(make_engine(url, create_dirs=True), TABLES, run, [rows(run_id, as_of, version, leads)])


def latest_runs(url: str) -> set[str]:
    return set(store.read_scores(make_engine(url), TABLES, latest=True)["run_id"])


def test_the_latest_view_shows_production_runs_only(url: str) -> None:
    publish(url, "champion-night", "2026-11-20", "1", True, "2026-11-20 02:00")
    publish(url, "pinned-v2", "2026-11-20", "2", False, "2026-11-20 03:00")  # same night, later, not production
    publish(url, "experiment-later", "2026-11-21", "1", False, "2026-11-21 02:00")  # a later night, in an experiment

    assert latest_runs(url) == {"champion-night"}
    history = store.read_scores(make_engine(url), TABLES)
    assert set(history["run_id"]) == {"champion-night", "pinned-v2", "experiment-later"}
    runs = store.read_runs(make_engine(url), TABLES).set_index("run_id")
    assert runs.loc["champion-night", "production"] and not runs.loc["pinned-v2", "production"]

    publish(url, "champion-next", "2026-11-21", "1", True, "2026-11-21 03:00")
    assert latest_runs(url) == {"champion-next"}


def test_a_non_production_run_never_replaces_the_production_run_of_the_same_night_and_version(url: str) -> None:
    publish(url, "production", "2026-11-20", "1", True, "2026-11-20 02:00")
    assert publish(url, "experiment-1", "2026-11-20", "1", False, "2026-11-20 03:00") == []
    assert publish(url, "experiment-2", "2026-11-20", "1", False, "2026-11-20 04:00") == ["experiment-1"]
    assert publish(url, "production-again", "2026-11-20", "1", True, "2026-11-20 05:00") == ["production"]

    assert latest_runs(url) == {"production-again"}
    assert set(store.read_runs(make_engine(url), TABLES)["run_id"]) == {"experiment-2", "production-again"}


def _make_old(url: str, drop_runs: tuple[str, ...], drop_scores: tuple[str, ...] = ()) -> None:
    """Turn a current database into one an earlier version wrote: columns dropped, the old view."""
    with make_engine(url).begin() as conn:
        conn.exec_driver_sql('DROP VIEW "lead_scores_latest"')
        for column in drop_runs:
            conn.exec_driver_sql(f'ALTER TABLE "scoring_runs" DROP COLUMN "{column}"')
        for column in drop_scores:
            conn.exec_driver_sql(f'ALTER TABLE "lead_scores" DROP COLUMN "{column}"')
        conn.exec_driver_sql(OLD_VIEW)


def test_an_old_database_is_migrated_in_the_publishing_transaction(url: str) -> None:
    publish(url, "old-night", "2026-11-20", "1", None, "2026-11-20 02:00")
    _make_old(url, drop_runs=("production", "psi_max_feature"), drop_scores=("reasons_negative",))
    old_runs = store.read_runs(make_engine(url), TABLES)  # readable before the migration
    assert old_runs["production"].isna().all() and list(old_runs["run_id"]) == ["old-night"]

    # the next run: a pinned non-champion version on a later night
    publish(url, "pinned-later", "2026-11-21", "2", False, "2026-11-21 02:00")

    inspector = sa.inspect(make_engine(url))
    assert set(store.RUN_COLUMNS) <= {c["name"] for c in inspector.get_columns("scoring_runs")}
    assert set(store.SCORE_COLUMNS) <= {c["name"] for c in inspector.get_columns("lead_scores")}
    runs = store.read_runs(make_engine(url), TABLES).set_index("run_id")
    assert pd.isna(runs.loc["old-night", "production"])  # made before the column existed: NULL, counted as production
    assert runs.loc["pinned-later", "production"] == False  # noqa: E712 (a numpy bool)
    # the view was re-created: it skips the later non-production run and shows the old (production) one
    assert latest_runs(url) == {"old-night"}
    old = store.read_scores(make_engine(url), TABLES).query("run_id == 'old-night'")
    assert old["reasons_negative"].map(len).eq(0).all()  # re-added column, NULL in old rows, read as no reasons


def test_the_view_is_re_created_only_when_its_definition_changed(url: str, caplog: pytest.LogCaptureFixture) -> None:
    publish(url, "a", "2026-11-20", "1", True, "2026-11-20 02:00")
    caplog.set_level("INFO", logger="pipelines.score.store")
    publish(url, "b", "2026-11-21", "1", True, "2026-11-21 02:00")
    assert "re-created view" not in caplog.text
    _make_old(url, drop_runs=())
    publish(url, "c", "2026-11-22", "1", True, "2026-11-22 02:00")
    assert caplog.text.count("re-created view") == 1
    publish(url, "d", "2026-11-23", "1", True, "2026-11-23 02:00")
    assert caplog.text.count("re-created view") == 1 and latest_runs(url) == {"d"}


def test_any_column_added_to_the_schema_later_is_migrated_generically(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(url, "before", "2026-11-20", "1", True, "2026-11-20 02:00")
    monkeypatch.setitem(store.RUN_COLUMNS, "stage_volumes", sa.Text())  # e.g. a JSON column of a later version
    monkeypatch.setitem(store.RUN_COLUMNS, "n_new_handoffs", sa.BigInteger())

    publish(url, "after", "2026-11-21", "1", True, "2026-11-21 02:00")

    have = {c["name"] for c in sa.inspect(make_engine(url)).get_columns("scoring_runs")}
    assert {"stage_volumes", "n_new_handoffs"} <= have
    runs = store.read_runs(make_engine(url), TABLES).set_index("run_id")
    assert runs["stage_volumes"].isna().all() and latest_runs(url) == {"after"}


def test_a_failed_publish_rolls_the_migration_back(url: str) -> None:
    publish(url, "old-night", "2026-11-20", "1", None, "2026-11-20 02:00")
    _make_old(url, drop_runs=("production",))
    bad = rows("broken", "2026-11-21", "1", range(1, 3)).assign(lead_id=[7, 7])  # duplicate primary key

    run = {
        "run_id": "broken",
        "as_of": pd.Timestamp("2026-11-21", tz="UTC"),
        "model_name": "lead-scoring",
        "model_version": "1",
        "production": True,
    }
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):  # the driver's own error (raw cursor, COPY)
        store.publish_run(make_engine(url), TABLES, run, [bad])

    inspector = sa.inspect(make_engine(url))
    assert "production" not in {c["name"] for c in inspector.get_columns("scoring_runs")}
    assert " ".join(inspector.get_view_definition("lead_scores_latest").split()).count("production") == 0


def test_a_table_without_its_key_columns_is_still_refused(url: str) -> None:
    with make_engine(url, create_dirs=True).begin() as conn:
        conn.exec_driver_sql('CREATE TABLE "scoring_runs" ("as_of" TEXT)')
    with pytest.raises(store.ScoresTableError, match=r"lacks key column\(s\) \['run_id'\]"):
        publish(url, "x", "2026-11-20", "1", True, "2026-11-20 02:00")


def test_publishing_raises_the_sqlite_page_cache_for_its_inserts_and_puts_it_back(tmp_path: Path) -> None:
    with sa.create_engine(f"sqlite:///{tmp_path / 'scores.db'}").connect() as conn:
        conn.exec_driver_sql("PRAGMA cache_size = 0")  # a user's own setting, even an unusual one, survives
        with store._page_cache(conn):
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -store._SQLITE_PUBLISH_CACHE_KIB
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == 0
