"""Nightly batch scoring: every lead open at the as-of time, scored with one model version, written back atomically.

The run: take the lock of the scores database, check the model against the features configuration, check the
CRM (tables, columns, lead references), then stream it in chunks of whole accounts (features, rules, model,
drift counts; each chunk's rows spill to a private staging folder), and finally publish everything in one
transaction. Bad input stops the run before anything is written; a crash leaves the last complete run intact;
rerunning the same as-of time with the same model version replaces that run.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pipelines.config import Params
from pipelines.crm.db import display_url, make_engine, read_crm_ids
from pipelines.drift import SCORE, DriftCounter
from pipelines.errors import BadInputError
from pipelines.registry.model import conform
from pipelines.rules import load_rules
from pipelines.score import core, groups, reader, store
from pipelines.score.core import ScoringModel, check_compatible, score_rows, snapshot_features
from pipelines.score.model import load_scoring_model, resolve_scoring_model
from pipelines.score.preflight import check_as_of, check_volume, previous_run

log = logging.getLogger(__name__)

_STAGING_PREFIX: Final = "leadscore-score-"
_STAGING_PID: Final = re.compile(rf"^{_STAGING_PREFIX}(?P<pid>\d+)-")


class ScoringInputError(BadInputError):
    """The run's own arguments are unusable (e.g. an unparseable as-of time)."""


def parse_as_of(value: str | None, now: datetime | None = None) -> pd.Timestamp:
    """The as-of instant in UTC: ISO date or date-time (naive means UTC); default now, to the second."""
    if value is None:
        return pd.Timestamp(now or datetime.now(UTC)).tz_convert("UTC").floor("s")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ScoringInputError(f"--as-of {value!r} is not an ISO date or date-time (e.g. 2026-11-20T02:00Z)") from None
    if pd.isna(stamp):
        raise ScoringInputError(f"--as-of {value!r} is not a time")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@dataclass
class Timings:
    """Seconds spent per phase (summed over chunks)."""

    read: float = 0.0
    features: float = 0.0
    predict: float = 0.0
    write: float = 0.0
    started: float = field(default_factory=time.perf_counter)


def _clean_stale_staging(root: Path) -> None:
    """Remove staging folders of scoring processes that no longer exist (left by a kill -9)."""
    for path in root.glob(f"{_STAGING_PREFIX}*"):
        match = _STAGING_PID.match(path.name)
        if not match or not path.is_dir():
            continue
        pid = int(match["pid"])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed staging folder %s of a run that died (pid %d)", path, pid)
        except PermissionError:
            continue


def _stage(rows: pd.DataFrame, staging: Path, index: int) -> None:
    """Spill one chunk's `lead_scores` rows to the staging folder, in lead order: the order of the history's keys,
    so publishing sweeps its B-trees once a chunk instead of jumping (SQLite at 1M leads: half the insert time)."""
    rows.sort_values("lead_id", kind="stable").to_parquet(staging / f"chunk-{index:06d}.parquet", index=False)


def _staged(paths: list[Path]) -> Iterator[pd.DataFrame]:
    for path in paths:
        yield pd.read_parquet(path)


@dataclass(frozen=True)
class ChunkInputs:
    """One chunk of the CRM and what the model needs of it: tonight's features and rule flags of its open leads
    and, when asked for, the same of the leads open at the previous snapshot (`core.previous_time`)."""

    chunk: reader.CrmChunk
    features: pd.DataFrame
    rules: pd.DataFrame
    previous: tuple[pd.DataFrame, pd.DataFrame] | None = None


