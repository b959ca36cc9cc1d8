"""`leadscore export`: the latest champion run's scores as a file a CRM can import, keyed by the CRM's own id.

One row per scored lead: the CRM's id, a 0-100 score (the calibrated probability x 100, rounded) beside the
probability, the grade, the predicted stage and the reasons in words; nothing else (no personal data, no features).
Field names per shape (docs/mapping.md, "Scores back into the CRM"): `generic` (crm_id, lead_score, ...) or
`salesforce` (Data Loader's update matches records on `Id`; the score fields are custom fields, API names ending
in `__c`, that an admin creates). The file is written beside its final path and renamed onto it (atomic).
`export_frame` is the pure core; the run is read through `pipelines.score.store.read_export_run`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_path
from pipelines.errors import BadInputError

log = logging.getLogger(__name__)

Shape = Literal["generic", "salesforce"]
#: Output field names per shape, in order: (our field -> the column header the CRM's import maps).
FIELDS: Final[dict[str, dict[str, str]]] = {
    "generic": {
        "crm_id": "crm_id",
        "score": "lead_score",
        "probability": "lead_score_probability",
        "grade": "lead_grade",
        "stage": "lead_predicted_stage",
        "reasons": "lead_score_reasons",
        "reasons_against": "lead_score_reasons_against",
    },
    "salesforce": {
        "crm_id": "Id",
        "score": "Lead_Score__c",
        "probability": "Lead_Score_Probability__c",
        "grade": "Lead_Grade__c",
        "stage": "Lead_Predicted_Stage__c",
        "reasons": "Lead_Score_Reasons__c",
        "reasons_against": "Lead_Score_Reasons_Against__c",
    },
}
#: Salesforce Text fields hold at most 255 characters; longer reasons are cut at the last whole reason.
SALESFORCE_TEXT_LIMIT: Final = 255


class ExportError(BadInputError):
    """The export cannot be written as asked (unknown format, no run, missing CRM ids)."""


def _join(reasons: object, limit: int | None) -> str:
    items = [str(r) for r in reasons] if isinstance(reasons, list | tuple | np.ndarray) else []
    text = "; ".join(items)
    while limit is not None and len(text) > limit and items:
        items = items[:-1]
        text = "; ".join(items)
    return text


def export_frame(scores: pd.DataFrame, shape: Shape = "generic") -> pd.DataFrame:
    """The export rows of one run's `lead_scores` rows (reasons as lists), named for the shape."""
    if shape not in FIELDS:
        raise ExportError(f"unknown export shape {shape!r}; expected one of {sorted(FIELDS)}")
    missing = scores["crm_id"].isna()
    if missing.any():
        raise ExportError(
            f"{int(missing.sum())} scored lead(s) have no CRM id (e.g. lead_id "
            f"{scores.loc[missing, 'lead_id'].head(5).tolist()}): rescore with this version"
        )
    limit = SALESFORCE_TEXT_LIMIT if shape == "salesforce" else None
    probability = scores["probability"].to_numpy(dtype=float)
    out = pd.DataFrame(
        {
            "crm_id": scores["crm_id"].astype(str).to_numpy(),
            "score": np.clip(np.rint(100 * probability), 0, 100).astype(np.int64),
            "probability": np.round(probability, 6),
            "grade": scores["grade"].astype(str).to_numpy(),
            "stage": scores["stage"].astype(str).to_numpy(),
            "reasons": [_join(r, limit) for r in scores["reasons_positive"]],
            "reasons_against": [_join(r, limit) for r in scores["reasons_negative"]],
        }
    )
    return out.rename(columns=FIELDS[shape])


def write_export(frame: pd.DataFrame, out: Path, fmt: Literal["csv", "parquet"] | None = None) -> str:
    """Write the rows as CSV (UTF-8, header) or Parquet, atomically; returns the format written."""
    out = Path(out)
    kind = fmt or ("parquet" if out.suffix.lower() in (".parquet", ".pq") else "csv")
    if kind not in ("csv", "parquet"):
        raise ExportError(f"unknown export format {kind!r}; expected csv or parquet")
    with atomic_path(out) as tmp:
        if kind == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, encoding="utf-8")
    return kind


def run_export(
    scores_url: str, tables: Any, out: Path, shape: Shape = "generic", fmt: Literal["csv", "parquet"] | None = None
) -> dict[str, Any]:
    """Export the latest champion run (see `store.read_export_run`) to `out`; returns what was written."""
    from pipelines.crm.db import make_engine
    from pipelines.score.store import read_export_run

    engine = make_engine(scores_url)
    try:
        run, scores = read_export_run(engine, tables)
    finally:
        engine.dispose()
    frame = export_frame(scores, shape)
    kind = write_export(frame, out, fmt)
    log.info(
        "exported %s leads of run %s (%s v%s, as of %s) to %s",
        f"{len(frame):,}",
        run["run_id"],
        run.get("model_name"),
        run.get("model_version"),
        run["as_of"],
        out,
    )
    return {
        "rows": len(frame),
        "run_id": run["run_id"],
        "as_of": run["as_of"],
        "model_name": run.get("model_name"),
        "model_version": run.get("model_version"),
        "format": kind,
        "shape": shape,
    }
