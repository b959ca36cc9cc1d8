"""MLflow I/O of `leadscore backtest`: each judged run's figures as metrics on the model version that scored it.

MLflow 3 keeps metrics of a registered version on its logged model (`ModelVersion.model_id`); each figure is logged
there and on the version's training run, with step = the scored night (days since 1970) and timestamp = its as-of
time, so the metric's history is the backtest trend. Logging the same night again with the same value adds nothing
(MLflow keeps one copy of an identical point); the latest night's status and recommendation go in version tags.
Nothing personal is logged: figures per run only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any, Final

import pandas as pd

log = logging.getLogger(__name__)

PREFIX: Final = "backtest."
#: The backtest fields logged as metrics (all per run; counts and shares).
METRIC_FIELDS: Final[tuple[str, ...]] = (
    "roc_auc",
    "roc_auc_ci_low",
    "roc_auc_ci_high",
    "obs_exp",
    "obs_exp_ci_low",
    "obs_exp_ci_high",
    "leads",
    "observed",
    "expected",
    "mql_obs_exp",
    "sal_obs_exp",
    "sql_obs_exp",
    "mql_precision",
    "sal_precision",
    "sql_precision",
    "mql_rule_precision",
    "sal_rule_precision",
    "sql_rule_precision",
    "rule_mql_precision",
    "model_precision_at_rule_volume",
)


def night_step(as_of: pd.Timestamp) -> int:
    """The metric step of a run: whole days since 1970 of its as-of time (UTC)."""
    return int(pd.Timestamp(as_of).tz_convert("UTC").value // 86_400_000_000_000)


def log_backtests(client: Any, backtests: pd.DataFrame, tracked: Iterable[str] = METRIC_FIELDS) -> int:
    """Log each row's figures on its model version (logged model and training run); versions the registry no longer
    holds are skipped with a warning. Returns how many rows were logged."""
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    fields = list(tracked)
    logged = 0
    latest: dict[tuple[str, str], pd.Series] = {}
    for _, row in backtests.sort_values("as_of", kind="stable").iterrows():
        name, version = str(row["model_name"]), str(row["model_version"])
        try:
            mv = client.get_model_version(name, version)
        except MlflowException as exc:
            log.warning(
                "backtest of run %s: %s version %s is not in the registry (%s): not logged to MLflow",
                row["run_id"],
                name,
                version,
                str(exc).splitlines()[0][:200],
            )
            continue
        stamp = int(pd.Timestamp(row["as_of"]).value // 1_000_000)
        step = night_step(row["as_of"])
        values = {f: float(row[f]) for f in fields if row[f] is not None and not pd.isna(row[f])}
        values = {f: v for f, v in values.items() if math.isfinite(v)}
        model_id = getattr(mv, "model_id", None)
        if mv.run_id and model_id:  # the run's metric, linked to the version's logged model
            for f, v in values.items():
                client.log_metric(mv.run_id, PREFIX + f, v, timestamp=stamp, step=step, model_id=model_id)
        elif mv.run_id:
            client.log_batch(mv.run_id, metrics=[Metric(PREFIX + f, v, stamp, step) for f, v in values.items()])
        latest[(name, version)] = row
        logged += 1
    for (name, version), row in latest.items():
        client.set_model_version_tag(
            name, version, "backtest.as_of", f"{pd.Timestamp(row['as_of']):%Y-%m-%dT%H:%M:%SZ}"
        )
        client.set_model_version_tag(name, version, "backtest.status", str(row["status"]))
        client.set_model_version_tag(name, version, "backtest.message", str(row["message"])[:4000])
    log.info("logged %d backtest(s) to MLflow as metrics %s* on their model versions", logged, PREFIX)
    return logged
