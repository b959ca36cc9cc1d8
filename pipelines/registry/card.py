"""The model card of a registered version (Markdown): what it predicts, on which data, how well, how it is used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Headline metrics of metrics/evaluate.json shown with their bootstrap intervals, and what they mean.
HEADLINE: tuple[tuple[str, str], ...] = (
    ("roc_auc", "ROC-AUC (ranking)"),
    ("pr_auc", "PR-AUC (average precision)"),
    ("brier", "Brier score (lower is better)"),
    ("ece", "Expected calibration error"),
    ("sql_capture_ratio_vs_rules", "Conversions captured vs the rule MQLs at equal volume"),
    ("roc_auc_vs_oracle", "ROC-AUC relative to the demo oracle"),
)

KNOWN_LIMITS: tuple[str, ...] = (
    "Scores are probabilities for leads that are open at the snapshot; leads already at or past the target stage "
    "are out of scope.",
    "Trained on the CRM history in the data window above: a change in marketing mix, campaigns, lead sources or "
    "the CRM's stage definitions makes the scores drift; compare the live score distribution and the conversion "
    "rate per grade with the test figures before trusting thresholds.",
    "Thresholds were chosen on the calibration slice for the volumes and precision of that period; a change of "
    "team capacity needs new thresholds (re-run the calibrate stage), not a new model.",
    "Reasons are per-lead SHAP attributions of the booster's log-odds grouped by feature family; they explain the "
    "model, not causation, and can name a lack of activity as a negative reason.",
    "Categories unseen in training (new campaign ids, industries) are treated as missing.",
    "Leads with little history (new leads, no activity) get scores driven by fit and source features only.",
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


def baseline_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The card's comparison with the baselines: on the calibration slice (before the test) and on the test slice.
    A model that loses says so in bold: a team should keep the rule, or the logistic regression, then."""
    validation = metrics.get("validation") or {}
    test_rows = [
        ("this model", metrics.get("roc_auc")),
        ("logistic regression", (metrics.get("logreg") or {}).get("roc_auc")),
        (
            f"best rule ({metrics['best_rule']})" if metrics.get("best_rule") else "history rule",
            metrics.get("best_rule_roc_auc", (metrics.get("rules") or {}).get("roc_auc")),
        ),
    ]
    lines = ["", "## Against the baselines", ""]
    if validation:
        beats = bool(validation.get("beats_best_baseline"))
        verdict = "beats the best baseline" if beats else "**does NOT beat the best baseline**"
        lines += [
            f"On the calibration slice (before the test slice is looked at) the model {verdict}: ROC-AUC "
            f"{_fmt(validation.get('model_roc_auc'))} vs {validation.get('best_baseline')} "
            f"{_fmt(validation.get('best_baseline_roc_auc'))}"
            + ("" if beats else "; keep the baseline's scores until a model beats them")
            + ".",
            "",
        ]
    lines += ["| test-slice ROC-AUC | value |", "| --- | ---: |"]
    lines += [f"| {label} | {_fmt(value)} |" for label, value in test_rows if value is not None]
    return lines


