"""Lineage: DVC hashes of the run's inputs come from dvc.lock; the register stage's own entry is skipped."""

from __future__ import annotations

from pathlib import Path

from pipelines.registry.lineage import dvc_experiment, git_commit, input_hashes, pipeline_outputs, registration_kind
from tests.support.tiny_model import REPO, git

LOCK = {
    "stages": {
        "features": {"outs": [{"path": "data/features", "md5": "aaa.dir"}]},
        "train": {"outs": [{"path": "models/booster.txt", "md5": "bbb"}, {"path": "models/baselines", "md5": "c.dir"}]},
        "rules": {"outs": [{"path": "data/rules/rule_scores.parquet", "md5": "ddd"}]},
        "register": {"outs": [{"path": "models/registered.json", "md5": "eee"}]},
    }
}


def test_hashes_of_outputs_inside_or_equal_to_the_inputs() -> None:
    hashes = input_hashes(LOCK, ["data/features", "models"], skip_stage="register")

    assert hashes == {"data/features": "aaa.dir", "models/baselines": "c.dir", "models/booster.txt": "bbb"}


def test_without_a_filter_every_upstream_output_is_an_input() -> None:
    hashes = input_hashes(LOCK, skip_stage="register")

    assert set(hashes) == {"data/features", "models/booster.txt", "models/baselines", "data/rules/rule_scores.parquet"}


def test_git_commit_outside_a_repository_is_unknown(tmp_path: Path) -> None:
    assert git_commit(tmp_path)["commit"] == "unknown"


# ----------------------------------------------------------------------------------------------------------------
# dvc exp run and dirty trees
# ----------------------------------------------------------------------------------------------------------------


def test_a_dvc_experiment_is_recognised_by_the_variables_dvc_sets_for_its_stage_commands() -> None:
    # what `dvc repro` and `dvc exp run` put into a stage's environment (DVC 3.67, checked by running both)
    repro = {"DVC_ROOT": "/srv/lead-scoring", "DVC_STAGE": "register", "PATH": "/usr/bin"}
    exp = {**repro, "DVC_EXP_BASELINE_REV": "f5a7a257db3bf7c19049f91b98d8b789dd9a901d", "DVC_EXP_NAME": "shock-kind"}

    assert dvc_experiment(repro) is None and dvc_experiment({}) is None
    assert dvc_experiment(exp) == "shock-kind"
    assert dvc_experiment({"DVC_EXP_BASELINE_REV": "f5a7a257db3bf7c19049"}) == "baseline f5a7a257db3b"
    assert dvc_experiment({"DVC_EXP_NAME": ""}) is None


def test_the_pipeline_outputs_are_dvc_lock_and_every_declared_output() -> None:
    outputs = pipeline_outputs(REPO, REPO / "dvc.lock")

    assert {
        "dvc.lock",
        "metrics/evaluate.json",
        "metrics/train.json",
        "plots/roc.csv",
        "models/registered.json",
        "models/model_card.md",
        "data/scores.db",
        "data/features",
        "reports/mql_comparison.html",
        "data/.gitignore",
        "models/.gitignore",
    } <= set(outputs)
    assert not {"params.yaml", "dvc.yaml", "pipelines"} & set(outputs)


def _project(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    (repo / "pipelines").mkdir(parents=True)
    (repo / "metrics").mkdir()
    (repo / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: train\n    outs:\n      - models/booster.txt\n    metrics:\n"
        "      - metrics/train.json:\n          cache: false\n"
    )
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (repo / "params.yaml").write_text("train:\n  learning_rate: 0.05\n")
    (repo / "metrics" / "train.json").write_text("{}")
    (repo / "pipelines" / "train.py").write_text("RATE = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    return repo


def test_what_dvc_repro_writes_does_not_make_the_tree_dirty_but_source_and_params_changes_do(tmp_path: Path) -> None:
    repo = _project(tmp_path)
    ignore = pipeline_outputs(repo, repo / "dvc.lock")
    assert git_commit(repo, ignore)["dirty"] == "false"

    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {train: {}}\n")  # what every dvc repro does
    (repo / "metrics" / "train.json").write_text('{"auc": 0.8}')
    (repo / "scratch.txt").write_text("untracked notes")
    clean = git_commit(repo, ignore)
    assert clean["dirty"] == "false" and clean["changed"] == "" and len(clean["commit"]) == 40
    assert registration_kind(clean, None)[0] == "clean"
    assert git_commit(repo)["dirty"] == "true"  # without the exclusions, every repro would count as dirty

    (repo / "params.yaml").write_text("train:\n  learning_rate: 0.03\n")
    dirty = git_commit(repo, ignore)
    assert dirty["dirty"] == "true" and dirty["changed"] == "params.yaml"
    kind, why = registration_kind(dirty, None)
    assert kind == "dirty" and "params.yaml" in why

    git(repo, "checkout", "params.yaml")
    git(repo, "rm", "-q", "--cached", "pipelines/train.py")  # a staged deletion of source
    assert git_commit(repo, ignore)["changed"] == "pipelines/train.py"


def test_an_experiment_outranks_a_dirty_tree_and_outside_git_nothing_is_dirty(tmp_path: Path) -> None:
    assert registration_kind({"commit": "a" * 40, "dirty": "true", "changed": "params.yaml"}, "shock-kind") == (
        "experiment",
        "registered from dvc exp run (shock-kind)",
    )
    outside = git_commit(tmp_path)
    assert outside["dirty"] == "unknown" and registration_kind(outside, None)[0] == "clean"
