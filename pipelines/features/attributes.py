"""Extra lead attributes as features: the `lead_attributes` table of a mapped CRM, looked up per (lead, t).

Attributes are treated like the other creation-time fields: known from the lead's creation on, the same at every
snapshot. Numeric columns become float32 features, text columns categoricals whose levels are the sorted distinct
values of the table (LightGBM stores them with the model). The demo CRM has no attributes: nothing changes there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.crm.attributes import ATTRIBUTES_KEY, ATTRIBUTES_TABLE, attribute_kind
from pipelines.features import timeline as tl
from pipelines.features.spec import FeatureSpec

FAMILY = "attribute"


def attribute_specs(tables: Mapping[str, pd.DataFrame]) -> list[FeatureSpec]:
    """One spec per column of the attributes table (none when the CRM has no such table)."""
    frame = tables.get(ATTRIBUTES_TABLE)
    if frame is None:
        return []
    return [FeatureSpec(str(c), attribute_kind(frame[c]), FAMILY) for c in frame.columns if c != ATTRIBUTES_KEY]


@dataclass(frozen=True)
class LeadAttributes:
    """Attribute columns aligned with lead positions (missing for leads the table lacks)."""

    columns: dict[str, np.ndarray | pd.Categorical]

    @classmethod
    def from_tables(cls, tables: Mapping[str, pd.DataFrame], lead_ids: np.ndarray) -> LeadAttributes:
        """Align the attributes table with `lead_ids` (position -> lead_id)."""
        frame = tables.get(ATTRIBUTES_TABLE)
        if frame is None:
            return cls(columns={})
        row = tl.index_of(frame[ATTRIBUTES_KEY].to_numpy(dtype=np.int64), lead_ids)
        found = row >= 0
        columns: dict[str, np.ndarray | pd.Categorical] = {}
        for spec in attribute_specs(tables):
            values = frame[spec.name]
            if spec.kind == "numeric":
                out = np.full(len(lead_ids), np.nan, dtype=np.float32)
                out[found] = values.to_numpy(dtype=np.float32, na_value=np.nan)[row[found]]
                columns[spec.name] = out
            else:
                text = values.astype("string")
                levels = sorted(text.dropna().unique().tolist())
                codes = np.full(len(lead_ids), -1, dtype=np.int16 if len(levels) < 32_000 else np.int32)
                codes[found] = pd.Categorical(text, categories=levels).codes[row[found]]
                columns[spec.name] = pd.Categorical.from_codes(codes.astype(np.int64), categories=pd.Index(levels))
        return cls(columns=columns)

    def take(self, positions: np.ndarray) -> dict[str, np.ndarray | pd.Categorical]:
        """The attribute columns of the given lead positions."""
        return {name: values[positions] for name, values in self.columns.items()}
