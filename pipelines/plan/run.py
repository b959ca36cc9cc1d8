"""`leadscore plan`: read the latest production run's scores and the CRM's leads and stage entries, then plan."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from pipelines.config import Params
from pipelines.crm.db import make_engine, read_columns
from pipelines.plan import core
from pipelines.score import store

log = logging.getLogger(__name__)

#: The CRM columns a plan reads (no personal data).
CRM_COLUMNS: dict[str, list[str]] = {
    "leads": ["lead_id", "account_id", "created_at", "campaign_id"],
    "accounts": ["account_id", "region"],
    "campaigns": ["campaign_id", "name"],
    "stage_history": ["stage_history_id", "lead_id", "stage", "entered_at"],
}


def run_plan(
    crm_url: str,
    scores_url: str | None,
    params: Params,
    target: core.Target,
    campaigns: Sequence[str] = (),
    regions: Sequence[str] = (),
    mix: Mapping[str, float] | None = None,
) -> core.Plan:
    """The plan for `target` from the latest production run (the champion's, as `leadscore export` takes)."""
    tables = params.score.tables
    store.check_names(tables)
    engine = make_engine(scores_url or crm_url)
    try:
        run, scores = store.read_export_run(engine, tables)
    finally:
        engine.dispose()
    crm = read_columns(crm_url, CRM_COLUMNS)
    leads = crm["leads"].copy()
    leads["campaign"] = core.campaign_of(leads, crm["campaigns"])
    leads["region"] = core.region_of(leads, crm["accounts"])
    outcomes = core.lead_outcomes(leads, scores, crm["stage_history"], run["as_of"])
    plan = core.plan_target(
        outcomes,
        run["as_of"],
        str(run["run_id"]),
        target,
        params.plan,
        params.features,
        params.base.seed,
        campaigns,
        regions,
        mix,
    )
    log.info(
        "plan from run %s (as of %s): %d campaign group(s), expected SQLs of their open leads within the horizon %.1f",
        run["run_id"],
        f"{run['as_of']:%Y-%m-%d}",
        len(plan.table),
        plan.total["expected_sql_open"],
    )
    return plan
