"""What the model must do whatever its AUC: reward engagement, mark junk down, ignore who a person is called.

Each test edits the demo CRM and scores it through the real feature code (`build_features`), so the whole
path a nightly score takes is exercised, not just the booster.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from conftest import DemoModel

from pipelines.modeling import monotone_directions
from pipelines.train import booster_predict

POSITIVE_ACTIVITIES = (
    "email_click",
    "web_visit",
    "pricing_page_visit",
    "content_download",
    "webinar_attend",
    "form_submit",
    "demo_request",
)
#: The activities whose extra events must raise most ideal buyers' scores. E-mail clicks and web visits are held
#: only to "never lower": the demo's buyers click and visit whatever their intent, so the model may read more of
#: them as no news (the test this replaces exempted the same two through a vacuous `or`).
STRONG_SIGNALS = tuple(a for a in POSITIVE_ACTIVITIES if a not in ("email_click", "web_visit"))


def _ideal_senior_buyers(model: DemoModel, count: int) -> pd.DataFrame:
    """(lead_id, snapshot_at) of open, genuine, high-fit VP / C-level leads, 20 days after their creation."""
    truth = model.truth.set_index("lead_id")
    leads = model.tables["leads"].set_index("lead_id")
    good = truth.index[(truth["fit"] >= 0.6) & truth["true_seniority"].isin(["vp", "c_level"]) & ~truth["bogus"]]
    stages = model.tables["stage_history"]
    candidates = []
    for lead_id in good:
        at = (leads.at[lead_id, "created_at"] + pd.Timedelta(days=20)).floor("D")
        if not ((stages["lead_id"] == lead_id) & (stages["entered_at"] <= at + pd.Timedelta(days=30))).any():
            candidates.append((lead_id, at))  # no funnel stage before or shortly after: open at t
        if len(candidates) == count:
            break
    assert len(candidates) == count, "the demo should hold enough ideal-fit senior buyers"
    return pd.DataFrame(candidates, columns=["lead_id", "snapshot_at"])


def _with_activities(
    tables: dict[str, pd.DataFrame], rows: pd.DataFrame, activity: str, count: int
) -> dict[str, pd.DataFrame]:
    """`count` extra `activity` events for each row's lead, a day before its snapshot."""
    if count == 0:
        return tables
    activities = tables["activities"]
    extra = pd.DataFrame(
        {
            "activity_id": activities["activity_id"].max() + 1 + np.arange(len(rows) * count),
            "lead_id": np.repeat(rows["lead_id"].to_numpy(), count),
            "occurred_at": np.repeat((rows["snapshot_at"] - pd.Timedelta(days=1)).to_numpy(), count),
            "activity_type": activity,
            "detail": None,
        }
    ).astype({"occurred_at": activities["occurred_at"].dtype})
    return {**tables, "activities": pd.concat([activities, extra], ignore_index=True)}


@pytest.fixture(scope="module")
def engagement_ladders(demo_model: DemoModel) -> dict[str, np.ndarray]:
    """Per activity: scores of 20 ideal senior buyers (columns) with 0, 2, 4 and 6 extra events of it (rows)."""
    rows = _ideal_senior_buyers(demo_model, 20)
    return {
        activity: np.stack(
            [demo_model.score(_with_activities(demo_model.tables, rows, activity, k), rows) for k in range(0, 7, 2)]
        )
        for activity in POSITIVE_ACTIVITIES
    }


@pytest.mark.parametrize("activity", POSITIVE_ACTIVITIES)
def test_more_engagement_from_an_ideal_senior_buyer_never_lowers_the_score(
    engagement_ladders: dict[str, np.ndarray], activity: str
) -> None:
    drops = np.diff(engagement_ladders[activity], axis=0)
    assert drops.min() >= -1e-9, f"{activity}: a score fell by {-drops.min():.4g} with more engagement"


@pytest.mark.parametrize("activity", STRONG_SIGNALS)
def test_more_of_a_strong_signal_raises_most_ideal_senior_buyers(
    engagement_ladders: dict[str, np.ndarray], activity: str
) -> None:
    scores = engagement_ladders[activity]
    assert (scores[-1] > scores[0]).mean() >= 0.5, f"{activity}: six more events raised too few scores"


