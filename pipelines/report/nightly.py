"""Read the latest nightly scoring run for the report, and join the lead attributes it shows from the CRM.

The scoring tables (docs/scoring.md; names from the `score` params block) hold no lead attributes, so campaign,
region, title codes and company fit come from the CRM, computed by the features stage's own static features
(`pipelines.features.static`), the one definition of "region" and "company in the ideal profile". Names, e-mail
addresses, phone numbers and job titles are read only to compute those and never leave this module.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipelines.config import FeaturesParams, ScoreTables
from pipelines.crm.db import display_url, make_engine, read_table
from pipelines.crm.schema import SCHEMAS, validate_table

log = logging.getLogger(__name__)

#: Columns of the latest-run view the report reads (docs/scoring.md).
SCORE_COLUMNS: Final[tuple[str, ...]] = (
    "run_id",
    "lead_id",
    "as_of",
    "model_name",
    "model_version",
    "probability",
    "stage",
    "grade",
    "rule_score",
    "rule_mql",
    "reasons_positive",
    "reasons_negative",
)


@dataclass(frozen=True)
class LatestRun:
    """The most recent complete run: its scoring_runs row and its lead_scores rows."""

    run: dict[str, Any]
    scores: pd.DataFrame


def sqlite_file_missing(url: str) -> bool:
    parsed = sa.make_url(url)
    return (
        parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
        and not Path(parsed.database).exists()
    )


def read_latest_run(url: str, tables: ScoreTables) -> LatestRun | None:
    """The latest complete run, or None (logged) when the database holds no run yet: no file, no tables, no rows."""
    from pipelines.score import store

    store.check_names(tables)
    if sqlite_file_missing(url):  # never create an empty database file just to find it empty
        log.info("no scores database at %s: no nightly run yet", display_url(url))
        return None
    engine = make_engine(url)
    try:
        scores = store.read_scores(engine, tables, latest=True)
        if scores.empty:
            log.info("%s holds no scoring run yet (%s empty or absent)", display_url(url), tables.latest)
            return None
        runs = store.read_runs(engine, tables)
    finally:
        engine.dispose()
    run_ids = scores["run_id"].astype(str).unique()
    if len(run_ids) != 1:
        log.warning("%s holds %d runs; reporting the first", tables.latest, len(run_ids))
    run_rows = runs.loc[runs["run_id"].astype(str) == run_ids[0]]
    run: dict[str, Any] = run_rows.iloc[0].to_dict() if len(run_rows) else {"run_id": run_ids[0]}
    if run.get("as_of") is None:
        run["as_of"] = scores["as_of"].max()
    scores = scores.loc[scores["run_id"].astype(str) == run_ids[0], list(SCORE_COLUMNS)].reset_index(drop=True)
    for column in ("reasons_positive", "reasons_negative"):
        scores[column] = scores[column].map(parse_reasons)
    return LatestRun(run=run, scores=scores)


def parse_reasons(value: object) -> str:
    """A JSON array of business-word reasons as one '; '-separated string ('' when empty or unreadable)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, list | tuple):
        items: Any = value
    else:
        try:
            items = json.loads(str(value))
        except ValueError:
            return str(value)
    return "; ".join(str(v) for v in items) if isinstance(items, list) else str(items)


def lead_attributes(crm_url: str, params: FeaturesParams) -> pd.DataFrame:
    """Per lead of the CRM: seniority and department codes, company fit (ICP match), lead source, campaign name and
    region, from the same static features training used. No personal data in the result."""

    engine = make_engine(crm_url)
    try:
        tables = {
            name: validate_table(name, read_table(engine, name, list(SCHEMAS[name].columns)))
            for name in ("leads", "accounts", "campaigns")
        }
    finally:
        engine.dispose()
    return attributes_of(tables, params)


def attributes_of(tables: dict[str, pd.DataFrame], params: FeaturesParams) -> pd.DataFrame:
    """`lead_attributes` on tables already read (leads, accounts, campaigns with canonical dtypes)."""
    from pipelines.features.static import Categories, Reference, static_features

    leads, campaigns = tables["leads"], tables["campaigns"]
    static = static_features(leads, Reference.from_tables(tables), params, Categories.from_tables(tables, params))
    names = campaigns.set_index(campaigns["campaign_id"].astype("int64"))["name"]
    campaign = leads["campaign_id"].astype("Int64").map(names)
    return pd.DataFrame(
        {
            "lead_id": leads["lead_id"].to_numpy(dtype=np.int64),
            "seniority": np.asarray(static["seniority"], dtype=object),
            "department": np.asarray(static["department"], dtype=object),
            "fit": np.asarray(static["icp_match"]).astype(bool),
            "lead_source": leads["lead_source"].astype(object).to_numpy(),
            "campaign": campaign.astype(object).where(campaign.notna(), None).to_numpy(),
            "region": np.asarray(static["region"], dtype=object),
        }
    )


def join_attributes(scores: pd.DataFrame, attributes: pd.DataFrame) -> pd.DataFrame:
    """The run's rows with each lead's attributes (leads no longer in the CRM keep empty attributes)."""
    out = scores.merge(attributes, on="lead_id", how="left", validate="one_to_one")
    missing = int(out["lead_source"].isna().sum())
    if missing:
        log.warning("%d scored leads are not in the CRM any more: shown without attributes", missing)
    out["campaign"] = out["campaign"].where(out["campaign"].notna() | out["lead_source"].isna(), "(no campaign)")
    return out
