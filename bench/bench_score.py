"""Benchmark nightly scoring end to end, side by side with the floor, a realistic peer and a row-wise implementation.

    .venv/bin/python bench/bench_score.py --leads 1000000 --work /work/bench_scratch/score_1m --reasons-for all

Four ways to produce the same `lead_scores` rows for every lead open at --as-of, each in its own child process
(wall time around the job after the imports, model load from the registry included; peak memory is that child's
maximum resident set size from wait4):

- ours: `pipelines.score.run.run_score` (chunked SQL reads, features, rules, model, drift, atomic publish) into a
  separate scores SQLite file; the phase seconds come back from its `scoring_runs` row.
- floor: read precomputed features (ours, written to Parquet once, outside the timing) and call the pyfunc model
  once in bulk with the same reasons setting; also without reasons (`top_reasons=0`). No rules, no writing.
- realistic: the peer a competent user would write: `read_crm` (`pd.read_sql` of whole tables), `features_as_of`
  and the rules on everything at once, one bulk `predict` (reasons for the same leads as ours, in a second bulk
  call), `to_sql` of the result into its own SQLite file. All of the CRM is in memory at once.
- straightforward: `pd.read_sql` of whole tables, `features_as_of` and the rules on everything at once, then
  `model.predict` on one-row frames in a loop. The loop runs on a random sample (--sample rows) and its per-row
  time is extrapolated to every open lead; reading and features are measured in full.

The demo CRM (SQLite, --crm; default <work>/crm.db) is generated once with the demo generator and reused.
Prints a table and writes <work>/bench_score_<reasons>.json. Small sizes (--leads 2000) run in seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AS_OF = "2026-11-20T00:00:00Z"
log = logging.getLogger("bench_score")


def ensure_crm(path: Path, leads: int, seed: int, params: Path) -> dict[str, int]:
    """The demo CRM at `path` (generated and written once; reused when it holds `leads` leads); its row counts."""
    if path.exists():
        with sqlite3.connect(path) as conn:
            counts = {
                t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]  # fixed names, not input
                for t in ("campaigns", "accounts", "leads", "activities", "stage_history")
            }
        if counts["leads"] == leads:
            log.info("reusing the demo CRM %s", path)
            return counts
        raise SystemExit(f"{path} holds {counts['leads']:,} leads, not {leads:,}: pass another --crm or remove it")
    from pipelines.config import DemoCrmParams, load_params
    from pipelines.crm import demo
    from pipelines.crm.db import make_engine, write_crm

    started = time.perf_counter()
    result = demo.generate(
        DemoCrmParams(leads=leads, seed=seed, end_date=date(2026, 11, 20), history_days=730),
        load_params(params).features.icp,
    )
    log.info("generated %s leads in %.1f s", f"{leads:,}", time.perf_counter() - started)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    write_crm(make_engine(f"sqlite:///{tmp}", create_dirs=True), result.tables)
    os.replace(tmp, path)
    return {name: len(frame) for name, frame in result.tables.items()}


def _params(path: Path, reasons_for: str) -> Any:
    from pipelines.config import load_params

    params = load_params(path)
    return params.model_copy(update={"score": params.score.model_copy(update={"reasons_for": reasons_for})})


def _model(args: argparse.Namespace) -> Any:
    from pipelines.registry.server import configure_tracking
    from pipelines.score.model import load_scoring_model

    return load_scoring_model(args.model_uri, configure_tracking(args.tracking_uri))


def variant_ours(args: argparse.Namespace) -> dict[str, Any]:
    """run_score into a fresh scores database; the phases from its scoring_runs row."""
    from pipelines.score.run import parse_as_of, run_score

    scores = args.work / "scores.db"
    for path in (scores, scores.with_name(scores.name + ".score.lock")):
        path.unlink(missing_ok=True)
    started = time.perf_counter()
    run = run_score(
        f"sqlite:///{args.crm}",
        f"sqlite:///{scores}",
        parse_as_of(args.as_of),
        _params(args.params, args.reasons_for),
        args.model_uri,
        args.tracking_uri,
        progress=False,
        staging_root=args.work / "staging",
    )
    seconds = time.perf_counter() - started
    with sqlite3.connect(scores) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM scoring_runs WHERE run_id = ?", (run["run_id"],)).fetchone())
        written = conn.execute("SELECT COUNT(*) FROM lead_scores").fetchone()[0]
    phases = {
        k.removeprefix("seconds_"): round(row[k], 1)
        for k in ("seconds_read", "seconds_features", "seconds_predict", "seconds_write", "seconds_total")
    }
    return {
        "leads": int(row["leads_scored"]),
        "leads_read": int(row["leads_read"]),
        "rows_written": int(written),
        "seconds": seconds,
        "phases": phases,
        "n_mql": int(row["n_mql"]),
        "n_rule_mql": int(row["n_rule_mql"]),
        "scores_db_mib": round(scores.stat().st_size / 2**20, 1),
    }


def prepare_floor(args: argparse.Namespace) -> dict[str, Any]:
    """Write our conformed features (+ lead id and rule flag) of every open lead to Parquet, once (untimed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.registry.model import conform
    from pipelines.score.run import Timings, iter_feature_chunks, parse_as_of

    out = args.work / f"features_{args.as_of[:10]}.parquet"
    if out.exists():
        return {"path": str(out), "reused": True}
    model = _model(args)
    params = _params(args.params, args.reasons_for)
    tmp = out.with_name(out.name + ".tmp")
    writer = None
    try:
        for inputs in iter_feature_chunks(
            f"sqlite:///{args.crm}", parse_as_of(args.as_of), params, Timings(), progress=False
        ):
            features, rules = inputs.features, inputs.rules
            if features.empty:
                continue
            frame = conform(features, model.schema)
            frame.insert(0, "lead_id", features["lead_id"].to_numpy())
            frame["rule_mql"] = rules["rule_mql"].to_numpy(dtype=bool)
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, out)
    return {"path": str(out), "reused": False}


