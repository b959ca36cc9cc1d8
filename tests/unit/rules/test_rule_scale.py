"""The rules stay fast at production size: ~500k snapshot rows and ~1M activities (no loop per lead or row)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from rule_frames import T0, canonical

from pipelines import rules
from pipelines.crm import vocab
from tests.support.params import demo_icp


@pytest.mark.slow
def test_half_a_million_snapshots_and_a_million_activities_score_in_well_under_a_minute() -> None:
    rng = np.random.default_rng(3)
    n_leads, n_acts, n_snaps = 100_000, 1_000_000, 500_000
    accounts = canonical(
        "accounts",
        pd.DataFrame(
            {
                "account_id": np.arange(1000),
                "company_name": None,
                "domain": None,
                "industry": rng.choice(vocab.INDUSTRIES, 1000),
                "employee_count": rng.integers(1, 30_000, 1000),
                "annual_revenue": None,
                "country": "US",
                "region": rng.choice(vocab.REGIONS, 1000),
            }
        ),
    )
    created = T0 + pd.to_timedelta(rng.uniform(0, 500, n_leads), unit="D")
    leads = canonical(
        "leads",
        pd.DataFrame(
            {
                "lead_id": np.arange(1, n_leads + 1),
                "account_id": rng.integers(0, 1000, n_leads),
                "created_at": created,
                "first_name": None,
                "last_name": None,
                "email": [f"x{i}@{'gmail.com' if i % 5 == 0 else 'acme.com'}" for i in range(n_leads)],
                "phone": None,
                "job_title": rng.choice(["VP Sales", "Marketing intern", "CTO", "Analyst", "IT Manager"], n_leads),
                "lead_source": "organic_search",
                "campaign_id": None,
                "country": rng.choice(["US", "DE", "JP", "BR"], n_leads),
                "budget_range": None,
                "purchase_timeframe": None,
                "status": "Open",
                "updated_at": created,
            }
        ),
    )
    campaigns = canonical(
        "campaigns",
        pd.DataFrame(
            {"campaign_id": [1], "name": "c", "channel": "email", "region": "Global", "start_date": T0, "end_date": T0}
        ),
    )
    who = rng.integers(1, n_leads + 1, n_acts)
    activities = canonical(
        "activities",
        pd.DataFrame(
            {
                "activity_id": np.arange(n_acts),
                "lead_id": who,
                "occurred_at": created[who - 1] + pd.to_timedelta(rng.uniform(0, 200, n_acts), unit="D"),
                "activity_type": rng.choice(vocab.ACTIVITY_TYPES, n_acts),
                "detail": None,
            }
        ),
    )
    snap_lead = rng.integers(1, n_leads + 1, n_snaps)
    keys = pd.DataFrame(
        {
            "lead_id": snap_lead,
            "snapshot_at": (created[snap_lead - 1] + pd.to_timedelta(rng.uniform(0, 200, n_snaps), unit="D")).floor(
                "D"
            ),
        }
    )
    tables = {"campaigns": campaigns, "accounts": accounts, "leads": leads, "activities": activities}
    for path in ("config/mql_rules.yaml", "config/mql_rules_four_part.yaml"):
        start = time.perf_counter()
        out = rules.evaluate_rules(rules.load_rules(path, demo_icp()), keys, tables)
        elapsed = time.perf_counter() - start
        assert len(out) == n_snaps and out["rules_fired"].notna().all()
        assert elapsed < 60, f"{path}: {elapsed:.1f}s"
