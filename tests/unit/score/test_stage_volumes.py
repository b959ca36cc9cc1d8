"""What each stage's team receives on a night: list sizes, new hand-offs, targets and the off-target warning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.calibrated import Thresholds
from pipelines.config import CalibrateParams, StagePolicy
from pipelines.score.core import ScoringModel, count_lists, off_target, stage_volumes, volume_policies

POLICIES = {
    "MQL": StagePolicy(policy="match_rules"),
    "SAL": StagePolicy(policy="capacity", leads_per_week=2),
    "SQL": StagePolicy(policy="precision", min_precision=0.3),
}


def _previous(rows: list[tuple[int, str, bool]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["lead_id", "stage", "rule_mql"])


def test_new_hand_offs_are_the_leads_not_on_the_list_a_cadence_earlier() -> None:
    counts: dict[str, int] = {}
    lead = np.array([1, 2, 3, 4, 5])
    stage = np.array(["SQL", "SAL", "MQL", "none", "SAL"])
    rule = np.array([True, True, False, False, True])
    # lead 1 was SAL (new on SQL only), 2 was SAL (nothing new), 3 was none, 4 was MQL, 5 was not open (new lead)
    previous = _previous([(1, "SAL", True), (2, "SAL", False), (3, "none", False), (4, "MQL", True)])

    count_lists(counts, lead, stage, rule, previous)
    count_lists(counts, np.array([9]), np.array(["MQL"]), np.array([True]), _previous([]))  # another chunk

    assert counts["MQL_list"] == 5 and counts["SAL_list"] == 3 and counts["SQL_list"] == 1
    assert counts["MQL_new"] == 3  # leads 3, 5, 9
    assert counts["SAL_new"] == 1  # lead 5
    assert counts["SQL_new"] == 1  # lead 1
    assert counts["rule_list"] == 4 and counts["rule_new"] == 3  # 2, 5, 9 (1 was a rule MQL already)


def test_volumes_per_week_follow_the_volume_definition() -> None:
    counts = {
        "MQL_list": 70,
        "MQL_new": 14,
        "SAL_list": 28,
        "SAL_new": 4,
        "SQL_list": 7,
        "SQL_new": 2,
        "rule_list": 140,
        "rule_new": 7,
    }

    new = stage_volumes(counts, POLICIES, "new", 14)  # a fortnightly cadence: counts x 7 / 14 a week
    standing = stage_volumes(counts, POLICIES, "standing", 14)

    assert new["MQL"] == {
        "policy": "match_rules",
        "volume": "new",
        "target_per_week": 3.5,
        "delivered_per_week": 7.0,
        "list_size": 70,
        "new": 14,
    }
    assert new["SAL"]["target_per_week"] == 2 and new["SAL"]["delivered_per_week"] == 2.0
    assert new["SQL"]["target_per_week"] is None and new["SQL"]["delivered_per_week"] == 1.0
    assert standing["MQL"]["target_per_week"] == 70 and standing["MQL"]["delivered_per_week"] == 35
    assert standing["SAL"]["delivered_per_week"] == 14


def test_only_stages_more_than_a_quarter_off_target_are_reported() -> None:
    on_target = {"MQL_new": 8, "rule_new": 7, "SAL_new": 2, "SQL_new": 50}  # MQL +14%, SAL 0%, SQL: no target

    assert off_target(stage_volumes(on_target, POLICIES, "new", 7)) == []
    lines = off_target(stage_volumes({**on_target, "MQL_new": 10, "SAL_new": 1}, POLICIES, "new", 7))
    assert lines == [
        "MQL (match_rules, new) delivers 10 a week against a target of 7",
        "SAL (capacity, new) delivers 1 a week against a target of 2",
    ]


def _model(thresholds: Thresholds | None) -> ScoringModel:
    return ScoringModel(
        uri="u",
        pinned_uri="p",
        name="n",
        version="1",
        pyfunc=None,
        schema=None,
        reference=None,
        feature_list_version=None,
        thresholds=thresholds,
    )


def test_policies_come_from_the_models_thresholds_else_from_the_params() -> None:
    params = CalibrateParams.model_validate(
        {
            "method": "isotonic",
            "thresholds": {
                "MQL": {"policy": "match_rules"},
                "SAL": {"policy": "capacity", "leads_per_week": 9},
                "SQL": {"policy": "capacity", "leads_per_week": 3},
            },
            "volume": "new",
            "precision_min_rows": 1,
            "segment_column": None,
            "segment_k": 1,
            "bootstrap": 0,
            "ci_level": 0.9,
        }
    )
    stored = Thresholds(
        "SQL",
        30,
        {"MQL": 0.1, "SAL": 0.2, "SQL": 0.3},
        report={"policies": {s: p.model_dump(exclude_none=True) for s, p in POLICIES.items()}, "volume": "standing"},
    )

    assert volume_policies(_model(stored), params) == (POLICIES, "standing")
    fallback, volume = volume_policies(_model(None), params)
    assert volume == "new" and fallback["SAL"].leads_per_week == 9


@pytest.mark.parametrize("volume", ["new", "standing"])
def test_an_empty_night_delivers_nothing(volume: str) -> None:
    out = stage_volumes({}, POLICIES, volume, 7)

    assert all(v["delivered_per_week"] == 0 for v in out.values())
    assert out["MQL"]["target_per_week"] == 0  # no rule MQLs either: nothing to warn about
    assert off_target(out) == ["SAL (capacity, " + volume + ") delivers 0 a week against a target of 2"]