def model_card(
    name: str,
    version: str,
    run_id: str,
    lineage: Mapping[str, Any],
    spec: Mapping[str, Any],
    split: Mapping[str, Any],
    metrics: Mapping[str, Any],
    thresholds: Mapping[str, Any],
    gate: Mapping[str, Any] | None,
    registration: Mapping[str, Any] | None = None,
) -> str:
    """Markdown of the card. Inputs are the JSON forms of the run's artifacts (all feature-level, no personal data);
    `registration` ({"kind", "reason"}) says whether the version could become champion on its own."""
    b = split.get("boundaries", {})
    rows, positives = split.get("rows", {}), split.get("positives", {})
    lines = [
        f"# Model card: {name} version {version}",
        "",
        f"MLflow run `{run_id}`; code commit `{lineage.get('commit', 'unknown')}`"
        f"{' (uncommitted changes)' if lineage.get('dirty') == 'true' else ''}; feature list "
        f"`{spec.get('feature_list_version')}` ({len(spec.get('features', []))} features).",
        "",
        "## What it predicts",
        "",
        f"The calibrated probability that an open lead reaches **{spec.get('target_stage')}** (or a later stage) "
        f"within **{spec.get('horizon_days')} days** of the scoring date, with the predicted stage, a grade (A-D) and "
        "the top positive and negative reasons in business words.",
        "",
        (
            "## Data window (out-of-time split by lead creation date)"
            if split.get("note")
            else "## Data window (out-of-time split by snapshot date)"
        )
        if split.get("kind") != "random"
        else "## Data (leads-only: one snapshot, stratified random split by lead, NOT an out-of-time test)",
        "",
        *([f"Split: {split['note']}.", ""] if split.get("note") else []),
        "| slice | first snapshot | last snapshot | rows | positives |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for s in ("fit", "valid", "calibration", "test"):
        if s == "valid" and s not in b:  # splits since the purged CV have no early-stopping slice
            continue
        first, last = (b.get(s) or ["?", "?"])[:2]
        lines.append(f"| {s} | {str(first)[:10]} | {str(last)[:10]} | {rows.get(s, 0):,} | {positives.get(s, 0):,} |")
    lines += ["", f"Split kind: {split.get('kind')}; gap between slices: {split.get('gap_days')} days."]
    production = split.get("production") or {}
    if production:
        fit, cal = production.get("fit") or ["?", "?"], production.get("calibration") or ["?", "?"]
        if split.get("kind") == "random":
            window = f"refitted on the {fit[0]} slices and recalibrated on the {cal[0]} slice"
        else:
            window = (
                f"refitted on every labelled snapshot from {str(fit[0])[:10]} to {str(fit[1])[:10]} and "
                f"recalibrated (thresholds too) on the latest complete weeks, {str(cal[0])[:10]} to "
                f"{str(cal[1])[:10]}"
            )
        lines += [
            "",
            "**What is registered.** The test-slice figures below measure the *procedure*: a model fitted "
            "on the fit slice, calibrated on the calibration slice and tested on later weeks it never saw. "
            f"The version registered here is the same procedure {window}, with the same number of boosting "
            "rounds, so it is fresher than the model that was measured; the promotion gate compares the "
            "measured (evaluation) models.",
        ]
    lines += ["", "## Test-slice metrics (bootstrap over leads)", "", "| metric | value | CI |", "| --- | ---: | --- |"]
    for key, label in HEADLINE:
        if key in metrics:
            lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
            ci = f"[{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None else "n/a"
            lines.append(f"| {label} | {_fmt(metrics[key])} | {ci} |")
    test = metrics.get("test") or {}
    if test:
        lines += [
            "",
            f"Test slice: {_fmt(test.get('rows'))} rows of {_fmt(test.get('leads'))} leads, "
            f"{_fmt(test.get('positives'))} positives, base rate {_fmt(test.get('base_rate'))}.",
        ]
    lines += baseline_lines(metrics)
    lines += [
        "",
        "## Threshold policies",
        "",
        "Predicted stage = the highest stage whose threshold the probability reaches; grade A = SQL, B = SAL, "
        "C = MQL, D = below MQL (nurture).",
        "",
        f"Volumes count {'new hand-offs' if thresholds.get('volume') == 'new' else 'the standing list'}.",
        "",
        "| stage | policy | threshold | test precision | test leads/week on the list | test new/week |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    policies = thresholds.get("policies") or {}
    stage_stats = metrics.get("stages") or {}
    for stage, value in (thresholds.get("thresholds") or {}).items():
        policy = policies.get(stage) or {}
        detail = ", ".join(f"{k}={v}" for k, v in policy.items() if k != "policy")
        st = stage_stats.get(stage) or {}
        lines.append(
            f"| {stage} | {policy.get('policy', 'n/a')}{f' ({detail})' if detail else ''} | "
            f"{_fmt(value)} | {_fmt(st.get('precision'))} | {_fmt(st.get('leads_per_week'))} | "
            f"{_fmt(st.get('new_per_week'))} |"
        )
    if thresholds.get("segment_column"):
        lines += ["", f"Per-segment thresholds on `{thresholds['segment_column']}`, shrunk toward the global ones."]
    lines += ["", "## Promotion gate", ""]
    if registration:
        kind = registration.get("kind")
        lines += [
            f"Registration: **{kind}** ({registration.get('reason')})."
            + (
                ""
                if kind == "clean"
                else " A registration from `dvc exp run` or from uncommitted changes "
                "stays challenger whatever the gate says; `leadscore promote` makes it champion deliberately."
            ),
            "",
        ]
    if gate:
        lines.append(f"Passed: **{gate.get('passed')}**.")
        lines += [f"- {r}" for r in gate.get("reasons", [])]
    else:
        lines.append("Not evaluated.")
    lines += ["", "## Known limits", "", *[f"- {text}" for text in KNOWN_LIMITS], ""]
    return "\n".join(lines)
