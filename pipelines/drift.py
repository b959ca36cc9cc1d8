"""Population stability of the score and the top features: the training reference and the PSI of a scored run.

The register stage bins the training rows (quantile edges for numbers, the training levels for categories, one
bin each for missing and for unseen levels) and ships the bins with the model as `drift_reference.json`.
Nightly scoring counts its rows into the same bins chunk by chunk (memory does not grow with the table) and
reports PSI = sum((a - e) * ln(a / e)) per column: under 0.1 stable, 0.1-0.25 a shift worth a look, above 0.25
a population the model was not trained on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from pipelines.modeling import weighted_quantiles

#: Column name of the calibrated probability in a reference.
SCORE: Final = "score"
#: Floor on bin shares, so an empty bin does not make the PSI infinite.
_EPS: Final = 1e-4


@dataclass(frozen=True)
class Bins:
    """One column's bins and the training share of each.

    numeric: `edges` are the inner cut points (bin i holds edges[i-1] < x <= edges[i]), then a missing bin;
    categorical: one bin per training level, then unseen levels, then missing.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    edges: tuple[float, ...] = ()
    levels: tuple[str, ...] = ()
    expected: tuple[float, ...] = field(default=())

    @property
    def n_bins(self) -> int:
        """Number of bins, missing (and unseen) included."""
        return len(self.edges) + 2 if self.kind == "numeric" else len(self.levels) + 2

    def counts(self, values: pd.Series | np.ndarray) -> np.ndarray:
        """How many of `values` fall in each bin."""
        return self.weighted_counts(values, None).astype(np.int64)

    def weighted_counts(self, values: pd.Series | np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        """The summed weight of `values` in each bin (a count when `weight` is None)."""
        series = pd.Series(values)
        w = np.ones(len(series)) if weight is None else np.asarray(weight, dtype=float)
        if self.kind == "numeric":
            x = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
            missing = np.isnan(x)
            index = np.searchsorted(np.asarray(self.edges, dtype=float), x[~missing], side="left")
            counts = np.bincount(index, weights=w[~missing], minlength=len(self.edges) + 1)
            return np.concatenate([counts, [w[missing].sum()]])
        text = series.astype(object)
        missing = text.isna().to_numpy()
        codes = pd.Index(list(self.levels)).get_indexer(pd.Index(text[~missing].astype(str)))
        present = w[~missing]
        known = np.bincount(codes[codes >= 0], weights=present[codes >= 0], minlength=len(self.levels))
        return np.concatenate([known, [present[codes < 0].sum(), w[missing].sum()]])


def psi(expected: Sequence[float] | np.ndarray, actual_counts: Sequence[float] | np.ndarray) -> float:
    """Population stability index of observed counts against expected shares (NaN when nothing was observed)."""
    e = np.maximum(np.asarray(expected, dtype=float), _EPS)
    counts = np.asarray(actual_counts, dtype=float)
    if counts.sum() <= 0:
        return float("nan")
    a = np.maximum(counts / counts.sum(), _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_bins(name: str, values: pd.Series | np.ndarray, n_bins: int, weight: np.ndarray | None = None) -> Bins:
    """Quantile bins of a numeric column (ties merged, so a mostly-zero count gets few bins); rows count `weight`."""
    x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    present = ~np.isnan(x)
    finite = x[present]
    edges: tuple[float, ...] = ()
    if len(finite):
        inner = weighted_quantiles(
            finite, None if weight is None else np.asarray(weight)[present], np.linspace(0, 1, n_bins + 1)[1:-1]
        )
        edges = tuple(float(v) for v in np.unique(inner) if v < finite.max())
    bins = Bins(name, "numeric", edges=edges)
    counts = bins.weighted_counts(x, weight)
    return Bins(name, "numeric", edges=edges, expected=tuple((counts / max(counts.sum(), 1)).tolist()))


def categorical_bins(
    name: str, values: pd.Series, levels: Sequence[str] | None = None, weight: np.ndarray | None = None
) -> Bins:
    """One bin per level (the given ones, else those seen), plus unseen and missing; rows count `weight`."""
    text = pd.Series(values).astype(object)
    if levels is None:
        levels = sorted(str(v) for v in text.dropna().unique())
    bins = Bins(name, "categorical", levels=tuple(str(v) for v in levels))
    counts = bins.weighted_counts(text, weight)
    return Bins(name, "categorical", levels=bins.levels, expected=tuple((counts / max(counts.sum(), 1)).tolist()))


@dataclass(frozen=True)
class DriftReference:
    """The training population's bins: the score first, then the most important features."""

    bins: tuple[Bins, ...]
    rows: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"rows": self.rows, "source": self.source, "bins": [asdict(b) for b in self.bins]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReference:
        """Inverse of `to_dict`."""
        bins = tuple(
            Bins(
                name=b["name"],
                kind=b["kind"],
                edges=tuple(b["edges"]),
                levels=tuple(b["levels"]),
                expected=tuple(b["expected"]),
            )
            for b in data["bins"]
        )
        return cls(bins=bins, rows=int(data["rows"]), source=str(data["source"]))

    @property
    def features(self) -> list[str]:
        """The feature columns tracked (the score excluded)."""
        return [b.name for b in self.bins if b.name != SCORE]


def build_reference(
    frame: pd.DataFrame,
    score: np.ndarray,
    kinds: Mapping[str, str],
    n_bins: int,
    source: str,
    levels: Mapping[str, Sequence[str]] | None = None,
    weight: np.ndarray | None = None,
) -> DriftReference:
    """Bins of the score and of each column in `kinds` (name -> 'numeric' | 'categorical') over the rows given,
    each row counting `weight` (open-lead weeks)."""
    levels = levels or {}
    bins = [numeric_bins(SCORE, score, n_bins, weight)]
    for name, kind in kinds.items():
        if kind == "categorical":
            bins.append(categorical_bins(name, frame[name], levels.get(name), weight))
        else:
            bins.append(numeric_bins(name, frame[name], n_bins, weight))
    return DriftReference(bins=tuple(bins), rows=len(frame), source=source)


def write_reference(reference: DriftReference, path: Path) -> None:
    """Save as JSON (a model artifact)."""
    path.write_text(json.dumps(reference.to_dict(), indent=1) + "\n")


def read_reference(path: Path) -> DriftReference:
    """Load a reference written by `write_reference`."""
    return DriftReference.from_dict(json.loads(Path(path).read_text()))


class DriftCounter:
    """Counts of a scored population in the reference's bins, added chunk by chunk."""

    def __init__(self, reference: DriftReference) -> None:
        self.reference = reference
        self.counts = {b.name: np.zeros(b.n_bins, dtype=np.int64) for b in reference.bins}

    def add(self, features: pd.DataFrame, score: np.ndarray) -> None:
        """Count one chunk: its feature columns and its calibrated probabilities."""
        for b in self.reference.bins:
            values = score if b.name == SCORE else features[b.name]
            self.counts[b.name] += b.counts(values)

    def merge(self, other: DriftCounter) -> None:
        """Add another counter's counts (same reference), e.g. from a parallel worker."""
        for name, counts in other.counts.items():
            self.counts[name] += counts

    def psi(self) -> dict[str, float]:
        """PSI per column (the score under `score`), NaN-free: columns never observed are left out."""
        out = {}
        for b in self.reference.bins:
            value = psi(b.expected, self.counts[b.name])
            if not math.isnan(value):
                out[b.name] = round(value, 6)
        return out
