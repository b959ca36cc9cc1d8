"""Run the pipeline on the X Education leads (a real, leads-only dataset) and summarise honest figures.

    python experiments/x_education/run.py --out /tmp/x_education            # from the repository root

Data: X_EDUCATION_LEADS=/path/to/Leads.csv, else ../shared/datasets/x_education/Leads.csv. The params are the
repository's params.yaml with experiments/x_education/overrides.yaml merged in (written to OUT/<run>/params.yaml).
Two runs, each a plain `leadscore` command sequence (import, extract, features, rules, train, calibrate, evaluate):

- `honest`: the mapping as shipped (config/mappings/x_education.yaml), leaky columns dropped;
- `leaky`:  `leadscore import --keep-leaky`, the leaky columns passed through as features, only to show the leak.

OUT/summary.json holds the headline figures (test ROC-AUC with its 95% lead-bootstrap interval, for the model, the
logistic regression and the points rule). Docs: docs/mapping.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
log = logging.getLogger("x_education")


def merged_params(out: Path) -> Path:
    """The repository's params.yaml with this experiment's overrides, written into `out`."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for block, values in yaml.safe_load((HERE / "overrides.yaml").read_text()).items():
        params[block] = {**params.get(block, {}), **values}
    path = out / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def leadscore(*args: str | Path) -> None:
    """One `leadscore` command from the repository root; stops with its stderr when it fails."""
    exe = shutil.which("leadscore", path=str(Path(sys.executable).parent)) or "leadscore"
    done = subprocess.run([exe, *map(str, args)], cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"leadscore {args[0]} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    log.info("%s", done.stdout.strip())


def run(out: Path, keep_leaky: bool) -> dict[str, Any]:
    """The command sequence into `out`; returns the evaluate stage's metrics."""
    out.mkdir(parents=True, exist_ok=True)
    params = merged_params(out)
    url = f"sqlite:///{out / 'crm.db'}"
    leadscore("import", "--params", params, "--url", url, *(["--keep-leaky"] if keep_leaky else []))
    leadscore("extract", "--params", params, "--url", url, "--out", out / "raw")
    leadscore("features", "--params", params, "--raw", out / "raw", "--out", out / "features")
    rules = out / "rules" / "rule_scores.parquet"
    leadscore(
        "rules",
        "--params",
        params,
        "--raw",
        out / "raw",
        "--snapshots",
        out / "features" / "snapshots.parquet",
        "--out",
        rules,
    )
    leadscore(
        "train",
        "--params",
        params,
        "--features",
        out / "features",
        "--out",
        out / "models",
        "--metrics",
        out / "metrics" / "train.json",
    )
    leadscore(
        "calibrate", "--params", params, "--features", out / "features", "--models", out / "models", "--rules", rules
    )
    leadscore(
        "evaluate",
        "--params",
        params,
        "--features",
        out / "features",
        "--models",
        out / "models",
        "--rules",
        rules,
        "--metrics",
        out / "metrics",
        "--plots",
        out / "plots",
    )
    return json.loads((out / "metrics" / "evaluate.json").read_text())


def test_auc(out: Path, n: int = 200, level: float = 0.95, seed: int = 42) -> dict[str, list[float]]:
    """Test ROC-AUC with its 95% lead-bootstrap interval of the two rules (evaluate gives the points rule's value only).

    `points_rule`: the rules file's score; `time_on_website_rule`: leads ranked by minutes on the website alone, the
    simple engagement rule, kept as a ranking here (a rules file could now test attribute.time_on_website too).
    """
    from pipelines.modeling import LeadBootstrap, roc_auc

    split = json.loads((out / "models" / "split.json").read_text())
    test_leads = np.asarray(split["leads"]["test"], dtype=np.int64)
    rows = pd.read_parquet(out / "features" / "snapshots.parquet", columns=["lead_id", "label", "time_on_website"])
    scores = pd.read_parquet(out / "rules" / "rule_scores.parquet", columns=["lead_id", "rule_score"])
    rows = rows.merge(scores, on="lead_id")
    rows = rows[rows["lead_id"].isin(test_leads)].reset_index(drop=True)
    y = rows["label"].to_numpy()
    out_figures = {}
    for name, column in (("points_rule", "rule_score"), ("time_on_website_rule", "time_on_website")):
        s = rows[column].fillna(0).to_numpy(dtype=float)
        ci = LeadBootstrap(rows["lead_id"].to_numpy(), seed).intervals(
            lambda i, s=s: {"auc": roc_auc(y[i], s[i])}, n, level
        )
        out_figures[name] = [roc_auc(y, s), *ci["auc"]]
    return out_figures


def headline(metrics: dict[str, Any], out: Path) -> dict[str, Any]:
    """The figures the docs quote."""
    rules = test_auc(out)
    return {
        "split": metrics.get("split"),
        "test": metrics.get("test"),
        "roc_auc": metrics["roc_auc"],
        "roc_auc_ci": [metrics.get("roc_auc_ci_low"), metrics.get("roc_auc_ci_high")],
        "pr_auc": metrics["pr_auc"],
        "ece": metrics["ece"],
        "logreg_roc_auc": metrics["logreg"]["roc_auc"],
        "rules_roc_auc": metrics["rules"]["roc_auc"],
        "rules_roc_auc_ci": rules["points_rule"][1:],
        "time_on_website_rule_roc_auc": rules["time_on_website_rule"][0],
        "time_on_website_rule_roc_auc_ci": rules["time_on_website_rule"][1:],
        "conversions_captured_at_rule_mql_volume_vs_rules": metrics.get("sql_capture_ratio_vs_rules"),
    }


def main() -> None:
    """Both runs, then OUT/summary.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Output folder (outside data/)")
    parser.add_argument("--skip-leaky", action="store_true", help="Only the honest run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = args.out.resolve()
    summary = {"honest": headline(run(out / "honest", keep_leaky=False), out / "honest")}
    if not args.skip_leaky:
        summary["leaky_for_comparison_only"] = headline(run(out / "leaky", keep_leaky=True), out / "leaky")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("summary in %s:\n%s", out / "summary.json", json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
