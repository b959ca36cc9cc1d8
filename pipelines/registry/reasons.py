"""Reason codes in business words: per lead, the feature groups that raised and lowered its score the most.

LightGBM's `pred_contrib=True` gives per-row SHAP values (log-odds contributions) of every feature. Features are
grouped (one group per activity type for engagement and recency counts, so "pricing page visits" is one reason and
not four windows; one group per remaining feature family: fit, title, source, ...), a group's contribution is the
sum of its features', and each of the top groups is described by its strongest feature and the lead's value, e.g.
"visited the pricing page 3 times in the last 30 days", "VP-level title", "company outside the ideal profile".
A reason that contradicts its feature's declared business direction (pipelines.features.directions: "unsubscribed
once" in favour, "no demo requests" in favour, "no unsubscribes" against) or that rests on a missing or unknown
value in favour ("unknown title") is left out, so what sales reads always makes sense on its face.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd

from pipelines.features.directions import feature_direction
from pipelines.words import (
    ACTIVITY_WORDS,
    CHANNEL_WORDS,
    LEAD_SOURCE_WORDS,
    REGION_WORDS,
    number,
    plural,
    times,
)

#: Title seniority codes (pipelines.crm.titles) as people say them.
SENIORITY_WORDS: Final[dict[str, str]] = {
    "c_level": "C-level title",
    "vp": "VP-level title",
    "director": "director-level title",
    "manager": "manager-level title",
    "individual": "individual-contributor title",
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
#: Account readiness (pipelines.features.readiness): the whole account's decayed signals, their change, its breadth.
_ACCOUNT_DECAY: Final = re.compile(r"^account_(?P<what>intent|engagement)_(?P<how>decay|change)_(?P<days>[\d.]+)d$")
_ACCOUNT_BREADTH: Final = re.compile(r"^account_(?P<what>engaged|intent)_contacts_(?P<change>change_)?(?P<days>\d+)d$")
_ACCOUNT_SINCE: Final = re.compile(r"^days_since_account_(?P<what>intent|engagement)$")
_COLLEAGUE_SQL: Final = re.compile(r"^account_other_sql_(?P<days>\d+)d$")
_ACCOUNT_SIGNALS: Final[dict[str, tuple[str, str]]] = {
    "intent": ("pricing visit or demo request", "pricing visits or demo requests"),
    "engagement": ("click, visit, download or form", "clicks, visits, downloads and forms"),
}


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
        name, kind, family = (
            (f["name"], f["kind"], f.get("family", "")) if isinstance(f, dict) else (f.name, f.kind, f.family)
        )
        out.append(ReasonFeature(name=name, kind=kind, family=family, group=reason_group(name, family)))
    return out


def _window(window: str, none: bool = False) -> str:
    if window == "all":
        return "so far" if none else "in total"
    return f"in the last {int(window[:-1])} days"


def _n(value: float) -> str:
    return number(value)


def _days(value: float) -> str:
    days = round(float(value))
    return "less than a day" if days == 0 else plural(days, "day")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


#: Category values that mean "we do not know" (parsed titles): like a missing value, never a reason in favour.
UNKNOWN_LEVELS: Final[frozenset[str]] = frozenset({"unknown"})
#: What to say for a missing value, per feature.
MISSING_WORDS: Final[dict[str, str]] = {
    "seniority": "seniority unknown",
    "department": "department unknown",
    "budget_range": "no budget stated",
    "purchase_timeframe": "no purchase timeframe stated",
    "industry": "industry unknown",
    "employee_count": "company size unknown",
    "annual_revenue": "company revenue unknown",
    "lead_source": "lead source unknown",
    "campaign_id": "no campaign",
    "campaign_channel": "no campaign",
    "campaign_region": "no campaign",
    "region": "region unknown",
    "country": "country unknown",
    "days_since_stage_change": "no stage change yet",
}
#: Zero counts of the negative activities, all time: the absence said plainly.
_NEVER: Final[dict[str, str]] = {"unsubscribe": "never unsubscribed", "email_bounce": "no e-mail ever bounced"}
_BUDGET: Final[dict[str, str]] = {"<10k": "under 10k", ">250k": "over 250k"}
_TIMEFRAME: Final[dict[str, str]] = {
    "0-3 months": "plans to buy within 3 months",
    "3-6 months": "plans to buy in 3-6 months",
    "6-12 months": "plans to buy in 6-12 months",
    ">12 months": "plans to buy in over a year",
    "no plans": "no plans to buy",
}
_STAGE: Final[dict[str, str]] = {
    "none": "not yet in the funnel",
    "MQL": "currently an MQL",
    "SAL": "currently accepted by sales",
    "Nurture": "currently in nurture",
}


def _money(value: float) -> str:
    for size, word in ((1e9, "billion"), (1e6, "million"), (1e3, "thousand")):
        if abs(value) >= size:
            return f"{number(round(value / size, 1))} {word}"
    return number(value)


def _colleagues(count: float, one: str, many: str) -> str:
    """ "1 other contact at the company is an MQL", "no other contact at the company ..."."""
    if count == 0:
        return f"no other contact at the company {one}"
    return f"{plural(count, 'other contact')} at the company {one if count == 1 else many}"


def _activity(what: str, window: str, value: float) -> str:
    verb, noun, single = ACTIVITY_WORDS[what]
    if what == "activities":
        return plural(value, single, noun) + f" {_window(window)}" if value else f"no activity {_window(window, True)}"
    if value:
        return f"{verb} {times(value)} {_window(window)}"
    if window == "all" and what in _NEVER:
        return _NEVER[what]
    return f"no {noun} {_window(window, True)}"


def _readiness(name: str, value: Any, missing: bool) -> str | None:
    """Words for the account readiness features, None for any other feature."""
    if m := _ACCOUNT_SINCE.match(name):
        many = _ACCOUNT_SIGNALS[m["what"]][1]
        return f"no {many} at the company yet" if missing else f"latest {many} at the company {_days(value)} ago"
    if name == "days_since_account_other_sql":
        return (
            "no colleague at the company has reached SQL yet"
            if missing
            else (f"a colleague at the company reached SQL {_days(value)} ago")
        )
    readiness = (_ACCOUNT_DECAY, _ACCOUNT_BREADTH, _COLLEAGUE_SQL)
    if missing or not (name == "account_open_contacts" or any(p.match(name) for p in readiness)):
        return None
    count = float(value)
    if m := _ACCOUNT_DECAY.match(name):
        one, many = _ACCOUNT_SIGNALS[m["what"]]
        if m["how"] == "decay":
            if count < 0.05:
                return f"no recent {many} across the company"
            shown = round(count, 1)
            return f"{plural(shown, 'recent ' + one, 'recent ' + many)} across the company (half-life {m['days']} days)"
        days = m["days"]
        if count == 0:
            return f"{many} across the company steady over the last {days} days"
        more = "more" if count > 0 else "fewer"
        return f"{many} across the company {'rising' if count > 0 else 'falling'}: {number(abs(count))} {more} in " + (
            f"the last {days} days than in the {days} before"
        )
    if m := _ACCOUNT_BREADTH.match(name):
        did = "engaged" if m["what"] == "engaged" else "showed buying intent"
        days = m["days"]
        if m["change"]:
            more = "more" if count >= 0 else "fewer"
            return (
                f"{number(abs(count))} {more} {'contact' if abs(count) == 1 else 'contacts'} at the company {did} "
                + (f"in the last {days} days than in the {days} before")
            )
        return f"{plural(count, 'contact')} at the company {did} in the last {days} days"
    if m := _COLLEAGUE_SQL.match(name):
        return _colleagues(
            count, f"reached SQL in the last {m['days']} days", f"reached SQL in the last {m['days']} days"
        )
    if name == "account_open_contacts":
        return f"{plural(count, 'open contact')} at the company, this one included"
    return None


def describe(name: str, value: Any) -> str:
    """One feature's value of one lead in business words (falls back to "name: value")."""
    missing = _missing(value)
    if name in FLAG_WORDS and not missing:
        return FLAG_WORDS[name][0 if float(value) >= 0.5 else 1]
    if (m := _COUNT.match(name)) and m["what"] in ACTIVITY_WORDS and not missing:
        return _activity(m["what"], m["window"], float(value))
    if (m := _SINCE.match(name)) and m["what"] in ACTIVITY_WORDS:
        noun, single = ACTIVITY_WORDS[m["what"]][1:]
        return f"no {noun} yet" if missing else f"last {single} {_days(value)} ago"
    if (m := _VELOCITY.match(name)) and not missing:
        days = m["days"]
        if m["when"] == "last":
            return f"{plural(value, 'activity', 'activities')} in the last {days} days"
        if m["when"] == "prior":
            return f"{plural(value, 'activity', 'activities')} in the {days} days before that"
        trend = "rising" if value > 0 else "falling" if value < 0 else "flat"
        return f"activity {trend} over the last {days} days"
    if (m := _ACCOUNT_WINDOW.match(name)) and not missing:
        one, many = (
            ("activity", "activities")
            if m["what"] == "activities"
            else ("pricing visit or demo request", "pricing visits or demo requests")
        )
        counted = plural(value, one, many) if value else f"no {many}"
        return f"{counted} by colleagues at the company {_window(m['window'], not value)}"
    if (text := _readiness(name, value, missing)) is not None:
        return text
    if missing or str(value) in UNKNOWN_LEVELS:
        return MISSING_WORDS.get(name, f"{name.replace('_', ' ')} unknown")
    numeric = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    code = str(value)
    text = _n(float(value)) if numeric else code.replace("_", " ")
    count = float(value) if numeric else math.nan
    words = {
        "seniority": SENIORITY_WORDS.get(code, f"{text} title"),
        "department": (
            "works in another department" if code == "other" else f"works in {DEPARTMENT_WORDS.get(code, text)}"
        ),
        "industry": "company in another industry" if code == "Other" else f"company in {text}",
        "employee_count": f"company of {plural(count, 'employee')}" if numeric else f"company of {text} employees",
        "annual_revenue": f"annual revenue of {_money(count)}" if numeric else f"annual revenue {text}",
        "region": f"based in {REGION_WORDS.get(code, text)}",
        "country": "based in another country" if code == "Other" else f"based in {text}",
        "lead_source": LEAD_SOURCE_WORDS.get(code, f"came in through {text}"),
        "campaign_id": f"from campaign {text}",
        "campaign_channel": f"from {CHANNEL_WORDS.get(code, f'a {text} campaign')}",
        "campaign_region": (
            "from a global campaign" if code == "Global" else f"from a campaign aimed at {REGION_WORDS.get(code, text)}"
        ),
        "budget_range": f"stated budget {_BUDGET.get(code, text)}",
        "purchase_timeframe": _TIMEFRAME.get(code, f"plans to buy: {text}"),
        "stage_at_t": _STAGE.get(code, f"currently at stage {text}"),
        "n_stage_entries": f"{plural(count, 'stage change')} so far" if count else "no stage changes yet",
        "days_since_stage_change": f"last stage change {_days(value) if numeric else text} ago",
        "distinct_content_all": (
            f"downloaded {plural(count, 'distinct content piece')}" if count else "no content downloaded"
        ),
        "lead_age_days": f"lead is {_days(value) if numeric else text} old",
        "account_contacts": (
            f"{plural(count, 'other contact')} at the company" if count else "no other contacts at the company"
        ),
        "account_other_mql": _colleagues(count, "is an MQL", "are MQLs"),
        "account_other_sql": _colleagues(count, "reached SQL", "reached SQL"),
        "icp_fit_count": f"company matches {text} of 3 ideal-profile criteria",
        "bogus_signal_count": (
            "contact details look genuine"
            if count == 0
            else f"contact details look fake or incomplete ({plural(count, 'warning sign')})"
        ),
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


@dataclass(frozen=True)
class Reason:
    """One reason of one lead: the feature that carries it, the lead's value, its direction and the words."""

    feature: str
    value: Any
    sign: int  # +1: raised the score, -1: lowered it
    contribution: float  # the group's summed SHAP value (log-odds)
    text: str


def _unknown(frame: pd.DataFrame, features: Sequence[ReasonFeature]) -> np.ndarray:
    """(rows x features) True where the value is missing or an "unknown" level: never a reason in favour."""
    out = np.zeros((len(frame), len(features)), dtype=bool)
    for j, f in enumerate(features):
        col = frame[f.name]
        out[:, j] = col.isna().to_numpy()
        if f.kind == "categorical":
            out[:, j] |= col.astype(object).isin(UNKNOWN_LEVELS).to_numpy()
    return out


def _admissible(
    contrib: np.ndarray, frame: pd.DataFrame, features: Sequence[ReasonFeature]
) -> tuple[np.ndarray, np.ndarray]:
    """(rows x features) masks of the features that may carry a reason in favour and one against.

    A feature carries a reason only in the direction it pushed; a declared direction (pipelines.features.directions)
    must agree: a present signal (count or flag above 0) only in its own direction, an absent one only against it,
    so "unsubscribed once" is never a reason in favour nor "no unsubscribes" one against. Missing or unknown values
    are never reasons in favour.
    """
    up, down = contrib > 0, contrib < 0
    unknown = _unknown(frame, features)
    up &= ~unknown
    for j, f in enumerate(features):
        direction = feature_direction(f.name, f.family, f.kind)
        if direction == 0:
            continue
        values = pd.to_numeric(frame[f.name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        present = values > 0
        expected = np.where(present, direction, -direction)
        up[:, j] &= expected > 0
        down[:, j] &= expected < 0
    return up, down


@dataclass(frozen=True)
class _Side:
    """One side's top k per row as arrays (rows x k): which feature carries each reason, whether the slot holds
    one (a row's reasons fill its first slots), the group's summed contribution and the words."""

    feature: np.ndarray  # int: index into the features
    filled: np.ndarray  # bool
    contribution: np.ndarray  # float
    text: np.ndarray  # object: str where filled, else None


def _top_k(contrib: np.ndarray, frame: pd.DataFrame, features: Sequence[ReasonFeature], k: int) -> tuple[_Side, _Side]:
    """The positive and negative sides of `explain`, computed for all rows at once (no loop over rows).

    The words are made once per distinct (feature, value) among the chosen reasons, not once per reason: values
    repeat (counts, categories, flags), so a chunk of 50,000 leads needs a few thousand `describe` calls.
    """
    n_features = len(features)
    contrib = np.asarray(contrib, dtype=float)[:, :n_features]
    groups, member = group_matrix(features)
    summed = contrib @ member
    up, down = _admissible(contrib, frame, features)
    group_cols = [np.flatnonzero(member[:, j]) for j in range(len(groups))]
    n_rows, k = len(summed), max(0, min(k, len(groups)))
    sides = []
    for sign, allowed in ((+1, up), (-1, down)):
        strength = np.where(allowed, sign * contrib, 0.0)
        best = np.zeros((n_rows, len(groups)), dtype=np.int64)
        eligible = np.zeros((n_rows, len(groups)), dtype=bool)
        for j, cols in enumerate(group_cols):
            best[:, j] = cols[np.argmax(strength[:, cols], axis=1)] if n_rows else 0
            eligible[:, j] = (sign * summed[:, j] > 0) & (strength[:, cols].max(axis=1, initial=0.0) > 0)
        key = np.where(eligible, sign * summed, -np.inf)
        # ineligible groups sort last (-inf), so a row's reasons are the leading eligible slots
        order = np.argsort(-key, axis=1, kind="stable")[:, :k]
        filled = np.take_along_axis(eligible, order, axis=1)
        feature = np.take_along_axis(best, order, axis=1)
        text = np.full(feature.shape, None, dtype=object)
        for f in np.unique(feature[filled]):
            at = filled & (feature == f)
            name = features[int(f)].name
            values = frame[name].iloc[np.nonzero(at)[0]].to_numpy(dtype=object)
            codes, uniques = pd.factorize(values, use_na_sentinel=False)
            words = np.array([describe(name, v) for v in uniques], dtype=object)
            text[at] = words[codes]
        sides.append(_Side(feature, filled, np.take_along_axis(summed, order, axis=1), text))
    return sides[0], sides[1]


def explain(
    contrib: np.ndarray, frame: pd.DataFrame, features: Sequence[ReasonFeature], k: int
) -> tuple[list[list[Reason]], list[list[Reason]]]:
    """Per row, the k groups with the largest positive and the k with the most negative summed contributions.

    `contrib` is LightGBM's pred_contrib output (rows x (features + 1), the last column the bias) in the order of
    `features`; `frame` holds the same rows' feature values. Each reason is its group's strongest admissible
    feature (`_admissible`) described; a group none of whose features may carry it is left out, and the next
    group takes its place.
    """
    names = [f.name for f in features]
    values = {name: frame[name].to_numpy(dtype=object) for name in names}
    out = []
    for sign, side in zip((+1, -1), _top_k(contrib, frame, features, k), strict=True):
        rows: list[list[Reason]] = []
        for i in range(len(side.filled)):
            reasons = []
            for slot in np.flatnonzero(side.filled[i]):
                name = names[int(side.feature[i, slot])]
                reasons.append(
                    Reason(
                        feature=name,
                        value=values[name][i],
                        sign=sign,
                        contribution=float(side.contribution[i, slot]),
                        text=str(side.text[i, slot]),
                    )
                )
            rows.append(reasons)
        out.append(rows)
    return out[0], out[1]


def top_reasons(
    contrib: np.ndarray, frame: pd.DataFrame, features: Sequence[ReasonFeature], k: int
) -> tuple[list[list[str]], list[list[str]]]:
    """`explain`'s reasons in words: per row, the texts of the top k reasons in favour and the top k against."""
    positive, negative = _top_k(contrib, frame, features, k)
    return _texts(positive), _texts(negative)


def _texts(side: _Side) -> list[list[str]]:
    """Each row's filled slots (they lead the row) as a list of words."""
    counts = side.filled.sum(axis=1)
    return [row[:n] for row, n in zip(side.text.tolist(), counts.tolist(), strict=True)]
