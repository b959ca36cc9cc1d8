"""The promotion gates. Absolute (`absolute_gate`, every version, the first included): may this version be champion
at all? Relative (`compare`): may a challenger replace the champion? Both decided on the out-of-time test rows.

Paired bootstrap over accounts (the two models score the same resampled rows, so the noise shared by both cancels):
the challenger passes if the lower bound of the interval of AUC(challenger) - AUC(champion) is at least
-`auc_margin`, its ECE is at most `max_ece`, and its ECE exceeds the champion's by at most `max_ece_increase`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from pipelines.config import GateParams
from pipelines.modeling import ClusterBootstrap, expected_calibration_error


@dataclass(frozen=True)
class GateResult:
    """The decision, why, and the figures it rests on."""

    passed: bool
    reasons: list[str]
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def first_model() -> GateResult:
    """No champion yet: nothing to compare with, so the relative gate passes (the absolute gate still decides)."""
    return GateResult(passed=True, reasons=["no champion yet: nothing to compare with"])


def _auc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    return float(roc_auc_score(y, p, sample_weight=w)) if 0 < y.sum() < len(y) else float("nan")


def compare(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    cluster_id: np.ndarray,
    gate: GateParams,
    ece_bins: int,
    ece_strategy: str,
    seed: int,
    weight: np.ndarray | None = None,
) -> GateResult:
    """Apply the gate to the two models' calibrated probabilities on the same rows (each row counting `weight`
    open-lead weeks); the paired bootstrap resamples `cluster_id` (accounts: `modeling.cluster_ids`)."""
    y = np.asarray(y, dtype=np.int64)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    challenger, champion = np.asarray(challenger, dtype=float), np.asarray(champion, dtype=float)
    if not len(y) == len(challenger) == len(champion) == len(cluster_id):
        raise ValueError("labels, both models' probabilities and cluster ids must align")
    if not 0 < y.sum() < len(y):
        return GateResult(False, ["the test rows hold only one class: AUC is undefined, nothing to compare"])

    def statistic(idx: np.ndarray) -> dict[str, float]:
        yi, wi = y[idx], w[idx]
        return {"auc_delta": _auc(yi, challenger[idx], wi) - _auc(yi, champion[idx], wi)}

    low, high = ClusterBootstrap(np.asarray(cluster_id), seed).intervals(statistic, gate.bootstrap, gate.ci_level)[
        "auc_delta"
    ]
    figures: dict[str, Any] = {
        "rows": len(y),
        "positives": int(y.sum()),
        "auc_challenger": _auc(y, challenger, w),
        "auc_champion": _auc(y, champion, w),
        "ece_challenger": expected_calibration_error(y, challenger, ece_bins, ece_strategy, w),
        "ece_champion": expected_calibration_error(y, champion, ece_bins, ece_strategy, w),
        "bootstrap": gate.bootstrap,
        "ci_level": gate.ci_level,
    }
    figures["auc_delta"] = figures["auc_challenger"] - figures["auc_champion"]
    figures["auc_delta_ci"] = [low, high]
    figures["ece_delta"] = figures["ece_challenger"] - figures["ece_champion"]
    reasons, passed = [], True
    if not np.isfinite(low) or low < -gate.auc_margin:
        passed = False
        reasons.append(
            f"AUC may be worse than the champion's beyond the margin: delta {figures['auc_delta']:+.4f}, "
            f"{gate.ci_level:.0%} CI [{low:+.4f}, {high:+.4f}], lower bound below -{gate.auc_margin}"
        )
    else:
        reasons.append(
            f"AUC not worse beyond the margin: delta {figures['auc_delta']:+.4f}, CI lower bound "
            f"{low:+.4f} >= -{gate.auc_margin}"
        )
    if not figures["ece_challenger"] <= gate.max_ece:
        passed = False
        reasons.append(f"ECE {figures['ece_challenger']:.4f} above the bound {gate.max_ece}")
    if not figures["ece_delta"] <= gate.max_ece_increase:
        passed = False
        reasons.append(
            f"ECE rises by {figures['ece_delta']:+.4f} over the champion's {figures['ece_champion']:.4f} "
            f"(allowed +{gate.max_ece_increase})"
        )
    if passed:
        reasons.append(f"ECE {figures['ece_challenger']:.4f} within bounds (champion {figures['ece_champion']:.4f})")
    return GateResult(passed=passed, reasons=reasons, figures=figures)


def best_baseline(metrics: Mapping[str, Any]) -> tuple[str | None, float]:
    """The best baseline on the test rows of metrics/evaluate.json: the logistic regression or the best rule (picked
    on the calibration slice), whichever has the higher ROC-AUC; (None, NaN) when the metrics hold neither."""
    candidates: dict[str, float] = {}
    logreg = (metrics.get("logreg") or {}).get("roc_auc")
    if isinstance(logreg, int | float):
        candidates["logistic regression"] = float(logreg)
    rule, rule_auc = metrics.get("best_rule"), metrics.get("best_rule_roc_auc")
    if not isinstance(rule_auc, int | float):  # metrics without rule variants: the history's rule
        rule, rule_auc = "history", (metrics.get("rules") or {}).get("roc_auc")
    if isinstance(rule_auc, int | float):
        candidates[f"rule {rule}"] = float(rule_auc)
    finite = {k: v for k, v in candidates.items() if np.isfinite(v)}
    if not finite:
        return None, float("nan")
    name = max(finite, key=finite.__getitem__)
    return name, finite[name]


def absolute_gate(metrics: Mapping[str, Any], rounds: int, constant: bool, gate: GateParams) -> GateResult:
    """May this version become champion at all, whatever the champion? Checked for every version, the first too.

    `metrics` is metrics/evaluate.json (the evaluation model on the out-of-time test rows), `rounds` the evaluation
    booster's boosting rounds and `constant` whether it scores every row alike. It passes when its ROC-AUC beats the
    best baseline's by more than `baseline_auc_margin`, its ECE is at most `max_ece`, it has at least `min_rounds`
    rounds and is not constant: a model that loses to logistic regression or to a points rule, or cannot rank, must
    not replace the scores a team works from.
    """
    auc, ece = metrics.get("roc_auc"), metrics.get("ece")
    auc = float(auc) if isinstance(auc, int | float) else float("nan")
    ece = float(ece) if isinstance(ece, int | float) else float("nan")
    baseline, baseline_auc = best_baseline(metrics)
    figures: dict[str, Any] = {
        "roc_auc": auc,
        "best_baseline": baseline,
        "best_baseline_roc_auc": baseline_auc,
        "baseline_auc_margin": gate.baseline_auc_margin,
        "ece": ece,
        "max_ece": gate.max_ece,
        "rounds": rounds,
        "min_rounds": gate.min_rounds,
        "constant_model": constant,
    }
    failed: list[str] = []
    if baseline is None:
        failed.append("no baseline ROC-AUC in the metrics to beat")
    elif not auc > baseline_auc + gate.baseline_auc_margin:
        failed.append(
            f"test ROC-AUC {auc:.4f} does not beat the best baseline ({baseline}, {baseline_auc:.4f})"
            + (f" by more than {gate.baseline_auc_margin}" if gate.baseline_auc_margin else "")
        )
    if not ece <= gate.max_ece:
        failed.append(f"test ECE {ece:.4f} above max_ece {gate.max_ece}")
    if constant:
        failed.append("constant model (every lead gets the same score)")
    if rounds < gate.min_rounds:
        failed.append(f"{rounds} boosting round(s), fewer than min_rounds {gate.min_rounds}")
    if failed:
        return GateResult(False, [f"absolute gate failed: {r}" for r in failed], figures)
    return GateResult(
        True,
        [
            f"absolute gate passed: test ROC-AUC {auc:.4f} beats the best baseline ({baseline}, {baseline_auc:.4f}); "
            f"ECE {ece:.4f} <= {gate.max_ece}; {rounds} rounds"
        ],
        figures,
    )
