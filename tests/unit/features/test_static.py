"""Creation-time features: fit and ICP, titles, source and campaign, self-reported answers, bogus-lead signals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crm_builder import build_crm, lead, params

from pipelines.crm import vocab
from pipelines.features.static import STATIC_SPECS, Categories, Reference, email_domains, static_features


def features_of(*leads: dict, **overrides: object) -> pd.DataFrame:
    tables = build_crm(list(leads))
    p = params(**overrides)
    columns = static_features(tables["leads"], Reference.from_tables(tables), p, Categories.from_tables(tables, p))
    return pd.DataFrame(columns, index=tables["leads"]["lead_id"])


def test_columns_follow_the_static_specs_and_categoricals_have_fixed_levels() -> None:
    frame = features_of(lead(1))

    assert list(frame.columns) == [name for name, _, _ in STATIC_SPECS]
    for name, kind, _ in STATIC_SPECS:
        assert isinstance(frame[name].dtype, pd.CategoricalDtype) == (kind == "categorical"), name


def test_fit_comes_from_the_account_and_the_icp_from_params() -> None:
    frame = features_of(lead(1, account_id=10), lead(2, account_id=11, country=None), lead(3, country="DE"))

    assert frame.loc[1, ["icp_industry", "icp_size", "icp_region", "icp_fit_count", "icp_match"]].tolist() == [
        1,
        1,
        1,
        3,
        1,
    ]
    assert frame.loc[1, "industry"] == "Software" and frame.loc[1, "employee_count"] == 250
    assert frame.loc[2, "region"] == "LATAM"  # no country on the lead: the account's region
    assert frame.loc[2, "icp_fit_count"] == 0
    assert frame.loc[3, "region"] == "EMEA" and frame.loc[3, "has_account"] == 0
    assert np.isnan(frame.loc[3, "employee_count"]) and pd.isna(frame.loc[3, "industry"])


def test_the_icp_is_configurable() -> None:
    icp = params().icp.model_copy(
        update={"industries": ("Retail",), "employees_min": 10, "employees_max": 50, "regions": ("LATAM",)}
    )
    frame = features_of(lead(1, account_id=11, country=None), icp=icp)

    assert frame.loc[1, "icp_match"] == 1


def test_unknown_industries_fall_into_other_and_unknown_countries_too() -> None:
    accounts = [
        {
            "account_id": 10,
            "company_name": "X",
            "domain": "x.io",
            "industry": "Space Mining",
            "employee_count": 5,
            "annual_revenue": None,
            "country": "NO",
            "region": "EMEA",
        }
    ]
    tables = build_crm([lead(1, account_id=10, country="NO")], accounts=accounts)
    p = params()
    frame = pd.DataFrame(
        static_features(tables["leads"], Reference.from_tables(tables), p, Categories.from_tables(tables, p))
    )

    assert frame.loc[0, "industry"] == "Other" and frame.loc[0, "country"] == "Other"
    assert frame.loc[0, "region"] == "EMEA"


def test_free_mail_and_company_domain_match() -> None:
    frame = features_of(lead(1, account_id=10, email="ada@GMAIL.com "), lead(2, account_id=10, email="bo@Acme.com"))

    assert frame["free_mail"].tolist() == [1, 0]
    assert frame["email_matches_account"].tolist() == [0, 1]


def test_titles_are_parsed_by_the_shared_parser() -> None:
    frame = features_of(lead(1, job_title="VP Mktg"), lead(2, job_title="Marketing intern"), lead(3, job_title=None))

    assert frame["seniority"].tolist() == ["vp", "intern_student", "unknown"]
    assert frame["department"].tolist() == ["marketing", "marketing", "unknown"]
    assert frame["title_missing"].tolist() == [0, 0, 1]


def test_source_campaign_and_self_reported_answers() -> None:
    frame = features_of(
        lead(1, campaign_id=2, lead_source="trade_show", budget_range="50k-250k", purchase_timeframe="0-3 months"),
        lead(2),
    )

    assert frame.loc[1, ["lead_source", "campaign_id", "campaign_channel", "campaign_region"]].tolist() == [
        "trade_show",
        "2",
        "trade_show",
        "EMEA",
    ]
    assert frame.loc[1, "budget_range"] == "50k-250k" and frame.loc[1, "purchase_timeframe"] == "0-3 months"
    assert frame.loc[2, ["campaign_id", "campaign_channel", "budget_range"]].isna().all()


@pytest.mark.parametrize(
    ("fields", "signal"),
    [
        ({"first_name": "Mickey", "last_name": "Mouse"}, "name_placeholder"),
        ({"first_name": "test", "last_name": "Smithers"}, "name_placeholder"),
        ({"first_name": "asdf", "last_name": "asdf"}, "name_repeated"),
        ({"first_name": "a", "last_name": "b"}, "name_too_short"),
        ({"first_name": "R2D2", "last_name": "Droid"}, "name_has_digit"),
        ({"first_name": None}, "name_missing"),
        ({"email": "x@x.x"}, "email_invalid"),
        ({"email": "abc@abc"}, "email_invalid"),
        ({"email": "someone@mailinator.com"}, "email_test_domain"),
        ({"email": "noreply@example.com"}, "email_test_domain"),
        ({"email": "jo@fake.org"}, "email_test_domain"),
        ({"email": "test@acme.com"}, "email_placeholder_mailbox"),
        ({"email": None}, "email_missing"),
        ({"phone": None}, "phone_missing"),
        ({"phone": "000-0000"}, "phone_invalid"),
        ({"phone": "12345"}, "phone_invalid"),
        ({"phone": "1234567890"}, "phone_invalid"),
        ({"job_title": "asdf"}, "title_placeholder"),
    ],
)
def test_bogus_signals_fire_on_placeholder_input(fields: dict, signal: str) -> None:
    frame = features_of(lead(1, **fields), lead(2))

    assert frame.loc[1, signal] == 1
    assert frame.loc[2, signal] == 0


def test_a_clean_lead_has_no_bogus_signal_and_the_count_adds_them_up() -> None:
    frame = features_of(lead(1), lead(2, first_name="Test", last_name="Test", email="test@test.com", job_title="xxx"))

    bogus = [name for name, _, family in STATIC_SPECS if family == "bogus" and name != "bogus_signal_count"]
    assert frame.loc[1, bogus].sum() == 0 and frame.loc[1, "bogus_signal_count"] == 0
    assert frame.loc[2, "bogus_signal_count"] >= 4


def test_email_domains_agree_with_the_shared_helper() -> None:
    raw = ["a@b.com", " X@Y.Org ", "no-at-sign", None, "trailing@", "two@at@c.de", "@lonely.io"]

    expected = [vocab.email_domain(e) for e in raw]
    assert email_domains(pd.Series(raw, dtype=object)).tolist() == expected
    assert email_domains(pd.Series(raw, dtype="str")).tolist() == expected
