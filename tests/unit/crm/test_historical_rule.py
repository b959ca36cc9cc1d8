"""The demo's historical points rule takes its ideal customer profile from the params, as the rules file does: the
fit points it gave each lead are the ones `config/mql_rules.yaml` gives, whatever the profile."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from pipelines import rules
from pipelines.config import DemoCrmParams, IcpParams
from pipelines.crm import demo
from tests.support.params import demo_icp

OTHER_ICP = IcpParams(
    industries=("Retail", "Education"), employees_min=20, employees_max=150, regions=("APAC", "LATAM")
)


@pytest.fixture(scope="module")
def crm() -> dict[str, pd.DataFrame]:
    return demo.generate(
        DemoCrmParams(leads=600, seed=11, end_date=date(2026, 11, 20), history_days=200), demo_icp()
    ).tables


def static_points(crm: dict[str, pd.DataFrame], icp: IcpParams) -> tuple[np.ndarray, np.ndarray]:
    return demo.historical_static_points(crm["leads"], crm["accounts"], demo.HistoricalRule.from_icp(icp))


def test_the_historical_rule_is_built_from_the_profile() -> None:
    rule = demo.HistoricalRule.from_icp(OTHER_ICP)
    assert rule.icp_industries == {"Retail", "Education"}
    assert rule.ideal_size == (20, 150)
    assert rule.icp_regions == {"APAC", "LATAM"}


def test_another_industries_list_moves_the_industry_points(crm: dict[str, pd.DataFrame]) -> None:
    default = demo_icp()
    retail = default.model_copy(update={"industries": ("Retail",)})
    before, _ = static_points(crm, default)
    after, _ = static_points(crm, retail)
    industry = crm["leads"]["account_id"].map(crm["accounts"].set_index("account_id")["industry"])
    in_default = industry.isin(default.industries).to_numpy()
    in_retail = (industry == "Retail").to_numpy()
    assert in_default.any() and in_retail.any()
    np.testing.assert_array_equal(after - before, 10.0 * in_retail - 10.0 * in_default)


@pytest.mark.parametrize("icp", [demo_icp(), OTHER_ICP], ids=["params", "other"])
def test_the_rules_file_gives_each_lead_the_generators_fit_points_and_threshold(
    crm: dict[str, pd.DataFrame], icp: IcpParams
) -> None:
    """Scored at creation without activities, the rules file's score is the generator's static points."""
    points, threshold = static_points(crm, icp)
    leads = crm["leads"]
    keys = pd.DataFrame({"lead_id": leads["lead_id"], "snapshot_at": leads["created_at"]})
    quiet = {**crm, "activities": crm["activities"].iloc[:0]}
    out = rules.evaluate_rules(rules.load_rules("config/mql_rules.yaml", icp), keys, quiet)
    np.testing.assert_array_equal(out["rule_score"].to_numpy(), points)
    np.testing.assert_array_equal(out["rule_threshold"].to_numpy(), threshold)
    assert len(np.unique(points)) > 10
