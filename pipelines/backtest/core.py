"""The pure core of `leadscore backtest`: one stored nightly run's scores and its outcomes in, one row of figures out.

A run scored the leads open at its as-of time t; once t + `features.horizon_days` lies inside the CRM's data, the
outcome of each lead is known: did it reach the target stage (or later) within (t, t + horizon]
(`pipelines.features.snapshots.outcomes_as_of`, the training label's code). Per run: ROC-AUC and observed /
expected conversions with intervals resampling accounts (`modeling.ClusterBootstrap`), observed / expected and
precision of each stage's list (MQL, SAL, SQL: nested, a lead on the SAL list is on the MQL list), the rule score's
precision at the same volume as each list, and the rule MQLs against the model's top leads at the rule's volume.
A run whose observed / expected leaves the params' band is flagged: retrain when its ranking broke (ROC-AUC below
`backtest.min_roc_auc`), else recalibrate. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from pipelines.calibrated import THRESHOLD_STAGES
from pipelines.config import BacktestParams
from pipelines.errors import BadInputError
from pipelines.modeling import ClusterBootstrap, cluster_ids, precision_recall, roc_auc, top_k_per_group

#: Columns of the scores a backtest needs (a `lead_scores` run's rows).
SCORE_INPUT: Final[tuple[str, ...]] = ("lead_id", "probability", "stage", "rule_score", "rule_mql")
#: Columns of the outcomes (`outcomes_as_of`).
OUTCOME_INPUT: Final[tuple[str, ...]] = ("lead_id", "label", *(f"reached_{s}" for s in THRESHOLD_STAGES))
OK: Final = "ok"
DEGRADED: Final = "degraded"
RETRAIN: Final = "retrain"
RECALIBRATE: Final = "recalibrate"

_STAGE_FIELDS: Final[dict[str, str]] = {
    "leads": "int",
    "observed": "float",
    "expected": "float",
    "obs_exp": "float",
    "precision": "float",
    "precision_own": "float",
    "rule_precision": "float",
}
#: One backtest row: field -> kind (timestamp, text, bool, int, float); the store maps kinds to SQL types.
FIELDS: Final[dict[str, str]] = {
    "run_id": "text",
    "as_of": "timestamp",
    "outcomes_until": "timestamp",
    "history_end": "timestamp",
    "backtested_at": "timestamp",
    "model_name": "text",
    "model_version": "text",
    "production": "bool",
    "target_stage": "text",
    "horizon_days": "int",
    "leads": "int",
    "leads_missing": "int",
    "accounts": "int",
    "observed": "float",
    "expected": "float",
    "obs_exp": "float",
    "obs_exp_ci_low": "float",
    "obs_exp_ci_high": "float",
    "roc_auc": "float",
    "roc_auc_ci_low": "float",
    "roc_auc_ci_high": "float",
    **{f"{stage.lower()}_{name}": kind for stage in THRESHOLD_STAGES for name, kind in _STAGE_FIELDS.items()},
    "rule_mql_leads": "int",
    "rule_mql_precision": "float",
    "model_precision_at_rule_volume": "float",
    "bootstrap": "int",
    "ci_level": "float",
    "status": "text",
    "recommendation": "text",
    "message": "text",
}


class BacktestInputError(BadInputError):
    """Nothing can be backtested (no run past its horizon) or the inputs lack columns: the CLI exits with 2."""


@dataclass(frozen=True)
class Due:
    """Which stored runs can be judged: those whose horizon has passed in the CRM's data, and those still waiting."""

    due: pd.DataFrame
    waiting: pd.DataFrame


def due_runs(runs: pd.DataFrame, history_end: pd.Timestamp, horizon_days: int) -> Due:
    """Split the scoring_runs log: a run is due when as_of + horizon <= the CRM's latest event (its outcomes are
    all observed); the others wait (judging them now would count not-yet-converted leads as failures)."""
    as_of = pd.to_datetime(runs["as_of"], utc=True)
    done = (as_of + pd.Timedelta(days=horizon_days) <= pd.Timestamp(history_end)).to_numpy()
    return Due(due=runs.loc[done].reset_index(drop=True), waiting=runs.loc[~done].reset_index(drop=True))


