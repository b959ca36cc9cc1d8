"""Benchmarks at scale: demo-CRM generation, extract, features, rules, training and nightly scoring at N leads.

    .venv/bin/python bench/bench_scale.py --leads 100000 --work /work/bench_scratch/scale_100k
    .venv/bin/python bench/bench_scale.py --leads 10000000 --crm /work/bench_scratch/c10m/crm.db \
        --work /work/bench_scratch/scale/after_10m --steps extract,features
    .venv/bin/python bench/bench_scale.py --leads 10000000 --crm /work/bench_scratch/c10m/crm.db \
        --work /work/bench_scratch/scale/after_10m --steps features,rules,train --sample-leads 200000

Each step runs in its own child process, one after the other; wall time is measured around the child (the stage
commands, start-up included) or around the step's work (train, score: after the imports), peak memory is that
child's maximum resident set size and CPU time its user + system seconds (wait4):

- generate: exactly `leadscore demo-crm --url sqlite:///<work>/crm.db --leads N --seed S --end-date 2026-11-20
  --history-days 730 --params P` (generated and written in batches of `demo_crm.batch_leads`). Skipped when --crm
  names an existing CRM, or when <work>/crm.db already holds N leads (then marked reused, not re-timed).
- extract: exactly `leadscore extract --params P --url sqlite:///<crm> --out <work>/raw`.
- features: exactly `leadscore features --params P --raw <work>/raw --out <work>/features`.
- rules: exactly `leadscore rules --params P --raw <work>/raw --snapshots <work>/features/snapshots.parquet
  --out <work>/rules/rule_scores.parquet --variants-out <work>/rules/rule_variants.parquet`.
- train: the train core (`pipelines.modeling.read_features` + `pipelines.train.train_models`: tuning, purged CV,
  LightGBM, its production refit and the logistic-regression baseline) on those features; nothing is registered.
- score: `pipelines.score.run.run_score` of every lead open at --as-of with the registered model (--model-uri,
  by default the repository's champion) into `<work>/scores.db`.

--sample-leads K runs features, rules and train with `features.sample_leads: K` (a params file written into
<work>) into `<work>/features_sample_K` and `<work>/rules_sample_K`, beside the full ones; their results are
named `features (sample K)` and so on. Prints a table and writes `<work>/bench_scale.json` (every step's figures,
the load average before and after each, the machine). Small sizes (--leads 2000) run in well under a minute.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STEPS = ("generate", "extract", "features", "rules", "train", "score")
TABLES = ("campaigns", "accounts", "leads", "activities", "stage_history")
log = logging.getLogger("bench_scale")


class Paths:
    """Where each step reads and writes, with or without a lead sample."""

    def __init__(self, args: argparse.Namespace) -> None:
        work = args.work
        self.crm = args.crm or work / "crm.db"
        self.raw = work / "raw"
        suffix = f"_sample_{args.sample_leads}" if args.sample_leads else ""
        self.features = work / f"features{suffix}"
        self.rules = work / f"rules{suffix}"
        self.params = args.params if not args.sample_leads else work / f"params{suffix}.yaml"
        self.label = f" (sample {args.sample_leads})" if args.sample_leads else ""


def sampled_params(args: argparse.Namespace, paths: Paths) -> None:
    """The params file with `features.sample_leads` set (written into the work folder)."""
    import yaml

    raw = yaml.safe_load(args.params.read_text())
    raw["features"]["sample_leads"] = args.sample_leads
    for block in ("rules",):  # rules files are named relative to the repository
        raw[block]["file"] = str((REPO / raw[block]["file"]).resolve())
    paths.params.write_text(yaml.safe_dump(raw, sort_keys=False))


def crm_rows(crm: Path) -> dict[str, int]:
    """Rows per CRM table of a SQLite file."""
    with sqlite3.connect(f"file:{crm}?mode=ro", uri=True) as conn:
        return {t: int(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]) for t in TABLES}


def step_train(args: argparse.Namespace) -> dict[str, Any]:
    """The train core on the features stage's output (read included)."""
    from pipelines.config import load_params
    from pipelines.modeling import read_features
    from pipelines.train import train_models

    paths = Paths(args)
    params = load_params(paths.params)
    started = time.perf_counter()
    frame, infos = read_features(paths.features)
    read_s = time.perf_counter() - started
    result = train_models(frame, infos, params.train, params.features.horizon_days, params.base.seed)
    report = result.report
    return {
        "seconds": time.perf_counter() - started,
        "read_s": round(read_s, 1),
        "rows_out": len(frame),
        "unit": "feature rows",
        "leads": int(frame["lead_id"].nunique()),
        "train_rows": report["train_period"]["rows"],
        "rounds": report["rounds"],
        "lightgbm_s": report["seconds"]["lightgbm"],
        "logreg_s": report["seconds"]["logreg"],
    }


