"""Lineage of a training run: the git commit of the code and the DVC hashes of its inputs (from dvc.lock)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

log = logging.getLogger(__name__)


def git_commit(repo: Path) -> dict[str, str]:
    """{"commit": sha, "dirty": "true"/"false"} of the work tree, or "unknown" outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True,
                             timeout=20).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": "unknown"}
    return {"commit": sha, "dirty": str(bool(status.strip())).lower()}


def _inside(path: str, root: str) -> bool:
    p, r = PurePosixPath(path), PurePosixPath(root)
    return p == r or r in p.parents or p in r.parents


def input_hashes(lock: Mapping[str, Any], inputs: Sequence[str] | None = None, skip_stage: str | None = None
                 ) -> dict[str, str]:
    """Hash of every stage output in a parsed dvc.lock (all of them, or those that are, contain or lie in one of
    `inputs`), except `skip_stage`'s own. The register stage is the DAG's sink, so every other stage's outputs are
    its inputs: the CRM snapshot, features, rule scores, models, metrics.

    Keys are the output paths as dvc.lock names them; values their md5 (a ".dir" suffix for directories).
    """
    out: dict[str, str] = {}
    for stage, entry in (lock.get("stages") or {}).items():
        if stage == skip_stage:
            continue
        for item in entry.get("outs") or []:
            path, digest = str(item.get("path", "")), item.get("md5") or item.get("hash")
            if path and digest and (inputs is None or any(_inside(path, str(PurePosixPath(i))) for i in inputs)):
                out[path] = str(digest)
    return dict(sorted(out.items()))


def read_lock_hashes(lock_path: Path, inputs: Sequence[str] | None = None, skip_stage: str | None = None
                     ) -> dict[str, str]:
    """`input_hashes` of a dvc.lock file; empty (with a warning) when there is none, e.g. outside `dvc repro`."""
    if not Path(lock_path).exists():
        log.warning("no %s: the run's DVC input hashes are not recorded", lock_path)
        return {}
    return input_hashes(yaml.safe_load(Path(lock_path).read_text()) or {}, inputs, skip_stage)
