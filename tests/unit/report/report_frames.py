"""Tiny hand-made inputs for the report's unit tests: test rows, thresholds and params (no model, no CRM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.calibrated import Thresholds
from pipelines.config import Params, ReportParams

REPO = Path(__file__).resolve().parents[3]

WEEKS = [pd.Timestamp("2026-07-06", tz="UTC"), pd.Timestamp("2026-07-13", tz="UTC")]


def report_params(**overrides: object) -> ReportParams:
    """Small, fast report params."""
    values: dict[str, object] = {
        "bootstrap": 50,
        "ci_level": 0.95,
        "curve_points": 11,
        "examples": 3,
        "leakage": {"min_mqls": 3, "too_loose_below": 0.2, "too_narrow_above": 0.6},
        "plan_target_sql": None,
        "plan_per": "week",
    }
    values.update(overrides)
    return ReportParams.model_validate(values)


def thresholds(sql: float = float("inf")) -> Thresholds:
    """MQL 0.3, SAL 0.5 and SQL `sql` (inf: unreachable, as thresholds.json's null)."""
    return Thresholds(
        target_stage="SQL",
        horizon_days=30,
        global_thresholds={"MQL": 0.3, "SAL": 0.5, "SQL": sql},
        report={
            "policies": {
                "MQL": {"policy": "match_rules"},
                "SAL": {"policy": "capacity", "leads_per_week": 150.0},
                "SQL": {"policy": "precision", "min_precision": 0.3},
            }
        },
    )


def row(
    lead: int, week: int, label: int, prob: float, rule_score: float, rule_mql: bool, **attrs: object
) -> dict[str, object]:
    """One test row; the stage and grade follow `thresholds()` (no SQL)."""
    stage = "SAL" if prob >= 0.5 else "MQL" if prob >= 0.3 else "none"
    grade = {"SAL": "B", "MQL": "C", "none": "D"}[stage]
    base = {
        "lead_id": lead,
        "snapshot_at": WEEKS[week],
        "label": label,
        "probability": prob,
        "stage": stage,
        "grade": grade,
        "rule_score": rule_score,
        "rule_mql": rule_mql,
        "fit": True,
        "seniority": "vp",
        "department": "it",
        "lead_source": "webinar",
        "campaign": "Spring webinar",
        "region": "NA",
    }
    base.update(attrs)
    return base


def two_by_two_rows() -> pd.DataFrame:
    """Leads 1-4 in both weeks, one per cell of the 2x2, with known outcomes:

    - lead 1 both (rule MQL, p=0.6): converts in week 2 -> 1 SQL of 2 rows;
    - lead 2 rule only (rule 80, p=0.1, the engaged junior): never converts;
    - lead 3 model only (rule 10, p=0.4, the quiet VP): converts both weeks -> 2 SQLs of 2 rows;
    - lead 4 neither: never converts.
    """
    rows = []
    for week in (0, 1):
        rows += [
            row(1, week, week, 0.6, 70, True),
            row(
                2,
                week,
                0,
                0.1,
                80 + week,
                True,
                seniority="intern_student",
                department="marketing",
                fit=False,
                campaign="Spring webinar",
            ),
            row(
                3,
                week,
                1,
                0.4,
                10,
                False,
                seniority="c_level",
                department="executive",
                region="EMEA",
                campaign="(no campaign)",
                lead_source="organic_search",
            ),
            row(4, week, 0, 0.05, 0, False, fit=False, region="EMEA"),
        ]
    return pd.DataFrame(rows)


def many_leads_rows(n_leads: int = 200, seed: int = 0) -> pd.DataFrame:
    """n leads over both weeks with random scores, labels driven by the probability (for curves and intervals)."""
    rng = np.random.default_rng(seed)
    out = []
    for lead in range(1, n_leads + 1):
        prob = float(rng.beta(1, 6))
        rule_score = float(rng.integers(0, 100))
        for week in (0, 1):
            out.append(
                row(
                    lead,
                    week,
                    int(rng.random() < prob),
                    prob,
                    rule_score,
                    rule_score >= 60,
                    campaign=f"campaign {lead % 3}",
                    region=["NA", "EMEA", "APAC"][lead % 3],
                    fit=bool(lead % 2),
                )
            )
    return pd.DataFrame(out)


def evaluate_metrics(test_rows: int, best: str | None = "decayed_30d") -> dict[str, Any]:
    """A hand-made metrics/evaluate.json of `test_rows` test rows (the keys the report reads); `best` None: an
    evaluation without rule variants (the history's rule only)."""
    metrics: dict[str, Any] = {
        "roc_auc": 0.876,
        "sql_capture_ratio_vs_rules": 1.372,
        "sql_capture_ratio_vs_rules_ci_low": 1.247,
        "sql_capture_ratio_vs_rules_ci_high": 1.498,
        "equal_volume": {"rule_mql_precision": 0.022, "model_precision_at_rule_volume": 0.0302},
        "rules": {"roc_auc": 0.694, "pr_auc": 0.022, "mql_leads_per_week": 6735.0},
        "bootstrap": {"unit": "accounts", "clusters": 6856, "resamples": 200, "ci_level": 0.9},
        "test": {"rows": test_rows, "lead_weeks": 2.0 * test_rows, "leads": 10, "accounts": 5},
    }
    if best is None:
        return metrics
    variant = {"threshold_policy": "own", "threshold": None, "pr_auc": 0.05, "logreg_sql_capture_ratio": 1.0}
    metrics.update(
        {
            "best_rule": best,
            "best_rule_selected_by": "highest ROC-AUC of the rule score on the calibration slice",
            "best_rule_roc_auc": 0.819,
            "sql_capture_ratio_vs_best_rule": 1.13,
            "sql_capture_ratio_vs_best_rule_ci_low": 1.056,
            "sql_capture_ratio_vs_best_rule_ci_high": 1.199,
            "rule_variants": {
                "history": {
                    **variant,
                    "source": "config/mql_rules_with_a_long_unbroken_file_name.yaml",  # must wrap on a phone
                    "calibration_roc_auc": 0.702,
                    "roc_auc": 0.694,
                    "mql_leads_per_week": 6735.0,
                    "mql_precision": 0.022,
                    "mql_recall": 0.657,
                    "model_sql_capture_ratio": 1.372,
                },
                "decayed_30d": {
                    **variant,
                    "source": "rules.file with half_life_days 30",
                    "threshold_policy": "match_volume",
                    "threshold": 29.14,
                    "calibration_roc_auc": 0.815,
                    "roc_auc": 0.819,
                    "mql_leads_per_week": 5792.45,
                    "mql_precision": 0.0307,
                    "mql_recall": 0.788,
                    "model_sql_capture_ratio": 1.13,
                },
            },
        }
    )
    return metrics


def tiny_page(
    nightly: object = None,
    rows: pd.DataFrame | None = None,
    metrics: dict[str, Any] | None = None,
    params: Params | None = None,
    **sections: object,
) -> str:
    """A whole report page built from hand-made rows (reasons from a stub instead of a model); `sections`: the
    optional backtest / plan sections."""
    from pipelines.config import load_params
    from pipelines.report.stage import Holdout, build_page

    if params is None:
        params = load_params(REPO / "params.yaml").model_copy(update={"report": report_params()})
    rows = many_leads_rows(120) if rows is None else rows

    def explain(features: pd.DataFrame) -> tuple[list[list[str]], list[list[str]]]:
        return ([["VP-level title"]] * len(features), [["no pricing page visits yet"]] * len(features))

    holdout = Holdout(
        rows=rows, weeks=2.0, thresholds=thresholds(), features=rows[["lead_id", "snapshot_at"]], explain=explain
    )
    return build_page(
        params,
        holdout,
        nightly,  # type: ignore[arg-type]
        "sqlite:///data/scores.db",
        evaluate_metrics(len(rows)) if metrics is None else metrics,
        "2026-07-19 23:00 UTC",
        **sections,  # type: ignore[arg-type]
    )


def backtest_rows(degraded_newest: bool = True) -> pd.DataFrame:
    """Two hand-made backtest rows (the `score_backtests` frame): an older run inside the band, a newer one flagged
    for recalibration (or also inside the band)."""
    from pipelines.backtest.core import FIELDS, backtest_frame

    def run(run_id: str, as_of: str, obs_exp: float, status: str, recommendation: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {name: None for name in FIELDS}
        out.update(
            run_id=run_id,
            as_of=pd.Timestamp(as_of, tz="UTC"),
            outcomes_until=pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=30),
            history_end=pd.Timestamp("2026-11-19", tz="UTC"),
            backtested_at=pd.Timestamp("2026-11-19", tz="UTC"),
            model_name="lead-scoring",
            model_version="3",
            production=True,
            target_stage="SQL",
            horizon_days=30,
            leads=1234,
            roc_auc=0.812,
            roc_auc_ci_low=0.79,
            roc_auc_ci_high=0.83,
            obs_exp=obs_exp,
            obs_exp_ci_low=obs_exp - 0.1,
            obs_exp_ci_high=obs_exp + 0.1,
            mql_precision=0.081,
            mql_rule_precision=0.043,
            status=status,
            recommendation=recommendation,
        )
        return out

    newest = (1.41, "degraded", "recalibrate") if degraded_newest else (1.02, "ok", None)
    return backtest_frame([run("r-old", "2026-09-14", 0.97, "ok", None), run("r-new", "2026-10-12", *newest)])


def plan_rows() -> Any:
    """A hand-made plan section (`plan.core.plan_section`'s shape): two campaigns and the total, last."""
    from pipelines.plan.core import PlanSection

    columns = (
        "campaign",
        "SQLs per week needed",
        "SQLs per week now",
        "SQLs per new lead",
        "new leads per week (95% CI)",
        "MQLs per week (95% CI)",
        "new leads per week now",
    )
    rows = (
        ("Webinar", "15.0", "12.0", "0.040", "375 (330-420)", "150 (130-170)", "300"),
        ("Trade show", "10.0", "8.0", "0.020", "500 (440-560)", "200 (180-230)", "400"),
        ("total", "25.0", "20.0", "", "875 (800-950)", "350 (320-380)", "700"),
    )
    headline = "25 SQLs a week need about 875 new leads (800-950) and 350 MQLs a week across 2 campaign group(s)."
    return PlanSection(headline, columns, rows, ("campaigns without history take the rates of all",))


def extra_sections() -> dict[str, object]:
    """The backtest trend and the plan sections as the report stage builds them, from the hand-made rows."""
    from pipelines.backtest.core import backtest_trend
    from pipelines.config import load_params
    from pipelines.report import core, render

    params = load_params(REPO / "params.yaml")
    target = core.plan_target(params.report, params.calibrate.thresholds)
    return {
        "backtest": render.backtest_extra(backtest_trend(backtest_rows()), params.backtest, 30),
        "plan": render.plan_extra(plan_rows(), target, "sqlite:///data/scores.db"),
    }
