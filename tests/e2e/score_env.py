"""A registered tiny model and a small demo CRM for the nightly-scoring tests (SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from pipelines.config import Params, load_params
from pipelines.crm.db import make_engine, write_crm
from pipelines.crm.demo import generate
from tests.support.tiny_model import register_tiny, tiny_params

REPO = Path(__file__).resolve().parents[2]

AS_OF = "2026-11-20T00:00:00Z"
LATER = "2026-11-21T00:00:00Z"


@dataclass(frozen=True)
class ScoreEnv:
    """Where everything lives: tracking store, params copy (small chunks), the CRM frames and a SQLite copy."""

    root: Path
    tracking_uri: str
    params_path: Path
    params: Params
    tables: dict[str, pd.DataFrame]
    crm_db: Path

    @property
    def crm_url(self) -> str:
        return f"sqlite:///{self.crm_db}"


def build_env(root: Path, leads: int = 1500, chunk_leads: int = 300) -> ScoreEnv:
    """Register the tiny model (v1 champion) and write a demo CRM of `leads` leads to root/crm.db."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    register_tiny(root, uri, seed=0, params_path=tiny_params(root))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["score"]["chunk_leads"] = chunk_leads
    raw["rules"]["file"] = str(REPO / raw["rules"]["file"])
    params_path = root / "score_params.yaml"
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(params_path)
    demo = generate(
        params.demo_crm.model_copy(
            update={"leads": leads, "seed": 5, "end_date": date(2026, 11, 20), "history_days": 400}
        ),
        params.features.icp,
    )
    from pipelines.crm.db import make_engine, write_crm

    crm_db = root / "crm.db"
    write_crm(make_engine(f"sqlite:///{crm_db}", create_dirs=True), demo.tables)
    return ScoreEnv(
        root=root, tracking_uri=uri, params_path=params_path, params=params, tables=demo.tables, crm_db=crm_db
    )


def fresh_crm(backend: str, env: ScoreEnv, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh copy of the env's demo CRM on `backend` (sqlite, or postgres in its own schema)."""
    if backend == "sqlite":
        db = tmp_path / "crm.db"
        shutil.copy(env.crm_db, db)
        return f"sqlite:///{db}"
    url = str(request.getfixturevalue("pg_schema_url"))
    write_crm(make_engine(url), env.tables)
    return url


def sqlite_exec(db: Path, *statements: str) -> None:
    """Run raw statements on a SQLite file (to break a CRM copy on purpose)."""
    with sqlite3.connect(db) as conn:
        for statement in statements:
            conn.execute(statement)


def table_names(url: str) -> set[str]:
    """Tables (and views) present in a database."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return set(inspector.get_table_names()) | set(inspector.get_view_names())
    finally:
        engine.dispose()


def count_rows(url: str, table: str) -> int:
    """Rows of a table (0 when it does not exist)."""
    if table not in table_names(url):
        return 0
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f'SELECT COUNT(*) FROM "{table}"')).scalar() or 0)
    finally:
        engine.dispose()