def variant_floor(args: argparse.Namespace, reasons: bool) -> dict[str, Any]:
    """Read the precomputed features and predict in one bulk call (reasons as ours gives them, or none)."""
    import pandas as pd

    from pipelines.score.run import score_flagged, score_handed

    started = time.perf_counter()
    model = _model(args)
    frame = pd.read_parquet(args.work / f"features_{args.as_of[:10]}.parquet")
    x = frame[model.schema.input_names()]
    if not reasons:
        scored = model.pyfunc.predict(x, params={"top_reasons": 0})
    elif args.reasons_for == "flagged":
        scored = score_flagged(model, x, frame["rule_mql"].to_numpy())
    elif args.reasons_for == "handed":
        scored = score_handed(model, x)
    else:
        scored = model.pyfunc.predict(x)
    seconds = time.perf_counter() - started
    return {"leads": len(scored), "seconds": seconds, "explained": int((scored["reasons_positive"].map(len) > 0).sum())}


def variant_naive(args: argparse.Namespace) -> dict[str, Any]:
    """pd.read_sql of whole tables, features and rules on all of it, then one model call per lead (sampled)."""
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    from pipelines.crm.db import make_engine, read_crm
    from pipelines.features.build import features_as_of
    from pipelines.registry.model import conform
    from pipelines.rules import evaluate_rules, load_rules
    from pipelines.score.core import score_rows
    from pipelines.score.run import parse_as_of

    params = _params(args.params, args.reasons_for)
    as_of = parse_as_of(args.as_of)
    started = time.perf_counter()
    model = _model(args)
    tables = read_crm(make_engine(f"sqlite:///{args.crm}"))  # pd.read_sql_query of each whole table, validated
    read_s = time.perf_counter() - started
    t0 = time.perf_counter()
    features = features_as_of(tables, as_of, params.features)
    rules = evaluate_rules(
        load_rules(params.rules.file, params.features.icp), features[["lead_id", "snapshot_at"]], tables
    )
    x = conform(features, model.schema)
    features_s = time.perf_counter() - t0
    n = len(x)
    sample = np.sort(np.random.default_rng(0).choice(n, size=min(args.sample, n), replace=False))
    rule_mql = rules["rule_mql"].to_numpy(dtype=bool)
    t0 = time.perf_counter()
    outputs = []
    for i in tqdm(sample, desc="row-wise predict", unit="lead", disable=None):
        one = x.iloc[[i]]
        if args.reasons_for in ("flagged", "handed"):
            out = model.pyfunc.predict(one, params={"top_reasons": 0})
            if out["stage"].iloc[0] != "none" or (args.reasons_for == "flagged" and rule_mql[i]):
                out = model.pyfunc.predict(one)
        else:
            out = model.pyfunc.predict(one)
        outputs.append(out)
    per_row = (time.perf_counter() - t0) / max(len(sample), 1)
    scored = pd.concat(outputs, ignore_index=True)
    meta = {
        "run_id": "bench",
        "as_of": as_of,
        "scored_at": as_of,
        "model_name": model.name,
        "model_version": model.version,
    }
    score_rows(features.iloc[sample].reset_index(drop=True), rules.iloc[sample].reset_index(drop=True), scored, meta)
    return {
        "leads": n,
        "seconds": read_s + features_s + per_row * n,
        "measured": "row-wise part on a sample",
        "sample": len(sample),
        "phases": {
            "read": round(read_s, 1),
            "features_rules": round(features_s, 1),
            "per_row_ms": round(per_row * 1000, 2),
            "row_wise_extrapolated": round(per_row * n, 1),
        },
    }