def iter_feature_chunks(
    crm_url: str,
    as_of: pd.Timestamp,
    params: Params,
    timings: Timings,
    progress: bool = True,
    guard: Callable[[dict[str, int]], None] | None = None,
    previous: bool = False,
) -> Generator[ChunkInputs, None, None]:
    """The open leads' features and rule flags, chunk by chunk, in one read transaction of the CRM (with the
    previous snapshot's, built in the same pass, when `previous`); `guard` sees the tables' row counts after the
    preflight, before the first chunk."""
    engine = make_engine(crm_url)
    ruleset = load_rules(params.rules.file, params.features.icp)
    # the reader thread stops (and its read transaction ends) whenever this generator does, even on an error
    with engine.connect() as conn, conn.begin(), ExitStack() as stack:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        counts = reader.preflight(conn)
        if guard is not None:
            guard(counts)
        bar = tqdm(total=counts["leads"], desc="scoring", unit="lead", disable=None if progress else True)
        chunks = stack.enter_context(
            closing(reader.read_ahead(reader.iter_chunks(conn, params.score.chunk_leads, counts=counts)))
        )
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            timings.read += time.perf_counter() - t0
            if chunk is None:
                break
            t0 = time.perf_counter()
            times = [as_of, core.previous_time(as_of, params.features)] if previous else [as_of]
            built = snapshot_features(chunk.tables, times, params.features, ruleset, leads_of_first=True)
            features, rules = built[0]
            timings.features += time.perf_counter() - t0
            log.debug(
                "chunk %d: %s leads, %s activities, %s stage rows -> %s open leads (read %.2f s, features "
                "%.2f s so far)",
                chunk.index,
                f"{len(chunk.tables['leads']):,}",
                f"{len(chunk.tables['activities']):,}",
                f"{len(chunk.tables['stage_history']):,}",
                f"{len(features):,}",
                timings.read,
                timings.features,
            )
            yield ChunkInputs(chunk, features, rules, built[1] if previous else None)
            bar.update(len(chunk.tables["leads"]))
        bar.close()


def run_score(
    crm_url: str,
    scores_url: str | None,
    as_of: pd.Timestamp,
    params: Params,
    model_uri: str,
    tracking_uri: str | None,
    engine: str = "pandas",
    progress: bool = True,
    staging_root: Path | None = None,
    allow_shrink: bool = False,
    snapshot: Path | None = None,
) -> dict[str, Any]:
    """Score every open lead of the CRM at `as_of` and publish the run; return the scoring_runs row.

    The spark engine reads the Parquet snapshot at `snapshot` (from `leadscore extract`) when given, else the CRM
    through JDBC; the pandas engine always reads the CRM database.

    Cheap refusals come first (names, as-of, the model's kind from the registry), then the lock, and only then
    the slow model load: a second run is refused at once, and a refused run leaves nothing behind.
    """
    from pipelines.registry.aliases import production_run
    from pipelines.registry.server import configure_tracking, resolve_tracking_uri

    out_url = scores_url or crm_url
    out_engine = make_engine(out_url, create_dirs=True)
    tables = params.score.tables
    store.check_names(tables)
    check_as_of(as_of, params.base.future_tolerance_minutes)
    store.check_existing_names(out_engine, tables)
    client = configure_tracking(resolve_tracking_uri(tracking_uri))
    checked = resolve_scoring_model(model_uri, client)
    run_id = uuid.uuid4().hex
    timings = Timings()
    root = staging_root or Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    with store.run_lock(out_engine, tables):
        model = load_scoring_model(model_uri, client, checked)
        check_compatible(model, params.features)
        production, why = production_run(client, model.name, model.version)  # the alias as resolved at the start
        _warn_run_kind(model, production, why, tables)
        started_at = pd.Timestamp.now(tz="UTC")
        previous = previous_run(out_engine, tables)
        ratio = params.score.min_leads_ratio

        def guard(counts: dict[str, int]) -> None:
            check_volume("read", counts["leads"], previous, ratio, allow_shrink)

        with _staging_dir(root) as staging:
            meta = {
                "run_id": run_id,
                "as_of": as_of,
                "scored_at": started_at,
                "model_name": model.name,
                "model_version": model.version,
                "production": production,
            }
            if engine == "spark":
                summary = _score_spark(crm_url, snapshot, as_of, params, model, meta, staging, timings, guard)
            else:
                summary = _score_chunks(
                    crm_url,
                    as_of,
                    params,
                    model,
                    model.predict,
                    meta,
                    staging,
                    timings,
                    progress,
                    reasons_for=params.score.reasons_for,
                    guard=guard,
                )
            check_volume("scored", summary["leads_scored"], previous, ratio, allow_shrink)
            run, volumes = _run_row(meta, started_at, model, engine, summary, timings, params.score.psi_warning)
            _publish(out_engine, tables, run, staging, timings)
    _warn_outcome(run, volumes, params.score.psi_warning)
    log.info("run %s published to %s", run_id, display_url(out_url))
    return run


