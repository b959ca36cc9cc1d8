"""The feature-list contract shared by the features stage (which writes it) and the model stages (which read it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureSpec:
    """One feature column: its name, kind ("numeric" or "categorical") and family."""

    name: str
    kind: str
    family: str