def variant_realistic(args: argparse.Namespace) -> dict[str, Any]:
    """What a competent user writes without this project: `read_crm`, `features_as_of` and the rules on every table
    at once, one bulk model call (reasons for the same leads as ours), `to_sql` of the whole result."""
    import numpy as np
    import pandas as pd

    from pipelines.crm.db import make_engine, read_crm
    from pipelines.features.build import features_as_of
    from pipelines.registry.model import conform
    from pipelines.rules import evaluate_rules, load_rules
    from pipelines.score.core import score_rows
    from pipelines.score.run import parse_as_of

    params = _params(args.params, args.reasons_for)
    as_of = parse_as_of(args.as_of)
    out = args.work / "scores_realistic.db"
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    model = _model(args)
    tables = read_crm(make_engine(f"sqlite:///{args.crm}"))  # pd.read_sql_query of each whole table, validated
    read_s = time.perf_counter() - started
    t0 = time.perf_counter()
    features = features_as_of(tables, as_of, params.features)
    rules = evaluate_rules(
        load_rules(params.rules.file, params.features.icp), features[["lead_id", "snapshot_at"]], tables
    )
    x = conform(features, model.schema)
    features_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.reasons_for == "all":
        scored = model.pyfunc.predict(x)
    else:  # scores for everyone in one call, then reasons in a second bulk call for the leads that get them
        scored = model.pyfunc.predict(x, params={"top_reasons": 0})
        wanted = scored["stage"].astype(str).to_numpy() != "none"
        if args.reasons_for == "flagged":
            wanted |= rules["rule_mql"].to_numpy(dtype=bool)
        rows = np.flatnonzero(wanted)
        if len(rows):
            explained = model.pyfunc.predict(x.iloc[rows].reset_index(drop=True))
            for col in ("reasons_positive", "reasons_negative"):
                values = scored[col].to_list()
                for i, reasons in zip(rows, explained[col], strict=True):
                    values[i] = reasons
                scored[col] = values
    predict_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    meta = {"run_id": "bench", "as_of": as_of, "scored_at": as_of, "model_name": model.name}
    frame = score_rows(features, rules, scored, {**meta, "model_version": model.version})
    frame.to_sql("lead_scores", make_engine(f"sqlite:///{out}", create_dirs=True), index=False, chunksize=50_000)
    write_s = time.perf_counter() - t0
    explained_n = int((pd.Series(scored["reasons_positive"]).map(len) > 0).sum())
    return {
        "leads": len(frame),
        "seconds": time.perf_counter() - started,
        "explained": explained_n,
        "phases": {
            "read": round(read_s, 1),
            "features": round(features_s, 1),
            "predict": round(predict_s, 1),
            "write": round(write_s, 1),
        },
    }


