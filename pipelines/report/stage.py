"""The report stage's entry point: load the test slice, the evaluate stage's metrics, the latest nightly run, the
stored backtests and the plan for the params' target, build the sections, write HTML.

Everything the evaluate stage reads is read the same way (features, split, booster, calibrator, thresholds, rule
scores aligned on (lead_id, snapshot_at)); probabilities, predicted stages and grades come from the registered
model's own scoring function (`pipelines.registry.model.score_frame`), and so do the reasons of the disagreement
examples. The page is written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.artifacts import CALIBRATOR_FILE, THRESHOLDS_FILE, load_booster, load_calibrator, load_thresholds
from pipelines.atomic import atomic_path
from pipelines.backtest.core import TrendSection
from pipelines.calibrated import Thresholds
from pipelines.config import Params
from pipelines.evaluate import read_test_slice
from pipelines.features.spec import FEATURE_LIST_FILE, WEIGHT
from pipelines.modeling import (
    KEY_COLUMNS,
    LABEL,
    ModelInputError,
    align_rows,
    cluster_ids,
    read_json,
    row_weights,
)
from pipelines.plan.core import PlanSection
from pipelines.report import core, headline, render

log = logging.getLogger(__name__)

TITLE = "Predicted vs rule-based MQLs"


@dataclass(frozen=True)
class Holdout:
    """The test rows ready for the core, and what is needed to explain a few of them."""

    rows: pd.DataFrame
    weeks: float
    thresholds: Thresholds
    features: pd.DataFrame  # the test feature rows (same order as rows), to compute reasons for examples
    explain: Any  # callable: feature rows -> (reasons_positive, reasons_negative) lists


def _icp_fit(test: pd.DataFrame, raw_dir: Path, params: Params) -> np.ndarray:
    """Whether each row's company matches the ideal profile, for the fit-vs-readiness mix.

    The icp_match feature when the features hold it; else (firmographics not opted in as features) from the extract
    snapshot's current values, which describe the lead to marketers and are never a model input.
    """
    if "icp_match" in test.columns:
        return np.asarray(test["icp_match"].to_numpy() == 1, dtype=bool)
    from pipelines.extract import read_snapshot
    from pipelines.features.columns import INPUT_COLUMNS
    from pipelines.report.nightly import attributes_of

    wanted = {
        "campaigns": [*INPUT_COLUMNS["campaigns"], "name"],
        "accounts": INPUT_COLUMNS["accounts"],
        "leads": INPUT_COLUMNS["leads"],
        "activities": ["lead_id"],
        "stage_history": ["stage_history_id"],
    }
    tables, _ = read_snapshot(raw_dir, wanted)
    attributes = attributes_of(tables, params.features)
    fit = attributes.set_index("lead_id")["fit"]
    return test["lead_id"].map(fit).fillna(False).to_numpy(dtype=bool)


def _campaign_names(raw_dir: Path) -> dict[str, str]:
    """campaign_id (as the features stage's category text) -> campaign name, from the extract snapshot."""
    from pipelines.extract import read_snapshot

    wanted = {
        "campaigns": ["campaign_id", "name"],
        "leads": ["lead_id"],
        "accounts": ["account_id"],
        "activities": ["activity_id"],
        "stage_history": ["stage_history_id"],
    }
    tables, _ = read_snapshot(raw_dir, wanted)
    campaigns = tables["campaigns"]
    return dict(zip(campaigns["campaign_id"].astype("int64").astype(str), campaigns["name"].astype(str), strict=True))


def _rules_fired(rules_path: Path, test: pd.DataFrame) -> pd.Series | None:
    """The rules stage's explanation of each test row (None when the file predates the column)."""
    try:
        fired = pd.read_parquet(rules_path, columns=[*KEY_COLUMNS, "rules_fired"])
    except (KeyError, ValueError):
        return None
    return align_rows(test, fired, ["rules_fired"], "rule scores")["rules_fired"]


def load_holdout(params: Params, features_dir: Path, model_dir: Path, rules_path: Path, raw_dir: Path) -> Holdout:
    """The out-of-time test slice scored by the model, with the rule scores and the lead attributes the report
    shows (codes, flags and campaign names only)."""
    from pipelines.calibrate import read_rule_scores, slice_share
    from pipelines.registry.model import build_spec, score_frame

    model_dir = Path(model_dir)
    frame, slices, test, _ = read_test_slice(features_dir, model_dir)
    booster = load_booster(model_dir)
    calibrator = load_calibrator(model_dir / CALIBRATOR_FILE)
    thresholds = load_thresholds(model_dir / THRESHOLDS_FILE)
    feature_list = read_json(Path(features_dir) / FEATURE_LIST_FILE, "feature list")
    spec = build_spec(
        booster, feature_list, params.features.target_stage, params.features.horizon_days, params.registry.top_reasons
    )
    scored = score_frame(booster, calibrator, thresholds, spec, test, 0)
    rules = align_rows(test, read_rule_scores(rules_path), ["rule_score", "rule_mql"], "rule scores")
    names = _campaign_names(raw_dir)
    campaign_id = (
        test["campaign_id"].astype(object)
        if "campaign_id" in test.columns
        else pd.Series([None] * len(test), dtype=object)
    )
    campaign = campaign_id.map(
        lambda c: core.NO_CAMPAIGN if c is None or pd.isna(c) else names.get(str(c), f"campaign {c}")
    )
    needed = ["seniority", "department", "lead_source", "region"]
    missing = [c for c in needed if c not in test.columns]
    if missing:
        raise ModelInputError(f"feature snapshots lack column(s) {missing} the report shows")
    rows = pd.DataFrame(
        {
            "lead_id": test["lead_id"].to_numpy(dtype=np.int64),
            "snapshot_at": test["snapshot_at"],
            "label": test[LABEL].to_numpy(dtype=np.int64),
            "probability": scored["probability"].to_numpy(dtype=float),
            "stage": scored["stage"].to_numpy(),
            "grade": scored["grade"].to_numpy(),
            "rule_score": rules["rule_score"].to_numpy(dtype=float),
            "rule_mql": rules["rule_mql"].to_numpy(dtype=bool),
            "fit": _icp_fit(test, raw_dir, params),
            "seniority": test["seniority"].astype(object).to_numpy(),
            "department": test["department"].astype(object).to_numpy(),
            "lead_source": test["lead_source"].astype(object).to_numpy(),
            "campaign": campaign.to_numpy(),
            "region": test["region"].astype(object).to_numpy(),
            WEIGHT: row_weights(test),
            core.CLUSTER: cluster_ids(test),
        }
    )
    fired = _rules_fired(rules_path, test)
    if fired is not None:
        rows["rules_fired"] = fired.to_numpy()
    weeks = (
        test["snapshot_at"].nunique()
        * slice_share(slices, frame["snapshot_at"], "test")
        * params.features.cadence_days
        / 7
    )

    def explain(features: pd.DataFrame) -> tuple[list[list[str]], list[list[str]]]:
        out = score_frame(booster, calibrator, thresholds, spec, features, params.registry.top_reasons)
        return list(out["reasons_positive"]), list(out["reasons_negative"])

    return Holdout(rows=rows, weeks=float(weeks), thresholds=thresholds, features=test, explain=explain)


def add_reasons(examples: pd.DataFrame, holdout: Holdout) -> pd.DataFrame:
    """The examples with the model's reasons (business words) for and against, from their feature rows."""
    if examples.empty:
        return examples.assign(reasons_positive=pd.Series(dtype=object), reasons_negative=pd.Series(dtype=object))
    keys = (
        holdout.features[list(KEY_COLUMNS)]
        .reset_index()
        .merge(examples[list(KEY_COLUMNS)].assign(_pos=np.arange(len(examples))), on=list(KEY_COLUMNS))
    )
    keys = keys.sort_values("_pos")
    positive, negative = holdout.explain(holdout.features.loc[keys["index"].to_numpy()].reset_index(drop=True))
    out = examples.copy()
    out["reasons_positive"] = ["; ".join(r) for r in positive]
    out["reasons_negative"] = ["; ".join(r) for r in negative]
    return out


def build_page(
    params: Params,
    holdout: Holdout,
    nightly: core.NightlySection | None,
    scores_where: str,
    metrics: Mapping[str, Any],
    data_as_of: str,
    backtest: render.ExtraSection | None = None,
    plan: render.ExtraSection | None = None,
) -> str:
    """The whole HTML page from the loaded inputs; `metrics` is the evaluate stage's metrics/evaluate.json of the
    same test rows (the headline and the standard-rule table); `backtest` and `plan` are optional sections."""
    headline.check_test_rows(metrics, len(holdout.rows))
    test = core.HoldoutRows.from_rows(holdout.rows, holdout.weeks)
    section = core.holdout_section(test, params.report, params.base.seed)
    section = core.HoldoutSection(
        **{
            **section.__dict__,
            "rule_only": add_reasons(section.rule_only, holdout),
            "model_only": add_reasons(section.model_only, holdout),
        }
    )
    wording = render.Wording(
        ci_level=params.report.ci_level,
        cadence_days=params.features.cadence_days,
        horizon_days=params.features.horizon_days,
        target=params.features.target_stage,
        rules_file=str(params.rules.file),
    )
    return render.page(
        render.PageInputs(
            title=TITLE,
            data_as_of=data_as_of,
            wording=wording,
            headline=headline.headline(metrics),
            rules=headline.rule_table(metrics),
            holdout=section,
            thresholds=core.threshold_notes(holdout.thresholds),
            nightly=nightly,
            scores_where=scores_where,
            backtest=backtest,
            plan=plan,
        )
    )


def data_as_of(raw_dir: Path) -> str:
    """The CRM snapshot's history end (its latest event), as the page says when its data stops."""
    from pipelines.extract import read_manifest

    end = pd.Timestamp(read_manifest(Path(raw_dir))["history_end"])
    return end.strftime("%Y-%m-%d %H:%M UTC")


def load_nightly(params: Params, scores_url: str, crm_url: str) -> core.NightlySection | None:
    """The latest nightly run joined with the CRM's lead attributes, or None when there is no run yet."""
    from pipelines.report.nightly import join_attributes, lead_attributes, read_latest_run

    latest = read_latest_run(scores_url, params.score.tables)
    if latest is None:
        return None
    rows = join_attributes(latest.scores, lead_attributes(crm_url, params.features))
    return core.nightly_section(rows, latest.run, params.report)


def load_backtest_trend(params: Params, scores_url: str) -> TrendSection | None:
    """The trend of the stored backtests (`leadscore backtest`), or None when the scores database or its backtests
    table does not exist yet (never created here) or holds no row."""
    from pipelines.backtest.core import FIELDS, backtest_trend
    from pipelines.crm.db import make_engine
    from pipelines.report.nightly import sqlite_file_missing
    from pipelines.score import store

    name = store.check_backtest_name(params.score.tables, params.backtest.table)
    if sqlite_file_missing(scores_url):
        return None
    engine = make_engine(scores_url)
    try:
        frame = store.read_backtests(engine, name, FIELDS)
    finally:
        engine.dispose()
    if frame.empty:
        log.info("no backtest row in %s yet: no run has been judged", name)
        return None
    return backtest_trend(frame)


def load_plan(params: Params, scores_url: str, crm_url: str, target: core.PlanTarget) -> PlanSection:
    """The plan for `target` from the latest production run (`leadscore plan`'s own reading and core)."""
    from pipelines.plan.core import Target, plan_section
    from pipelines.plan.run import run_plan

    return plan_section(run_plan(crm_url, scores_url, params, Target("sql", target.sql, target.per)))


def run_report(
    params: Params,
    features_dir: Path,
    model_dir: Path,
    rules_path: Path,
    raw_dir: Path,
    scores_url: str,
    crm_url: str,
    out: Path,
    metrics_path: Path,
) -> dict[str, Any]:
    """Entry point of the report stage: write the HTML page atomically; returns a small summary for the log."""
    from pipelines.crm.db import display_url

    metrics = read_json(Path(metrics_path), "evaluate metrics")
    holdout = load_holdout(params, features_dir, model_dir, rules_path, raw_dir)
    nightly = load_nightly(params, scores_url, crm_url)
    target = core.plan_target(params.report, params.calibrate.thresholds)
    # the plan starts from the latest production run: the one the nightly section shows (the latest view holds
    # production runs only), so without it there is nothing to plan from
    plan = None if nightly is None else load_plan(params, scores_url, crm_url, target)
    trend = load_backtest_trend(params, scores_url)
    where = display_url(scores_url)
    html = build_page(
        params,
        holdout,
        nightly,
        where,
        metrics,
        data_as_of(raw_dir),
        backtest=render.backtest_extra(trend, params.backtest, params.features.horizon_days),
        plan=render.plan_extra(plan, target, where),
    )
    with atomic_path(Path(out)) as tmp:
        tmp.write_text(html, encoding="utf-8")
    summary = {
        "out": str(out),
        "bytes": len(html.encode()),
        "test_rows": len(holdout.rows),
        "nightly_run": None if nightly is None else nightly.run.get("run_id"),
        "backtested_runs": 0 if trend is None else len(trend.rows),
        "plan_target_sql": target.sql if plan is not None else None,
    }
    log.info(
        "report written to %s (%s bytes; %s test rows; nightly run %s; %d backtested run(s) shown; plan %s)",
        out,
        f"{summary['bytes']:,}",
        f"{summary['test_rows']:,}",
        summary["nightly_run"] or "none yet",
        summary["backtested_runs"],
        "none (no nightly run)" if plan is None else f"for {target.sql:g} SQLs a {target.per}",
    )
    return summary
