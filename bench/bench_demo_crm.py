"""Benchmark: demo-CRM generation (in memory) and, optionally, writing it to a database.

    python bench/bench_demo_crm.py --leads 1000000 [--url sqlite:///bench/crm_1m.db]

Prints seconds, rows per second and peak resident memory as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import date

from pipelines.config import DemoCrmParams, load_params
from pipelines.crm import demo


def main() -> None:
    """Generate (and optionally write) a demo CRM of the given size and report timings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", default=None, help="also write the CRM to this SQLAlchemy URL")
    parser.add_argument(
        "--params", default="params.yaml", help="params.yaml: its features.icp is the history's profile"
    )
    args = parser.parse_args()

    start = time.perf_counter()
    result = demo.generate(
        DemoCrmParams(leads=args.leads, seed=args.seed, end_date=date(2026, 11, 20), history_days=730),
        load_params(args.params).features.icp,
    )
    generated = time.perf_counter() - start
    rows = {name: len(frame) for name, frame in result.tables.items()}
    report: dict[str, object] = {
        "leads": args.leads,
        "rows": rows,
        "generate_s": round(generated, 1),
        "leads_per_s": round(args.leads / generated),
    }
    if args.url:
        from pipelines.crm.db import make_engine, write_crm

        start = time.perf_counter()
        write_crm(make_engine(args.url, create_dirs=True), result.tables)
        written = time.perf_counter() - start
        report["write_s"] = round(written, 1)
        report["rows_written_per_s"] = round(sum(rows.values()) / written)
    report["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
