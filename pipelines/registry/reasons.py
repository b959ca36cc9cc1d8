"""Reason codes in business words: per lead, the feature groups that raised and lowered its score the most.

LightGBM's `pred_contrib=True` gives per-row SHAP values (log-odds contributions) of every feature. Features are
grouped (one group per activity type for engagement and recency counts, so "pricing page visits" is one reason and
not four windows; one group per remaining feature family: fit, title, source, ...), a group's contribution is the
sum of its features', and each of the top groups is described by its strongest feature and the lead's value, e.g.
"visited the pricing page 3 times in the last 30 days", "VP-level title", "company outside the ideal profile".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

#: activity type -> (verb phrase, plural noun, singular noun): "visited the pricing page 3 times in the last 30
#: days", "no pricing page visits in total", "last pricing page visit 4 days ago".
ACTIVITY_WORDS: Final[dict[str, tuple[str, str, str]]] = {
    "email_open": ("opened marketing e-mails", "e-mail opens", "e-mail open"),
    "email_click": ("clicked marketing e-mails", "e-mail clicks", "e-mail click"),
    "web_visit": ("visited the website", "website visits", "website visit"),
    "pricing_page_visit": ("visited the pricing page", "pricing page visits", "pricing page visit"),
    "content_download": ("downloaded content", "content downloads", "content download"),
    "webinar_register": ("registered for webinars", "webinar registrations", "webinar registration"),
    "webinar_attend": ("attended webinars", "webinar attendances", "webinar attended"),
    "trade_show_scan": ("was scanned at trade shows", "trade show scans", "trade show scan"),
    "form_submit": ("submitted forms", "form submissions", "form submission"),
    "demo_request": ("requested a demo", "demo requests", "demo request"),
    "social_follow": ("followed us on social media", "social follows", "social follow"),
    "unsubscribe": ("unsubscribed from e-mails", "unsubscribes", "unsubscribe"),
    "email_bounce": ("had e-mails bounce", "e-mail bounces", "e-mail bounce"),
    "activities": ("was active", "activity", "activity"),
    "any_activity": ("was active", "activity", "activity"),
}
#: Title seniority codes (pipelines.crm.titles) as people say them.
SENIORITY_WORDS: Final[dict[str, str]] = {
    "c_level": "C-level title", "vp": "VP-level title", "director": "director-level title",
    "manager": "manager-level title", "individual": "individual-contributor title",
    "intern_student": "intern or student title",
}
#: Departments whose code is not plain English.
DEPARTMENT_WORDS: Final[dict[str, str]] = {"it": "IT", "hr": "HR"}
#: 0/1 flags: (text when 1, text when 0).
FLAG_WORDS: Final[dict[str, tuple[str, str]]] = {
    "icp_match": ("company in the ideal profile", "company outside the ideal profile"),
    "icp_industry": ("industry in the ideal profile", "industry outside the ideal profile"),
    "icp_size": ("company size in the ideal range", "company size outside the ideal range"),
    "icp_region": ("region in the ideal profile", "region outside the ideal profile"),
    "has_account": ("matched to a known company", "no known company"),
    "free_mail": ("free e-mail address", "business e-mail address"),
    "email_matches_account": ("e-mail domain matches the company", "e-mail domain differs from the company's"),
    "title_missing": ("no job title given", "job title given"),
    "name_missing": ("no name given", "name given"),
    "name_placeholder": ("placeholder name", "real-looking name"),
    "name_repeated": ("first and last name identical", "distinct first and last name"),
    "name_too_short": ("name too short", "name of normal length"),
    "name_has_digit": ("name contains digits", "name without digits"),
    "email_missing": ("no e-mail address", "e-mail address given"),
    "email_invalid": ("invalid e-mail address", "valid e-mail address"),
    "email_test_domain": ("test or disposable e-mail domain", "genuine e-mail domain"),
    "email_placeholder_mailbox": ("placeholder mailbox (e.g. noreply)", "personal mailbox"),
    "phone_missing": ("no phone number", "phone number given"),
    "phone_invalid": ("invalid phone number", "valid phone number"),
    "title_placeholder": ("placeholder job title", "real job title"),
    "ever_mql": ("was an MQL before", "never an MQL so far"),
    "ever_sal": ("was accepted by sales before", "never accepted by sales so far"),
    "ever_nurture": ("was put in nurture before", "never in nurture"),
    "ever_disqualified": ("was disqualified before", "never disqualified"),
}
_COUNT: Final = re.compile(r"^n_(?P<what>.+)_(?P<window>\d+d|all)$")
_SINCE: Final = re.compile(r"^days_since_(?P<what>.+)$")
_ACCOUNT_WINDOW: Final = re.compile(r"^account_other_(?P<what>activities|high_intent)_(?P<window>\d+d|all)$")
_VELOCITY: Final = re.compile(r"^(?:n_activities_(?P<when>last|prior)|activity_velocity)_(?P<days>\d+)d$")


@dataclass(frozen=True)
class ReasonFeature:
    """One model feature as the reasons see it: name, kind, family and the reason group it belongs to."""

    name: str
    kind: str
    family: str
    group: str


def reason_group(name: str, family: str) -> str:
    """The reason group of a feature: `activity:<type>` for engagement and recency counts, else its family."""
    if family in {"engagement", "recency"}:
        match = _COUNT.match(name) or _SINCE.match(name)
        if match:
            what = match["what"]
            return f"activity:{'any' if what in {'activities', 'any_activity'} else what}"
    return family or "other"


def reason_features(features: Sequence[Any]) -> list[ReasonFeature]:
    """ReasonFeatures of objects with name, kind and family (FeatureSpec, FeatureSpec or dicts)."""
    out = []
    for f in features:
        name, kind, family = (f["name"], f["kind"], f.get("family", "")) if isinstance(f, dict) else (
            f.name, f.kind, f.family)
        out.append(ReasonFeature(name=name, kind=kind, family=family, group=reason_group(name, family)))
    return out


def _window(window: str) -> str:
    return "in total" if window == "all" else f"in the last {int(window[:-1])} days"


def _n(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _days(value: float) -> str:
    days = round(float(value))
    return "less than a day" if days == 0 else "1 day" if days == 1 else f"{days:,} days"


def _times(value: float) -> str:
    return "once" if value == 1 else f"{_n(value)} times"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def describe(name: str, value: Any) -> str:
    """One feature's value of one lead in business words (falls back to "name: value")."""
    missing = _missing(value)
    if name in FLAG_WORDS and not missing:
        return FLAG_WORDS[name][0 if float(value) >= 0.5 else 1]
    if (m := _COUNT.match(name)) and m["what"] in ACTIVITY_WORDS and not missing:
        verb, noun, _ = ACTIVITY_WORDS[m["what"]]
        if m["what"] == "activities":
            return f"{_n(value)} activities {_window(m['window'])}" if value else f"no activity {_window(m['window'])}"
        return f"{verb} {_times(value)} {_window(m['window'])}" if value else f"no {noun} {_window(m['window'])}"
    if (m := _SINCE.match(name)) and m["what"] in ACTIVITY_WORDS:
        noun, single = ACTIVITY_WORDS[m["what"]][1:]
        return f"no {noun} yet" if missing else f"last {single} {_days(value)} ago"
    if (m := _VELOCITY.match(name)) and not missing:
        days = m["days"]
        if m["when"] == "last":
            return f"{_n(value)} activities in the last {days} days"
        if m["when"] == "prior":
            return f"{_n(value)} activities in the {days} days before that"
        trend = "rising" if value > 0 else "falling" if value < 0 else "flat"
        return f"activity {trend} over the last {days} days"
    if (m := _ACCOUNT_WINDOW.match(name)) and not missing:
        what = "activities" if m["what"] == "activities" else "pricing visits or demo requests"
        return f"{_n(value) if value else 'no'} {what} by colleagues at the company {_window(m['window'])}"
    if missing:
        return {
            "seniority": "seniority unknown", "department": "department unknown", "budget_range": "no budget stated",
            "purchase_timeframe": "no purchase timeframe stated", "industry": "industry unknown",
            "employee_count": "company size unknown", "annual_revenue": "company revenue unknown",
            "lead_source": "lead source unknown", "campaign_id": "no campaign",
            "days_since_stage_change": "no stage change yet",
        }.get(name, f"{name.replace('_', ' ')} unknown")
    numeric = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    text = _n(float(value)) if numeric else str(value).replace("_", " ")
    words = {
        "seniority": SENIORITY_WORDS.get(str(value), f"{text} title"),
        "department": f"works in {DEPARTMENT_WORDS.get(str(value), text)}", "industry": f"industry: {text}",
        "employee_count": f"company of {text} employees", "annual_revenue": f"annual revenue {text}",
        "region": f"region {text}", "country": f"based in {text}", "lead_source": f"came in via {text}",
        "campaign_id": f"campaign {text}", "campaign_channel": f"{text} campaign",
        "campaign_region": f"campaign aimed at {text}", "budget_range": f"stated budget {text}",
        "purchase_timeframe": f"plans to buy: {text}", "stage_at_t": (
            "not yet in the funnel" if text == "none" else f"currently at stage {text}"),
        "n_stage_entries": f"{text} stage changes so far",
        "days_since_stage_change": f"last stage change {_days(value) if numeric else text} ago",
        "distinct_content_all": f"downloaded {text} distinct content pieces",
        "lead_age_days": f"lead is {_days(value) if numeric else text} old",
        "account_contacts": f"{text} contacts at the company",
        "account_other_mql": f"{text} other contacts at the company are MQLs",
        "account_other_sql": f"{text} other contacts at the company reached SQL",
        "icp_fit_count": f"company matches {text} of 3 ideal-profile criteria",
        "bogus_signal_count": ("contact details look genuine" if text == "0"
                               else f"contact details look fake or incomplete ({text} warning signs)"),
    }
    if name in words:
        return words[name]
    return f"{name.replace('_', ' ')}: {text}"


