"""Extra lead attributes: columns of a user's own CRM that the five-table contract has no place for.

A mapped CRM may pass lead attributes through as features (numeric or categorical), e.g. "time spent on the
website" or "current occupation". They live in one extra table, `lead_attributes` (lead_id plus one column per
attribute), beside the five CRM tables; its kind per column is its dtype: numbers are numeric features,
text is categorical. The demo CRM has no such table.
"""

from __future__ import annotations

from typing import Final, Literal

import pandas as pd

from pipelines.crm.db import check_identifier
from pipelines.errors import CrmDataError

ATTRIBUTES_TABLE: Final = "lead_attributes"
ATTRIBUTES_KEY: Final = "lead_id"
#: The CRM's own lead ids (lead_id, crm_id as text) beside the integer key, written by `leadscore import`.
CRM_IDS_TABLE: Final = "lead_crm_ids"
#: A one-row table saying how the import made its labels (read into the snapshot manifest by the extract stage).
IMPORT_TABLE: Final = "crm_import"
AttributeKind = Literal["numeric", "categorical"]


def attribute_kind(values: pd.Series) -> AttributeKind:
    """numeric for number (or boolean) columns, categorical for everything else."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    return "categorical"


def canonical_attributes(frame: pd.DataFrame, lead_ids: pd.Series) -> pd.DataFrame:
    """The attributes table checked (one row per known lead, identifier column names) with canonical dtypes.

    Numeric columns become float64, the rest pandas strings with missing values as NA.
    """
    if ATTRIBUTES_KEY not in frame.columns:
        raise CrmDataError(f"table '{ATTRIBUTES_TABLE}' is missing column '{ATTRIBUTES_KEY}'")
    for column in frame.columns:
        try:
            check_identifier(str(column), "column")
        except ValueError as exc:
            raise CrmDataError(f"table '{ATTRIBUTES_TABLE}': {exc}") from None
    out = frame.reset_index(drop=True).copy()
    ids = pd.to_numeric(out[ATTRIBUTES_KEY], errors="coerce")
    if ids.isna().any():
        raise CrmDataError(
            f"table '{ATTRIBUTES_TABLE}', column '{ATTRIBUTES_KEY}': missing or non-integer ids; "
            f"e.g. rows {ids[ids.isna()].index[:5].tolist()}"
        )
    out[ATTRIBUTES_KEY] = ids.astype("int64")
    dupes = out[ATTRIBUTES_KEY].duplicated()
    if dupes.any():
        raise CrmDataError(
            f"table '{ATTRIBUTES_TABLE}', column '{ATTRIBUTES_KEY}': ids must be unique; "
            f"e.g. lead_id={out.loc[dupes, ATTRIBUTES_KEY].head(5).tolist()}"
        )
    orphan = ~out[ATTRIBUTES_KEY].isin(lead_ids)
    if orphan.any():
        examples = out.loc[orphan, ATTRIBUTES_KEY].head(5).tolist()
        raise CrmDataError(
            f"table '{ATTRIBUTES_TABLE}', column '{ATTRIBUTES_KEY}': {int(orphan.sum())} row(s) "
            f"refer to no row of 'leads.lead_id'; e.g. {examples}"
        )
    for column in out.columns.drop(ATTRIBUTES_KEY):
        if attribute_kind(out[column]) == "numeric":
            out[column] = out[column].astype("float64")
        else:
            out[column] = out[column].astype("string")
    return out