def run_child(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """Run one variant in a child process; its JSON result plus the child's peak RSS (wait4) and the load."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--variant",
        variant,
        "--crm",
        str(args.crm),
        "--work",
        str(args.work),
        "--params",
        str(args.params),
        "--model-uri",
        args.model_uri,
        "--tracking-uri",
        args.tracking_uri,
        "--as-of",
        args.as_of,
        "--reasons-for",
        args.reasons_for,
        "--sample",
        str(args.sample),
        "--leads",
        str(args.leads),
    ]
    load = os.getloadavg()[0]
    log.info("running %s (load %.1f)", variant, load)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"variant {variant} failed with exit code {proc.returncode}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    result.update(
        peak_rss_mib=round(usage.ru_maxrss / 1024), load_before=round(load, 1), load_after=round(os.getloadavg()[0], 1)
    )
    return result


def table(results: dict[str, dict[str, Any]]) -> str:
    """The side-by-side table (Markdown)."""
    ours = results["ours"]["seconds"]
    lines = [
        "| implementation | leads | seconds | rows/s | peak RSS | time / ours | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        label = name + (f" (row-wise part on {r['sample']:,} sampled leads)" if "sample" in r else "")
        lines.append(
            f"| {label} | {r['leads']:,} | {r['seconds']:.1f} | {r['leads'] / r['seconds']:,.0f} | "
            f"{r['peak_rss_mib']:,} MiB | {r['seconds'] / ours:.2f} | {r['load_before']} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, prepare the data once, run the variants one at a time, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=1_000_000, help="Leads in the demo CRM (open leads: fewer)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder (outside the repository)")
    parser.add_argument("--crm", type=Path, default=None, help="Demo CRM SQLite file (default <work>/crm.db)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--model-uri", default="models:/lead-scoring@champion")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{REPO / 'mlflow.db'}")
    parser.add_argument("--as-of", default=AS_OF)
    parser.add_argument("--reasons-for", choices=("all", "flagged", "handed"), default="all")
    parser.add_argument("--sample", type=int, default=2000, help="Leads for the row-wise loop of the naive one")
    parser.add_argument("--skip", default="", help="Comma-separated variants not to run (e.g. floor_no_reasons)")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    args.crm = (args.crm or args.work / "crm.db").resolve()

    if args.variant is not None:  # child process: one variant, one JSON line on stdout
        _preload()
        runners = {
            "ours": variant_ours,
            "prepare_floor": prepare_floor,
            "floor": lambda a: variant_floor(a, reasons=True),
            "floor_no_reasons": lambda a: variant_floor(a, reasons=False),
            "straightforward": variant_naive,
            "realistic": variant_realistic,
        }
        print(json.dumps(runners[args.variant](args)))
        return

    if not args.crm.exists():
        # generate in a child of its own: the variants are children of this process, and a child's peak RSS
        # (wait4) starts from its parent's RSS at fork, so this process must never hold the generator's frames
        child = multiprocessing.get_context("spawn").Process(
            target=ensure_crm, args=(args.crm, args.leads, args.seed, args.params)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"generating the demo CRM failed (exit {child.exitcode})")
    counts = ensure_crm(args.crm, args.leads, args.seed, args.params)
    skip = {s for s in args.skip.split(",") if s}
    results: dict[str, dict[str, Any]] = {}
    results["ours"] = run_child(args, "ours")
    run_child(args, "prepare_floor")
    for name in ("floor", "floor_no_reasons", "realistic", "straightforward"):
        if name not in skip:
            results[name] = run_child(args, name)
    ours = results["ours"]
    verdicts = []
    if "straightforward" in results:
        speedup = results["straightforward"]["seconds"] / ours["seconds"]
        verdicts.append(
            f"ours is {speedup:.1f}x the straightforward one (target >= 5x): {'met' if speedup >= 5 else 'NOT met'}"
        )
    if "realistic" in results:
        speedup = results["realistic"]["seconds"] / ours["seconds"]
        memory = ours["peak_rss_mib"] / results["realistic"]["peak_rss_mib"]
        verdicts.append(
            f"ours is {speedup:.2f}x faster than the realistic peer (target >= 2x) at {memory:.2f}x its peak memory "
            f"(target <= 0.5x): {'met' if speedup >= 2 and memory <= 0.5 else 'NOT met'}"
        )
    if "floor" in results:
        gap = ours["seconds"] / results["floor"]["seconds"]
        verdicts.append(
            f"ours takes {gap:.2f}x the floor's time (target <= 1.3x): {'met' if gap <= 1.3 else 'NOT met'}"
        )
    report = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": _machine(),
        "crm": counts,
        "as_of": args.as_of,
        "reasons_for": args.reasons_for,
        "results": results,
        "verdicts": verdicts,
    }
    (args.work / f"bench_score_{args.reasons_for}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nnightly scoring, demo CRM of {counts['leads']:,} leads, as of {args.as_of}, "
        f"score.reasons_for={args.reasons_for}; {report['machine']}"
    )
    print(table(results))
    print(f"ours by phase (s, from scoring_runs): {ours['phases']}")
    if "realistic" in results:
        print(f"realistic peer by phase: {results['realistic']['phases']}")
    if "straightforward" in results:
        print(f"straightforward by phase: {results['straightforward']['phases']}")
    for line in verdicts:
        print(line)


def _preload() -> None:
    """Import the heavy modules before any timing (interpreter start-up is not part of a scoring run)."""
    import lightgbm  # noqa: F401
    import mlflow.pyfunc  # noqa: F401

    import pipelines.crm.db
    import pipelines.registry.model
    import pipelines.score.run  # noqa: F401


def _machine() -> str:
    import psutil

    return (
        f"{os.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB, "
        f"Python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