def join_outcomes(scores: pd.DataFrame, outcomes: pd.DataFrame, accounts: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The run's rows with their outcomes and bootstrap cluster (`cluster`: the account, or the lead without one),
    sorted by lead_id (ties in any ranking are broken by lead_id); and how many scored leads the CRM no longer
    holds (left out: their outcome is unknown). `accounts`: lead_id, account_id of the CRM's leads."""
    for frame, needed, what in ((scores, SCORE_INPUT, "scores"), (outcomes, OUTCOME_INPUT, "outcomes")):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise BacktestInputError(f"backtest {what} lack column(s) {missing}")
    rows = scores[list(SCORE_INPUT)].merge(outcomes[list(OUTCOME_INPUT)], on="lead_id", how="inner", validate="1:1")
    rows = rows.merge(accounts[["lead_id", "account_id"]], on="lead_id", how="left", validate="1:1")
    rows = rows.sort_values("lead_id", kind="stable").reset_index(drop=True)
    rows["cluster"] = cluster_ids(rows)
    return rows, len(scores) - len(rows)


def on_list(stage: np.ndarray, level: str) -> np.ndarray:
    """Whether each lead is on `level`'s list: its predicted stage is that one or higher (lists are nested)."""
    rank = {s: i for i, s in enumerate(THRESHOLD_STAGES)}
    want = rank[level]
    return np.array([rank.get(str(s), -1) >= want for s in stage], dtype=bool)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def verdict(obs_exp: float, auc: float, params: BacktestParams) -> tuple[str, str | None, str]:
    """(status, recommendation, message): flagged when observed / expected leaves the band; then retrain when the
    ranking broke too (ROC-AUC below `min_roc_auc`, or not measurable), else recalibrate (ranking holds, the
    probabilities moved)."""
    band = f"[{params.obs_exp_low:g}, {params.obs_exp_high:g}]"
    if math.isfinite(obs_exp) and params.obs_exp_low <= obs_exp <= params.obs_exp_high:
        return OK, None, f"observed / expected {obs_exp:.2f} inside {band}"
    shown = f"{obs_exp:.2f}" if math.isfinite(obs_exp) else "n/a"
    if math.isfinite(auc) and auc >= params.min_roc_auc:
        return (
            DEGRADED,
            RECALIBRATE,
            f"observed / expected {shown} outside {band} while ROC-AUC {auc:.3f} >= {params.min_roc_auc:g}: the "
            "ranking holds but the probabilities moved; recalibrate on recent weeks (a fresh `dvc repro` refits "
            "the calibrator and thresholds on the latest complete weeks)",
        )
    auc_text = f"{auc:.3f} < {params.min_roc_auc:g}" if math.isfinite(auc) else "not measurable (one outcome only)"
    return (
        DEGRADED,
        RETRAIN,
        f"observed / expected {shown} outside {band} and ROC-AUC {auc_text}: the ranking no longer holds; retrain "
        "on recent data (`dvc repro`), then let the gate decide on the champion",
    )


def backtest_run(
    rows: pd.DataFrame, run: Mapping[str, Any], params: BacktestParams, seed: int, missing: int = 0
) -> dict[str, Any]:
    """The backtest row of one run (keys: FIELDS) from its joined rows (`join_outcomes`) and its scoring_runs row
    (run_id, as_of, model_name, model_version, production; plus target_stage, horizon_days, history_end)."""
    if rows.empty:
        raise BacktestInputError(f"run {run['run_id']}: none of its scored leads is in the CRM any more")
    y = rows["label"].to_numpy(dtype=float)
    p = rows["probability"].to_numpy(dtype=float)
    rule_score = rows["rule_score"].to_numpy(dtype=float)
    rule_mql = rows["rule_mql"].to_numpy(dtype=bool)
    stage = rows["stage"].astype(str).to_numpy()
    one_group = np.zeros(len(rows), dtype=np.int64)
    out: dict[str, Any] = {
        "run_id": str(run["run_id"]),
        "as_of": pd.Timestamp(run["as_of"]),
        "outcomes_until": pd.Timestamp(run["as_of"]) + pd.Timedelta(days=int(run["horizon_days"])),
        "history_end": pd.Timestamp(run["history_end"]),
        "backtested_at": pd.Timestamp(run.get("backtested_at") or pd.Timestamp.now(tz="UTC")),
        "model_name": str(run["model_name"]),
        "model_version": str(run["model_version"]),
        "production": None if pd.isna(run.get("production")) else bool(run.get("production")),
        "target_stage": str(run["target_stage"]),
        "horizon_days": int(run["horizon_days"]),
        "leads": len(rows),
        "leads_missing": int(missing),
        "accounts": int(rows["cluster"].nunique()),
        "observed": float(y.sum()),
        "expected": float(p.sum()),
        "obs_exp": _ratio(float(y.sum()), float(p.sum())),
        "roc_auc": roc_auc(y, p),
    }
    for level in THRESHOLD_STAGES:
        key = level.lower()
        picked = on_list(stage, level)
        n = int(picked.sum())
        rule_top = top_k_per_group(rule_score, one_group, np.array([n], dtype=float))
        out[f"{key}_leads"] = n
        out[f"{key}_observed"] = float(y[picked].sum())
        out[f"{key}_expected"] = float(p[picked].sum())
        out[f"{key}_obs_exp"] = _ratio(out[f"{key}_observed"], out[f"{key}_expected"])
        out[f"{key}_precision"] = precision_recall(y, picked)[0]
        out[f"{key}_precision_own"] = precision_recall(rows[f"reached_{level}"].to_numpy(dtype=float), picked)[0]
        out[f"{key}_rule_precision"] = precision_recall(y, rule_top)[0] if n else float("nan")
    k = int(rule_mql.sum())
    out["rule_mql_leads"] = k
    out["rule_mql_precision"] = precision_recall(y, rule_mql)[0]
    model_top = top_k_per_group(p, one_group, np.array([k], dtype=float))
    out["model_precision_at_rule_volume"] = precision_recall(y, model_top)[0] if k else float("nan")

    def statistic(idx: np.ndarray) -> dict[str, float]:
        return {"roc_auc": roc_auc(y[idx], p[idx]), "obs_exp": _ratio(float(y[idx].sum()), float(p[idx].sum()))}

    ci = ClusterBootstrap(rows["cluster"].to_numpy(), seed).intervals(statistic, params.bootstrap, params.ci_level)
    for name in ("roc_auc", "obs_exp"):
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = ci.get(name, (float("nan"), float("nan")))
    out["bootstrap"] = params.bootstrap
    out["ci_level"] = params.ci_level
    out["status"], out["recommendation"], out["message"] = verdict(out["obs_exp"], out["roc_auc"], params)
    return {name: out.get(name) for name in FIELDS}


def backtest_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Backtest rows as one frame with FIELDS' columns and dtypes (timestamps UTC), oldest run first."""
    frame = pd.DataFrame(rows, columns=list(FIELDS))
    for name, kind in FIELDS.items():
        if kind == "timestamp":
            frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
        elif kind == "int":
            frame[name] = pd.to_numeric(frame[name]).astype("Int64")
        elif kind == "float":
            frame[name] = pd.to_numeric(frame[name]).astype(float)
        elif kind == "bool":
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame.sort_values(["as_of", "run_id"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# What the report shows: the trend of the recent runs
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrendSection:
    """The backtest trend, ready for any renderer: a one-sentence headline, column titles and formatted rows."""

    headline: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    flagged: int


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f}%" if value is not None and np.isfinite(float(value)) else "n/a"


def _num(value: Any, spec: str) -> str:
    return format(float(value), spec) if value is not None and np.isfinite(float(value)) else "n/a"


def backtest_trend(backtests: pd.DataFrame, last: int = 12) -> TrendSection:
    """The `last` most recent backtested production runs (all runs when none is marked production), newest first:
    as-of, model version, ROC-AUC with its interval, observed / expected with its interval, the MQL list's precision
    against the rule MQLs' at the same volume, and the verdict."""
    columns = (
        "as of",
        "model",
        "leads",
        "ROC-AUC (95% CI)",
        "observed / expected (95% CI)",
        "MQL list precision",
        "rule precision at that volume",
        "verdict",
    )
    if backtests.empty:
        return TrendSection("No nightly run has been backtested yet.", columns, (), 0)
    frame = backtests
    production = frame["production"].map(lambda v: v is None or bool(v))
    if production.any():
        frame = frame.loc[production.to_numpy()]
    frame = frame.sort_values("as_of", ascending=False, kind="stable").head(last)
    rows = tuple(
        (
            f"{pd.Timestamp(r['as_of']):%Y-%m-%d}",
            f"v{r['model_version']}",
            f"{int(r['leads']):,}",
            f"{_num(r['roc_auc'], '.3f')} ({_num(r['roc_auc_ci_low'], '.3f')}-{_num(r['roc_auc_ci_high'], '.3f')})",
            f"{_num(r['obs_exp'], '.2f')} ({_num(r['obs_exp_ci_low'], '.2f')}-{_num(r['obs_exp_ci_high'], '.2f')})",
            _pct(r["mql_precision"]),
            _pct(r["mql_rule_precision"]),
            r["status"] if pd.isna(r["recommendation"]) else f"{r['status']}: {r['recommendation']}",
        )
        for _, r in frame.iterrows()
    )
    flagged = int((frame["status"] == DEGRADED).sum())
    newest = frame.iloc[0]
    headline = (
        f"The run of {pd.Timestamp(newest['as_of']):%Y-%m-%d} ranked its leads with ROC-AUC "
        f"{_num(newest['roc_auc'], '.3f')} and saw {_num(newest['obs_exp'], '.2f')}x the conversions it expected; "
        f"its MQL list converted at {_pct(newest['mql_precision'])} against {_pct(newest['mql_rule_precision'])} for "
        f"the rule at the same volume. {flagged} of the last {len(frame)} runs flagged."
    )
    return TrendSection(headline, columns, rows, flagged)
