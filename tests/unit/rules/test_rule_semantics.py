"""What each kind of rule means: fit conditions, engagement counts, windows, decay, caps, gates, and the output."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from rule_frames import T0, days, make_crm, score

from pipelines import rules
from pipelines.crm.schema import CrmDataError, validate_table
from tests.support.params import demo_icp


def test_canonical_matches_validation() -> None:
    crm = make_crm(LEADS, [(1, "email_open", days(1))])
    for table, frame in crm.items():
        pd.testing.assert_frame_equal(frame, validate_table(table, frame), check_like=True)


def fit_rule(cond: dict[str, Any], points: float = 10) -> dict[str, Any]:
    return {"threshold": 1000, "fit": [{"name": "r", "when": cond, "points": points}]}


def engagement(rule: dict[str, Any], threshold: float | None = 1000) -> dict[str, Any]:
    return {"threshold": threshold, "engagement": [{"name": "e", "points": 1, **rule}]}


# ------------------------------------------------------------------------------------------------------------
# Fit conditions
# ------------------------------------------------------------------------------------------------------------

LEADS = [
    # 1: ideal account, US, VP marketing, company mail, webinar campaign, budget given
    {
        "lead_id": 1,
        "account_id": 10,
        "country": "US",
        "job_title": "VP Mktg",
        "email": "ada@acme.com",
        "campaign_id": 1,
        "lead_source": "webinar",
        "budget_range": "50k-250k",
    },
    # 2: APAC account, no own country, intern, free mail
    {"lead_id": 2, "account_id": 11, "job_title": "Marketing intern", "email": "zoe@Gmail.com"},
    # 3: account with nothing known, own country DE, no title, no email
    {"lead_id": 3, "account_id": 12, "country": "DE"},
    # 4: no account, no country
    {"lead_id": 4},
]


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ({"field": "industry", "op": "in", "value": ["Software", "Healthcare"]}, [1]),
        ({"field": "industry", "op": "eq", "value": "Retail"}, [2]),
        ({"field": "industry", "op": "ne", "value": "Retail"}, [1]),  # a missing industry never satisfies ne
        ({"field": "industry", "op": "not_in", "value": ["Software"]}, [2]),
        ({"field": "industry", "op": "is_null"}, [3, 4]),
        ({"field": "industry", "op": "not_null"}, [1, 2]),
        ({"field": "employee_count", "op": "between", "value": [200, 5000]}, [1]),
        ({"field": "employee_count", "op": "between", "value": [100, 100]}, [2]),  # inclusive both ends
        ({"field": "employee_count", "op": "gt", "value": 100}, [1]),
        ({"field": "employee_count", "op": "gte", "value": 100}, [1, 2]),
        ({"field": "employee_count", "op": "lt", "value": 250}, [2]),
        ({"field": "employee_count", "op": "lte", "value": 250}, [1, 2]),
        ({"field": "employee_count", "op": "in", "value": [100, 7]}, [2]),
        ({"field": "region", "op": "eq", "value": "NA"}, [1]),
        ({"field": "region", "op": "eq", "value": "APAC"}, [2]),  # no own country: the account's region
        ({"field": "region", "op": "eq", "value": "EMEA"}, [3]),  # own country DE beats the account (none)
        ({"field": "region", "op": "is_null"}, [4]),
        ({"field": "country", "op": "eq", "value": "JP"}, [2]),  # the account's country when the lead has none
        ({"field": "seniority", "op": "eq", "value": "vp"}, [1]),
        ({"field": "seniority", "op": "eq", "value": "intern_student"}, [2]),
        ({"field": "seniority", "op": "eq", "value": "unknown"}, [3, 4]),
        ({"field": "department", "op": "eq", "value": "marketing"}, [1, 2]),
        ({"field": "free_mail_domain", "op": "eq", "value": True}, [2]),
        ({"field": "free_mail_domain", "op": "eq", "value": False}, [1]),  # no email: neither true nor false
        ({"field": "email_domain", "op": "eq", "value": "gmail.com"}, [2]),
        ({"field": "lead_source", "op": "eq", "value": "webinar"}, [1]),
        ({"field": "campaign_id", "op": "eq", "value": 1}, [1]),
        ({"field": "campaign_channel", "op": "eq", "value": "webinar"}, [1]),
        ({"field": "budget_range", "op": "not_null"}, [1]),
        ({"field": "purchase_timeframe", "op": "is_null"}, [1, 2, 3, 4]),
    ],
)
def test_field_conditions_select_the_expected_leads(cond: dict[str, Any], expected: list[int]) -> None:
    out = score(fit_rule(cond), make_crm(LEADS), [(lead, days(1)) for lead in (1, 2, 3, 4)])
    assert out.loc[out["rule_score"] == 10, "lead_id"].tolist() == expected
    assert set(out["rule_score"]) <= {0.0, 10.0}


def test_all_of_any_of_and_not_combine_conditions() -> None:
    cond = {
        "any_of": [
            {
                "all_of": [
                    {"field": "region", "op": "eq", "value": "NA"},
                    {"field": "seniority", "op": "eq", "value": "vp"},
                ]
            },
            {"not": {"field": "industry", "op": "not_null"}},
        ]
    }
    out = score(fit_rule(cond), make_crm(LEADS), [(lead, days(1)) for lead in (1, 2, 3, 4)])
    assert out.loc[out["rule_score"] == 10, "lead_id"].tolist() == [1, 3, 4]


def test_negative_points_count_against_the_score() -> None:
    raw = {
        "threshold": 5,
        "fit": [
            {"name": "icp", "when": {"field": "industry", "op": "eq", "value": "Software"}, "points": 10},
            {"name": "free_mail", "when": {"field": "free_mail_domain", "op": "eq", "value": True}, "points": -10},
            {"name": "student", "when": {"field": "seniority", "op": "eq", "value": "intern_student"}, "points": -20},
        ],
    }
    out = score(raw, make_crm(LEADS[:2]), [(1, days(1)), (2, days(1))])
    assert out["rule_score"].tolist() == [10.0, -30.0]
    assert out["rule_mql"].tolist() == [True, False]


# ------------------------------------------------------------------------------------------------------------
# Engagement: counts, windows, decay, caps
# ------------------------------------------------------------------------------------------------------------


def test_points_per_activity_of_the_listed_types() -> None:
    acts = [
        (1, "email_open", days(1)),
        (1, "email_open", days(2)),
        (1, "email_click", days(3)),
        (1, "web_visit", days(4)),
        (2, "email_open", days(1)),
    ]
    raw = {
        "threshold": 1000,
        "engagement": [
            {"name": "opens", "activity": "email_open", "points": 1},
            {"name": "clicks_and_visits", "activity": ["email_click", "web_visit"], "points": 3},
            {"name": "bounce", "activity": "email_bounce", "points": -30},
        ],
    }
    out = score(raw, make_crm([{"lead_id": 1}, {"lead_id": 2}], acts), [(1, days(10)), (2, days(10))])
    assert out["rule_score"].tolist() == [8.0, 1.0]
    assert out["rules_fired"].tolist() == [
        "2 e-mail opens (+2); 2 e-mail clicks or website visits (+6)",
        "1 e-mail open (+1)",
    ]


def test_events_after_the_snapshot_never_count_and_an_event_at_the_snapshot_does() -> None:
    at = days(5)
    acts = [
        (1, "demo_request", at),
        (1, "demo_request", at + pd.Timedelta(1, "ns")),
        (1, "demo_request", days(30)),
        (2, "demo_request", days(1)),
    ]
    raw = engagement({"activity": "demo_request", "points": 30})
    snapshots = [(1, at - pd.Timedelta(1, "ns")), (1, at), (1, days(6)), (1, days(40)), (2, days(0))]
    out = score(raw, make_crm([{"lead_id": 1}, {"lead_id": 2}], acts), snapshots)
    assert out["rule_score"].tolist() == [0.0, 30.0, 60.0, 90.0, 0.0]


def test_a_window_counts_activities_in_the_last_n_days_only() -> None:
    at = days(100)
    acts = [
        (1, "webinar_attend", at - pd.Timedelta(days=30)),  # exactly 30 days before: outside (t - 30d, t]
        (1, "webinar_attend", at - pd.Timedelta(days=30) + pd.Timedelta(1, "s")),
        (1, "webinar_attend", at),
        (1, "webinar_attend", at + pd.Timedelta(1, "s")),
    ]
    out = score(
        engagement({"activity": "webinar_attend", "within_days": 30}),
        make_crm([{"lead_id": 1}], acts),
        [(1, at), (1, at + pd.Timedelta(days=30))],
    )
    assert out["rule_score"].tolist() == [2.0, 1.0]


def test_half_life_decay_halves_points_every_half_life() -> None:
    at = days(200)
    acts = [
        (1, "content_download", at - pd.Timedelta(days=30)),
        (1, "content_download", at - pd.Timedelta(days=60)),
        (1, "content_download", at),
    ]
    raw = engagement({"activity": "content_download", "points": 8, "half_life_days": 30})
    out = score(raw, make_crm([{"lead_id": 1}], acts), [(1, at), (1, at - pd.Timedelta(days=30))])
    assert out["rule_score"].to_numpy() == pytest.approx([8 * (1 + 0.5 + 0.25), 8 * (1 + 0.5)])
    assert out["rules_fired"].tolist() == ["3 content downloads (+14)", "2 content downloads (+12)"]


def test_decay_with_a_window_drops_old_activities_entirely() -> None:
    at = days(200)
    acts = [(1, "web_visit", at - pd.Timedelta(days=10)), (1, "web_visit", at - pd.Timedelta(days=50))]
    raw = engagement({"activity": "web_visit", "points": 4, "half_life_days": 10, "within_days": 30})
    out = score(raw, make_crm([{"lead_id": 1}], acts), [(1, at)])
    assert out["rule_score"].iloc[0] == pytest.approx(2.0)
    assert out["rules_fired"].iloc[0] == "1 website visit in the last 30 days (+2)"


SECONDS_PER_DAY = 86_400


def test_decay_stays_exact_over_many_half_lives_and_long_histories() -> None:
    """A half-life of a few hours over three years of activity: the epoch bookkeeping must neither overflow nor
    lose recent activity; compared with a direct sum."""
    rng = np.random.default_rng(5)
    when = np.sort(rng.integers(0, 3 * 365 * SECONDS_PER_DAY, 400))  # whole seconds, as CRMs stamp activities
    acts = [(1 + i % 2, "email_click", T0 + pd.Timedelta(seconds=int(t))) for i, t in enumerate(when)]
    half_life = 0.2
    raw = engagement({"activity": "email_click", "points": 3, "half_life_days": half_life})
    snap_seconds = np.concatenate([rng.integers(0, 3 * 365 * SECONDS_PER_DAY, 40), when[:10] + 1])  # + just after
    snapshots = [(lead, T0 + pd.Timedelta(seconds=int(t))) for t in snap_seconds for lead in (1, 2)]
    out = score(raw, make_crm([{"lead_id": 1}, {"lead_id": 2}], acts), snapshots)
    activity_ns = np.array([when.value for _, _, when in acts])
    activity_lead = np.array([1 + i % 2 for i in range(len(when))])
    expected = []
    for lead, at in snapshots:
        age_days = (at.value - activity_ns[(activity_lead == lead) & (activity_ns <= at.value)]) / 86_400e9
        expected.append(3 * np.exp2(-age_days / half_life).sum())
    np.testing.assert_allclose(out["rule_score"].to_numpy(), expected, rtol=1e-9, atol=1e-12)


def test_max_points_caps_a_rule_in_either_direction() -> None:
    acts = [(1, "web_visit", days(i)) for i in range(1, 9)] + [(2, "unsubscribe", days(1)), (2, "unsubscribe", days(2))]
    raw = {
        "threshold": 1000,
        "engagement": [
            {"name": "visits", "activity": "web_visit", "points": 2, "max_points": 10},
            {"name": "unsub", "activity": "unsubscribe", "points": -20, "max_points": 25},
        ],
    }
    out = score(raw, make_crm([{"lead_id": 1}, {"lead_id": 2}], acts), [(1, days(20)), (1, days(3)), (2, days(20))])
    assert out["rule_score"].tolist() == [10.0, 6.0, -25.0]
    assert out["rules_fired"].tolist() == ["8 website visits (+10)", "3 website visits (+6)", "2 unsubscribes (-25)"]


def test_an_activity_condition_gives_points_once_and_honours_min_count_and_window() -> None:
    acts = [(1, "webinar_attend", days(1)), (1, "webinar_attend", days(50)), (1, "webinar_attend", days(55))]
    raw = {
        "threshold": 1000,
        "fit": [
            {"name": "attended", "when": {"activity": "webinar_attend"}, "points": 20},
            {
                "name": "twice_recently",
                "when": {"activity": ["webinar_attend"], "within_days": 30, "min_count": 2},
                "points": 5,
            },
        ],
    }
    out = score(raw, make_crm([{"lead_id": 1}], acts), [(1, days(0)), (1, days(2)), (1, days(56)), (1, days(90))])
    assert out["rule_score"].tolist() == [0.0, 20.0, 25.0, 20.0]


# ------------------------------------------------------------------------------------------------------------
# Thresholds, gates and the four-part definition
# ------------------------------------------------------------------------------------------------------------


def test_threshold_is_inclusive() -> None:
    raw = engagement({"activity": "pricing_page_visit", "points": 10}, threshold=20)
    acts = [(1, "pricing_page_visit", days(1)), (1, "pricing_page_visit", days(2))]
    out = score(raw, make_crm([{"lead_id": 1}], acts), [(1, days(1)), (1, days(2))])
    assert out["rule_mql"].tolist() == [False, True]
    assert out["rule_threshold"].tolist() == [20.0, 20.0]


FOUR_PART_LEADS = [
    # 1: meets all four parts; 2: wrong role (intern); 3: not an ideal company; 4: ideal and VP but no intent;
    # 5: all four parts but the content download is 120 days old (outside the 90-day window)
    {"lead_id": 1, "account_id": 10, "country": "US", "job_title": "Director of Sales"},
    {"lead_id": 2, "account_id": 10, "country": "US", "job_title": "Marketing intern"},
    {"lead_id": 3, "account_id": 11, "job_title": "CEO"},
    {"lead_id": 4, "account_id": 10, "country": "US", "job_title": "VP Marketing"},
    {"lead_id": 5, "account_id": 10, "country": "US", "job_title": "CTO"},
]
AT = days(200)
FOUR_PART_ACTS = [
    *[(lead, "content_download", AT - pd.Timedelta(days=20)) for lead in (1, 2, 3, 4)],
    *[(lead, "demo_request", AT - pd.Timedelta(days=2)) for lead in (1, 2, 3, 5)],
    (5, "content_download", AT - pd.Timedelta(days=120)),
]


def test_four_part_definition_needs_every_part() -> None:
    ruleset = rules.load_rules("config/mql_rules_four_part.yaml", demo_icp())
    keys = pd.DataFrame({"lead_id": [1, 2, 3, 4, 5], "snapshot_at": AT})
    out = rules.evaluate_rules(ruleset, keys, make_crm(FOUR_PART_LEADS, FOUR_PART_ACTS))
    assert out["rule_mql"].tolist() == [True, False, False, False, False]
    assert out["rule_threshold"].isna().all()  # no score bar: the gates decide
    fired = out["rules_fired"].tolist()
    assert "ideal company: met; target role: met; confirmed problem: met; willing to meet: met" in fired[0]
    assert "target role: not met" in fired[1]
    assert "ideal company: not met" in fired[2]
    assert "willing to meet: not met" in fired[3]
    assert "confirmed problem: not met" in fired[4]
    assert "director-level title or above (+15)" in fired[0]  # the rule's description, not its code
    # Before the demo request lead 1 was not willing to meet yet; 40 days later its intent is stale again.
    later = rules.evaluate_rules(
        ruleset,
        pd.DataFrame({"lead_id": [1, 1], "snapshot_at": [AT - pd.Timedelta(days=3), AT + pd.Timedelta(days=40)]}),
        make_crm(FOUR_PART_LEADS, FOUR_PART_ACTS),
    )
    assert later["rule_mql"].tolist() == [False, False]
    assert later["rule_mql_since"].isna().iloc[0]
    assert later["rule_mql_since"].iloc[1] == AT - pd.Timedelta(days=2)


def test_gates_and_a_threshold_must_both_hold() -> None:
    raw = {
        "threshold": 30,
        "engagement": [{"name": "demo", "activity": "demo_request", "points": 30}],
        "gates": [{"name": "icp", "when": {"field": "industry", "op": "eq", "value": "Software"}}],
    }
    acts = [(1, "demo_request", days(1)), (2, "demo_request", days(1))]
    out = score(
        raw,
        make_crm(
            [{"lead_id": 1, "account_id": 10}, {"lead_id": 2, "account_id": 11}, {"lead_id": 3, "account_id": 10}], acts
        ),
        [(1, days(2)), (2, days(2)), (3, days(2))],
    )
    assert out["rule_mql"].tolist() == [True, False, False]


# ------------------------------------------------------------------------------------------------------------
# The output: explanation, "ever MQL", order
# ------------------------------------------------------------------------------------------------------------


def test_fired_rules_name_each_contribution_in_file_order() -> None:
    raw = {
        "threshold": 40,
        "fit": [
            {"name": "industry_icp", "when": {"field": "industry", "op": "eq", "value": "Software"}, "points": 10},
            {"name": "never", "when": {"field": "industry", "op": "eq", "value": "Retail"}, "points": 99},
        ],
        "engagement": [
            {"name": "demo_request", "activity": "demo_request", "points": 30},
            {"name": "email_open", "activity": "email_open", "points": 1},
            {"name": "unsubscribe", "activity": "unsubscribe", "points": -20},
        ],
    }
    acts = [(1, "demo_request", days(1)), (1, "unsubscribe", days(2))]
    out = score(
        raw,
        make_crm([{"lead_id": 1, "account_id": 10}, {"lead_id": 2}], acts),
        [(1, days(1)), (1, days(3)), (2, days(3))],
    )
    assert out["rules_fired"].tolist() == [
        "industry icp (+10); 1 demo request (+30)",  # no description: the name in words
        "industry icp (+10); 1 demo request (+30); 1 unsubscribe (-20)",
        "",
    ]


def test_mql_since_keeps_the_first_crossing_after_the_score_falls_back() -> None:
    raw = {
        "threshold": 30,
        "engagement": [
            {"name": "demo", "activity": "demo_request", "points": 30},
            {"name": "unsub", "activity": "unsubscribe", "points": -20},
        ],
    }
    crossing = days(3) + pd.Timedelta(minutes=7)
    acts = [(1, "demo_request", crossing), (1, "unsubscribe", days(5))]
    out = score(raw, make_crm([{"lead_id": 1}], acts), [(1, days(2)), (1, days(4)), (1, days(6))])
    assert out["rule_mql"].tolist() == [False, True, False]
    assert out["rule_mql_since"].isna().tolist() == [True, False, False]
    assert (out["rule_mql_since"].dropna() == crossing).all()


def test_mql_since_is_the_creation_time_when_fit_alone_suffices() -> None:
    raw = {
        "threshold": 10,
        "fit": [{"name": "icp", "when": {"field": "industry", "op": "eq", "value": "Software"}, "points": 10}],
    }
    created = T0 + pd.Timedelta(hours=5)
    out = score(raw, make_crm([{"lead_id": 1, "account_id": 10, "created_at": created}]), [(1, days(9))])
    assert out["rule_mql_since"].iloc[0] == created


def test_rows_keep_the_snapshot_order_and_duplicates_and_the_output_columns() -> None:
    raw = engagement({"activity": "email_open"})
    acts = [(1, "email_open", days(1)), (2, "email_open", days(1)), (2, "email_open", days(2))]
    snapshots = [(2, days(3)), (1, days(3)), (2, days(1)), (2, days(3))]
    out = score(raw, make_crm([{"lead_id": 1}, {"lead_id": 2}], acts), snapshots)
    assert list(out.columns) == list(rules.OUTPUT_COLUMNS)
    assert out["lead_id"].tolist() == [2, 1, 2, 2]
    assert out["snapshot_at"].tolist() == [days(3), days(3), days(1), days(3)]
    assert out["rule_score"].tolist() == [2.0, 1.0, 1.0, 2.0]
    assert str(out["snapshot_at"].dt.tz) == "UTC" and out["rule_mql"].dtype == bool


def test_snapshots_of_unknown_leads_are_bad_input() -> None:
    with pytest.raises(CrmDataError, match=r"lead_id\(s\) not in the leads table, e.g. \[99\]"):
        score(engagement({"activity": "email_open"}), make_crm([{"lead_id": 1}]), [(99, days(1))])


def test_vectorised_scores_match_a_direct_loop_on_random_data() -> None:
    """Random leads, activities and snapshots: every rule kind against a plain per-row Python computation."""
    rng = np.random.default_rng(11)
    n_leads = 40
    leads = [{"lead_id": i, "account_id": int(rng.choice([10, 11, 12]))} for i in range(1, n_leads + 1)]
    types = ["email_open", "web_visit", "demo_request", "unsubscribe"]
    acts = [  # whole seconds, as CRMs stamp activities
        (int(rng.integers(1, n_leads + 1)), str(rng.choice(types)), T0 + pd.Timedelta(seconds=int(t)))
        for t in rng.integers(0, 60 * SECONDS_PER_DAY, 600)
    ]
    acts += [(lead, kind, when) for lead, kind, when in acts[:30]]  # same-instant duplicates
    snapshots = [
        (int(rng.integers(1, n_leads + 1)), T0 + pd.Timedelta(seconds=int(t)))
        for t in rng.integers(0, 70 * SECONDS_PER_DAY, 300)
    ]
    snapshots += [(lead, when) for lead, _, when in acts[:50]]  # exactly at an activity
    raw = {
        "threshold": 25,
        "fit": [{"name": "icp", "when": {"field": "industry", "op": "eq", "value": "Software"}, "points": 10}],
        "engagement": [
            {"name": "opens", "activity": "email_open", "points": 1},
            {"name": "visits", "activity": "web_visit", "points": 2, "within_days": 14},
            {"name": "demo", "activity": "demo_request", "points": 30, "half_life_days": 7},
            {"name": "unsub", "activity": "unsubscribe", "points": -20, "max_points": 30},
        ],
    }
    out = score(raw, make_crm(leads, acts), snapshots)
    industry = {10: "Software", 11: "Retail", 12: None}
    expected = []
    for lead, at in snapshots:
        mine = [(kind, when) for who, kind, when in acts if who == lead and when <= at]
        total = 10.0 if industry[leads[lead - 1]["account_id"]] == "Software" else 0.0
        total += sum(1 for kind, _ in mine if kind == "email_open")
        total += 2 * sum(1 for kind, when in mine if kind == "web_visit" and when > at - pd.Timedelta(days=14))
        total += sum(30 * 0.5 ** ((at - when) / pd.Timedelta(days=7)) for kind, when in mine if kind == "demo_request")
        total += max(-30, -20 * sum(1 for kind, _ in mine if kind == "unsubscribe"))
        expected.append(total)
    np.testing.assert_allclose(out["rule_score"].to_numpy(), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(out["rule_mql"].to_numpy(), np.array(expected) >= 25)


def test_activities_count_on_the_features_whole_second_clock() -> None:
    """The rules count as the features do (`features/timeline.py`): an activity is known from the whole second after
    its stamp, a snapshot sees up to the whole second before it, so a sub-second stamp is never counted early."""
    activity = T0 + pd.Timedelta(seconds=10.3)
    raw = engagement({"activity": "demo_request", "points": 30})
    crm = make_crm([{"lead_id": 1}], [(1, "demo_request", activity)])
    at = [activity, T0 + pd.Timedelta(seconds=10.7), T0 + pd.Timedelta(seconds=11)]
    out = score(raw, crm, [(1, t) for t in at])
    assert out["rule_score"].tolist() == [0.0, 0.0, 30.0]
    assert out["snapshot_at"].tolist() == at  # the snapshot times themselves are kept as given
