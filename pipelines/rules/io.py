"""The rules' files: reading a rules file and the variants of the params, the raw tables and snapshot keys the
rules stage scores, and writing its Parquet output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from pipelines.atomic import atomic_path
from pipelines.config import IcpParams, RulesParams, read_yaml
from pipelines.crm.schema import CrmDataError
from pipelines.extract import read_extra_tables_of, read_manifest, read_snapshot, read_snapshot_table
from pipelines.rules.evaluation import INPUT_TABLES
from pipelines.rules.schema import RulesError, RuleSet, parse_rules
from pipelines.rules.variants import derive_rules


def load_rules(path: str | Path, icp: IcpParams) -> RuleSet:
    """Read and validate a rules file, its `{icp: KEY}` values taken from `icp` (the params' features.icp: one
    profile for rules, features and the demo's history); `check_rules_against_crm` does the checks needing data."""
    path = Path(path)
    return parse_rules(read_yaml(path, "rules file", RulesError), str(path), icp)


def load_variants(params: RulesParams, icp: IcpParams) -> dict[str, RuleSet]:
    """The rules of every variant of `params.variants`: its own file, or `params.file` decayed and/or windowed."""
    base: RuleSet | None = None
    out: dict[str, RuleSet] = {}
    for name, variant in params.variants.items():
        if variant.file is not None:
            out[name] = load_rules(variant.file, icp)
            continue
        base = base or load_rules(params.file, icp)
        out[name] = derive_rules(base, variant.half_life_days, variant.within_days)
    return out


#: The raw columns the rules read (stage_history only because the snapshot reader wants every table; it is dropped).
RAW_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "campaigns": ("campaign_id", "channel"),
    "accounts": ("account_id", "industry", "employee_count", "annual_revenue", "country", "region"),
    "leads": (
        "lead_id",
        "account_id",
        "created_at",
        "email",
        "job_title",
        "lead_source",
        "campaign_id",
        "country",
        "budget_range",
        "purchase_timeframe",
    ),
    "activities": ("lead_id", "occurred_at", "activity_type"),
    "stage_history": ("stage_history_id",),
}


def read_raw_tables(raw: Path, lead_ids: np.ndarray | None = None) -> dict[str, pd.DataFrame]:
    """The tables the rules need from the extract stage's snapshot folder (validated when it was written).

    With `lead_ids` (the leads of the snapshot keys scored), only those leads, their accounts and their
    activities are kept, read batch by batch: memory follows the leads scored (`features.sample_leads`), not the
    CRM. The scores are the same: every rule looks at one lead, its account and its own activities.
    """
    if lead_ids is None:
        tables, _ = read_snapshot(raw, RAW_COLUMNS, {"activities": ("activity_type",)})
        return {name: tables[name] for name in (*INPUT_TABLES, "lead_attributes") if name in tables}
    manifest = read_manifest(raw)
    leads = read_snapshot_table(raw, manifest, "leads", RAW_COLUMNS["leads"], where=("lead_id", lead_ids))
    accounts = leads["account_id"].dropna().to_numpy(dtype=np.int64)
    out = {
        "campaigns": read_snapshot_table(raw, manifest, "campaigns", RAW_COLUMNS["campaigns"]),
        "accounts": read_snapshot_table(
            raw, manifest, "accounts", RAW_COLUMNS["accounts"], where=("account_id", accounts)
        ),
        "leads": leads,
        "activities": read_snapshot_table(
            raw, manifest, "activities", RAW_COLUMNS["activities"], ("activity_type",), where=("lead_id", lead_ids)
        ),
    }
    out.update(read_extra_tables_of(raw, manifest))
    return out


def read_snapshot_keys(path: Path) -> pd.DataFrame:
    """The (lead_id, snapshot_at) pairs to score from the features stage's Parquet file (no other column is read)."""
    if not Path(path).exists():
        raise CrmDataError(f"snapshots file {path} not found (run the features stage first)")
    try:
        return pd.read_parquet(path, columns=["lead_id", "snapshot_at"])
    except (KeyError, ValueError, OSError) as exc:
        raise CrmDataError(f"snapshots file {path} must be Parquet with lead_id and snapshot_at: {exc}") from None


def write_scores(scores: pd.DataFrame, path: Path) -> None:
    """Write the rule scores atomically (temp file in the same folder, then rename)."""
    with atomic_path(Path(path)) as tmp:
        scores.to_parquet(tmp, index=False)
