"""Run one command and report its wall time and the peak memory of its whole process tree.

    .venv/bin/python bench/bench_tree.py --out run.json -- leadscore score --engine spark --snapshot raw ...

`/usr/bin/time` reports the largest single process, which for the Spark engine is the JVM alone; this samples the
resident set size of the command and every process below it (the JVM, Spark's Python workers, the driver) every
`--every` seconds and keeps the largest sum. Prints one JSON line (also written to --out): the command, exit code,
wall seconds, peak tree RSS and peak of the largest single process in MiB, samples taken, load average before and
after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    """(sum, largest) resident set size in bytes of `root` and all its descendants (gone processes count 0)."""
    total, largest = 0, 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            rss = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += rss
        largest = max(largest, rss)
    return total, largest


def main() -> None:
    """Run the command after `--`, sampling its tree until it exits; exit with its exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON result here")
    parser.add_argument("--every", type=float, default=1.0, help="Seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peak_total, peak_single, samples = 0, 0, 0
    while child.poll() is None:
        total, largest = tree_rss(root)
        peak_total, peak_single, samples = max(peak_total, total), max(peak_single, largest), samples + 1
        time.sleep(args.every)
    result = {
        "command": command,
        "exit_code": child.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_tree_rss_mib": round(peak_total / 2**20),
        "peak_process_rss_mib": round(peak_single / 2**20),
        "samples": samples,
        "load_before": round(load_before, 1),
        "load_after": round(os.getloadavg()[0], 1),
    }
    line = json.dumps(result)
    print(line, flush=True)
    if args.out is not None:
        args.out.write_text(line + "\n")
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
