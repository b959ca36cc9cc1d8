"""The feature-list contract shared by the features stage (which writes it) and the model stages (which read it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Final

#: Column of the feature snapshots: the open-lead weeks a row stands for (1, or features.old_lead_keep_one_in for a
#: sampled long-open lead's row). Every model stage fits and measures with it, so figures describe all open leads.
WEIGHT: Final = "weight"
#: Key column of the feature snapshots (never a feature): the lead's account, empty without one. It defines the
#: clusters of every bootstrap interval (`pipelines.modeling.cluster_ids`): leads of one account share its state.
ACCOUNT: Final = "account_id"
#: The features stage's output files (in its --out folder), read by every model stage.
SNAPSHOTS_FILE: Final = "snapshots.parquet"
FEATURE_LIST_FILE: Final = "feature_list.json"


@dataclass(frozen=True)
class FeatureSpec:
    """One feature column: its name, kind ("numeric" or "categorical") and family."""

    name: str
    kind: str
    family: str

    def to_dict(self) -> dict[str, str]:
        """The feature_list.json entry of this feature."""
        return asdict(self)