def group_matrix(features: Sequence[ReasonFeature]) -> tuple[list[str], np.ndarray]:
    """The reason groups (first-seen order) and the (features x groups) 0/1 membership matrix."""
    groups = list(dict.fromkeys(f.group for f in features))
    index = {g: j for j, g in enumerate(groups)}
    member = np.zeros((len(features), len(groups)))
    for i, f in enumerate(features):
        member[i, index[f.group]] = 1.0
    return groups, member


def top_reasons(contrib: np.ndarray, frame: pd.DataFrame, features: Sequence[ReasonFeature], k: int
                ) -> tuple[list[list[str]], list[list[str]]]:
    """Per row, the k groups with the largest positive and the k with the most negative summed contributions.

    `contrib` is LightGBM's pred_contrib output (rows x (features + 1), the last column the bias) in the order of
    `features`; `frame` holds the same rows' feature values. Each reason is its group's strongest feature described.
    """
    n_features = len(features)
    contrib = np.asarray(contrib, dtype=float)[:, :n_features]
    groups, member = group_matrix(features)
    summed = contrib @ member
    names = [f.name for f in features]
    values = {name: frame[name].to_numpy(dtype=object) for name in names}
    group_cols = [np.flatnonzero(member[:, j]) for j in range(len(groups))]
    positive: list[list[str]] = []
    negative: list[list[str]] = []
    order = np.argsort(-summed, axis=1, kind="stable")
    for i in range(len(summed)):
        row = summed[i]
        ups = [j for j in order[i, :k] if row[j] > 0]
        downs = [j for j in order[i, ::-1][:k] if row[j] < 0]
        positive.append([_describe_group(contrib[i], group_cols[j], names, values, i, +1) for j in ups])
        negative.append([_describe_group(contrib[i], group_cols[j], names, values, i, -1) for j in downs])
    return positive, negative


def _describe_group(contrib_row: np.ndarray, cols: np.ndarray, names: list[str], values: dict[str, np.ndarray],
                    row: int, sign: int) -> str:
    """The group's feature pushing hardest in the reason's direction, described with this row's value."""
    best = cols[int(np.argmax(sign * contrib_row[cols]))]
    return describe(names[best], values[names[best]][row])
