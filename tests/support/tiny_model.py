"""A tiny trained model and the files the model stages would write, for fast registry tests.

`build_tiny(dir, seed)` writes features/ (snapshots.parquet, feature_list.json), models/ (booster.txt,
calibrator.json, thresholds.json, split.json; production/ with the refit's booster, calibrator and thresholds),
metrics/ (evaluate.json, train.json) and plots/ (roc.csv, calibration.csv) for ~1,500 synthetic leads at one
snapshot date, using the model stages' own functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from pipelines.artifacts import save_calibrator, save_thresholds
from pipelines.calibrate import fit_calibrator
from pipelines.calibrated import Thresholds
from pipelines.config import load_params
from pipelines.modeling import assign_slices, plan_split, production_slices, write_csv, write_json

REPO = Path(__file__).resolve().parents[2]

FEATURE_LIST = [
    {"name": "n_pricing_page_visit_30d", "kind": "numeric", "family": "engagement"},
    {"name": "n_pricing_page_visit_all", "kind": "numeric", "family": "engagement"},
    {"name": "n_email_open_30d", "kind": "numeric", "family": "engagement"},
    {"name": "days_since_pricing_page_visit", "kind": "numeric", "family": "recency"},
    {"name": "seniority", "kind": "categorical", "family": "title"},
    {"name": "region", "kind": "categorical", "family": "fit"},
    {"name": "icp_region", "kind": "numeric", "family": "fit"},
    {"name": "bogus_signal_count", "kind": "numeric", "family": "bogus"},
]
SENIORITIES = ["c_level", "vp", "director", "manager", "individual"]
REGIONS = ["NA", "EMEA", "APAC", "LATAM"]


def synthetic_frame(n: int, seed: int) -> pd.DataFrame:
    """n leads at one snapshot date, label driven by pricing visits, seniority, ICP region and bogus signals."""
    rng = np.random.default_rng(seed)
    pricing = rng.poisson(1.0, n).astype(float)
    seniority = rng.choice(SENIORITIES, n)
    icp = rng.integers(0, 2, n).astype(float)
    bogus = rng.poisson(0.3, n).astype(float)
    logit = -2.0 + 0.8 * pricing + 1.0 * (np.isin(seniority, ["c_level", "vp"])) + 0.8 * icp - 1.2 * bogus
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    days = np.where(pricing > 0, rng.integers(0, 30, n), np.nan).astype(float)
    return pd.DataFrame(
        {
            "lead_id": np.arange(1, n + 1, dtype=np.int64),
            "snapshot_at": pd.Timestamp("2026-06-01", tz="UTC"),
            "label": label,
            "n_pricing_page_visit_30d": pricing,
            "n_pricing_page_visit_all": pricing + rng.poisson(0.5, n),
            "n_email_open_30d": rng.poisson(2.0, n).astype(float),
            "days_since_pricing_page_visit": days,
            "seniority": pd.Categorical(seniority, categories=SENIORITIES),
            "region": pd.Categorical(rng.choice(REGIONS, n), categories=REGIONS),
            "icp_region": icp,
            "bogus_signal_count": bogus,
        }
    )


def build_tiny(
    root: Path, seed: int = 0, rounds: int = 30, n: int = 1500, metrics: dict | None = None
) -> dict[str, Path]:
    """Write the upstream artifacts of a tiny model under root; returns the folder of each kind. `metrics`
    overrides keys of the evaluate.json written (the baselines' figures beaten by default: 0.7 and 0.6)."""
    params = load_params(REPO / "params.yaml")
    dirs = {k: root / k for k in ("features", "models", "metrics", "plots")}
    for d in (*dirs.values(), dirs["models"] / "production"):
        d.mkdir(parents=True, exist_ok=True)
    frame = synthetic_frame(n, seed=1)  # same data for every seed: seeds change only the model
    frame.to_parquet(dirs["features"] / "snapshots.parquet")
    (dirs["features"] / "feature_list.json").write_text(json.dumps(FEATURE_LIST))
    plan = plan_split(frame["snapshot_at"], frame["label"], frame["lead_id"], params.train, 30, seed=42)
    slices = assign_slices(frame, plan)
    names = [f["name"] for f in FEATURE_LIST]
    fit = slices != "test"
    config = {
        "objective": "binary",
        "learning_rate": 0.1,
        "num_leaves": 7,
        "min_child_samples": 20,
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "num_threads": 1,
        "feature_fraction": 0.9 if seed else 1.0,
    }
    write_json(dirs["models"] / "split.json", plan.to_dict())
    cal = slices == "calibration"
    cut: dict[str, float] = {}
    # the evaluation model (fitted before the test rows) in models/, the production refit in models/production/
    refit = production_slices(frame, plan) == "fit"
    for folder, rows in ((dirs["models"], fit), (dirs["models"] / "production", refit)):
        booster = lgb.train(config, lgb.Dataset(frame.loc[rows, names], label=frame.loc[rows, "label"]), rounds)
        booster.save_model(folder / "booster.txt")
        raw = booster.predict(frame.loc[cal, names])
        calibrator = fit_calibrator(raw, frame.loc[cal, "label"].to_numpy(), "platt")
        save_calibrator(calibrator, folder / "calibrator.json")
        prob = calibrator.apply(raw)
        cut = {s: float(np.quantile(prob, q)) for s, q in (("MQL", 0.5), ("SAL", 0.75), ("SQL", 0.9))}
        save_thresholds(
            Thresholds(
                target_stage="SQL",
                horizon_days=30,
                global_thresholds=cut,
                report={
                    "policies": {
                        "MQL": {"policy": "match_rules"},
                        "SAL": {"policy": "capacity", "leads_per_week": 150},
                        "SQL": {"policy": "precision", "min_precision": 0.3},
                    }
                },
            ),
            folder / "thresholds.json",
        )
    write_json(
        dirs["metrics"] / "evaluate.json",
        {
            "roc_auc": 0.8,
            "roc_auc_ci_low": 0.77,
            "roc_auc_ci_high": 0.83,
            "ece": 0.02,
            "ece_ci_low": 0.01,
            "ece_ci_high": 0.03,
            "pr_auc": 0.6,
            "brier": 0.15,
            "sql_capture_ratio_vs_rules": 1.4,
            "logreg": {"roc_auc": 0.7},
            "rules": {"roc_auc": 0.6},
            "stages": {"SQL": {"threshold": cut["SQL"], "precision": 0.5, "precision_ci": [0.4, 0.6]}},
            "test": {
                "rows": int((slices == "test").sum()),
                "positives": int(frame.loc[slices == "test", "label"].sum()),
            },
        }
        | (metrics or {}),
    )
    write_json(dirs["metrics"] / "train.json", {"valid_roc_auc": 0.8, "best_iteration": rounds})
    write_csv(dirs["plots"] / "roc.csv", pd.DataFrame({"fpr": [0.0, 0.5, 1.0], "model": [0.0, 0.8, 1.0]}))
    write_csv(
        dirs["plots"] / "calibration.csv",
        pd.DataFrame(
            {
                "bin": [0, 1],
                "rows": [10, 10],
                "mean_predicted": [0.1, 0.6],
                "fraction_positive": [0.12, 0.55],
                "score": ["calibrated", "calibrated"],
                "perfect": [0.1, 0.6],
            }
        ),
    )
    return dirs


#: The gate the tests assume unless told otherwise: it refuses the seed-1 model (test ECE ~0.07 > 0.03).
STRICT_GATE = {
    "auc_margin": 0.005,
    "max_ece": 0.03,
    "max_ece_increase": 0.01,
    "bootstrap": 50,
    "ci_level": 0.95,
    "baseline_auc_margin": 0.0,
    "min_rounds": 2,
}


def tiny_params(root: Path, **gate: float) -> Path:
    """A copy of the repo's params.yaml under root with the strict gate, changed by `gate` (for CLI runs)."""
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["register"]["gate"] = {**STRICT_GATE, **gate}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a throwaway identity (the tests' own repositories)."""
    import subprocess

    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def clean_project(root: Path) -> Path:
    """A git work tree under root with a committed params.yaml, dvc.yaml and dvc.lock and nothing uncommitted: the
    registrations of the tests are `clean` whatever state the developer's checkout is in."""
    repo = root / "project"
    if (repo / ".git").exists():
        return repo
    repo.mkdir(parents=True)
    (repo / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (repo / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    (repo / "dvc.lock").write_text((REPO / "dvc.lock").read_text())
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny project")
    return repo


def register_tiny(
    root: Path,
    uri: str,
    seed: int,
    params_path: Path,
    repo: Path | None = None,
    metrics: dict | None = None,
    force: bool = False,
) -> dict:
    """Build a tiny model's artifacts under root/<seed> and run the register stage's core against `uri`, with the
    lineage of `repo` (default: a clean git project under root); `metrics` overrides evaluate.json keys."""
    from pipelines.registry.inputs import RegisterInputs
    from pipelines.registry.tracking import run_register

    repo = repo or clean_project(root)
    dirs = build_tiny(root / f"run{seed}", seed=seed, metrics=metrics)
    inputs = RegisterInputs(dirs["features"], dirs["models"], dirs["metrics"], dirs["plots"], repo / "dvc.lock")
    return run_register(
        load_params(params_path),
        inputs,
        root / f"run{seed}" / "registered.json",
        root / f"run{seed}" / "model_card.md",
        uri,
        repo=repo,
        force=force,
    )
