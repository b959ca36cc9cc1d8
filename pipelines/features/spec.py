"""The feature-list contract shared by the features stage (which writes it) and the model stages (which read it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FeatureSpec:
    """One feature column: its name, kind ("numeric" or "categorical") and family."""

    name: str
    kind: str
    family: str

    def to_dict(self) -> dict[str, str]:
        """The feature_list.json entry of this feature."""
        return asdict(self)
