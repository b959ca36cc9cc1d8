"""Lineage: DVC hashes of the run's inputs come from dvc.lock; the register stage's own entry is skipped."""

from __future__ import annotations

from pathlib import Path

from pipelines.registry.lineage import git_commit, input_hashes

LOCK = {"stages": {
    "features": {"outs": [{"path": "data/features", "md5": "aaa.dir"}]},
    "train": {"outs": [{"path": "models/booster.txt", "md5": "bbb"}, {"path": "models/baselines", "md5": "c.dir"}]},
    "rules": {"outs": [{"path": "data/rules/rule_scores.parquet", "md5": "ddd"}]},
    "register": {"outs": [{"path": "models/registered.json", "md5": "eee"}]},
}}


def test_hashes_of_outputs_inside_or_equal_to_the_inputs() -> None:
    hashes = input_hashes(LOCK, ["data/features", "models"], skip_stage="register")

    assert hashes == {"data/features": "aaa.dir", "models/baselines": "c.dir", "models/booster.txt": "bbb"}


def test_without_a_filter_every_upstream_output_is_an_input() -> None:
    hashes = input_hashes(LOCK, skip_stage="register")

    assert set(hashes) == {"data/features", "models/booster.txt", "models/baselines", "data/rules/rule_scores.parquet"}


def test_git_commit_outside_a_repository_is_unknown(tmp_path: Path) -> None:
    assert git_commit(tmp_path)["commit"] == "unknown"
