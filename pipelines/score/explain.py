"""One lead's score, stage, grade and reasons on demand, from the same registered model nightly scoring uses.

Nightly scoring writes reasons only for the leads handed to a team (`score.reasons_for: handed`); anyone else's
reasons come from here: the lead's account group is read from the CRM, its features are built as of the given
time by the same `features_as_of`, and the model (by its registry name, e.g. the champion) scores it with reasons.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from pipelines.config import Params
from pipelines.crm.db import display_url, make_engine, read_crm_ids
from pipelines.errors import BadInputError
from pipelines.registry.model import conform
from pipelines.rules import load_rules
from pipelines.score import reader
from pipelines.score.core import check_compatible, chunk_features
from pipelines.score.model import load_scoring_model

log = logging.getLogger(__name__)


class UnknownLeadError(BadInputError):
    """No lead has this id (nor, in an imported CRM, this CRM id)."""


class LeadNotScoredError(BadInputError):
    """The lead exists but is not open at the as-of time, so scoring does not score it."""


def lead_id_of(lead: str, crm_ids: pd.Series | None) -> int | None:
    """The integer lead id of `lead`: an imported CRM's own id first (lead_crm_ids), else the integer itself."""
    if crm_ids is not None:
        match = crm_ids.index[crm_ids.to_numpy(dtype=object) == lead]
        if len(match):
            return int(match[0])
    try:
        return int(lead)
    except ValueError:
        return None


def explain_lead(
    crm_url: str, lead: str, as_of: pd.Timestamp, params: Params, model_uri: str, tracking_uri: str | None
) -> dict[str, Any]:
    """Score one lead as of `as_of` with reasons; UnknownLeadError or LeadNotScoredError (exit 2) otherwise."""
    from pipelines.registry.server import configure_tracking, resolve_tracking_uri

    engine = make_engine(crm_url)
    try:
        lead_id = lead_id_of(lead, read_crm_ids(engine))
        tables = None
        if lead_id is not None:
            with engine.connect() as conn, conn.begin():
                tables = reader.read_group(conn, lead_id)
    finally:
        engine.dispose()
    if tables is None or lead_id is None:
        raise UnknownLeadError(f"no lead {lead!r} in table 'leads', column 'lead_id' of {display_url(crm_url)}")
    features, rules = chunk_features(tables, as_of, params.features, load_rules(params.rules.file, params.features.icp))
    mine = (features["lead_id"].to_numpy() == lead_id).nonzero()[0]
    if len(mine) == 0:
        raise LeadNotScoredError(
            f"lead {lead_id} is not open at {as_of:%Y-%m-%d %H:%M:%S}Z (closed, converted or created later): "
            "nightly scoring does not score it; pass an earlier --as-of"
        )
    model = load_scoring_model(model_uri, configure_tracking(resolve_tracking_uri(tracking_uri)))
    check_compatible(model, params.features)
    row = features.iloc[mine].reset_index(drop=True)
    scored = model.predict(conform(row, model.schema)).iloc[0]
    return {
        "lead_id": lead_id,
        "as_of": as_of,
        "model_uri": model.pinned_uri,
        "probability": float(scored["probability"]),
        "stage": str(scored["stage"]),
        "grade": str(scored["grade"]),
        "rule_mql": bool(rules["rule_mql"].iloc[int(mine[0])]),
        "reasons_positive": [str(r) for r in scored["reasons_positive"]],
        "reasons_negative": [str(r) for r in scored["reasons_negative"]],
    }