def test_declared_directions_are_monotone_for_every_row(demo_model: DemoModel) -> None:
    """The constraints themselves: raise every +1 feature of real rows and no prediction may fall; raise every -1
    feature (unsubscribes, bounces, bogus signals) and none may rise."""
    sample = demo_model.frame.sample(2000, random_state=0)
    directions = dict(zip([f.name for f in demo_model.features], monotone_directions(demo_model.features), strict=True))
    up = [n for n, m in directions.items() if m > 0]
    down = [n for n, m in directions.items() if m < 0]  # unsubscribes, bounces, bogus flags, days since a signal
    assert up and down
    base = booster_predict(demo_model.booster, sample)
    for extra in (1, 3, 10):
        bumped = sample.copy()
        bumped[up] = bumped[up] + extra
        bumped[down] = (bumped[down] - extra).clip(lower=0)  # fewer negatives, more recent (missing stays missing)
        assert (booster_predict(demo_model.booster, bumped) >= base - 1e-12).all()


def test_bogus_leads_score_low(demo_model: DemoModel) -> None:
    bogus_ids = demo_model.truth.loc[demo_model.truth["bogus"], "lead_id"]
    frame = demo_model.frame
    scores = booster_predict(demo_model.booster, frame)
    is_bogus = frame["lead_id"].isin(bogus_ids).to_numpy()

    assert is_bogus.sum() > 100
    assert scores[is_bogus].mean() < 0.25 * scores[~is_bogus].mean()
    assert np.quantile(scores[is_bogus], 0.99) < np.quantile(scores[~is_bogus], 0.9)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "known limitation: on the demo every lead with 2+ bogus signals also has a junk title (parsed as an individual "
        "contributor), so the trees isolate junk by seniority and never split on the bogus flags themselves; an ideal "
        "VP typed in as 'Test Test <test@example.com>' keeps its score. Fix: a junk gate before scoring, or features "
        "that decouple the flags from the title. Remove this mark when it passes."
    ),
)
def test_making_a_good_lead_look_bogus_lowers_its_score(
    demo_model: DemoModel, edit_tables: Callable[[], dict[str, pd.DataFrame]]
) -> None:
    rows = _ideal_senior_buyers(demo_model, 20)
    tables = edit_tables()
    leads = tables["leads"]
    target = leads["lead_id"].isin(rows["lead_id"])
    leads.loc[target, ["first_name", "last_name"]] = ["Test", "Test"]
    leads.loc[target, "email"] = "test@example.com"

    before, after = demo_model.score(demo_model.tables, rows), demo_model.score(tables, rows)

    assert (after < before).mean() >= 0.9
    assert after.mean() < 0.5 * before.mean()


def test_names_and_emails_are_not_features(
    demo_model: DemoModel, edit_tables: Callable[[], dict[str, pd.DataFrame]]
) -> None:
    frame = demo_model.frame
    rows = frame.loc[
        frame["lead_id"].isin(frame["lead_id"].drop_duplicates().sample(300, random_state=1)),
        ["lead_id", "snapshot_at"],
    ].reset_index(drop=True)
    tables = edit_tables()
    leads = tables["leads"]
    target = leads["lead_id"].isin(rows["lead_id"])
    # another plausible person at the same e-mail domain (a bogus-looking address may legitimately change a flag)
    leads.loc[target, "first_name"] = np.where(leads.loc[target, "first_name"].str.len() % 2 == 0, "Maria", "Jonas")
    leads.loc[target, "last_name"] = "Lindqvist"
    domain = leads.loc[target, "email"].str.split("@").str[-1]
    leads.loc[target, "email"] = ("maria.lindqvist@" + domain).where(
        domain.notna() & leads.loc[target, "email"].notna(), leads.loc[target, "email"]
    )

    before, after = demo_model.score(demo_model.tables, rows), demo_model.score(tables, rows)

    np.testing.assert_array_equal(after, before)
    feature_names = {f.name for f in demo_model.features}
    assert not feature_names & {"first_name", "last_name", "email", "phone", "job_title"}
