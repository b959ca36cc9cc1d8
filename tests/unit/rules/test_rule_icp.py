"""`{icp: KEY}` values: a rules file takes the ideal customer profile from the params (features.icp), so one
profile serves the rules, the features and the demo's history; a bad reference is named by file, rule and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from rule_frames import days, make_crm
from typer.testing import CliRunner

from pipelines import rules
from pipelines.cli import EXIT_BAD_INPUT, app
from pipelines.config import IcpParams
from pipelines.rules import RulesError, load_rules, parse_rules
from tests.support.params import demo_icp

ICP = IcpParams(industries=("Software", "Healthcare"), employees_min=200, employees_max=5000, regions=("NA",))
RETAIL_ICP = IcpParams(industries=("Retail",), employees_min=50, employees_max=150, regions=("APAC",))


def fit_rule(name: str, field: str, op: str, value: object, points: float) -> dict[str, Any]:
    return {"name": name, "when": {"field": field, "op": op, "value": value}, "points": points}


def icp_rules() -> dict[str, Any]:
    """One fit rule per part of the profile, every value named from it."""
    return {
        "threshold": 100,
        "fit": [
            fit_rule("industry_icp", "industry", "in", {"icp": "industries"}, 1),
            fit_rule("size_icp", "employee_count", "between", {"icp": "employees"}, 10),
            fit_rule("region_icp", "region", "in", {"icp": "regions"}, 100),
            fit_rule("big", "employee_count", "gt", {"icp": "employees_max"}, 1000),
        ],
    }


def test_icp_values_resolve_to_the_params_profile() -> None:
    fit = {rule.name: rule.when for rule in parse_rules(icp_rules(), icp=ICP).fit}
    assert fit["industry_icp"].value == ("Software", "Healthcare")
    assert fit["size_icp"].value == (200, 5000)
    assert fit["region_icp"].value == ("NA",)
    assert fit["big"].value == 5000


def test_a_reference_is_the_same_rule_as_the_literal_values_it_stands_for() -> None:
    literal = icp_rules()
    for rule, value in zip(literal["fit"], (["Software", "Healthcare"], [200, 5000], ["NA"], 5000), strict=True):
        rule["when"]["value"] = value
    assert parse_rules(icp_rules(), icp=ICP) == parse_rules(literal)


def test_changing_the_profile_changes_which_leads_score() -> None:
    """Account 10 is Software, 250 people, NA; account 11 is Retail, 100 people, APAC (rule_frames)."""
    crm = make_crm([{"lead_id": 1, "account_id": 10}, {"lead_id": 2, "account_id": 11}])
    keys = pd.DataFrame({"lead_id": [1, 2], "snapshot_at": [days(1), days(1)]})
    default = rules.evaluate_rules(parse_rules(icp_rules(), icp=ICP), keys, crm)
    retail = rules.evaluate_rules(parse_rules(icp_rules(), icp=RETAIL_ICP), keys, crm)
    assert default["rule_score"].tolist() == [111.0, 0.0]
    assert retail["rule_score"].tolist() == [1000.0, 111.0]


def test_the_shipped_rules_files_take_their_profile_from_params() -> None:
    """The shipped files name the profile; loaded with the shipped params they hold exactly its values."""
    icp = demo_icp()
    history = {rule.name: rule.when for rule in load_rules("config/mql_rules.yaml", icp).fit}
    assert history["industry_icp"].value == icp.industries
    assert history["size_ideal"].value == (icp.employees_min, icp.employees_max)
    assert history["region_icp"].value == icp.regions
    other = load_rules("config/mql_rules.yaml", RETAIL_ICP)
    assert {rule.name: rule.when for rule in other.fit}["industry_icp"].value == ("Retail",)


def test_a_rules_file_with_literal_values_does_not_depend_on_the_profile() -> None:
    path = Path("config/mappings/x_education_rules.yaml")
    assert load_rules(path, ICP) == load_rules(path, RETAIL_ICP) == parse_rules(yaml.safe_load(path.read_text()))


def with_value(value: object, op: str = "in", field: str = "industry") -> dict[str, Any]:
    return {"threshold": 60, "fit": [fit_rule("industry_icp", field, op, value, 10)]}


# params.yaml refuses an unknown region (config.Region); a profile built in code skips that check, the rules do not
OTHER_REGIONS = IcpParams.model_construct(
    industries=("Software",), employees_min=1, employees_max=2, regions=("NA", "EU")
)


@pytest.mark.parametrize(
    ("raw", "icp", "expected"),
    [
        (
            with_value({"icp": "industry"}),
            ICP,
            "rule 'industry_icp' (fit[0]), key when.value: unknown ICP key 'industry' in {icp: industry}; "
            "expected one of ['industries', 'regions', 'employees', 'employees_min', 'employees_max']",
        ),
        (
            with_value({"icp": "industries"}, op="eq"),
            ICP,
            "{icp: industries} is a list of industries: use it with op in or not_in, not 'eq'",
        ),
        (with_value({"icp": "employees"}, "gte", "employee_count"), ICP, "use it with op between, not 'gte'"),
        (
            with_value({"icp": "employees_min"}, op="in"),
            ICP,
            "{icp: employees_min} is a number: use it with op eq, ne, gt, gte, lt or lte, not 'in'",
        ),
        (with_value({"icp": "industries", "points": 3}), ICP, "must be a reference to the ideal customer profile"),
        (with_value({"icp": ["industries"]}), ICP, "{icp: KEY} with KEY one of"),
        (with_value({"industries": "icp"}), ICP, "{icp: KEY} with KEY one of"),
        (with_value({"icp": "industries"}), None, "read without the params' features.icp"),
        (
            with_value({"icp": "regions"}, field="region"),
            OTHER_REGIONS,
            "features.icp.regions of the params holds unknown region value(s) ['EU']",
        ),
    ],
)
def test_a_bad_reference_is_named_by_file_rule_and_key(
    raw: dict[str, Any], icp: IcpParams | None, expected: str
) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(raw, "bad.yaml", icp)
    message = str(caught.value)
    assert message.startswith("bad.yaml: 1 problem(s) in the rules file\n  rule 'industry_icp' (fit[0]), key when")
    assert expected in message


def test_an_unknown_icp_key_exits_2_from_the_rules_stage_naming_file_and_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad_rules.yaml"
    bad.write_text(
        "threshold: 60\n"
        "fit:\n"
        "  - {name: industry_icp, when: {field: industry, op: in, value: {icp: industy}}, points: 10}\n"
    )
    out = tmp_path / "scores.parquet"
    result = CliRunner().invoke(
        app,
        [
            *("rules", "--params", "params.yaml", "--rules", str(bad)),
            *("--raw", str(tmp_path / "raw"), "--snapshots", str(tmp_path / "s.parquet"), "--out", str(out)),
        ],
    )
    assert result.exit_code == EXIT_BAD_INPUT
    assert f"{bad}: 1 problem(s)" in result.output
    assert "rule 'industry_icp' (fit[0]), key when.value: unknown ICP key 'industy'" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
