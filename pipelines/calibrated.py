"""The fitted calibrator and thresholds: raw score -> calibrated probability -> predicted stage and grade.

Value objects only (apply, and their JSON form); the calibrate stage fits them, `pipelines.artifacts` saves and
loads them, scoring, evaluation and the report apply them. Kept apart from the fitting so that the train stage,
which writes artifacts beside them, does not depend on the calibrate stage's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

#: The funnel stages that get a probability threshold (a subset of `vocab.STAGES`, the CRM's funnel stages).
THRESHOLD_STAGES: Final[tuple[str, ...]] = ("MQL", "SAL", "SQL")
NO_STAGE: Final = "none"
#: Grade -> the stage whose threshold the probability must reach (D: none of them).
GRADES: Final[dict[str, str | None]] = {"A": "SQL", "B": "SAL", "C": "MQL", "D": None}
_EPS: Final = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """Log-odds, clipped away from 0 and 1 so that Platt scaling stays finite."""
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    out: np.ndarray = np.log(p / (1 - p))
    return out


@dataclass(frozen=True)
class Calibrator:
    """Raw score -> probability: centred isotonic knots (linear between them, flat outside them) or Platt scaling."""

    method: Literal["isotonic", "platt"]
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw model scores."""
        raw = np.asarray(raw, dtype=float)
        calibrated: np.ndarray
        if self.method == "isotonic":
            calibrated = np.interp(raw, self.knots_x, self.knots_y)
        else:
            calibrated = 1.0 / (1.0 + np.exp(-(self.slope * logit(raw) + self.intercept)))
        return calibrated

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (no pickle: readable, diffable, safe to load)."""
        if self.method == "isotonic":
            return {"method": "isotonic", "knots_x": list(self.knots_x), "knots_y": list(self.knots_y)}
        return {"method": "platt", "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        """Inverse of `to_dict`."""
        if data["method"] == "isotonic":
            return cls("isotonic", tuple(map(float, data["knots_x"])), tuple(map(float, data["knots_y"])))
        return cls("platt", slope=float(data["slope"]), intercept=float(data["intercept"]))


@dataclass(frozen=True)
class Thresholds:
    """Per-stage thresholds on the calibrated probability, globally and optionally per segment."""

    target_stage: str
    horizon_days: int
    global_thresholds: dict[str, float]
    segment_column: str | None = None
    segment_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    def matrix(self, n: int, segments: np.ndarray | pd.Series | None = None) -> np.ndarray:
        """(n, 3) thresholds for MQL, SAL, SQL of each row (its segment's when known, else the global ones)."""
        out = np.tile(np.array([self.global_thresholds[s] for s in THRESHOLD_STAGES], dtype=float), (n, 1))
        if self.segment_column and self.segment_thresholds and segments is not None:
            values = pd.Series(np.asarray(segments, dtype=object)).astype("string").fillna("")
            for value, per_stage in self.segment_thresholds.items():
                rows = (values == value).to_numpy()
                if rows.any():
                    out[rows] = [per_stage[s] for s in THRESHOLD_STAGES]
        return out

    def stage_of(self, prob: np.ndarray, segments: np.ndarray | pd.Series | None = None) -> np.ndarray:
        """The highest stage whose threshold each probability reaches, else "none" (nurture)."""
        prob = np.asarray(prob, dtype=float)
        reached = prob[:, None] >= self.matrix(len(prob), segments)
        level = reached.sum(axis=1)  # thresholds are ordered, so reached stages form a prefix
        names = np.array([NO_STAGE, *THRESHOLD_STAGES], dtype=object)
        stages: np.ndarray = names[level]
        return stages

    def grade_of(self, prob: np.ndarray, segments: np.ndarray | pd.Series | None = None) -> np.ndarray:
        """Grade A (SQL threshold reached), B (SAL), C (MQL) or D (below MQL)."""
        stage = self.stage_of(prob, segments)
        grade_of_stage = {stage_name or NO_STAGE: grade for grade, stage_name in GRADES.items()}
        return np.array([grade_of_stage[s] for s in stage], dtype=object)

    def to_dict(self) -> dict[str, Any]:
        """JSON form of models/thresholds.json (thresholds, the grade bands, and how they were chosen)."""
        return {
            "score": f"calibrated probability of reaching {self.target_stage} within {self.horizon_days} days",
            "target_stage": self.target_stage,
            "horizon_days": self.horizon_days,
            "stages": list(THRESHOLD_STAGES),
            "rule": "predicted stage = the highest stage whose threshold the probability reaches, else 'none'",
            "grades": {
                g: (f"probability >= the {s} threshold" if s else "below the MQL threshold (nurture)")
                for g, s in GRADES.items()
            },
            "thresholds": self.global_thresholds,
            "segment_column": self.segment_column,
            "segment_thresholds": self.segment_thresholds,
            **self.report,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        """Read models/thresholds.json back (what nightly scoring does)."""
        report_keys = {"policies", "volume", "precision_min_rows", "calibration_slice", "segments"}
        return cls(
            target_stage=data["target_stage"],
            horizon_days=int(data["horizon_days"]),
            global_thresholds={s: _from_json(data["thresholds"][s]) for s in THRESHOLD_STAGES},
            segment_column=data.get("segment_column"),
            segment_thresholds={
                v: {s: _from_json(t[s]) for s in THRESHOLD_STAGES}
                for v, t in (data.get("segment_thresholds") or {}).items()
            },
            report={k: v for k, v in data.items() if k in report_keys},
        )


def _from_json(value: float | None) -> float:
    """null in JSON means "unreachable" (no lead is picked)."""
    return float("inf") if value is None else float(value)
