"""Tonight's and the previous snapshot's features and rule flags come out of one build, and are exactly what one
build per time gives (the training code path, `features_as_of` and `evaluate_rules`)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import DemoCrmParams, load_params
from pipelines.crm.demo import generate
from pipelines.features.build import features_as_of
from pipelines.rules import evaluate_rules, load_rules, rule_flags
from pipelines.score.core import previous_time, snapshot_features
from tests.support.params import demo_icp

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def demo() -> dict[str, pd.DataFrame]:
    return generate(DemoCrmParams(leads=400, seed=11, end_date=date(2026, 11, 20), history_days=240), demo_icp()).tables


def test_one_build_for_two_times_equals_one_build_per_time(demo: dict[str, pd.DataFrame]) -> None:
    params = load_params(REPO / "params.yaml")
    ruleset = load_rules(REPO / params.rules.file, params.features.icp)
    as_of = pd.Timestamp("2026-11-20T00:00:00Z")
    before = previous_time(as_of, params.features)
    assert before == pd.Timestamp("2026-11-13T00:00:00Z")

    built = snapshot_features(demo, [as_of, before], params.features, ruleset)

    assert len(built) == 2
    for (features, rules), t in zip(built, [as_of, before], strict=True):
        expected = features_as_of(demo, t, params.features)
        assert len(expected) > 100  # both snapshots really hold open leads
        pd.testing.assert_frame_equal(features, expected)
        full = evaluate_rules(ruleset, expected[["lead_id", "snapshot_at"]], demo)
        pd.testing.assert_frame_equal(rules, full[["lead_id", "snapshot_at", "rule_score", "rule_mql"]])
    tonight, previous = built[0][0], built[1][0]
    assert set(tonight["lead_id"]) != set(previous["lead_id"])  # leads opened and closed in between


def test_rule_flags_are_evaluate_rules_score_and_flag(demo: dict[str, pd.DataFrame]) -> None:
    params = load_params(REPO / "params.yaml")
    ruleset = load_rules(REPO / "config" / "mql_rules_four_part.yaml", params.features.icp)
    keys = features_as_of(demo, pd.Timestamp("2026-10-01T12:00:00Z"), params.features)[["lead_id", "snapshot_at"]]
    keys = keys.sample(frac=1.0, random_state=0).reset_index(drop=True)  # any order of rows

    got = rule_flags(ruleset, keys, demo)

    full = evaluate_rules(ruleset, keys, demo)
    pd.testing.assert_frame_equal(got, full[["lead_id", "snapshot_at", "rule_score", "rule_mql"]])
    assert got["rule_mql"].any() and not got["rule_mql"].all()


def test_no_open_lead_at_a_time_gives_empty_frames(demo: dict[str, pd.DataFrame]) -> None:
    params = load_params(REPO / "params.yaml")
    ruleset = load_rules(REPO / params.rules.file, params.features.icp)
    long_ago = pd.Timestamp("2020-01-01T00:00:00Z")  # before any lead was created

    (features, rules), (old, old_rules) = snapshot_features(
        demo, [pd.Timestamp("2026-11-20T00:00:00Z"), long_ago], params.features, ruleset
    )

    assert len(features) == len(rules) > 0
    assert old.empty and old_rules.empty


def test_the_previous_snapshot_can_be_limited_to_tonights_leads(demo: dict[str, pd.DataFrame]) -> None:
    params = load_params(REPO / "params.yaml")
    ruleset = load_rules(REPO / params.rules.file, params.features.icp)
    as_of = pd.Timestamp("2026-11-20T00:00:00Z")
    times = [as_of, previous_time(as_of, params.features)]

    (tonight, _), (previous, previous_rules) = snapshot_features(demo, times, params.features, ruleset, True)

    (_, _), (everyone, everyone_rules) = snapshot_features(demo, times, params.features, ruleset)
    kept = everyone["lead_id"].isin(tonight["lead_id"]).to_numpy()
    assert 0 < kept.sum() < len(everyone)  # some leads open a week ago have closed since
    pd.testing.assert_frame_equal(previous, everyone[kept].reset_index(drop=True))
    pd.testing.assert_frame_equal(previous_rules, everyone_rules[kept].reset_index(drop=True))
