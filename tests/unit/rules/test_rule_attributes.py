"""Rules that read a mapped CRM's lead attributes (`attribute.<name>` fields): numeric and text attributes score,
and a missing attribute or a value of the wrong kind is refused naming the field."""

from __future__ import annotations

import pandas as pd
import pytest
from rule_frames import T0, make_crm

from pipelines import rules


def _tables() -> dict[str, pd.DataFrame]:
    tables = make_crm([{"lead_id": 1}, {"lead_id": 2}, {"lead_id": 3}])
    tables["lead_attributes"] = pd.DataFrame(
        {
            "lead_id": [1, 2, 3],
            "minutes_on_site": pd.Series([700.0, 20.0, None], dtype="float64"),
            "occupation": pd.Series(["Working Professional", "Student", None], dtype="string"),
        }
    )
    return tables


def _score(raw: dict, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    keys = pd.DataFrame({"lead_id": [1, 2, 3], "snapshot_at": [T0 + pd.Timedelta(days=1)] * 3})
    return rules.evaluate_rules(rules.parse_rules(raw), keys, tables)


def test_numeric_and_text_attributes_score_and_a_missing_value_fires_nothing() -> None:
    raw = {
        "threshold": 50,
        "fit": [
            {
                "name": "engaged",
                "when": {"field": "attribute.minutes_on_site", "op": "gte", "value": 600},
                "points": 40,
            },
            {
                "name": "working",
                "when": {"field": "attribute.occupation", "op": "eq", "value": "Working Professional"},
                "points": 20,
            },
            {
                "name": "student",
                "when": {"field": "attribute.occupation", "op": "in", "value": ["Student"]},
                "points": -10,
            },
        ],
    }
    scored = _score(raw, _tables())
    assert scored["rule_score"].tolist() == [60.0, -10.0, 0.0]
    assert scored["rule_mql"].tolist() == [True, False, False]


def test_an_unknown_attribute_or_a_value_of_the_wrong_kind_is_refused_naming_the_field() -> None:
    missing = {
        "threshold": 1,
        "fit": [{"name": "x", "when": {"field": "attribute.visits", "op": "gt", "value": 3}, "points": 1}],
    }
    with pytest.raises(
        rules.RulesError,
        match=r"field 'attribute\.visits': the CRM has no lead attribute 'visits' "
        r"\(it has \['minutes_on_site', 'occupation'\]",
    ):
        _score(missing, _tables())
    wrong = {
        "threshold": 1,
        "fit": [{"name": "x", "when": {"field": "attribute.occupation", "op": "gt", "value": 3}, "points": 1}],
    }
    with pytest.raises(
        rules.RulesError,
        match=r"field 'attribute\.occupation': the attribute is text but the rule "
        r"compares it with 3",
    ):
        _score(wrong, _tables())
    with pytest.raises(rules.RulesError, match=r"attribute\.<name>"):
        rules.parse_rules(
            {
                "threshold": 1,
                "fit": [{"name": "x", "when": {"field": "attribute.Bad Name", "op": "eq", "value": "a"}, "points": 1}],
            }
        )
