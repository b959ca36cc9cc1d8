"""Standard rule variants a marketer would configure: derived from the history's rule (decay, window) or a file of
their own, scored on the same snapshots, configured by typed params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from rule_frames import days, make_crm

from pipelines import rules
from pipelines.config import RulesParams, RuleVariant
from tests.support.params import demo_icp

BASE = rules.parse_rules(
    {
        "threshold": 20,
        "fit": [{"name": "icp", "when": {"field": "industry", "op": "eq", "value": "Software"}, "points": 5}],
        "engagement": [
            {"name": "demo", "activity": "demo_request", "points": 30},
            {"name": "visit", "activity": "web_visit", "points": 2, "within_days": 7},  # keeps its own window
        ],
    }
)


def test_derive_rules_decays_or_windows_every_engagement_rule_that_has_neither() -> None:
    decayed = rules.derive_rules(BASE, half_life_days=30)
    assert [r.half_life_days for r in decayed.engagement] == [30, 30]
    assert [r.within_days for r in decayed.engagement] == [None, 7]
    windowed = rules.derive_rules(BASE, within_days=30)
    assert [r.within_days for r in windowed.engagement] == [30, 7]
    assert decayed.threshold == BASE.threshold and decayed.fit == BASE.fit
    assert BASE.engagement[0].half_life_days is None  # the base is untouched (frozen models, copies)


def test_score_variants_scores_each_variant_on_the_same_rows() -> None:
    crm = make_crm(
        [{"lead_id": 1, "account_id": 10}, {"lead_id": 2, "account_id": 11}],
        [(1, "demo_request", days(1)), (2, "demo_request", days(50))],
    )
    snapshots = pd.DataFrame({"lead_id": [1, 2, 1], "snapshot_at": [days(31), days(61), days(61)]})
    gated = rules.parse_rules(
        {
            "threshold": None,
            "gates": [{"name": "icp", "when": {"field": "industry", "op": "eq", "value": "Software"}}],
            "engagement": [{"name": "demo", "activity": "demo_request", "points": 30}],
        }
    )
    out = rules.score_variants(
        {
            "history": BASE,
            "decayed": rules.derive_rules(BASE, half_life_days=30),
            "window": rules.derive_rules(BASE, within_days=30),
            "gated": gated,
        },
        snapshots,
        crm,
    )
    assert out["lead_id"].tolist() == [1, 2, 1]
    np.testing.assert_allclose(out["history_score"], [35, 30, 35])
    # lead 1's demo is 30 and 60 days old at its snapshots; lead 2's 11 days
    np.testing.assert_allclose(out["decayed_score"], [5 + 30 * 0.5, 30 * 2 ** (-11 / 30), 5 + 30 * 0.25])
    np.testing.assert_allclose(out["window_score"], [5, 30, 5])  # exactly 30 days old has left the window
    assert out["history_mql"].tolist() == [True, True, True]
    assert out["window_mql"].tolist() == [False, True, False]
    assert out["gated_gates"].tolist() == [True, False, True] and out["history_gates"].all()
    assert out["gated_mql"].tolist() == [True, False, True]


def test_load_variants_reads_files_and_derives_from_rules_file(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("threshold: 10\nengagement:\n  - {name: demo, activity: demo_request, points: 30}\n")
    params = RulesParams(
        file=base, variants={"decayed_7d": RuleVariant(half_life_days=7), "other": RuleVariant(file=base)}
    )
    loaded = rules.load_variants(params, demo_icp())
    assert loaded["decayed_7d"].engagement[0].half_life_days == 7
    assert loaded["other"].engagement[0].half_life_days is None


def test_variant_params_are_typed_and_refuse_ambiguity() -> None:
    assert RuleVariant(half_life_days=30).threshold_policy == "match_volume"
    assert RuleVariant(file=Path("x.yaml")).threshold_policy == "own"
    assert RuleVariant(file=Path("x.yaml"), threshold="match_volume").threshold_policy == "match_volume"
    for bad in (
        {},
        {"file": "x.yaml", "within_days": 30},
        {"half_life_days": 30, "decay": 1},
        {"within_days": 0},
        {"half_life_days": 30, "threshold": "best"},
    ):
        with pytest.raises(ValidationError):
            RuleVariant(**bad)
    with pytest.raises(ValidationError, match="history"):
        RulesParams(file=Path("r.yaml"), variants={"history": {"half_life_days": 30}})
    with pytest.raises(ValidationError):
        RulesParams(file=Path("r.yaml"), variants={"Bad Name": {"half_life_days": 30}})
