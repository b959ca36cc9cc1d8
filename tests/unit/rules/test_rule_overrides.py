"""Overrides per region and per campaign: the most specific setting of each key wins (campaign > region > default)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rule_frames import days, make_crm, score

from pipelines import rules
from tests.support.params import demo_icp

RULES: dict[str, Any] = {
    "threshold": 60,
    "fit": [{"name": "icp", "when": {"field": "industry", "op": "eq", "value": "Software"}, "points": 10}],
    "engagement": [
        {"name": "demo", "activity": "demo_request", "points": 30},
        {"name": "visit", "activity": "web_visit", "points": 2},
    ],
    "overrides": {
        "regions": {"APAC": {"threshold": 50, "points": {"visit": 5}}, "EMEA": {"points": {"demo": 40}}},
        "campaigns": {
            1: {"points": {"demo": 50}},  # changes points only: the region's threshold stays
            2: {"threshold": 35, "points": {"visit": 1}},
        },
    },
}
LEADS = [
    {"lead_id": 1, "country": "US"},  # default
    {"lead_id": 2, "country": "JP"},  # region APAC
    {"lead_id": 3, "country": "JP", "campaign_id": 1},  # campaign 1 in APAC
    {"lead_id": 4, "country": "JP", "campaign_id": 2},  # campaign 2 in APAC: both keys from the campaign
    {"lead_id": 5, "country": "DE", "campaign_id": 2},  # campaign 2 in EMEA
    {"lead_id": 6, "country": "DE"},  # region EMEA (no threshold of its own)
    {"lead_id": 7},  # no region at all
]
ACTS = [(lead, kind, days(1)) for lead in range(1, 8) for kind in ("demo_request", "web_visit")]


def scored() -> pd.DataFrame:
    return score(RULES, make_crm(LEADS, ACTS), [(lead, days(2)) for lead in range(1, 8)]).set_index("lead_id")


def test_each_lead_gets_the_most_specific_setting_of_each_key() -> None:
    out = scored()
    assert out["rule_set"].to_dict() == {
        1: "default",
        2: "region:APAC",
        3: "campaign:1+region:APAC",
        4: "campaign:2+region:APAC",
        5: "campaign:2+region:EMEA",
        6: "region:EMEA",
        7: "default",
    }
    assert out["rule_threshold"].to_dict() == {1: 60, 2: 50, 3: 50, 4: 35, 5: 35, 6: 60, 7: 60}
    # demo + visit points: default 30 + 2; APAC visit 5; campaign 1 demo 50 (APAC visit 5 kept); campaign 2
    # visit 1 (demo from the region when it has one: EMEA 40, else the default 30).
    assert out["rule_score"].to_dict() == {1: 32, 2: 35, 3: 55, 4: 31, 5: 41, 6: 42, 7: 32}
    assert out["rule_mql"].to_dict() == {1: False, 2: False, 3: True, 4: False, 5: True, 6: False, 7: False}


def test_the_explanation_shows_the_overridden_points() -> None:
    out = scored()
    assert out.loc[3, "rules_fired"] == "1 demo request (+50); 1 website visit (+5)"
    assert out.loc[5, "rules_fired"] == "1 demo request (+40); 1 website visit (+1)"


def test_a_lead_without_a_country_takes_its_accounts_region_for_the_override() -> None:
    crm = make_crm([{"lead_id": 1, "account_id": 11}], [(1, "demo_request", days(1))])  # account 11 is in APAC
    out = score(RULES, crm, [(1, days(2))])
    assert out["rule_set"].tolist() == ["region:APAC"] and out["rule_threshold"].tolist() == [50.0]


def test_an_override_of_zero_points_silences_a_rule() -> None:
    raw = {**RULES, "overrides": {"regions": {"NA": {"points": {"demo": 0}}}}}
    out = score(raw, make_crm(LEADS[:1], ACTS[:2]), [(1, days(2))])
    assert out["rule_score"].tolist() == [2.0]
    assert out["rules_fired"].tolist() == ["1 website visit (+2)"]


def test_the_default_rules_file_lowers_the_bar_in_apac_only() -> None:
    ruleset = rules.load_rules("config/mql_rules.yaml", demo_icp())
    assert ruleset.threshold == 60
    assert {region: o.threshold for region, o in ruleset.overrides.regions.items()} == {"APAC": 50}
    assert ruleset.overrides.campaigns == {}
    acts = [(lead, "demo_request", days(1)) for lead in (1, 2)] + [(lead, "form_submit", days(1)) for lead in (1, 2)]
    # 30 + 10 + region 5 (NA) = 45 < 60; APAC: 30 + 10 = 40 < 50; one more form fill: 55 (no) and 50 (yes)
    acts += [(lead, "form_submit", days(3)) for lead in (1, 2)]
    out = score(
        ruleset.model_dump(by_alias=True),
        make_crm([{"lead_id": 1, "country": "US"}, {"lead_id": 2, "country": "JP"}], acts),
        [(1, days(4)), (2, days(2)), (2, days(4))],
    )
    assert out["rule_score"].tolist() == [55.0, 40.0, 50.0]
    assert out["rule_mql"].tolist() == [False, False, True]
