"""Lineage of a training run: the git commit of the code, whether the tree was dirty or the run a DVC experiment,
and the DVC hashes of its inputs (from dvc.lock).

What decides the registration kind (`registration_kind`), and so whether a version may become champion:

- `experiment`: the process runs under `dvc exp run`. DVC 3 puts `DVC_EXP_BASELINE_REV` (the baseline commit) and
  `DVC_EXP_NAME` into the environment of every stage command of an experiment (workspace, `--temp` and queued
  runs alike; `dvc.repo.experiments.queue.base`), and never into a plain `dvc repro` (which sets only `DVC_ROOT` and
  `DVC_STAGE`); dvclive detects experiments the same way.
- `dirty`: a tracked file differs from HEAD (staged or not, deleted included), other than `dvc.lock`, the outputs
  `dvc.yaml` declares (`outs`, `metrics`, `plots`) and the `.gitignore` files DVC keeps beside them: those are what a
  normal `dvc repro` writes, so they never make it dirty, while any change of source, params, config or `dvc.yaml`
  does. Untracked files are ignored, as
  `git describe --dirty` does: code that runs is imported by a tracked file, which then shows as changed.
- `clean`: neither (also outside a git work tree, where no commit is known: nothing to compare with).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

import yaml

log = logging.getLogger(__name__)

#: Environment variables DVC 3 sets for the stage commands of `dvc exp run` (dvc/env.py), and only then.
DVC_EXPERIMENT_ENV: Final[tuple[str, ...]] = ("DVC_EXP_BASELINE_REV", "DVC_EXP_NAME")
#: Paths named in `git status` that are written by DVC itself, whatever dvc.yaml declares.
DVC_OWN_FILES: Final[tuple[str, ...]] = ("dvc.lock",)
#: How many changed paths a lineage record names.
_CHANGED_SHOWN: Final = 10

RegistrationKind = Literal["experiment", "dirty", "clean"]


def dvc_experiment(environ: Mapping[str, str] | None = None) -> str | None:
    """The experiment's name (or its baseline commit) when running under `dvc exp run`, else None."""
    env = os.environ if environ is None else environ
    if not any(env.get(key) for key in DVC_EXPERIMENT_ENV):
        return None
    return env.get("DVC_EXP_NAME") or f"baseline {env.get('DVC_EXP_BASELINE_REV', '')[:12]}"


def dvc_outputs(dvc_yaml: Path) -> list[str]:
    """Paths every stage of a dvc.yaml declares as `outs`, `metrics` or `plots` (relative to its folder).

    Templated paths (`${...}`) are skipped: dvc.lock, which DVC writes resolved, names them too.
    """
    if not Path(dvc_yaml).exists():
        return []
    stages = (yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages") or {}
    paths: list[str] = []
    for stage in stages.values():
        if not isinstance(stage, Mapping):
            continue
        for key in ("outs", "metrics", "plots"):
            for item in stage.get(key) or []:
                path = next(iter(item)) if isinstance(item, Mapping) else item
                if isinstance(path, str) and "${" not in path:
                    paths.append(path)
    return paths


def lock_outputs(lock_path: Path) -> list[str]:
    """Output paths a dvc.lock records (resolved; empty without one)."""
    if not Path(lock_path).exists():
        return []
    return list(input_hashes(yaml.safe_load(Path(lock_path).read_text()) or {}))


def _git(repo: Path, *args: str, timeout: float = 60) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=timeout).stdout


def _status_paths(porcelain: str) -> list[str]:
    """Paths of `git status --porcelain=v1 -z` output (both sides of a rename)."""
    fields = porcelain.split("\0")
    paths, i = [], 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # a rename or copy: the next field is the source path
            paths.append(fields[i])
            i += 1
    return paths


def git_commit(repo: Path, ignore: Iterable[str | Path] = ()) -> dict[str, str]:
    """{"commit": sha, "dirty": "true"/"false", "changed": paths} of the work tree ("unknown" outside git).

    `changed` lists (up to 10, comma-separated) the tracked paths that differ from HEAD, except those equal to or
    inside one of `ignore` (paths relative to `repo`, or absolute); `dirty` is whether any remain.
    """
    try:
        sha = _git(repo, "rev-parse", "HEAD", timeout=20).strip()
        top = Path(_git(repo, "rev-parse", "--show-toplevel", timeout=20).strip()).resolve()
        status = _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": "unknown", "changed": ""}
    skipped = [(Path(repo) / p).resolve() for p in ignore]
    changed = [p for p in _status_paths(status) if not any(s == (top / p) or s in (top / p).parents for s in skipped)]
    shown = ", ".join(changed[:_CHANGED_SHOWN]) + (
        f" (+{len(changed) - _CHANGED_SHOWN} more)" if len(changed) > _CHANGED_SHOWN else ""
    )
    return {"commit": sha, "dirty": str(bool(changed)).lower(), "changed": shown}


def pipeline_outputs(repo: Path, lock_path: Path) -> list[str]:
    """What a normal `dvc repro` writes in `repo`: dvc.lock, every declared or locked stage output, and the
    `.gitignore` beside each output (DVC adds cached outputs to it)."""
    outputs = {*dvc_outputs(Path(repo) / "dvc.yaml"), *lock_outputs(lock_path)}
    ignores = {str(PurePosixPath(path).parent / ".gitignore") for path in outputs}
    return sorted({*DVC_OWN_FILES, str(lock_path), *outputs, *ignores})


def registration_kind(lineage: Mapping[str, str], experiment: str | None) -> tuple[RegistrationKind, str]:
    """`experiment`, `dirty` or `clean`, and why in one phrase (see the module docstring)."""
    if experiment is not None:
        return "experiment", f"registered from dvc exp run ({experiment})"
    if lineage.get("dirty") == "true":
        return "dirty", f"registered from a work tree with uncommitted changes ({lineage.get('changed')})"
    if lineage.get("commit") == "unknown":
        return "clean", "not a git work tree: no commit to compare with"
    return "clean", f"registered from commit {lineage.get('commit', '')[:12]} with no uncommitted changes"


def _inside(path: str, root: str) -> bool:
    p, r = PurePosixPath(path), PurePosixPath(root)
    return p == r or r in p.parents or p in r.parents


def input_hashes(
    lock: Mapping[str, Any], inputs: Sequence[str] | None = None, skip_stage: str | None = None
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


def read_lock_hashes(
    lock_path: Path, inputs: Sequence[str] | None = None, skip_stage: str | None = None
) -> dict[str, str]:
    """`input_hashes` of a dvc.lock file; empty (with a warning) when there is none, e.g. outside `dvc repro`."""
    if not Path(lock_path).exists():
        log.warning("no %s: the run's DVC input hashes are not recorded", lock_path)
        return {}
    return input_hashes(yaml.safe_load(Path(lock_path).read_text()) or {}, inputs, skip_stage)
