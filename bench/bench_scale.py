"""Benchmarks at scale: demo-CRM generation, the features stage, training and nightly scoring at N leads.

    .venv/bin/python bench/bench_scale.py --leads 100000 --work /work/bench_scratch/scale_100k
    .venv/bin/python bench/bench_scale.py --leads 1000000 --work /work/bench_scratch/scale_1m --steps generate,features

Each step runs in its own child process, one after the other; wall time is measured around the step's work
(after the imports) and peak memory is that child's maximum resident set size (wait4):

- generate: `pipelines.crm.demo.generate` in memory, then the same tables written to SQLite (`<work>/crm.db`,
  what scoring reads) and as an extract snapshot (`<work>/raw`, what the features stage reads). Reused when both
  exist at this size (then marked reused, not re-timed).
- features: exactly `leadscore features --params P --raw <work>/raw --out <work>/features`.
- train: the train core (`pipelines.modeling.read_features` + `pipelines.train.train_models`: LightGBM with early
  stopping and the logistic-regression baseline) on those features; nothing is registered.
- score: `pipelines.score.run.run_score` of every lead open at --as-of with the registered model (--model-uri,
  by default the repository's champion) into `<work>/scores.db`.

Prints a table and writes `<work>/bench_scale.json`. Small sizes (--leads 2000) run in well under a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STEPS = ("generate", "features", "train", "score")
log = logging.getLogger("bench_scale")


def step_generate(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the demo CRM in memory, write it to SQLite and as an extract snapshot; seconds of each part."""
    from pipelines.config import DemoCrmParams, load_params
    from pipelines.crm import demo
    from pipelines.crm.db import make_engine, write_crm
    from pipelines.extract import write_snapshot

    crm, raw = args.work / "crm.db", args.work / "raw"
    started = time.perf_counter()
    result = demo.generate(
        DemoCrmParams(leads=args.leads, seed=args.seed, end_date=date(2026, 11, 20), history_days=730),
        load_params(args.params).features.icp,
    )
    generate_s = time.perf_counter() - started
    rows = {name: len(frame) for name, frame in result.tables.items()}
    t0 = time.perf_counter()
    tmp = crm.with_name(crm.name + ".tmp")
    tmp.unlink(missing_ok=True)
    write_crm(make_engine(f"sqlite:///{tmp}", create_dirs=True), result.tables)
    os.replace(tmp, crm)
    sqlite_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_snapshot(result.tables, raw, source=f"demo leads={args.leads} seed={args.seed} end=2026-11-20 days=730")
    snapshot_s = time.perf_counter() - t0
    return {
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "generate_s": round(generate_s, 1),
        "write_sqlite_s": round(sqlite_s, 1),
        "write_snapshot_s": round(snapshot_s, 1),
        "sqlite_mib": round(crm.stat().st_size / 2**20),
        "rows_out": args.leads,
        "unit": "leads",
    }


def step_train(args: argparse.Namespace) -> dict[str, Any]:
    """The train core on the features stage's output (read included)."""
    from pipelines.config import load_params
    from pipelines.modeling import read_features
    from pipelines.train import train_models

    params = load_params(args.params)
    started = time.perf_counter()
    frame, infos = read_features(args.work / "features")
    read_s = time.perf_counter() - started
    result = train_models(frame, infos, params.train, params.features.horizon_days, params.base.seed)
    report = result.report
    return {
        "seconds": time.perf_counter() - started,
        "read_s": round(read_s, 1),
        "rows_out": len(frame),
        "unit": "feature rows",
        "train_rows": report["train_period"]["rows"],
        "rounds": report["rounds"],
        "lightgbm_s": report["seconds"]["lightgbm"],
        "logreg_s": report["seconds"]["logreg"],
    }


def step_score(args: argparse.Namespace) -> dict[str, Any]:
    """Nightly scoring of the open leads into a fresh scores database; phases from its scoring_runs row."""
    from pipelines.config import load_params
    from pipelines.score.run import parse_as_of, run_score

    params = load_params(args.params)
    params = params.model_copy(update={"score": params.score.model_copy(update={"reasons_for": args.reasons_for})})
    scores = args.work / "scores.db"
    for path in (scores, scores.with_name(scores.name + ".score.lock")):
        path.unlink(missing_ok=True)
    started = time.perf_counter()
    run = run_score(
        f"sqlite:///{args.work / 'crm.db'}",
        f"sqlite:///{scores}",
        parse_as_of(args.as_of),
        params,
        args.model_uri,
        args.tracking_uri,
        progress=False,
        staging_root=args.work / "staging",
    )
    seconds = time.perf_counter() - started
    with sqlite3.connect(scores) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM scoring_runs WHERE run_id = ?", (run["run_id"],)).fetchone())
    return {
        "seconds": seconds,
        "rows_out": int(row["leads_scored"]),
        "unit": "open leads",
        "leads_read": int(row["leads_read"]),
        "reasons_for": args.reasons_for,
        "phases": {
            k.removeprefix("seconds_"): round(row[k], 1)
            for k in ("seconds_read", "seconds_features", "seconds_predict", "seconds_write")
        },
    }


