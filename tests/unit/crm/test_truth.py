"""The observable ceiling's filter on hand-made histories: the prediction step is the chain's exact transition, and
each kind of record moves the account's in-market belief the way the generative story says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import expm

from pipelines.crm import truth as ground_truth
from pipelines.crm.story import IN_MARKET_RATES, INTEREST_MIX, INTEREST_RATE

T0 = pd.Timestamp("2026-01-05", tz="UTC")
NU, MU = 1 / 300, 1 / 45
STATIONARY = NU / (NU + MU)


def day(n: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(days=n)


@pytest.mark.parametrize("delta, dt", [(0.0, 3.0), (0.3, 5.0), (2.0, 0.01), (0.0, 0.0)])
def test_prediction_step_is_the_normalised_matrix_exponential(delta: float, dt: float) -> None:
    generator = np.array([[-NU, NU], [MU, -MU - delta]]) * dt
    expected = np.array([0.4, 0.6]) @ expm(generator)
    p_out, p_in = ground_truth._propagate(
        np.array([0.4]), np.array([0.6]), np.array([NU]), np.array([MU]), np.array([delta]), np.array([dt])
    )
    np.testing.assert_allclose([p_out[0], p_in[0]], expected / expected.sum(), rtol=1e-9)


def test_prediction_step_is_stable_over_long_quiet_spells() -> None:
    args = [np.array([v]) for v in (0.5, 0.5, NU, MU)]
    _, drifted = ground_truth._propagate(*args, np.array([0.0]), np.array([5000.0]))
    assert drifted[0] == pytest.approx(STATIONARY)  # nothing observed: back to the stationary share
    _, quiet = ground_truth._propagate(*args, np.array([30.0]), np.array([5000.0]))  # would overflow cosh
    assert np.isfinite(quiet[0]) and 0 < quiet[0] < STATIONARY


def _truth(lead_ids: list[int], converted: dict[int, pd.Timestamp] | None = None) -> pd.DataFrame:
    converted = converted or {}
    n = len(lead_ids)
    nat = pd.Series([pd.NaT] * n, dtype="datetime64[ns, UTC]")
    return pd.DataFrame(
        {
            "lead_id": lead_ids,
            "hazard_out": 1e-4,
            "hazard_in": 1.5e-2,
            "hazard_nurture": 1e-3,
            "market_entry_rate": NU,
            "market_exit_rate": MU,
            "interest": 1.0,
            "nurture_entered_at": nat,
            "nurture_start": nat,
            "nurture_end": nat,
            "closed_at": nat,
            "converted_at": pd.Series([converted.get(i, pd.NaT) for i in lead_ids], dtype="datetime64[ns, UTC]"),
        }
    )


def _tables(
    leads: list[tuple[int, int | None]], activities: list[tuple[int, str, pd.Timestamp]]
) -> dict[str, pd.DataFrame]:
    return {
        "leads": pd.DataFrame(
            {
                "lead_id": [i for i, _ in leads],
                "account_id": pd.array([a for _, a in leads], dtype="Int64"),
                "created_at": [T0] * len(leads),
                "lead_source": "referral",
            }
        ),
        "activities": pd.DataFrame(
            {
                "lead_id": [a[0] for a in activities],
                "activity_type": [a[1] for a in activities],
                "occurred_at": pd.Series([a[2] for a in activities], dtype="datetime64[ns, UTC]"),
            }
        ),
    }


def _posterior(
    truth: pd.DataFrame, tables: dict[str, pd.DataFrame], rows: list[tuple[int, pd.Timestamp]]
) -> np.ndarray:
    return ground_truth.market_posterior(truth, tables, pd.DataFrame(rows, columns=["lead_id", "snapshot_at"]))


def test_a_demo_request_puts_the_account_in_market_and_quiet_time_lowers_the_belief() -> None:
    truth = _truth([1, 2, 3])
    tables = _tables([(1, 10), (2, 10), (3, None)], [(1, "demo_request", day(10))])
    p = _posterior(truth, tables, [(1, day(9)), (1, day(10)), (2, day(10)), (3, day(10)), (2, day(200))])
    assert p[0] < STATIONARY  # nine quiet days of two leads
    assert p[1] == pytest.approx(1.0) and p[2] == pytest.approx(1.0)  # only in market is a demo requested
    assert p[3] < STATIONARY  # lead 3 has no account: its own group, untouched by lead 1
    assert p[4] < 0.05  # after half a year of silence the account is almost surely out of market again


def test_an_event_moves_the_odds_by_its_in_market_to_interest_ratio() -> None:
    truth = _truth([1])
    quiet = _posterior(truth, _tables([(1, 10)], []), [(1, day(20))])[0]
    visit = _posterior(truth, _tables([(1, 10)], [(1, "pricing_page_visit", day(20))]), [(1, day(20))])[0]
    opened = _posterior(truth, _tables([(1, 10)], [(1, "email_open", day(20))]), [(1, day(20))])[0]
    interest = INTEREST_RATE * (0.2 + 0.8 * np.exp(-20 / 40)) * INTEREST_MIX["pricing_page_visit"]
    ratio = (interest + IN_MARKET_RATES["pricing_page_visit"]) / interest
    odds = lambda p: p / (1 - p)  # noqa: E731
    assert odds(visit) / odds(quiet) == pytest.approx(ratio, rel=1e-6)
    assert opened == pytest.approx(quiet)  # e-mail opens do not depend on the market state


def test_a_colleagues_conversion_raises_the_belief() -> None:
    tables = _tables([(1, 10), (2, 10)], [])
    alone = _posterior(_truth([1, 2]), tables, [(2, day(30))])[0]
    after = _posterior(_truth([1, 2], {1: day(30)}), tables, [(2, day(30))])[0]
    assert after > 10 * alone
