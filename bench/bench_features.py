"""Benchmark the features stage on a large demo CRM: wall time and peak memory of `leadscore features`.

    .venv/bin/python bench/bench_features.py --leads 1000000 --seed 1 --work /tmp/leadscore-bench

The demo CRM (generated once, then reused from `<work>/raw`) is written as an extract-stage snapshot, so the
timed command is exactly the stage DVC runs: `leadscore features --params ... --raw <work>/raw --out
<work>/features`. Peak memory is the child's maximum resident set size (getrusage), wall time is measured
around the subprocess. The result is printed as JSON; BENCHMARKS.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

log = logging.getLogger("bench_features")


def make_snapshot(raw: Path, leads: int, seed: int, end_date: date, history_days: int, params: Path) -> None:
    """Generate the demo CRM and write it as an extract snapshot (skipped when one already exists)."""
    from pipelines.config import DemoCrmParams, load_params
    from pipelines.crm import demo
    from pipelines.extract import read_manifest, write_snapshot

    if (raw / "manifest.json").exists():
        manifest = read_manifest(raw)
        if manifest["tables"]["leads"]["rows"] == leads:
            log.info("reusing the snapshot in %s", raw)
            return
    started = time.perf_counter()
    result = demo.generate(
        DemoCrmParams(leads=leads, seed=seed, end_date=end_date, history_days=history_days),
        load_params(params).features.icp,
    )
    log.info("generated %s leads in %.1f s", f"{leads:,}", time.perf_counter() - started)
    write_snapshot(result.tables, raw, source=f"demo leads={leads} seed={seed} end={end_date} days={history_days}")


def run_stage(params: Path, raw: Path, out: Path) -> dict[str, object]:
    """Run the features stage as a subprocess; wall seconds and peak RSS (MiB) of the child."""
    leadscore = Path(sys.executable).with_name("leadscore")
    command = [str(leadscore), "features", "--params", str(params), "--raw", str(raw), "--out", str(out)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads((out / "summary.json").read_text())
    return {
        "command": " ".join(command),
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_kib / 1024),
        "rows": summary["rows"],
        "features": summary["features"],
        "output_mib": round((out / "snapshots.parquet").stat().st_size / 2**20, 1),
    }


def main() -> None:
    """Parse arguments, prepare the data once, time the stage."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--end-date", type=date.fromisoformat, default=date(2026, 11, 20))
    parser.add_argument("--history-days", type=int, default=730)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder for the snapshot and outputs")
    parser.add_argument("--keep", action="store_true", help="Keep the feature outputs after timing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    raw, out = args.work / "raw", args.work / "features"
    make_snapshot(raw, args.leads, args.seed, args.end_date, args.history_days, args.params)
    manifest = json.loads((raw / "manifest.json").read_text())
    result = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{os.cpu_count()} cores, {_memory_gib()} GiB, {platform.processor() or platform.machine()}",
        "python": platform.python_version(),
        "data": {name: meta["rows"] for name, meta in manifest["tables"].items()},
        **run_stage(args.params, raw, out),
    }
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(result, indent=2))


def _memory_gib() -> int:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30)
    except ImportError:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)


if __name__ == "__main__":
    main()