def step_score(args: argparse.Namespace) -> dict[str, Any]:
    """Nightly scoring of the open leads into a fresh scores database; phases from its scoring_runs row."""
    from pipelines.config import load_params
    from pipelines.score.run import parse_as_of, run_score

    paths = Paths(args)
    params = load_params(args.params)
    params = params.model_copy(update={"score": params.score.model_copy(update={"reasons_for": args.reasons_for})})
    scores = args.work / "scores.db"
    for path in (scores, scores.with_name(scores.name + ".score.lock")):
        path.unlink(missing_ok=True)
    started = time.perf_counter()
    run = run_score(
        f"sqlite:///{paths.crm}",
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


def _wait(command: list[str], capture: bool) -> tuple[bytes, float, Any]:
    """Run a child; (stdout, wall seconds, its resource usage: peak RSS in KiB, CPU seconds)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE if capture else None, cwd=REPO)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed with exit code {proc.returncode}")
    return out, time.perf_counter() - started, usage


def _stage_command(args: argparse.Namespace, step: str) -> list[str]:
    """The leadscore command line of a stage step."""
    paths = Paths(args)
    leadscore = str(Path(sys.executable).with_name("leadscore"))
    if step == "generate":
        return [
            leadscore,
            "demo-crm",
            "--url",
            f"sqlite:///{paths.crm}",
            "--leads",
            str(args.leads),
            "--seed",
            str(args.seed),
            "--end-date",
            "2026-11-20",
            "--history-days",
            "730",
            "--params",
            str(args.params),
        ]
    if step == "extract":
        return [
            leadscore,
            "extract",
            "--params",
            str(paths.params),
            "--url",
            f"sqlite:///{paths.crm}",
            "--out",
            str(paths.raw),
        ]
    if step == "features":
        return [
            leadscore,
            "features",
            "--params",
            str(paths.params),
            "--raw",
            str(paths.raw),
            "--out",
            str(paths.features),
        ]
    return [
        leadscore,
        "rules",
        "--params",
        str(paths.params),
        "--raw",
        str(paths.raw),
        "--snapshots",
        str(paths.features / "snapshots.parquet"),
        "--out",
        str(paths.rules / "rule_scores.parquet"),
        "--variants-out",
        str(paths.rules / "rule_variants.parquet"),
    ]


def _stage_result(args: argparse.Namespace, step: str) -> dict[str, Any]:
    """What a stage step produced: rows and output size."""
    paths = Paths(args)
    if step == "generate":
        rows = crm_rows(paths.crm)
        return {
            "rows": rows,
            "rows_out": rows["leads"],
            "unit": "leads",
            "sqlite_mib": round(paths.crm.stat().st_size / 2**20),
        }
    if step == "extract":
        manifest = json.loads((paths.raw / "manifest.json").read_text())
        size = sum(f.stat().st_size for f in paths.raw.iterdir())
        rows = {t: manifest["tables"][t]["rows"] for t in TABLES}
        return {"rows": rows, "rows_out": sum(rows.values()), "unit": "CRM rows", "output_mib": round(size / 2**20)}
    if step == "features":
        summary = json.loads((paths.features / "summary.json").read_text())
        return {
            "rows_out": summary["rows"],
            "unit": "feature rows",
            "leads": summary["leads"],
            "features": summary["features"],
            "output_mib": round((paths.features / "snapshots.parquet").stat().st_size / 2**20),
        }
    import pyarrow.parquet as pq

    return {"rows_out": pq.ParquetFile(paths.rules / "rule_scores.parquet").metadata.num_rows, "unit": "rule rows"}


def run_step(args: argparse.Namespace, step: str) -> dict[str, Any]:
    """One step in a child process, with its peak RSS, CPU time and the load average before and after."""
    load = os.getloadavg()[0]
    log.info("step %s at %s leads (load %.1f)", step, f"{args.leads:,}", load)
    paths = Paths(args)
    if step in ("generate", "extract", "features", "rules"):
        out_dir = {"extract": paths.raw, "features": paths.features, "rules": paths.rules}.get(step)
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)
        command = _stage_command(args, step)
        _, seconds, usage = _wait(command, capture=False)
        result: dict[str, Any] = {"seconds": seconds, **_stage_result(args, step), "command": " ".join(command[1:])}
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
            *(["--crm", str(args.crm)] if args.crm else []),
            *(["--sample-leads", str(args.sample_leads)] if args.sample_leads else []),
        ]
        out, _, usage = _wait(command, capture=True)
        result = json.loads(out.decode().strip().splitlines()[-1])
    result.update(
        peak_rss_mib=round(usage.ru_maxrss / 1024),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 1),
        load_before=round(load, 1),
        load_after=round(os.getloadavg()[0], 1),
    )
    return result


def table(results: dict[str, dict[str, Any]]) -> str:
    """The per-step table (Markdown)."""
    lines = [
        "| step | rows | seconds | rows/s | CPU s | peak RSS | load | detail |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for step, r in results.items():
        shown = ("phases", "rounds", "reasons_for")
        detail = {k: v for k, v in r.items() if (k.endswith("_s") and k != "cpu_s") or k in shown}
        lines.append(
            f"| {step} | {r['rows_out']:,} {r['unit']} | {r['seconds']:.1f} | {r['rows_out'] / r['seconds']:,.0f} | "
            f"{r['cpu_s']:.0f} | {r['peak_rss_mib']:,} MiB | {r['load_before']} -> {r['load_after']} | "
            f"{json.dumps(detail)} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the chosen steps one at a time, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder (outside the repository)")
    parser.add_argument("--crm", type=Path, default=None, help="An existing demo CRM (SQLite) instead of generating")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"Comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--sample-leads", type=int, default=None, help="features.sample_leads for features/rules/train")
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
    args.crm = args.crm.resolve() if args.crm else None

    if args.step is not None:  # child process: one step, one JSON line on stdout
        import mlflow.pyfunc  # noqa: F401  (imports are not part of any step's time)

        import pipelines.score.run
        import pipelines.train  # noqa: F401

        runners = {"train": step_train, "score": step_score}
        print(json.dumps(runners[args.step](args)))
        return

    steps = [s for s in args.steps.split(",") if s]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise SystemExit(f"unknown step(s) {unknown}: choose from {STEPS}")
    paths = Paths(args)
    if args.sample_leads:
        sampled_params(args, paths)
    path = args.work / "bench_scale.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    results: dict[str, dict[str, Any]] = saved.get("results", {}) if saved.get("leads") == args.leads else {}
    for step in steps:
        if step == "generate" and (args.crm or (paths.crm.exists() and crm_rows(paths.crm)["leads"] == args.leads)):
            log.info("reusing the generated CRM %s", paths.crm)
            continue
        name = step + (paths.label if step in ("features", "rules", "train") else "")
        results[name] = run_step(args, step)
        report = {
            "date": datetime.now(UTC).date().isoformat(),
            "machine": _machine(),
            "leads": args.leads,
            "crm": str(paths.crm),
            "results": results,
        }
        path.write_text(json.dumps(report, indent=2) + "\n")  # after every step: a stopped run keeps its figures
    print(f"\nscale benchmark, {args.leads:,} demo leads; {_machine()}")
    print(table(results))


def _machine() -> str:
    import psutil

    return (
        f"{os.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB, "
        f"Python {platform.python_version()}, {platform.processor() or platform.machine()}"
    )


if __name__ == "__main__":
    main()