def _wait(command: list[str], capture: bool) -> tuple[bytes, float, int]:
    """Run a child; (stdout, wall seconds, peak RSS in KiB of that child alone)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE if capture else None, cwd=REPO)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed with exit code {proc.returncode}")
    return out, time.perf_counter() - started, usage.ru_maxrss


def run_step(args: argparse.Namespace, step: str) -> dict[str, Any]:
    """One step in a child process, with its peak RSS and the load average before and after."""
    load = os.getloadavg()[0]
    log.info("step %s at %s leads (load %.1f)", step, f"{args.leads:,}", load)
    if step == "features":
        out_dir = args.work / "features"
        shutil.rmtree(out_dir, ignore_errors=True)
        command = [
            str(Path(sys.executable).with_name("leadscore")),
            "features",
            "--params",
            str(args.params),
            "--raw",
            str(args.work / "raw"),
            "--out",
            str(out_dir),
        ]
        _, seconds, peak = _wait(command, capture=False)
        summary = json.loads((out_dir / "summary.json").read_text())
        result: dict[str, Any] = {
            "seconds": seconds,
            "rows_out": summary["rows"],
            "unit": "feature rows",
            "features": summary["features"],
            "command": " ".join(command[1:]),
            "output_mib": round((out_dir / "snapshots.parquet").stat().st_size / 2**20),
        }
    else:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--step",
            step,
            "--leads",
            str(args.leads),
            "--seed",
            str(args.seed),
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
        ]
        out, _, peak = _wait(command, capture=True)
        result = json.loads(out.decode().strip().splitlines()[-1])
    result.update(peak_rss_mib=round(peak / 1024), load_before=round(load, 1), load_after=round(os.getloadavg()[0], 1))
    return result


def _generated(args: argparse.Namespace) -> bool:
    manifest = args.work / "raw" / "manifest.json"
    return (
        (args.work / "crm.db").exists()
        and manifest.exists()
        and json.loads(manifest.read_text())["tables"]["leads"]["rows"] == args.leads
    )


def table(results: dict[str, dict[str, Any]]) -> str:
    """The per-step table (Markdown)."""
    lines = ["| step | rows | seconds | rows/s | peak RSS | load | detail |", "|---|---|---|---|---|---|---|"]
    for step, r in results.items():
        detail = {k: v for k, v in r.items() if k.endswith("_s") or k in ("phases", "rounds", "reasons_for")}
        lines.append(
            f"| {step} | {r['rows_out']:,} {r['unit']} | {r['seconds']:.1f} | "
            f"{r['rows_out'] / r['seconds']:,.0f} | {r['peak_rss_mib']:,} MiB | {r['load_before']} | "
            f"{json.dumps(detail)} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the chosen steps one at a time, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder (outside the repository)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"Comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--model-uri", default="models:/lead-scoring@champion")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{REPO / 'mlflow.db'}")
    parser.add_argument("--as-of", default="2026-11-20T00:00:00Z")
    parser.add_argument("--reasons-for", choices=("all", "flagged", "handed"), default="all")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    args.params = args.params.resolve()

    if args.step is not None:  # child process: one step, one JSON line on stdout
        import mlflow.pyfunc  # noqa: F401  (imports are not part of any step's time)

        import pipelines.score.run
        import pipelines.train  # noqa: F401

        runners = {"generate": step_generate, "train": step_train, "score": step_score}
        print(json.dumps(runners[args.step](args)))
        return

    steps = [s for s in args.steps.split(",") if s]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise SystemExit(f"unknown step(s) {unknown}: choose from {STEPS}")
    path = args.work / "bench_scale.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    results: dict[str, dict[str, Any]] = saved.get("results", {}) if saved.get("leads") == args.leads else {}
    for step in steps:
        if step == "generate" and _generated(args):
            log.info("reusing the generated CRM and snapshot in %s", args.work)
            continue
        results[step] = run_step(args, step)
        report = {
            "date": datetime.now(UTC).date().isoformat(),
            "machine": _machine(),
            "leads": args.leads,
            "results": results,
        }
        path.write_text(json.dumps(report, indent=2) + "\n")  # after every step: a stopped run keeps its figures
    print(f"\nscale benchmark, {args.leads:,} demo leads; {_machine()}")
    print(table(results))


def _machine() -> str:
    import psutil

    return (
        f"{os.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB, "
        f"Python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