def _warn_run_kind(model: ScoringModel, production: bool, why: str, tables: Any) -> None:
    """Say when the run does not reach the latest view, and when it cannot measure drift."""
    if not production:
        log.warning(
            "not a production run (%s): scores go to the %s history only, %s does not show them",
            why,
            tables.scores,
            tables.latest,
        )
    if model.reference is None:
        log.warning("%s carries no drift reference (registered before drift checks): no PSI this run", model.pinned_uri)


@contextmanager
def _staging_dir(root: Path) -> Iterator[Path]:
    """A fresh staging folder for this process's chunk files (stale ones of dead runs removed first), always removed
    at the end."""
    _clean_stale_staging(root)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=root))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_row(
    meta: dict[str, Any],
    started_at: pd.Timestamp,
    model: ScoringModel,
    engine: str,
    summary: dict[str, Any],
    timings: Timings,
    psi_warning: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The scoring_runs row of a scored run (status from its drift), and its stage volumes."""
    finished = pd.Timestamp.now(tz="UTC")
    total = time.perf_counter() - timings.started
    drift = summary.pop("drift")
    volumes: dict[str, Any] = summary.pop("stage_volumes")
    features_psi = {k: v for k, v in drift.items() if k != SCORE}
    worst = max(features_psi, key=features_psi.__getitem__) if features_psi else None
    tracked = [v for v in drift.values()]
    status = "drift_warning" if tracked and max(tracked) > psi_warning else "ok"
    run = {
        **meta,
        "started_at": started_at,
        "finished_at": finished,
        "model_uri": model.uri,
        "engine": engine,
        "status": status,
        **summary,
        "seconds_read": timings.read,
        "seconds_features": timings.features,
        "seconds_predict": timings.predict,
        "seconds_total": total,
        "rows_per_second": summary["leads_scored"] / total if total > 0 else None,
        "psi_score": drift.get(SCORE),
        "psi_max": features_psi.get(worst) if worst else None,
        "psi_max_feature": worst,
        "drift": _drift_json(drift),
        "stage_volumes": _drift_json(volumes),
    }
    return run, volumes


def _publish(out_engine: Any, tables: Any, run: dict[str, Any], staging: Path, timings: Timings) -> None:
    """Publish the staged rows and the run row in one transaction; record the write time and replaced runs."""
    t0 = time.perf_counter()
    replaced = store.publish_run(
        out_engine, tables, {**run, "seconds_write": None}, _staged(sorted(staging.glob("chunk-*.parquet")))
    )
    run["seconds_write"] = timings.write + time.perf_counter() - t0
    run["replaced_run_id"] = ",".join(replaced) or None
    _record_write_seconds(out_engine, tables, run["run_id"], run["seconds_write"])


def _warn_outcome(run: dict[str, Any], volumes: dict[str, Any], psi_warning: float) -> None:
    """Warn about drift above the bound and stage volumes off their targets."""
    if run["status"] == "drift_warning":
        log.warning(
            "drift: PSI above %.2f (score %s, worst feature %s %s): the population differs from the "
            "training data; check the inputs and consider retraining",
            psi_warning,
            _fmt(run["psi_score"]),
            run["psi_max_feature"],
            _fmt(run["psi_max"]),
        )
    for line in core.off_target(volumes):
        log.warning("stage volume off target by more than 25%%: %s (scoring_runs.stage_volumes)", line)


def _score_chunks(
    crm_url: str,
    as_of: pd.Timestamp,
    params: Params,
    model: ScoringModel,
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    meta: dict[str, Any],
    staging: Path,
    timings: Timings,
    progress: bool,
    reasons_for: str = "all",
    guard: Callable[[dict[str, int]], None] | None = None,
) -> dict[str, Any]:
    """Every chunk: features and rules here, the model through `predict` (in process), rows spilled to staging
    Parquet files; returns the run's counts and drift. (The spark engine runs this core on executors:
    `_score_spark`.)"""
    counter = DriftCounter(model.reference) if model.reference is not None else None
    crm_ids = _crm_ids(crm_url)  # an imported CRM's own lead ids, kept beside the scores
    totals = {"leads_read": 0, "leads_scored": 0, "n_mql": 0, "n_sal": 0, "n_sql": 0, "n_rule_mql": 0, "chunks": 0}
    prob_sum = 0.0
    lists: dict[str, int] = {}
    # features and the model run in turn in this thread: building the next chunk's features in a second thread
    # overlapped little on two cores (the reader's thread and LightGBM already use the second) and cost a chunk of
    # memory (measured at 200k: 16.1 s vs 16.4 s a run, +100 MiB), so only the reading runs ahead
    inputs_of_chunks = closing(iter_feature_chunks(crm_url, as_of, params, timings, progress, guard, previous=True))
    with inputs_of_chunks as chunks:  # closed on an error too: the CRM's read transaction ends here, not at exit
        for inputs in chunks:
            chunk, features, rules = inputs.chunk, inputs.features, inputs.rules
            totals["leads_read"] += len(chunk.tables["leads"])
            totals["chunks"] += 1
            if features.empty:
                continue
            t0 = time.perf_counter()
            conformed = conform(features, model.schema)
            if reasons_for == "all":
                scored = predict(conformed)
            else:  # the same choice of who gets reasons as the spark engine's executors make
                scored = groups.predict(model, conformed, rules["rule_mql"].to_numpy(dtype=bool), reasons_for)
            assert inputs.previous is not None  # asked for above
            previous = core.previous_flags(*inputs.previous, model)  # which of tonight's leads are new on each list
            timings.predict += time.perf_counter() - t0
            prob_sum += _add_totals(totals, features, rules, scored, counter)
            core.count_lists(
                lists,
                features["lead_id"].to_numpy(),
                scored["stage"].astype(str).to_numpy(),
                rules["rule_mql"].to_numpy(dtype=bool),
                previous,
            )
            t0 = time.perf_counter()
            _stage(score_rows(features, rules, scored, meta, crm_ids), staging, chunk.index)
            timings.write += time.perf_counter() - t0
    return _finish_totals(totals, prob_sum, counter, lists, model, params)


def _score_spark(
    crm_url: str,
    snapshot: Path | None,
    as_of: pd.Timestamp,
    params: Params,
    model: ScoringModel,
    meta: dict[str, Any],
    staging: Path,
    timings: Timings,
    guard: Callable[[dict[str, int]], None] | None,
) -> dict[str, Any]:
    """The whole run on Spark (pipelines.score.spark), then the pandas engine's totals over the rows it wrote,
    which are staged as the same chunk files (with the CRM's own ids) for the one publishing transaction."""
    from pipelines.score.groups import SECONDS_FEATURES, SECONDS_PREDICT, drift_frame, extra_columns, previous_of
    from pipelines.score.spark import score_on_spark

    counter = DriftCounter(model.reference) if model.reference is not None else None
    crm_ids = _crm_ids(crm_url) if snapshot is None or _is_reachable(crm_url) else None
    totals = {"leads_read": 0, "leads_scored": 0, "n_mql": 0, "n_sal": 0, "n_sql": 0, "n_rule_mql": 0, "chunks": 0}
    prob_sum = 0.0
    lists: dict[str, int] = {}
    with score_on_spark(crm_url, snapshot, as_of, params, model, meta, staging, guard) as scored:
        totals["leads_read"], totals["chunks"] = scored.counts["leads"], scored.groups
        timings.read += scored.seconds_read
        for index, rows in enumerate(scored.batches(params.score.chunk_leads)):
            timings.features += float(rows[SECONDS_FEATURES].sum())
            timings.predict += float(rows[SECONDS_PREDICT].sum())
            prob_sum += _add_totals(totals, drift_frame(rows, scored.drift), rows, rows, counter)
            lead_id = rows["lead_id"].to_numpy(dtype=np.int64)
            stage = rows["stage"].astype(str).to_numpy()
            core.count_lists(lists, lead_id, stage, rows["rule_mql"].to_numpy(dtype=bool), previous_of(rows))
            t0 = time.perf_counter()
            rows = rows.drop(columns=extra_columns(scored.drift)).assign(crm_id=core.crm_id_of(lead_id, crm_ids))
            _stage(rows, staging, index)
            timings.write += time.perf_counter() - t0
        shutil.rmtree(scored.folder, ignore_errors=True)
    return _finish_totals(totals, prob_sum, counter, lists, model, params)


def _finish_totals(
    totals: dict[str, Any],
    prob_sum: float,
    counter: DriftCounter | None,
    lists: dict[str, int],
    model: ScoringModel,
    params: Params,
) -> dict[str, Any]:
    """The run's totals with the mean probability, the drift and what each stage's team receives."""
    totals["mean_probability"] = prob_sum / totals["leads_scored"] if totals["leads_scored"] else None
    totals["drift"] = counter.psi() if counter is not None else {}
    totals["stage_volumes"] = core.stage_volumes(
        lists, *core.volume_policies(model, params.calibrate), params.features.cadence_days
    )
    return totals


def _crm_ids(crm_url: str) -> pd.Series | None:
    """An imported CRM's own lead ids (kept beside the scores), read from the CRM database."""
    crm_engine = make_engine(crm_url)
    try:
        return read_crm_ids(crm_engine)
    finally:
        crm_engine.dispose()


def _is_reachable(crm_url: str) -> bool:
    """Whether the CRM database a snapshot was taken from is there to read its own lead ids from."""
    try:
        make_engine(crm_url).dispose()
    except BadInputError:
        log.info("scoring the snapshot without %s: crm_id is the lead id", display_url(crm_url))
        return False
    return True


def score_flagged(model: ScoringModel, features: pd.DataFrame, rule_mql: np.ndarray) -> pd.DataFrame:
    """The model's outputs with reasons (the costly SHAP part) only for the leads someone acts on: predicted MQLs
    or better, and rule MQLs (score.reasons_for: flagged)."""
    scored = model.pyfunc.predict(features, params={"top_reasons": 0})
    flagged = (scored["stage"].astype(str).to_numpy() != "none") | np.asarray(rule_mql, dtype=bool)
    return _with_reasons(model, features, scored, np.flatnonzero(flagged))


def score_handed(model: ScoringModel, features: pd.DataFrame) -> pd.DataFrame:
    """The model's outputs with reasons only for the leads handed to a team (a predicted stage: MQL or better),
    the only ones whose reasons anyone reads tonight (score.reasons_for: handed); any other lead's reasons come
    on demand from the same model (`leadscore explain --lead ID`)."""
    scored = model.pyfunc.predict(features, params={"top_reasons": 0})
    return _with_reasons(model, features, scored, np.flatnonzero(scored["stage"].astype(str).to_numpy() != "none"))


def _with_reasons(model: ScoringModel, features: pd.DataFrame, scored: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """`scored` with the reasons of `rows` filled in by the model (its default number of reasons)."""
    if len(rows) == 0:
        return scored
    explained = model.predict(features.iloc[rows].reset_index(drop=True))
    scored = scored.copy()
    for col in ("reasons_positive", "reasons_negative"):
        values = scored[col].to_list()
        for i, reasons in zip(rows, explained[col], strict=True):
            values[i] = reasons
        scored[col] = values
    return scored


def _add_totals(
    totals: dict[str, Any],
    features: pd.DataFrame,
    rules: pd.DataFrame,
    scored: pd.DataFrame,
    counter: DriftCounter | None,
) -> float:
    """Add one chunk to the run's counts and drift bins; return the chunk's probability sum."""
    prob = scored["probability"].to_numpy(dtype=float)
    stage = scored["stage"].astype(str).to_numpy()
    totals["leads_scored"] += len(scored)
    # stages are nested: a lead over the SAL threshold is over the MQL one too
    totals["n_mql"] += int(np.isin(stage, ("MQL", "SAL", "SQL")).sum())
    totals["n_sal"] += int(np.isin(stage, ("SAL", "SQL")).sum())
    totals["n_sql"] += int((stage == "SQL").sum())
    totals["n_rule_mql"] += int(rules["rule_mql"].to_numpy(dtype=bool).sum())
    if counter is not None:
        counter.add(features, prob)
    return float(prob.sum())


def _drift_json(drift: dict[str, float]) -> str:
    import json

    return json.dumps(drift, sort_keys=True)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _record_write_seconds(engine: Any, tables: Any, run_id: str, seconds: float) -> None:
    """Store the publish time measured after the commit (a tiny second transaction, cosmetic if it fails)."""
    import sqlalchemy as sa

    try:
        store.set_run_value(engine, tables, run_id, "seconds_write", seconds)
    except sa.exc.SQLAlchemyError as exc:  # the run itself is published; only the timing is missing
        log.warning("could not record the write time of run %s: %s", run_id, exc)
