"""`leadscore backtest`: read the stored runs and the CRM, judge every run whose horizon has passed, write the rows
atomically to the backtests table and log them on their model versions in MLflow.

By default only due runs without a backtest row are judged (a nightly job stays cheap however long the history);
`rerun_all` judges every due run again, replacing its row. Rows of runs no longer in the runs log (replaced by a
rerun of the same night) are removed in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipelines.backtest import core
from pipelines.config import Params
from pipelines.crm.db import display_url, make_engine, read_columns
from pipelines.extract import check_no_future_events, history_end
from pipelines.features.snapshots import outcomes_as_of
from pipelines.score import store

log = logging.getLogger(__name__)

#: The CRM columns a backtest reads: outcomes (stage entries), clusters (accounts) and how far the data reaches.
CRM_COLUMNS: dict[str, list[str]] = {
    "leads": ["lead_id", "account_id", "created_at", "updated_at"],
    "activities": ["activity_id", "lead_id", "occurred_at"],
    "stage_history": ["stage_history_id", "lead_id", "stage", "entered_at"],
}


@dataclass(frozen=True)
class BacktestResult:
    """What one `leadscore backtest` did: the rows it wrote, the runs still waiting for their horizon, the runs
    skipped because they already had a row, and the runs whose earlier row it replaced."""

    rows: pd.DataFrame
    waiting: pd.DataFrame
    skipped: int
    replaced: list[str]
    history_end: pd.Timestamp

    @property
    def degraded(self) -> pd.DataFrame:
        """The written rows whose observed / expected left the band."""
        return self.rows.loc[self.rows["status"] == core.DEGRADED]


def judge_run(
    run: Mapping[str, Any], scores: pd.DataFrame, tables: Mapping[str, pd.DataFrame], end: pd.Timestamp, params: Params
) -> dict[str, Any]:
    """One run's backtest row from its stored scores and the CRM tables (outcomes by the training label's code)."""
    as_of = pd.Timestamp(run["as_of"])
    outcomes = outcomes_as_of(tables["stage_history"], scores["lead_id"].to_numpy(), as_of, params.features)
    rows, missing = core.join_outcomes(scores, outcomes, tables["leads"][["lead_id", "account_id"]])
    if missing:
        log.warning("run %s: %d scored lead(s) are no longer in the CRM: left out", run["run_id"], missing)
    meta = {
        **run,
        "target_stage": params.features.target_stage,
        "horizon_days": params.features.horizon_days,
        "history_end": end,
    }
    return core.backtest_run(rows, meta, params.backtest, params.base.seed, missing)


def run_backtest(
    crm_url: str,
    scores_url: str | None,
    params: Params,
    tracking_uri: str | None,
    rerun_all: bool = False,
    mlflow: bool = True,
) -> BacktestResult:
    """Judge the due runs, publish their rows in one transaction, then log them to MLflow (`mlflow`)."""
    from pipelines.registry.backtest import log_backtests
    from pipelines.registry.server import configure_tracking, resolve_tracking_uri

    tables = params.score.tables
    store.check_names(tables)
    name = store.check_backtest_name(tables, params.backtest.table)
    client = configure_tracking(resolve_tracking_uri(tracking_uri)) if mlflow else None
    out_url = scores_url or crm_url
    engine = make_engine(out_url)
    try:
        runs = store.read_runs(engine, tables)
        if runs.empty:
            raise core.BacktestInputError(
                f"no scoring run in table '{tables.runs}' of {display_url(out_url)}: run `leadscore score` first"
            )
        crm = read_columns(crm_url, CRM_COLUMNS)
        # events past the clock would move the end of the data, and with it which runs look fully observed
        check_no_future_events(crm, params.base.future_tolerance_minutes)
        end = history_end(crm)
        horizon = params.features.horizon_days
        due = core.due_runs(runs, end, horizon)
        if due.due.empty:
            first = pd.to_datetime(runs["as_of"], utc=True).min()
            raise core.BacktestInputError(
                f"no stored run can be judged yet: the CRM's data ends {end:%Y-%m-%d %H:%M}Z, and each of the "
                f"{len(runs)} run(s) in '{tables.runs}' needs it to reach its as-of + {horizon} days "
                f"(features.horizon_days); the earliest, as of {first:%Y-%m-%d}, is due at "
                f"{first + pd.Timedelta(days=horizon):%Y-%m-%d}"
            )
        existing = store.read_backtests(engine, name, core.FIELDS)
        done = set(existing["run_id"].astype(str))
        todo = due.due if rerun_all else due.due.loc[~due.due["run_id"].astype(str).isin(done)]
        now = pd.Timestamp.now(tz="UTC")
        written = []
        for _, run in todo.iterrows():
            scores = store.read_run_scores(engine, tables, str(run["run_id"]), core.SCORE_INPUT)
            meta = {str(k): v for k, v in run.to_dict().items()}
            written.append(judge_run({**meta, "backtested_at": now}, scores, crm, end, params))
            log.info(
                "run %s as of %s: ROC-AUC %.3f, observed / expected %.2f (%s)",
                run["run_id"],
                f"{pd.Timestamp(run['as_of']):%Y-%m-%d}",
                written[-1]["roc_auc"],
                written[-1]["obs_exp"],
                written[-1]["status"],
            )
        frame = core.backtest_frame(written)
        orphans = sorted(done - set(runs["run_id"].astype(str)))
        replaced = store.write_backtests(engine, name, core.FIELDS, frame, orphans) if len(frame) or orphans else []
    finally:
        engine.dispose()
    if client is not None and len(frame):
        log_backtests(client, frame)
    for _, row in frame.loc[frame["status"] == core.DEGRADED].iterrows():
        log.warning("run %s as of %s flagged: %s", row["run_id"], f"{row['as_of']:%Y-%m-%d}", row["message"])
    return BacktestResult(
        rows=frame, waiting=due.waiting, skipped=len(due.due) - len(todo), replaced=replaced, history_end=end
    )
