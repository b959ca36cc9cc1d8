"""The standard rule baselines a marketer would configure beside the history's rule: the same points decayed or
windowed (`derive_rules`), or a file of its own, all scored on the same snapshot rows (`score_variants`).

Pure: rule sets and frames in, frames out (the variants of the params are read by `pipelines.rules.io`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

import numpy as np
import pandas as pd

from pipelines.rules.evaluation import condition_mask, prepare, score_queries, snapshot_ns, utc
from pipelines.rules.schema import RuleSet

log = logging.getLogger(__name__)


def derive_rules(rules: RuleSet, half_life_days: float | None = None, within_days: float | None = None) -> RuleSet:
    """The same points with every engagement rule decayed and/or windowed (the standard variants a marketer would
    configure): rules that already have a half-life or a window keep theirs. The threshold is kept as is; its
    scale no longer fits decayed points, so the evaluate stage matches the variant's MQL volume instead."""
    engagement = tuple(
        rule.model_copy(
            update={
                "half_life_days": rule.half_life_days if rule.half_life_days is not None else half_life_days,
                "within_days": rule.within_days if rule.within_days is not None else within_days,
            }
        )
        for rule in rules.engagement
    )
    parts = [
        f"half-life {half_life_days:g} days" if half_life_days else "",
        f"window {within_days:g} days" if within_days else "",
    ]
    description = f"{rules.description or 'rules'} ({', '.join(p for p in parts if p)})"
    return rules.model_copy(update={"engagement": engagement, "description": description})


#: Columns of the variants frame per variant `<name>`: score, MQL by the file's own threshold and gates, gates alone.
VARIANT_SUFFIXES: Final[tuple[str, ...]] = ("_score", "_mql", "_gates")


def score_variants(
    variants: Mapping[str, RuleSet], snapshots: pd.DataFrame, tables: Mapping[str, pd.DataFrame]
) -> pd.DataFrame:
    """Every variant scored on the same (lead_id, snapshot_at) rows (input order): `<name>_score`, `<name>_mql`
    (the file's threshold and gates) and `<name>_gates` (every gate holds; true without gates), so a caller can
    put its own threshold on the score and keep the gates."""
    out = pd.DataFrame(
        {
            "lead_id": snapshots["lead_id"].to_numpy(dtype=np.int64),
            "snapshot_at": utc(snapshot_ns(snapshots["snapshot_at"])),
        }
    )
    for name, rules in variants.items():
        setup = prepare(rules, snapshots, tables)
        queries = setup.queries()
        result = score_queries(rules, setup.plan, queries, explain=False)
        gates = np.ones(len(queries), dtype=bool)
        for gate in rules.gates:
            gates &= condition_mask(gate.when, queries)
        out[f"{name}_score"] = result["rule_score"]
        out[f"{name}_mql"] = result["rule_mql"]
        out[f"{name}_gates"] = queries.restore(gates)
        log.info(
            "rule variant %s: %.1f%% MQL rows at its own threshold and gates",
            name,
            100 * out[f"{name}_mql"].mean() if len(out) else 0.0,
        )
    return out
