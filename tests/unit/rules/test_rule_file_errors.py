"""A bad rules file fails before anything is written, with a message naming the rule and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from rule_frames import days, make_crm

from pipelines import rules
from pipelines.config import ParamsError
from pipelines.rules import RulesError, load_rules, parse_rules
from tests.support.params import demo_icp

ICP = {"field": "industry", "op": "eq", "value": "Software"}


def fit(**rule: Any) -> dict[str, Any]:
    return {"threshold": 60, "fit": [{"name": "icp", "when": ICP, "points": 10, **rule}]}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"threshold": 60, "treshold": 50}, "top level, key treshold: unknown key"),
        (fit(pionts=5), "rule 'icp' (fit[0]), key pionts: unknown key"),
        (fit(when={**ICP, "op": "equals"}), "rule 'icp' (fit[0]), key when.op: Input should be 'eq', 'ne'"),
        (
            fit(when={"all_of": [ICP, {"not": {"field": "region", "op": "like", "value": "NA"}}]}),
            "rule 'icp' (fit[0]), key when.all_of[1].not.op: Input should be 'eq'",
        ),
        (fit(when={**ICP, "op": "gt"}), "op 'gt' does not apply to field 'industry' (category)"),
        (
            fit(when={"field": "job_title", "op": "eq", "value": "CEO"}),
            "rule 'icp' (fit[0]), key when.field: unknown field 'job_title'",
        ),
        (fit(when={"feild": "industry"}), "key when: a condition is a mapping with one of the keys field, activity"),
        (fit(when={"field": "employee_count", "op": "between", "value": [5000, 200]}), "low <= high"),
        (fit(when={"field": "employee_count", "op": "between", "value": 200}), "must be [low, high]"),
        (fit(when={"field": "employee_count", "op": "gte", "value": "200"}), "must be a number, got '200'"),
        (fit(when={"field": "free_mail_domain", "op": "eq", "value": "yes"}), "must be true or false"),
        (fit(when={"field": "region", "op": "in", "value": ["NA", "EU"]}), "unknown region value(s) ['EU']"),
        (fit(when={"field": "seniority", "op": "eq", "value": "boss"}), "unknown seniority value(s) ['boss']"),
        (fit(when={"all_of": []}), "key when.all_of: needs at least one condition"),
        (fit(points="ten"), "rule 'icp' (fit[0]), key points: Input should be a valid number"),
        (fit(name="Industry ICP"), "key name: String should match pattern"),
        ({"threshold": "60"}, "top level, key threshold: Input should be a valid number"),
        ({"fit": []}, "top level, key threshold: Field required"),
        ({"threshold": None}, "threshold is null and there are no gates"),
        (
            {"threshold": 60, "engagement": [{"name": "demo", "activity": "demo_requested", "points": 30}]},
            "rule 'demo' (engagement[0]), key activity: unknown activity type(s) ['demo_requested']",
        ),
        (
            {"threshold": None, "gates": [{"name": "meet", "when": {"activity": ["demo_request", "call"]}}]},
            "rule 'meet' (gates[0]), key when.activity: unknown activity type(s) ['call']",
        ),
        (
            {
                "threshold": 60,
                "engagement": [{"name": "demo", "activity": "demo_request", "points": 30, "half_life_days": 0}],
            },
            "rule 'demo' (engagement[0]), key half_life_days: Input should be greater than 0",
        ),
        (
            {"threshold": 60, "overrides": {"regions": {"APJ": {"threshold": 50}}}},
            "key overrides.regions: unknown region(s) ['APJ']",
        ),
        (
            {"threshold": 60, "overrides": {"regions": {"APAC": {"treshold": 50}}}},
            "key overrides.regions.APAC.treshold: unknown key",
        ),
        (
            {"threshold": 60, "overrides": {"campaigns": {"spring": {"threshold": 50}}}},
            "campaign keys must be integer campaign ids, got ['spring']",
        ),
        (
            {**fit(), "overrides": {"campaigns": {1: {"points": {"icp_industry": 5}}}}},
            "overrides.campaigns.1.points: unknown rule(s) ['icp_industry']",
        ),
        (
            {**fit(), "engagement": [{"name": "icp", "activity": "web_visit", "points": 1}]},
            "rule names must be unique; repeated: ['icp']",
        ),
    ],
)
def test_a_bad_rules_file_is_named_by_rule_and_key(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(raw, "bad.yaml")
    message = str(caught.value)
    assert message.startswith("bad.yaml: ")
    assert expected in message


def test_every_problem_is_reported_at_once() -> None:
    raw = {
        "threshold": 60,
        "fit": [{"name": "a", "when": {**ICP, "op": "like"}, "points": 1}, {"name": "b", "when": ICP, "points": "x"}],
    }
    with pytest.raises(RulesError, match=r"2 problem\(s\)") as caught:
        parse_rules(raw)
    assert "rule 'a' (fit[0]), key when.op" in str(caught.value)
    assert "rule 'b' (fit[1]), key points" in str(caught.value)


def test_rules_errors_are_params_errors_so_the_cli_exits_with_bad_input() -> None:
    assert issubclass(RulesError, ParamsError)


def test_unreadable_files_are_rules_errors(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="not found"):
        load_rules(tmp_path / "absent.yaml", demo_icp())
    broken = tmp_path / "broken.yaml"
    broken.write_text("threshold: [60\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(broken, demo_icp())
    listed = tmp_path / "list.yaml"
    listed.write_text("- threshold: 60\n")
    with pytest.raises(RulesError, match="must hold a mapping"):
        load_rules(listed, demo_icp())


def test_unknown_campaign_ids_are_caught_against_the_campaigns_table() -> None:
    crm = make_crm([{"lead_id": 1}])  # campaigns 1 and 2 exist
    keys = pd.DataFrame({"lead_id": [1], "snapshot_at": [days(1)]})
    override = parse_rules({"threshold": 60, "overrides": {"campaigns": {2: {"threshold": 5}, 77: {"threshold": 5}}}})
    with pytest.raises(RulesError, match=r"overrides.campaigns.77: unknown campaign id 77"):
        rules.evaluate_rules(override, keys, crm)
    condition = parse_rules(fit(when={"field": "campaign_id", "op": "in", "value": [1, 99]}))
    with pytest.raises(RulesError, match=r"rule 'icp', key when.value: unknown campaign id\(s\) \[99\]"):
        rules.evaluate_rules(condition, keys, crm)


@pytest.mark.parametrize("path", ["config/mql_rules.yaml", "config/mql_rules_four_part.yaml"])
def test_the_shipped_rules_files_load_and_round_trip(path: str) -> None:
    ruleset = load_rules(path, demo_icp())
    assert parse_rules(yaml.safe_load(yaml.safe_dump(ruleset.model_dump(by_alias=True, mode="json")))) == ruleset
