"""The demo CRM: a synthetic B2B lead history whose generative story is known, so models can be judged.

The story (docs/crm.md tells it in full):

* Accounts have a *fit* to the ideal customer profile (industry x size x region); fit drives budget and how often
  the account enters the market. Being "in market" (need + timing) is a latent two-state Markov chain per
  account (out <-> in), shared by the buying committee (all leads of the account).
* People have *authority* (seniority x department, which they type as messy free-text titles) and *interest*
  (how much marketing they consume). Interest drives engagement but not readiness: the engaged intern downloads
  everything and rarely converts; the quiet VP at an ideal account converts often.
* A lead reaches SQL with a hazard that is small out of market and large in market, multiplied by fit, authority
  and lead source (referrals and sales-generated leads convert well, trade-show scans and purchased lists badly).
  In market, everybody visits the pricing page and some request demos: strong, late signals. Bogus leads never
  convert.
* The funnel: the historical points rule (`HistoricalRule`, linear, engagement heavy, its ideal customer profile the
  params' `features.icp`, as the rules file's is) marks MQLs; a BDR accepts
  (SAL) or rejects (Nurture / Disqualified); SQL happens when the hazard fires, through the MQL route or directly
  (hand-raisers, sales-generated, referrals, leads the rules missed). Nurtured leads get an extra hazard for a
  while. Then Opportunity, Won or Lost.

Everything is vectorised with NumPy (no loop per lead) and drawn from one seeded generator, so the same params
give an identical database. The ground truth (latent state, hazards, true propensity) leaves the CRM in a
separate frame; `pipelines.crm.truth` turns it into the Bayes-optimal conversion probability at any snapshot (the
oracle) and into the observable ceiling (a filter of the market state from what the CRM records).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.config import DemoCrmParams, IcpParams
from pipelines.crm import vocab
from pipelines.crm.story import (
    CREATION_EVENT,
    DAY_SECONDS,
    EMAIL_TYPES,
    ENGAGEMENT_AFTER_CONVERSION_DAYS,
    IN_MARKET_RATES,
    INTEREST_DECAY_DAYS,
    INTEREST_FLOOR,
    INTEREST_MIX,
    INTEREST_RATE,
)
from pipelines.crm.titles import parse_titles

log = logging.getLogger(__name__)

_TS_TYPE: Final = pa.timestamp("ns", tz="UTC")
_WARMUP_DAYS: Final = 240.0  # the market chain starts this long before history so it is stationary at day 0


# ----------------------------------------------------------------------------------------------------------------
# The story's constants
# ----------------------------------------------------------------------------------------------------------------

INDUSTRY_MIX: Final[dict[str, float]] = {
    "Software": 0.18,
    "Financial Services": 0.12,
    "Healthcare": 0.11,
    "Manufacturing": 0.12,
    "Retail": 0.10,
    "Professional Services": 0.10,
    "Telecommunications": 0.05,
    "Media": 0.05,
    "Education": 0.07,
    "Government": 0.04,
    "Nonprofit": 0.03,
    "Hospitality": 0.03,
}
INDUSTRY_FIT: Final[dict[str, float]] = {
    "Software": 1.0,
    "Financial Services": 0.9,
    "Healthcare": 0.85,
    "Manufacturing": 0.8,
    "Retail": 0.5,
    "Professional Services": 0.55,
    "Telecommunications": 0.6,
    "Media": 0.45,
    "Education": 0.25,
    "Government": 0.2,
    "Nonprofit": 0.15,
    "Hospitality": 0.3,
}
REGION_FIT: Final[dict[str, float]] = {"NA": 1.0, "EMEA": 0.9, "APAC": 0.65, "LATAM": 0.5}
COUNTRY_MIX: Final[dict[str, float]] = {
    "US": 0.38,
    "CA": 0.04,
    "GB": 0.09,
    "DE": 0.07,
    "FR": 0.05,
    "NL": 0.03,
    "SE": 0.02,
    "ES": 0.02,
    "IT": 0.02,
    "AE": 0.01,
    "ZA": 0.01,
    "IN": 0.06,
    "AU": 0.04,
    "JP": 0.03,
    "SG": 0.02,
    "CN": 0.02,
    "BR": 0.04,
    "MX": 0.02,
    "AR": 0.01,
    "CL": 0.01,
    "CO": 0.01,
}
#: Ideal size is 200-5,000 employees.
SIZE_FIT_BINS: Final[tuple[tuple[float, float], ...]] = (
    (10, 0.1),
    (50, 0.3),
    (200, 0.65),
    (5001, 1.0),
    (20001, 0.75),
    (np.inf, 0.5),
)

SENIORITY_AUTHORITY: Final[dict[str, float]] = {
    "c_level": 1.5,
    "vp": 1.5,
    "director": 1.25,
    "manager": 0.8,
    "individual": 0.35,
    "intern_student": 0.03,
}
DEPARTMENT_AUTHORITY: Final[dict[str, float]] = {
    "marketing": 1.25,
    "sales": 1.1,
    "it": 1.0,
    "executive": 1.2,
    "engineering": 0.7,
    "operations": 0.7,
    "finance": 0.6,
    "hr": 0.35,
    "other": 0.45,
}
#: Interest (appetite for marketing content) is highest in juniors: engagement follows interest, not readiness.
SENIORITY_INTEREST: Final[dict[str, float]] = {
    "c_level": 0.45,
    "vp": 0.55,
    "director": 0.75,
    "manager": 1.0,
    "individual": 1.3,
    "intern_student": 1.9,
}
SOURCE_CONVERSION: Final[dict[str, float]] = {
    "referral": 2.2,
    "sales_generated": 2.0,
    "partner": 1.3,
    "organic_search": 1.1,
    "paid_search": 0.9,
    "webinar": 0.9,
    "social": 0.7,
    "content_syndication": 0.55,
    "trade_show": 0.3,
    "purchased_list": 0.2,
}
SOURCE_INTEREST: Final[dict[str, float]] = {
    "referral": 0.9,
    "sales_generated": 0.6,
    "partner": 0.9,
    "organic_search": 1.2,
    "paid_search": 1.0,
    "webinar": 1.3,
    "social": 0.9,
    "content_syndication": 1.0,
    "trade_show": 0.7,
    "purchased_list": 0.4,
}
SOURCE_BOGUS_RATE: Final[dict[str, float]] = {
    "referral": 0.0,
    "sales_generated": 0.0,
    "partner": 0.01,
    "organic_search": 0.06,
    "paid_search": 0.07,
    "webinar": 0.03,
    "social": 0.08,
    "content_syndication": 0.06,
    "trade_show": 0.01,
    "purchased_list": 0.02,
}
#: Non-campaign lead sources at the start and the end of history: the mix drifts mildly between them.
SOURCE_MIX_START: Final[dict[str, float]] = {
    "organic_search": 0.28,
    "paid_search": 0.18,
    "social": 0.08,
    "referral": 0.08,
    "sales_generated": 0.12,
    "purchased_list": 0.10,
    "partner": 0.06,
    "content_syndication": 0.06,
    "trade_show": 0.04,
    "webinar": 0.0,
}
SOURCE_MIX_END: Final[dict[str, float]] = {
    "organic_search": 0.24,
    "paid_search": 0.20,
    "social": 0.10,
    "referral": 0.07,
    "sales_generated": 0.10,
    "purchased_list": 0.15,
    "partner": 0.06,
    "content_syndication": 0.05,
    "trade_show": 0.03,
    "webinar": 0.0,
}
CHANNEL_MIX: Final[dict[str, float]] = {
    "email": 0.22,
    "webinar": 0.2,
    "paid_search": 0.15,
    "social": 0.1,
    "trade_show": 0.1,
    "content_syndication": 0.15,
    "partner": 0.08,
}
CHANNEL_SOURCE: Final[dict[str, str]] = {
    "email": "purchased_list",
    "webinar": "webinar",
    "paid_search": "paid_search",
    "social": "social",
    "trade_show": "trade_show",
    "content_syndication": "content_syndication",
    "partner": "partner",
}
CAMPAIGN_LEAD_SHARE: Final = 0.35
MONTH_SEASONALITY: Final[tuple[float, ...]] = (1.05, 1.05, 1.15, 1.05, 1.0, 0.95, 0.85, 0.75, 1.1, 1.15, 1.05, 0.7)

# Latent market chain (per account, rates per day) and conversion hazards (per day).
MARKET_ENTRY_PER_YEAR: Final = (0.15, 1.4)  # entry rate = a + b * fit, per year
MARKET_MEAN_DAYS: Final = 45.0
HAZARD_IN_MARKET: Final = 0.015
HAZARD_OUT_OF_MARKET: Final = 0.0001
HAZARD_NURTURE: Final = 0.0015
NURTURE_DELAY_DAYS: Final = 20.0
NURTURE_DAYS: Final = 150.0
NO_ACCOUNT_FIT: Final = 0.15

#: Activity types travel as small integer codes (positions in vocab.ACTIVITY_TYPES) until the table is built.
ACTIVITY_CODE: Final[dict[str, int]] = {name: i for i, name in enumerate(vocab.ACTIVITY_TYPES)}


@dataclass(frozen=True)
class HistoricalRule:
    """The points rule marketing used to mark MQLs in the demo history, which `config/mql_rules.yaml` reproduces.

    Its ideal customer profile (industries, ideal size, regions) has no default: it is the params' `features.icp`
    (`from_icp`), the profile the rules file names with `{icp: ...}`, so one edit of params.yaml moves both. The
    story's latent fit (INDUSTRY_FIT, SIZE_FIT_BINS, REGION_FIT: who really buys) does not move with it.
    """

    icp_industries: frozenset[str]
    ideal_size: tuple[int, int]
    icp_regions: frozenset[str]
    industry_points: int = 10
    ideal_size_points: int = 10
    near_size_band: tuple[int, int] = (50, 20000)  # "just outside the ideal size": this band less the ideal size
    near_size_points: int = 5
    region_points: int = 5
    seniority_points: tuple[tuple[str, int], ...] = (
        ("c_level", 15),
        ("vp", 15),
        ("director", 10),
        ("manager", 5),
        ("intern_student", -20),
    )
    target_departments: frozenset[str] = frozenset({"marketing", "sales", "it"})
    department_points: int = 5
    free_mail_points: int = -10
    activity_points: tuple[tuple[str, int], ...] = (
        ("email_open", 1),
        ("email_click", 3),
        ("web_visit", 2),
        ("pricing_page_visit", 10),
        ("content_download", 8),
        ("webinar_register", 5),
        ("webinar_attend", 10),
        ("trade_show_scan", 5),
        ("form_submit", 10),
        ("demo_request", 30),
        ("social_follow", 2),
        ("unsubscribe", -20),
        ("email_bounce", -30),
    )
    threshold: int = 60
    region_thresholds: tuple[tuple[str, int], ...] = (("APAC", 50),)

    @classmethod
    def from_icp(cls, icp: IcpParams) -> HistoricalRule:
        """The history's rule with the given ideal customer profile (the params' `features.icp`)."""
        return cls(
            icp_industries=frozenset(icp.industries),
            ideal_size=(icp.employees_min, icp.employees_max),
            icp_regions=frozenset(icp.regions),
        )


@dataclass(frozen=True)
class DemoResult:
    """The five CRM tables (canonical dtypes) and the ground truth, which never enters the CRM."""

    tables: dict[str, pd.DataFrame]
    truth: pd.DataFrame


# ----------------------------------------------------------------------------------------------------------------
# Small vectorised helpers
# ----------------------------------------------------------------------------------------------------------------


def _choice(rng: np.random.Generator, mix: dict[str, float], size: int) -> np.ndarray:
    """Labels drawn from a {label: weight} mix."""
    labels = np.array(list(mix), dtype=object)
    weights = np.array(list(mix.values()), dtype=float)
    return labels[rng.choice(len(labels), size=size, p=weights / weights.sum())]


def _choice_codes(rng: np.random.Generator, mix: dict[str, float], size: int) -> np.ndarray:
    """Activity codes drawn from a {activity type: weight} mix."""
    codes = np.array([ACTIVITY_CODE[name] for name in mix], dtype=np.int8)
    weights = np.array(list(mix.values()), dtype=float)
    return codes[rng.choice(len(codes), size=size, p=weights / weights.sum())]


def _lookup(mapping: dict[str, float], keys: np.ndarray, default: float = 0.0) -> np.ndarray:
    looked_up: np.ndarray = pd.Series(keys).map(mapping).fillna(default).to_numpy(dtype=float)
    return looked_up


def _size_fit(employees: np.ndarray) -> np.ndarray:
    edges = np.array([edge for edge, _ in SIZE_FIT_BINS])
    values = np.array([value for _, value in SIZE_FIT_BINS])
    fit: np.ndarray = values[np.searchsorted(edges, employees, side="right").clip(0, len(values) - 1)]
    return fit


def _segment_ids(counts: np.ndarray) -> np.ndarray:
    """For counts [2, 0, 3] -> [0, 0, 2, 2, 2]: the owner index of each repeated row."""
    return np.repeat(np.arange(len(counts)), counts)


@dataclass(frozen=True)
class _Clock:
    """History runs from day 0 to day `horizon`; timestamps are UTC."""

    start: pd.Timestamp
    horizon: float

    def to_ns(self, days: np.ndarray) -> np.ndarray:
        """Epoch nanoseconds of day offsets, rounded to the second (infinite days give 0: mask them)."""
        seconds = np.round(np.asarray(days, dtype=float) * DAY_SECONDS)
        return np.where(np.isfinite(seconds), seconds, 0).astype(np.int64) * 1_000_000_000 + self.start.value

    def to_timestamps(self, days: np.ndarray) -> pd.Series:
        """UTC timestamps of day offsets; infinite days (events that never happen) become NaT."""
        values = pd.Series(self.to_ns(days).view("datetime64[ns]")).dt.tz_localize("UTC")
        return values.where(np.isfinite(np.asarray(days, dtype=float)))


# ----------------------------------------------------------------------------------------------------------------
# Campaigns and accounts
# ----------------------------------------------------------------------------------------------------------------

_CAMPAIGN_THEMES: Final = (
    "Pipeline Analytics",
    "Attribution 101",
    "Revenue Ops Summit",
    "Lead Scoring Playbook",
    "ABM Masterclass",
    "Data-Driven Marketing",
    "Forecasting Webinar",
    "Customer Journey Guide",
    "Benchmark Report",
    "Demo Day",
)
_CHANNEL_LABEL: Final = {
    "email": "Email Nurture",
    "webinar": "Webinar",
    "paid_search": "Paid Search",
    "social": "Social Ads",
    "trade_show": "Trade Show",
    "content_syndication": "Syndicated eBook",
    "partner": "Partner Program",
}


def _campaigns(rng: np.random.Generator, clock: _Clock) -> pd.DataFrame:
    count = max(8, round(clock.horizon / 15))
    channel = _choice(rng, CHANNEL_MIX, count)
    region = _choice(rng, {"NA": 0.4, "EMEA": 0.3, "APAC": 0.12, "LATAM": 0.08, "Global": 0.1}, count)
    start = np.sort(rng.uniform(0, clock.horizon - 20, count))
    end = np.minimum(start + rng.uniform(14, 60, count), clock.horizon)
    start_ts, end_ts = clock.to_timestamps(start), clock.to_timestamps(end)
    theme = np.array(_CAMPAIGN_THEMES, dtype=object)[rng.integers(0, len(_CAMPAIGN_THEMES), count)]
    names = [
        f"{s:%Y-%m} {r} {_CHANNEL_LABEL[c]}: {t}" for s, r, c, t in zip(start_ts, region, channel, theme, strict=True)
    ]
    return pd.DataFrame(
        {
            "campaign_id": np.arange(1, count + 1, dtype=np.int64),
            "name": names,
            "channel": channel,
            "region": region,
            "start_date": start_ts,
            "end_date": end_ts,
            "_start_day": start,
            "_end_day": end,
        }
    )


_NAME_HEADS: Final = (
    "Blue",
    "North",
    "Bright",
    "Silver",
    "Quantum",
    "Apex",
    "Cedar",
    "Iron",
    "Nova",
    "Summit",
    "Harbor",
    "Vertex",
    "Crimson",
    "Pioneer",
    "Atlas",
    "Lumen",
    "Orbit",
    "Granite",
    "Maple",
    "Falcon",
    "Zenith",
    "Coral",
    "Evergreen",
    "Polar",
    "Sterling",
    "Aurora",
    "Beacon",
    "Cobalt",
    "Delta",
    "Ember",
)
_NAME_TAILS: Final = (
    "field",
    "wave",
    "stone",
    "point",
    "bridge",
    "works",
    "line",
    "path",
    "gate",
    "forge",
    "labs",
    "scape",
    "logic",
    "grid",
    "core",
    "shift",
    "peak",
    "stream",
    "nest",
    "span",
)
_NAME_KINDS: Final = (
    "Analytics",
    "Systems",
    "Health",
    "Bank",
    "Manufacturing",
    "Retail",
    "Partners",
    "Media",
    "Software",
    "Group",
    "Technologies",
    "Solutions",
    "Capital",
    "Logistics",
    "Networks",
)
_LEGAL: Final = ("Inc", "LLC", "GmbH", "Ltd", "SA", "BV", "Corp", "AG", "")
_TLD: Final = ("com", "com", "com", "io", "net", "co", "de", "co.uk", "fr")


def _accounts(rng: np.random.Generator, count: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The accounts table and each account's latent fit."""
    industry = _choice(rng, INDUSTRY_MIX, count)
    employees = np.clip(np.exp(rng.normal(4.6, 1.7, count)), 1, 300_000).astype(np.int64)
    revenue = np.round(employees * np.exp(rng.normal(np.log(180_000), 0.6, count)), -3)
    country = _choice(rng, COUNTRY_MIX, count)
    region = pd.Series(country).map(vocab.COUNTRY_REGION).to_numpy(dtype=object)
    fit = _lookup(INDUSTRY_FIT, industry) * _size_fit(employees) * _lookup(REGION_FIT, region)

    head = np.array(_NAME_HEADS, dtype=object)[rng.integers(0, len(_NAME_HEADS), count)]
    tail = np.array(_NAME_TAILS, dtype=object)[rng.integers(0, len(_NAME_TAILS), count)]
    kind = np.array(_NAME_KINDS, dtype=object)[rng.integers(0, len(_NAME_KINDS), count)]
    legal = np.array(_LEGAL, dtype=object)[rng.integers(0, len(_LEGAL), count)]
    tld = np.array(_TLD, dtype=object)[rng.integers(0, len(_TLD), count)]
    stem = pd.Series(head + tail)
    company = (stem + " " + kind + " " + legal).str.strip()
    slug = stem.str.lower() + pd.Series(kind).str.lower().str[:4]
    dup = slug.groupby(slug).cumcount()
    slug = slug.where(dup == 0, slug + dup.astype(str))
    domain = slug + "." + tld

    observed = pd.DataFrame(
        {
            "account_id": np.arange(1, count + 1, dtype=np.int64),
            "company_name": company,
            "domain": domain,
            "industry": pd.Series(industry, dtype=object).where(rng.random(count) > 0.08),
            "employee_count": pd.array(np.where(rng.random(count) > 0.10, employees, -1), dtype="Int64"),
            "annual_revenue": np.where(rng.random(count) > 0.30, revenue, np.nan),
            "country": pd.Series(country, dtype=object),
            "region": pd.Series(region, dtype=object),
        }
    )
    observed["employee_count"] = observed["employee_count"].mask(observed["employee_count"] < 0)
    missing_geo = rng.random(count) < 0.04
    observed.loc[missing_geo, ["country", "region"]] = None
    latent = pd.DataFrame({"fit": fit, "employees": employees, "region": region})
    return observed, latent


# ----------------------------------------------------------------------------------------------------------------
# The latent market chain
# ----------------------------------------------------------------------------------------------------------------


def market_entry_rate(fit: np.ndarray) -> np.ndarray:
    """Per-day rate at which an out-of-market group enters the market."""
    low, slope = MARKET_ENTRY_PER_YEAR
    return (low + slope * np.asarray(fit, dtype=float)) / 365.0


def _market_windows(rng: np.random.Generator, fit: np.ndarray, until: float) -> pd.DataFrame:
    """In-market intervals (group, start, end) of an out<->in Markov chain per group, stationary at day 0."""
    groups = len(fit)
    nu = market_entry_rate(fit)
    mu = 1.0 / MARKET_MEAN_DAYS
    starts_in = rng.random(groups) < nu / (nu + mu)
    cycles = 4
    while True:
        out_len = rng.exponential(1.0, (groups, cycles)) / nu[:, None]
        in_len = rng.exponential(1.0 / mu, (groups, cycles))
        out_len[starts_in, 0] = 0.0
        ends = np.cumsum(out_len + in_len, axis=1) - _WARMUP_DAYS
        if (ends[:, -1] >= until).all():
            break
        cycles *= 2
    begin = ends - in_len
    group = np.repeat(np.arange(groups), cycles)
    frame = pd.DataFrame({"group": group, "start": begin.ravel(), "end": ends.ravel()})
    return frame[(frame["start"] < until) & (frame["end"] > 0)].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# People and leads
# ----------------------------------------------------------------------------------------------------------------

_FIRST: Final = (
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Maria",
    "Wei",
    "Li",
    "Priya",
    "Rahul",
    "Hiroshi",
    "Yuki",
    "Lukas",
    "Anna",
    "Pierre",
    "Camille",
    "Sofia",
    "Mateo",
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Lucas",
    "Mia",
    "Ethan",
    "Fatima",
    "Omar",
    "Aisha",
    "Chen",
    "Sven",
    "Ingrid",
    "Diego",
    "Lucia",
)
_LAST: Final = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Mueller",
    "Schmidt",
    "Dubois",
    "Rossi",
    "Tanaka",
    "Sato",
    "Kumar",
    "Sharma",
    "Wang",
    "Zhang",
    "Silva",
    "Santos",
    "Andersson",
    "Nielsen",
    "Novak",
    "Kowalski",
    "Murphy",
    "OBrien",
)
_BOGUS_NAMES: Final = (
    ("Test", "Test"),
    ("asdf", "asdf"),
    ("Mickey", "Mouse"),
    ("John", "Doe"),
    ("xxx", "xxx"),
    ("Donald", "Duck"),
    ("N/A", "N/A"),
    ("a", "b"),
    ("test", "user"),
    ("qwerty", "qwerty"),
)
_BOGUS_EMAILS: Final = (
    "test@test.com",
    "asdf@asdf.com",
    "x@x.x",
    "noreply@example.com",
    "abc@abc",
    "test@mailinator.com",
    "none@none.com",
    "fake@fake.org",
)
_BOGUS_TITLES: Final = ("test", "asdf", "n/a", "-", "none", "xxx", None)

_SENIORITY_MIX: Final[dict[str, dict[str, float]]] = {
    "default": {
        "c_level": 0.04,
        "vp": 0.08,
        "director": 0.15,
        "manager": 0.27,
        "individual": 0.36,
        "intern_student": 0.10,
    },
    "small": {
        "c_level": 0.12,
        "vp": 0.05,
        "director": 0.08,
        "manager": 0.2,
        "individual": 0.38,
        "intern_student": 0.17,
    },
    "sales_generated": {
        "c_level": 0.12,
        "vp": 0.2,
        "director": 0.3,
        "manager": 0.25,
        "individual": 0.13,
        "intern_student": 0.0,
    },
}
_DEPARTMENT_MIX: Final[dict[str, dict[str, float]]] = {
    "c_level": {
        "marketing": 0.15,
        "sales": 0.1,
        "it": 0.1,
        "engineering": 0.12,
        "finance": 0.1,
        "operations": 0.08,
        "hr": 0.03,
        "executive": 0.32,
    },
    "intern_student": {"marketing": 0.35, "sales": 0.15, "engineering": 0.2, "other": 0.3},
    "default": {
        "marketing": 0.30,
        "sales": 0.17,
        "it": 0.14,
        "engineering": 0.13,
        "finance": 0.07,
        "operations": 0.08,
        "hr": 0.05,
        "other": 0.06,
    },
}
_DEPT_WORDS: Final[dict[str, tuple[str, ...]]] = {
    "marketing": ("Marketing", "Mktg", "Demand Gen", "Digital Marketing", "Growth Marketing", "Brand"),
    "sales": ("Sales", "Business Development", "Revenue", "Sales Operations"),
    "it": ("IT", "Information Technology", "Infrastructure", "IT Systems"),
    "engineering": ("Engineering", "Software Engineering", "Data", "Technology"),
    "finance": ("Finance", "Accounting", "Financial Planning"),
    "operations": ("Operations", "Ops", "Supply Chain"),
    "hr": ("HR", "Human Resources", "People", "Talent"),
    "other": ("Customer Success", "Legal", "Research", "Administration"),
    "executive": ("Executive",),
}
_C_LEVEL_TITLES: Final[dict[str, tuple[str, ...]]] = {
    "marketing": ("CMO", "Chief Marketing Officer"),
    "sales": ("CRO", "Chief Revenue Officer"),
    "it": ("CIO", "Chief Information Officer", "CISO"),
    "engineering": ("CTO", "Chief Technology Officer", "cto"),
    "finance": ("CFO", "Chief Financial Officer"),
    "operations": ("COO", "Chief Operating Officer"),
    "hr": ("Chief People Officer", "Chief HR Officer"),
    "executive": ("CEO", "Founder", "Co-Founder & CEO", "Owner", "President", "Managing Director"),
}
_LEVEL_PATTERNS: Final[dict[str, tuple[str, ...]]] = {
    "vp": ("VP {d}", "Vice President, {d}", "V.P. {d}", "SVP {d}", "VP of {d}"),
    "director": ("Director of {d}", "{d} Director", "Head of {d}", "Dir. {d}", "Sr. Director, {d}"),
    "manager": ("{d} Manager", "Manager, {d}", "{d} Mgr", "Sr. {d} Manager", "{d} Team Lead"),
    "intern_student": ("{d} Intern", "{d} intern", "Intern, {d}"),
}
_INDIVIDUAL_TITLES: Final[dict[str, tuple[str, ...]]] = {
    "marketing": (
        "Marketing Specialist",
        "Content Writer",
        "Marketing Coordinator",
        "SEO Analyst",
        "Campaign Associate",
    ),
    "sales": ("Account Executive", "Sales Representative", "BDR", "SDR", "Inside Sales Rep"),
    "it": ("Systems Administrator", "IT Specialist", "Network Administrator", "Helpdesk Analyst"),
    "engineering": ("Software Engineer", "Developer", "Data Scientist", "Solutions Architect"),
    "finance": ("Accountant", "Financial Analyst", "Finance Associate"),
    "operations": ("Operations Analyst", "Logistics Coordinator", "Operations Specialist"),
    "hr": ("Recruiter", "HR Generalist", "Talent Acquisition Specialist"),
    "other": ("Consultant", "Customer Success Associate", "Research Analyst", "Legal Counsel"),
}
_BARE_STUDENT_TITLES: Final = ("Student", "Intern", "Graduate Student", "Trainee")
_TYPOS: Final[dict[str, str]] = {
    "Marketing": "Markting",
    "Manager": "Manger",
    "Director": "Directr",
    "Engineer": "Engneer",
    "Finance": "Finanse",
    "Operations": "Operatons",
    "President": "Presdent",
    "Specialist": "Specalist",
    "Analyst": "Analist",
    "Coordinator": "Cordinator",
    "Sales": "Saless",
    "Development": "Developement",
    "Executive": "Excutive",
    "Technology": "Technolgy",
    "Intern": "Intrn",
    "Officer": "Oficer",
}


def _title_options(seniority: str, department: str) -> tuple[str, ...]:
    """Every way a person of this seniority and department may write their title."""
    if seniority == "c_level":
        return _C_LEVEL_TITLES.get(department, _C_LEVEL_TITLES["executive"])
    if seniority == "individual":
        return _INDIVIDUAL_TITLES[department]
    if seniority == "intern_student" and department == "other":
        return _BARE_STUDENT_TITLES
    words = _DEPT_WORDS[department]
    return tuple(pattern.format(d=word) for pattern in _LEVEL_PATTERNS[seniority] for word in words)


def _with_typo(title: str) -> str:
    for word, typo in _TYPOS.items():
        if word in title:
            return title.replace(word, typo, 1)
    return title


def _render_titles(rng: np.random.Generator, seniority: np.ndarray, department: np.ndarray) -> np.ndarray:
    """Messy free-text titles: templates, abbreviations, case noise, typos and blanks."""
    n = len(seniority)
    combos, inverse = np.unique(
        np.char.add(np.char.add(seniority.astype(str), "|"), department.astype(str)), return_inverse=True
    )
    pick = rng.random(n)
    noise = rng.random(n)
    titles = np.empty(n, dtype=object)
    for k, combo in enumerate(combos):
        rows = np.flatnonzero(inverse == k)
        options = _title_options(*combo.split("|"))
        variants = np.array([[t, t.lower(), t.upper(), _with_typo(t)] for t in options], dtype=object)
        which = (pick[rows] * len(options)).astype(int)
        style = np.select([noise[rows] < 0.15, noise[rows] < 0.18, noise[rows] < 0.24], [1, 2, 3], default=0)
        titles[rows] = variants[which, style]
    titles[rng.random(n) < 0.07] = None
    return titles


def _created_days(rng: np.random.Generator, n: int, clock: _Clock) -> np.ndarray:
    """Creation times with growth, month seasonality and quiet weekends."""
    days = np.arange(int(clock.horizon))
    dates = clock.start + pd.to_timedelta(days, unit="D")
    weight = (
        np.array(MONTH_SEASONALITY)[dates.month - 1]
        * np.where(dates.day_of_week >= 5, 0.3, 1.0)
        * (0.8 + 0.4 * days / clock.horizon)
    )
    day = rng.choice(len(days), size=n, p=weight / weight.sum())
    hour = 7 + 12 * rng.beta(2, 2, n)
    return day + hour / 24.0


def _draw_sources(rng: np.random.Generator, created: np.ndarray, horizon: float) -> np.ndarray:
    labels = np.array(list(SOURCE_MIX_START), dtype=object)
    w0 = np.array([SOURCE_MIX_START[s] for s in labels])
    w1 = np.array([SOURCE_MIX_END[s] for s in labels])
    frac = (created / horizon)[:, None]
    probs = (1 - frac) * w0 + frac * w1
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    idx = (rng.random(len(created))[:, None] > cdf).sum(axis=1).clip(0, len(labels) - 1)
    sources: np.ndarray = labels[idx]
    return sources


def _mix_by_group(rng: np.random.Generator, groups: np.ndarray, mixes: dict[str, dict[str, float]]) -> np.ndarray:
    out = np.empty(len(groups), dtype=object)
    for key, mix in mixes.items():
        rows = np.flatnonzero(groups == key)
        if len(rows):
            out[rows] = _choice(rng, mix, len(rows))
    return out


def _leads(
    rng: np.random.Generator,
    n: int,
    accounts: pd.DataFrame,
    account_latent: pd.DataFrame,
    campaigns: pd.DataFrame,
    clock: _Clock,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The observed lead rows and their latent traits (authority, interest, bogus, group)."""
    # When and from where.
    from_campaign = rng.random(n) < CAMPAIGN_LEAD_SHARE
    created = _created_days(rng, n, clock)
    source = _draw_sources(rng, created, clock.horizon)
    campaign_id = np.full(n, -1, dtype=np.int64)
    rows = np.flatnonzero(from_campaign)
    duration = (campaigns["_end_day"] - campaigns["_start_day"]).to_numpy()
    pick = rng.choice(len(campaigns), size=len(rows), p=duration / duration.sum())
    created[rows] = campaigns["_start_day"].to_numpy()[pick] + rng.random(len(rows)) * duration[pick]
    campaign_id[rows] = campaigns["campaign_id"].to_numpy()[pick]
    weekday = (clock.start.day_of_week + np.floor(created[rows]).astype(int)) % 7
    to_monday = np.where(weekday >= 5, 7 - weekday, 0) * (rng.random(len(rows)) < 0.7)
    created[rows] = np.minimum(created[rows] + to_monday, campaigns["_end_day"].to_numpy()[pick])
    channel = campaigns["channel"].to_numpy()[pick]
    source[rows] = pd.Series(channel).map(CHANNEL_SOURCE).to_numpy()
    email_campaign = rows[(channel == "email") & (rng.random(len(rows)) < 0.5)]
    source[email_campaign] = "organic_search"
    created = np.clip(created, 0, clock.horizon - 1e-6)

    # Who: bogus entries, account, seniority, department.
    bogus = rng.random(n) < _lookup(SOURCE_BOGUS_RATE, source)
    has_account = rng.random(n) < np.where(
        source == "sales_generated", 1.0, np.where(source == "purchased_list", 0.92, 0.86)
    )
    has_account &= ~bogus | (rng.random(n) < 0.1)
    size_weight = account_latent["employees"].to_numpy() ** 0.35
    account_idx = rng.choice(len(accounts), size=n, p=size_weight / size_weight.sum())
    sg = np.flatnonzero(source == "sales_generated")
    icp_weight = size_weight * account_latent["fit"].to_numpy() ** 2
    account_idx[sg] = rng.choice(len(accounts), size=len(sg), p=icp_weight / icp_weight.sum())
    account_idx[~has_account] = -1
    employees = np.where(has_account, account_latent["employees"].to_numpy()[account_idx.clip(0)], 5)
    group = np.where(source == "sales_generated", "sales_generated", np.where(employees < 50, "small", "default"))
    seniority = _mix_by_group(rng, group, _SENIORITY_MIX)
    dept_group = np.where(
        seniority == "c_level", "c_level", np.where(seniority == "intern_student", "intern_student", "default")
    )
    department = _mix_by_group(rng, dept_group, _DEPARTMENT_MIX)
    interest = rng.lognormal(0.0, 0.7, n) * _lookup(SOURCE_INTEREST, source) * _lookup(SENIORITY_INTEREST, seniority)
    interest[bogus] *= 0.3

    # Duplicate people: 2% of later leads re-enter an earlier person.
    order = np.argsort(created, kind="stable")
    dup_pos = np.flatnonzero(rng.random(n) < 0.02)
    dup_pos = dup_pos[dup_pos >= 10]
    dup_rows = order[dup_pos]
    src_rows = order[(rng.random(len(dup_pos)) * dup_pos).astype(int)]
    for arr in (account_idx, seniority, department, interest, bogus, has_account):
        arr[dup_rows] = arr[src_rows]

    # What the CRM shows.
    titles = _render_titles(rng, seniority, department)
    bogus_titles = np.array(_BOGUS_TITLES, dtype=object)
    titles[bogus] = bogus_titles[rng.integers(0, len(bogus_titles), int(bogus.sum()))]
    first = np.array(_FIRST, dtype=object)[rng.integers(0, len(_FIRST), n)]
    last = np.array(_LAST, dtype=object)[rng.integers(0, len(_LAST), n)]
    bogus_names = np.array(_BOGUS_NAMES, dtype=object)[rng.integers(0, len(_BOGUS_NAMES), int(bogus.sum()))]
    first[bogus], last[bogus] = bogus_names[:, 0], bogus_names[:, 1]
    free = np.array(sorted(vocab.FREE_MAIL_DOMAINS), dtype=object)[rng.integers(0, len(vocab.FREE_MAIL_DOMAINS), n)]
    account_domain = accounts["domain"].to_numpy(dtype=object)[account_idx.clip(0)]
    domain = np.where(has_account & (rng.random(n) > 0.07), account_domain, free)
    style = rng.integers(0, 3, n)
    f_low, l_low = pd.Series(first).str.lower(), pd.Series(last).str.lower()
    local = np.select([style == 0, style == 1], [f_low + "." + l_low, f_low.str[:1] + l_low], default=f_low)
    # cast: pandas-stubs type a Series of an untyped array as Series[float]; `domain` holds text
    email = pd.Series(local) + "@" + cast("pd.Series[str]", pd.Series(domain))
    email[bogus] = np.array(_BOGUS_EMAILS, dtype=object)[rng.integers(0, len(_BOGUS_EMAILS), int(bogus.sum()))]
    drawn_country = np.where(
        has_account & (rng.random(n) < 0.9),
        accounts["country"].to_numpy(dtype=object)[account_idx.clip(0)],
        _choice(rng, COUNTRY_MIX, n),
    )
    country = pd.Series(drawn_country, dtype=object).where(rng.random(n) > 0.06)
    phone = (
        "+"
        + pd.Series(rng.integers(1, 99, n)).astype(str)
        + " "
        + pd.Series(rng.integers(200, 999, n)).astype(str)
        + " "
        + pd.Series(rng.integers(100, 999, n)).astype(str)
        + " "
        + pd.Series(rng.integers(1000, 9999, n)).astype(str)
    ).where(rng.random(n) < 0.65)
    for arr in (first, last):
        arr[dup_rows] = arr[src_rows]
    email[dup_rows] = email.to_numpy()[src_rows]
    upper = dup_rows[rng.random(len(dup_rows)) < 0.5]
    email[upper] = email[upper].str.upper()
    titles[dup_rows] = titles[src_rows]

    observed = pd.DataFrame(
        {
            "created_day": created,
            "account_id": pd.array(np.where(account_idx >= 0, account_idx + 1, -1), dtype="Int64"),
            "first_name": first,
            "last_name": last,
            "email": email,
            "phone": phone,
            "job_title": titles,
            "lead_source": source,
            "campaign_id": pd.array(campaign_id, dtype="Int64"),
            "country": country,
        }
    )
    observed["account_id"] = observed["account_id"].mask(observed["account_id"] < 0)
    observed["campaign_id"] = observed["campaign_id"].mask(observed["campaign_id"] < 0)
    fit = np.where(account_idx >= 0, account_latent["fit"].to_numpy()[account_idx.clip(0)], NO_ACCOUNT_FIT)
    authority = _lookup(SENIORITY_AUTHORITY, seniority) * _lookup(DEPARTMENT_AUTHORITY, department)
    latent = pd.DataFrame(
        {
            "bogus": bogus,
            "fit": fit,
            "seniority": seniority,
            "department": department,
            "authority": authority,
            "interest": interest,
            "source_conversion": _lookup(SOURCE_CONVERSION, source),
            "employees": employees,
            "group": np.where(account_idx >= 0, account_idx, len(accounts) + np.arange(n)),
            "duplicate_of": pd.array(np.where(np.isin(np.arange(n), dup_rows), -1, -1), dtype="Int64"),
        }
    )
    latent.loc[dup_rows, "duplicate_of"] = src_rows + 1
    latent["duplicate_of"] = latent["duplicate_of"].mask(latent["duplicate_of"] < 0)
    return observed, latent


# ----------------------------------------------------------------------------------------------------------------
# Conversion hazards and times
# ----------------------------------------------------------------------------------------------------------------


def _lead_windows(windows: pd.DataFrame, group: np.ndarray, begin: np.ndarray, stop: np.ndarray) -> pd.DataFrame:
    """Each lead's in-market intervals clipped to [begin, stop): columns lead, start, end (sorted)."""
    leads = pd.DataFrame({"lead": np.arange(len(group)), "group": group, "begin": begin, "stop": stop})
    merged = leads.merge(windows, on="group", how="inner")
    merged["start"] = np.maximum(merged["start"], merged["begin"])
    merged["end"] = np.minimum(merged["end"], merged["stop"])
    merged = merged[merged["end"] > merged["start"]]
    return merged[["lead", "start", "end"]].sort_values(["lead", "start"], kind="stable").reset_index(drop=True)


def _first_passage(
    lead_windows: pd.DataFrame,
    begin: np.ndarray,
    stop: np.ndarray,
    rate_out: np.ndarray,
    rate_in: np.ndarray,
    threshold: np.ndarray,
) -> np.ndarray:
    """Time at which the cumulative hazard first reaches `threshold` (inf if not before `stop`)."""
    n = len(begin)
    lw_lead = lead_windows["lead"].to_numpy()
    out_start = np.concatenate([begin, lead_windows["end"].to_numpy()])
    out_start_lead = np.concatenate([np.arange(n), lw_lead])
    out_end = np.concatenate([lead_windows["start"].to_numpy(), stop])
    out_end_lead = np.concatenate([lw_lead, np.arange(n)])
    o1 = np.lexsort((out_start, out_start_lead))
    o2 = np.lexsort((out_end, out_end_lead))
    seg_lead = np.concatenate([out_start_lead[o1], lw_lead])
    seg_start = np.concatenate([out_start[o1], lead_windows["start"].to_numpy()])
    seg_end = np.concatenate([out_end[o2], lead_windows["end"].to_numpy()])
    seg_rate = np.concatenate([rate_out[out_start_lead[o1]], (rate_out + rate_in)[lw_lead]])
    order = np.lexsort((seg_start, seg_lead))
    seg_lead, seg_start, seg_end, seg_rate = seg_lead[order], seg_start[order], seg_end[order], seg_rate[order]
    mass = seg_rate * np.maximum(seg_end - seg_start, 0.0)
    cum = np.cumsum(mass)
    first_row = np.searchsorted(seg_lead, np.arange(n))
    offset = np.concatenate([[0.0], cum])[first_row]
    cum_lead = cum - offset[seg_lead]
    crossed = np.flatnonzero(cum_lead >= threshold[seg_lead])
    hit_lead, pos = np.unique(seg_lead[crossed], return_index=True)
    rows = crossed[pos]
    before = cum_lead[rows] - mass[rows]
    out = np.full(n, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[hit_lead] = seg_start[rows] + (threshold[hit_lead] - before) / seg_rate[rows]
    return out


def _in_window_time(lead_windows: pd.DataFrame, n: int, until: np.ndarray) -> np.ndarray:
    """Per lead, the in-market time within its windows before `until`."""
    lead = lead_windows["lead"].to_numpy()
    overlap = np.clip(
        np.minimum(lead_windows["end"].to_numpy(), until[lead]) - lead_windows["start"].to_numpy(), 0, None
    )
    return np.bincount(lead, weights=overlap, minlength=n)


# ----------------------------------------------------------------------------------------------------------------
# Activities
# ----------------------------------------------------------------------------------------------------------------

_DETAILS: Final[dict[str, tuple[str, ...]]] = {
    "email_open": ("Monthly newsletter", "Product update", "Event invitation", "Case study digest"),
    "email_click": ("Monthly newsletter", "Product update", "Event invitation", "Case study digest"),
    "web_visit": ("/", "/blog", "/product", "/solutions", "/customers", "/integrations", "/about"),
    "pricing_page_visit": ("/pricing", "/pricing/enterprise", "/pricing/compare"),
    "content_download": (
        "eBook: Lead Scoring Playbook",
        "Report: State of B2B Marketing",
        "Guide: Attribution Models",
        "Whitepaper: Revenue Operations",
        "Checklist: Funnel Audit",
        "Template: MQL Definition",
        "Benchmark: Conversion Rates",
        "eBook: ABM for Beginners",
        "Case study: Scaling Pipeline",
        "Guide: Data Quality in CRM",
        "Report: Buyer Journey 2026",
        "Toolkit: Sales Handoff",
    ),
    "webinar_register": ("Webinar: Forecasting", "Webinar: Attribution", "Webinar: Pipeline Reviews"),
    "webinar_attend": ("Webinar: Forecasting", "Webinar: Attribution", "Webinar: Pipeline Reviews"),
    "trade_show_scan": ("Booth scan",),
    "form_submit": ("Contact us", "Newsletter sign-up", "Content gate", "Event registration"),
    "demo_request": ("Demo request form",),
    "social_follow": ("LinkedIn", "X"),
    "unsubscribe": ("All marketing email",),
    "email_bounce": ("Hard bounce",),
}


def _interest_events(
    rng: np.random.Generator,
    begin: np.ndarray,
    stop: np.ndarray,
    interest: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Engagement that follows interest: a burst after creation decaying to a floor."""
    length = np.maximum(stop - begin, 0.0)
    tau = INTEREST_DECAY_DAYS
    flat = INTEREST_FLOOR * length
    burst = (1 - INTEREST_FLOOR) * tau * (1 - np.exp(-length / tau))
    counts = rng.poisson(INTEREST_RATE * interest * (flat + burst))
    lead = _segment_ids(counts)
    uniform_share = np.divide(flat, flat + burst, out=np.ones_like(flat), where=(flat + burst) > 0)[lead]
    u = rng.random(len(lead))
    trunc = 1 - np.exp(-length[lead] / tau)
    age = np.where(rng.random(len(lead)) < uniform_share, u * length[lead], -tau * np.log1p(-u * trunc))
    return lead, begin[lead] + age, _choice_codes(rng, INTEREST_MIX, len(lead))


def _in_market_events(
    rng: np.random.Generator,
    lead_windows: pd.DataFrame,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Readiness signals while the lead's account is in market: pricing visits, demo requests, forms."""
    total = sum(IN_MARKET_RATES.values())
    length = (lead_windows["end"] - lead_windows["start"]).to_numpy()
    counts = rng.poisson(total * length)
    seg = _segment_ids(counts)
    lead = lead_windows["lead"].to_numpy()[seg]
    when = lead_windows["start"].to_numpy()[seg] + rng.random(len(seg)) * length[seg]
    return lead, when, _choice_codes(rng, IN_MARKET_RATES, len(seg))


def _activities(
    rng: np.random.Generator,
    begin: np.ndarray,
    stop: np.ndarray,
    latent: pd.DataFrame,
    source: np.ndarray,
    lead_windows: pd.DataFrame,
) -> pd.DataFrame:
    """All activities (lead row, day, type) before the unsubscribe/bounce cut of email events."""
    n = len(begin)
    parts = [_interest_events(rng, begin, stop, latent["interest"].to_numpy()), _in_market_events(rng, lead_windows)]
    creation = pd.Series(source).map({src: ACTIVITY_CODE[kind] for src, kind in CREATION_EVENT.items()})
    rows = np.flatnonzero(creation.notna().to_numpy())
    parts.append((rows, begin[rows], creation.to_numpy()[rows].astype(np.int8)))
    webinar = np.flatnonzero((source == "webinar") & (rng.random(n) < 0.55))
    parts.append(
        (
            webinar,
            begin[webinar] + rng.uniform(1, 14, len(webinar)),
            np.full(len(webinar), ACTIVITY_CODE["webinar_attend"], dtype=np.int8),
        )
    )
    bogus = latent["bogus"].to_numpy()
    bounce = np.where(
        bogus & (rng.random(n) < 0.7),
        begin + rng.uniform(0, 2, n),
        np.where(rng.random(n) < 0.02, begin + rng.random(n) * (stop - begin), np.inf),
    )
    unsub = np.where(~bogus & (rng.random(n) < 0.06), begin + rng.random(n) * (stop - begin), np.inf)
    for when, stop_kind in ((bounce, "email_bounce"), (unsub, "unsubscribe")):
        rows = np.flatnonzero(np.isfinite(when))
        parts.append((rows, when[rows], np.full(len(rows), ACTIVITY_CODE[stop_kind], dtype=np.int8)))
    lead = np.concatenate([p[0] for p in parts])
    day = np.concatenate([p[1] for p in parts])
    kind = np.concatenate([np.asarray(p[2], dtype=np.int8) for p in parts])
    email_cut = np.minimum(bounce, unsub)[lead]
    email = np.isin(kind, [ACTIVITY_CODE[t] for t in EMAIL_TYPES])
    keep = (day < stop[lead] + 1e-9) & ~(email & (day > email_cut))
    frame = pd.DataFrame({"lead": lead[keep], "day": day[keep], "kind": kind[keep]})
    return frame


def _details(rng: np.random.Generator, kinds: np.ndarray) -> np.ndarray:
    """A plausible detail (asset, page, webinar, form) for each activity code."""
    out = np.empty(len(kinds), dtype=object)
    for code, name in enumerate(vocab.ACTIVITY_TYPES):
        rows = np.flatnonzero(kinds == code)
        options = np.array(_DETAILS[name], dtype=object)
        out[rows] = options[rng.integers(0, len(options), len(rows))]
    return out


# ----------------------------------------------------------------------------------------------------------------
# The historical MQL rule
# ----------------------------------------------------------------------------------------------------------------


def historical_static_points(
    leads: pd.DataFrame, accounts: pd.DataFrame, rule: HistoricalRule
) -> tuple[np.ndarray, np.ndarray]:
    """Fit points known at creation and the MQL threshold for each lead, as the history's rule saw them."""
    acc = accounts.set_index("account_id")
    industry = leads["account_id"].map(acc["industry"])
    employees = leads["account_id"].map(acc["employee_count"]).astype("Float64")
    region = vocab.lead_region(leads["country"], leads["account_id"].map(acc["region"]))
    parsed = parse_titles(leads["job_title"])
    points = np.where(industry.isin(rule.icp_industries), rule.industry_points, 0)
    ideal = employees.between(*rule.ideal_size).fillna(False).to_numpy(dtype=bool)
    points += np.where(ideal, rule.ideal_size_points, 0)
    near = employees.between(*rule.near_size_band).fillna(False).to_numpy(dtype=bool) & ~ideal
    points += np.where(near, rule.near_size_points, 0)
    points += np.where(region.isin(rule.icp_regions), rule.region_points, 0)
    points += parsed["seniority"].astype(object).map(dict(rule.seniority_points)).fillna(0).to_numpy(dtype=int)
    points += np.where(parsed["department"].isin(rule.target_departments), rule.department_points, 0)
    free = leads["email"].map(vocab.email_domain).isin(vocab.FREE_MAIL_DOMAINS).to_numpy()
    points += np.where(free, rule.free_mail_points, 0)
    threshold = region.map(dict(rule.region_thresholds)).fillna(rule.threshold).to_numpy(dtype=float)
    return points.astype(float), threshold


def _mql_days(activities: pd.DataFrame, static: np.ndarray, threshold: np.ndarray, rule: HistoricalRule) -> np.ndarray:
    """Per lead, the day of the activity whose points first lift the running score to the threshold."""
    n = len(static)
    order = np.lexsort((activities["day"].to_numpy(), activities["lead"].to_numpy()))
    lead = activities["lead"].to_numpy()[order]
    day = activities["day"].to_numpy()[order]
    points = np.zeros(len(vocab.ACTIVITY_TYPES))
    for name, value in rule.activity_points:
        points[ACTIVITY_CODE[name]] = value
    pts = points[activities["kind"].to_numpy()[order]]
    cum = np.cumsum(pts)
    first_row = np.searchsorted(lead, np.arange(n))
    offset = np.concatenate([[0.0], cum])[first_row]
    score = cum - offset[lead] + static[lead]
    crossed = np.flatnonzero(score >= threshold[lead])
    hit, pos = np.unique(lead[crossed], return_index=True)
    out = np.full(n, np.inf)
    out[hit] = day[crossed[pos]]
    return out


# ----------------------------------------------------------------------------------------------------------------
# The funnel
# ----------------------------------------------------------------------------------------------------------------

_STAGE_ORDER: Final[dict[str, int]] = {stage: i for i, stage in enumerate(vocab.STAGES)}
_REJECT_REASONS: Final = ("not sales-ready", "no budget", "wrong contact", "timing: next year")


@dataclass
class _Events:
    """Stage entries collected as parallel arrays (lead row, stage, day, reason)."""

    rows: list[np.ndarray]
    stages: list[np.ndarray]
    days: list[np.ndarray]
    reasons: list[np.ndarray]

    def add(self, rows: np.ndarray, stage: str, days: np.ndarray, reasons: np.ndarray | str) -> None:
        self.rows.append(rows)
        self.stages.append(np.full(len(rows), stage, dtype=object))
        self.days.append(days)
        self.reasons.append(np.broadcast_to(np.asarray(reasons, dtype=object), len(rows)).copy())


def _contains(lead_windows: pd.DataFrame, n: int, when: np.ndarray) -> np.ndarray:
    """Per lead, whether `when` falls inside one of its windows."""
    lead = lead_windows["lead"].to_numpy()
    inside = (lead_windows["start"].to_numpy() <= when[lead]) & (when[lead] < lead_windows["end"].to_numpy())
    return np.bincount(lead, weights=inside, minlength=n) > 0


def _days_to_market(windows: pd.DataFrame, group: np.ndarray, created: np.ndarray) -> np.ndarray:
    """Days from creation until the lead's group is next in market (0 if it already is; inf if never)."""
    lw = _lead_windows(windows, group, created, np.full(len(group), np.inf))
    wait = (lw["start"] - created[lw["lead"].to_numpy()]).to_numpy()
    out = np.full(len(group), np.inf)
    np.minimum.at(out, lw["lead"].to_numpy(), wait)
    return out


def _self_reports(
    rng: np.random.Generator, employees: np.ndarray, fit: np.ndarray, wait: np.ndarray
) -> tuple[pd.Series, pd.Series]:
    """Optional budget range and purchase timeframe typed into the creation form."""
    n = len(fit)
    budget_score = np.log10(np.maximum(employees, 1)) + 0.8 * fit + rng.normal(0, 0.5, n)
    budget = np.array(vocab.BUDGET_RANGES, dtype=object)[np.digitize(budget_score, [2.0, 2.8, 3.6])]
    edges = [90, 180, 365]
    horizon = np.array(vocab.PURCHASE_TIMEFRAMES[:4], dtype=object)[np.digitize(wait, edges)]
    timeframe = np.where(np.isinf(wait), np.where(rng.random(n) < 0.6, "no plans", ">12 months"), horizon)
    noisy = rng.random(n) < 0.3
    timeframe[noisy] = np.array(vocab.PURCHASE_TIMEFRAMES, dtype=object)[rng.integers(0, 5, int(noisy.sum()))]
    return (
        pd.Series(budget, dtype=object).where(rng.random(n) < 0.35),
        pd.Series(timeframe, dtype=object).where(rng.random(n) < 0.30),
    )


def generate(params: DemoCrmParams, icp: IcpParams) -> DemoResult:
    """The five CRM tables and the ground truth for `params` (deterministic in the seed), in memory: one batch
    up to `params.batch_leads` leads, else every batch of `iter_batches` put together. `icp` (the params'
    features.icp) is the profile the history's rule marked MQLs by."""
    parts = list(iter_batches(params, icp))
    if len(parts) == 1:
        return parts[0]
    return DemoResult(
        tables={
            name: parts[0].tables[name]
            if name == "campaigns"
            else pd.concat([p.tables[name] for p in parts], ignore_index=True)
            for name in parts[0].tables
        },
        truth=pd.concat([p.truth for p in parts], ignore_index=True),
    )


def batch_sizes(leads: int, batch_leads: int) -> list[int]:
    """Leads per batch: as even as possible, none above `batch_leads` (one batch when the CRM fits)."""
    count = -(-leads // batch_leads)
    return [leads // count + (1 if i < leads % count else 0) for i in range(count)]


def iter_batches(params: DemoCrmParams, icp: IcpParams) -> Iterator[DemoResult]:
    """The demo CRM in batches of at most `params.batch_leads` leads, so memory is bounded by the batch; `icp` is
    the history's rule's ideal customer profile.

    Each batch is a CRM of its own (accounts, leads, their activities and stage entries) on the one set of
    campaigns, with ids following on from the batch before (ids are in time order within a batch). The first
    batch draws from the seed's generator exactly as a CRM of its size does, so a CRM that fits one batch (the
    default demo) is the same whatever `batch_leads`; batch b > 0 draws from the generator of (seed, b).
    """
    end = pd.Timestamp(params.end_date, tz="UTC")
    clock = _Clock(start=end - pd.Timedelta(days=params.history_days), horizon=float(params.history_days))
    sizes = batch_sizes(params.leads, params.batch_leads)
    rule = HistoricalRule.from_icp(icp)
    campaigns = None
    offsets = {"lead_id": 0, "account_id": 0, "activity_id": 0, "stage_history_id": 0}
    for index, size in enumerate(sizes):
        if len(sizes) > 1:
            log.info("demo batch %d of %d: %s leads", index + 1, len(sizes), f"{size:,}")
        rng = np.random.default_rng(params.seed if index == 0 else [params.seed, index])
        if campaigns is None:
            campaigns = _campaigns(rng, clock)
        batch = _generate(params, size, rng, clock, campaigns, rule)
        if index > 0:
            batch = _offset(batch, offsets)
        for table, key in (("leads", "lead_id"), ("accounts", "account_id"), ("activities", "activity_id")):
            offsets[key] = int(batch.tables[table][key].max() or 0) if len(batch.tables[table]) else offsets[key]
        history = batch.tables["stage_history"]["stage_history_id"]
        offsets["stage_history_id"] = int(history.max()) if len(history) else offsets["stage_history_id"]
        yield batch


def _offset(batch: DemoResult, offsets: dict[str, int]) -> DemoResult:
    """A batch's ids moved past those of the batches before it (campaigns are shared, so theirs stay)."""
    tables = dict(batch.tables)
    for table, columns in {
        "accounts": ("account_id",),
        "leads": ("lead_id", "account_id"),
        "activities": ("activity_id", "lead_id"),
        "stage_history": ("stage_history_id", "lead_id"),
    }.items():
        tables[table] = tables[table].assign(**{c: tables[table][c] + offsets[c] for c in columns})
    truth = batch.truth.assign(
        lead_id=batch.truth["lead_id"] + offsets["lead_id"],
        duplicate_of=batch.truth["duplicate_of"] + offsets["lead_id"],
    )
    return DemoResult(tables=tables, truth=truth)


def _generate(
    params: DemoCrmParams,
    n: int,
    rng: np.random.Generator,
    clock: _Clock,
    campaigns: pd.DataFrame,
    rule: HistoricalRule,
) -> DemoResult:
    """One batch: `n` leads with their own accounts on the given campaigns, ids from 1."""
    horizon = clock.horizon
    log.info("generating a demo CRM of %s leads over %d days", f"{n:,}", params.history_days)

    accounts, account_latent = _accounts(rng, max(20, n // 3))
    obs, latent = _leads(rng, n, accounts, account_latent, campaigns, clock)
    created = obs["created_day"].to_numpy()
    source = obs["lead_source"].to_numpy()
    bogus = latent["bogus"].to_numpy()
    fit = latent["fit"].to_numpy()
    seniority = latent["seniority"].to_numpy()

    # The latent market chain per group (accounts, and one pseudo-group per account-less lead).
    group = latent["group"].to_numpy()
    group_fit = np.concatenate([account_latent["fit"].to_numpy(), np.full(n, NO_ACCOUNT_FIT)])
    windows = _market_windows(rng, group_fit, horizon)
    strength = fit * latent["authority"].to_numpy() * np.where(bogus, 0.0, 1.0)
    rate_out = HAZARD_OUT_OF_MARKET * strength * latent["source_conversion"].to_numpy()
    rate_in = HAZARD_IN_MARKET * strength * latent["source_conversion"].to_numpy()
    rate_nurture = HAZARD_NURTURE * strength
    in_market = _lead_windows(windows, group, created, np.full(n, horizon))
    first_passage = _first_passage(in_market, created, np.full(n, horizon), rate_out, rate_in, rng.exponential(1.0, n))

    # Engagement up to a month after conversion.
    active_stop = np.minimum(horizon, first_passage + ENGAGEMENT_AFTER_CONVERSION_DAYS)
    active_windows = _lead_windows(windows, group, created, active_stop)
    acts = _activities(rng, created, active_stop, latent, source, active_windows)

    # Rule MQLs, BDR review, nurture and conversion.
    static, threshold = historical_static_points(obs.assign(account_id=obs["account_id"]), accounts, rule)
    crossing = _mql_days(acts, static, threshold, rule)
    demo_requests = acts[acts["kind"] == ACTIVITY_CODE["demo_request"]]
    first_demo = np.full(n, np.inf)
    np.minimum.at(first_demo, demo_requests["lead"].to_numpy(), demo_requests["day"].to_numpy())
    mql_day = crossing + rng.uniform(1, 30, n) / 1440.0
    raise_day = first_demo + rng.uniform(1, 240, n) / 1440.0
    cleanup = np.where(bogus & (rng.random(n) < 0.6), created + rng.uniform(5, 60, n), np.inf)
    first_touch = np.minimum(first_passage, cleanup)
    mql = (crossing < first_demo) & (mql_day < first_touch) & (mql_day < horizon)
    hand_raised = ~mql & (raise_day < first_touch) & (raise_day < horizon)
    cleanup[mql | hand_raised] = np.inf
    review = np.select([mql, hand_raised], [mql_day + rng.uniform(0.1, 3.0, n), raise_day], default=np.inf)
    reviewed = (mql | hand_raised) & (review < first_passage) & (review < horizon)
    in_market_at_review = _contains(in_market, n, review)
    senior = np.isin(seniority, ["c_level", "vp", "director"])
    p_accept = np.clip(0.15 + 0.35 * fit + 0.35 * in_market_at_review + 0.1 * senior, 0.05, 0.9)
    disqualify = reviewed & (bogus | ((seniority == "intern_student") & (rng.random(n) < 0.6)))
    accept = reviewed & ~disqualify & (hand_raised | (rng.random(n) < p_accept))
    reject = reviewed & ~disqualify & ~accept
    sal_timeout = accept & (first_passage > review + 60.0) & (review + 60.0 < horizon)
    nurture_entry = np.select([reject, sal_timeout], [review, review + 60.0], default=np.inf)
    nurture_start = nurture_entry + NURTURE_DELAY_DAYS
    nurture_end = nurture_start + NURTURE_DAYS
    with np.errstate(divide="ignore"):
        nurture_hit = nurture_start + rng.exponential(1.0, n) / rate_nurture
    nurture_hit = np.where(nurture_hit < nurture_end, nurture_hit, np.inf)
    closed = np.minimum(cleanup, np.where(disqualify, review, np.inf))
    converted = np.minimum(first_passage, nurture_hit)
    converted = np.where(converted < closed, converted, np.inf)
    sql = converted < horizon

    events = _Events([], [], [], [])
    rows = np.flatnonzero(mql)
    events.add(rows, "MQL", mql_day[rows], "lead score reached the MQL threshold")
    rows = np.flatnonzero(accept)
    events.add(rows, "SAL", review[rows], np.where(hand_raised[rows], "demo request (hand-raiser)", "accepted by BDR"))
    rows = np.flatnonzero(reject)
    reasons = np.array(_REJECT_REASONS, dtype=object)[rng.integers(0, len(_REJECT_REASONS), len(rows))]
    events.add(rows, "Nurture", review[rows], reasons)
    rows = np.flatnonzero(sal_timeout & (review + 60.0 < converted))
    events.add(rows, "Nurture", review[rows] + 60.0, "no BANT confirmed within 60 days")
    rows = np.flatnonzero(np.isfinite(closed) & (closed < horizon))
    events.add(
        rows, "Disqualified", closed[rows], np.where(bogus[rows], "invalid contact data", "student or no buying role")
    )

    # SQL: through the accepted MQL or demo request, back from nurture, fast-tracked, or straight to sales.
    sal_open = accept & (converted <= review + 60.0)
    direct_reason = np.select(
        [source == "sales_generated", source == "referral"],
        ["sales-generated", "referral"],
        default="sales outreach (missed by rules)",
    )
    sal_reason = np.select(
        [(mql | hand_raised) & (converted <= review), np.isfinite(nurture_entry) & (converted > nurture_entry)],
        ["fast track before review", "re-engaged from nurture"],
        default=direct_reason,
    )
    rows = np.flatnonzero(sql & ~sal_open)
    events.add(rows, "SAL", converted[rows], sal_reason[rows])
    rows = np.flatnonzero(sql)
    events.add(rows, "SQL", converted[rows], "budget, authority, need and timeframe confirmed")
    opportunity = np.where(sql & (rng.random(n) < 0.55 + 0.3 * fit), converted + rng.uniform(2, 14, n), np.inf)
    rows = np.flatnonzero(opportunity < horizon)
    events.add(rows, "Opportunity", opportunity[rows], "opportunity created")
    no_opp = np.where(sql & ~np.isfinite(opportunity), converted + rng.uniform(14, 45, n), np.inf)
    rows = np.flatnonzero(no_opp < horizon)
    events.add(rows, "Nurture", no_opp[rows], "no opportunity after qualification")
    decided = opportunity + rng.uniform(20, 120, n)
    won = rng.random(n) < 0.2 + 0.35 * fit
    rows = np.flatnonzero((decided < horizon) & won)
    events.add(rows, "Won", decided[rows], "closed won")
    rows = np.flatnonzero((decided < horizon) & ~won)
    events.add(rows, "Lost", decided[rows], "closed lost")

    # Engagement stops a month after conversion and at disqualification.
    stop = np.minimum(np.minimum(active_stop, converted + ENGAGEMENT_AFTER_CONVERSION_DAYS), closed)
    acts = acts[acts["day"].to_numpy() <= stop[acts["lead"].to_numpy()]]

    wait = _days_to_market(windows, group, created)
    budget, timeframe = _self_reports(rng, latent["employees"].to_numpy(), fit, wait)
    tables = _assemble(rng, clock, campaigns, accounts, obs, budget, timeframe, acts, events)

    lead_id = tables["leads"].attrs.pop("lead_id_by_row")
    until = np.minimum(closed, horizon)
    hazard_mass = (
        rate_out * (until - created)
        + rate_in * _in_window_time(in_market, n, until)
        + rate_nurture * np.clip(np.minimum(nurture_end, until) - nurture_start, 0, None)
    )
    truth = pd.DataFrame(
        {
            "lead_id": lead_id,
            "bogus": bogus,
            "duplicate_of": pd.array(
                np.where(
                    latent["duplicate_of"].notna(),
                    lead_id[latent["duplicate_of"].fillna(1).to_numpy(dtype=np.int64) - 1],
                    -1,
                ),
                dtype="Int64",
            ),
            "fit": fit,
            "true_seniority": seniority,
            "true_department": latent["department"].to_numpy(),
            "authority": latent["authority"].to_numpy(),
            "interest": latent["interest"].to_numpy(),
            "source_conversion": latent["source_conversion"].to_numpy(),
            "hazard_out": rate_out,
            "hazard_in": rate_in,
            "hazard_nurture": rate_nurture,
            "market_entry_rate": market_entry_rate(fit),
            "market_exit_rate": np.full(n, 1.0 / MARKET_MEAN_DAYS),
            "nurture_entered_at": clock.to_timestamps(nurture_entry),
            "nurture_start": clock.to_timestamps(nurture_start),
            "nurture_end": clock.to_timestamps(nurture_end),
            "closed_at": clock.to_timestamps(closed),
            "converted_at": clock.to_timestamps(np.where(sql, converted, np.inf)),
            "true_propensity": 1.0 - np.exp(-hazard_mass),
        }
    )
    # Each lead's in-market windows as list columns, built from offsets (the windows are sorted by lead row).
    offsets = np.concatenate([[0], np.cumsum(np.bincount(in_market["lead"].to_numpy(), minlength=n))])
    for col in ("start", "end"):
        values = pa.array(clock.to_ns(in_market[col].to_numpy()), type=pa.int64()).cast(_TS_TYPE)
        truth[f"in_market_{col}"] = pd.Series(
            pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values), dtype=pd.ArrowDtype(pa.list_(_TS_TYPE))
        )
    truth["duplicate_of"] = truth["duplicate_of"].mask(truth["duplicate_of"] < 0)
    truth = truth.sort_values("lead_id", kind="stable").reset_index(drop=True)
    log.info("generated %s leads, %s SQL by the end of history", f"{n:,}", f"{int(sql.sum()):,}")
    return DemoResult(tables=tables, truth=truth)


def _assemble(
    rng: np.random.Generator,
    clock: _Clock,
    campaigns: pd.DataFrame,
    accounts: pd.DataFrame,
    obs: pd.DataFrame,
    budget: pd.Series,
    timeframe: pd.Series,
    acts: pd.DataFrame,
    events: _Events,
) -> dict[str, pd.DataFrame]:
    """The five tables with ids in time order and canonical dtypes."""
    n = len(obs)
    created = obs["created_day"].to_numpy()
    order = np.argsort(created, kind="stable")
    lead_id = np.empty(n, dtype=np.int64)
    lead_id[order] = np.arange(1, n + 1)

    by_time = np.lexsort((acts["lead"].to_numpy(), acts["day"].to_numpy()))
    acts = acts.iloc[by_time].reset_index(drop=True)
    kind = acts["kind"].to_numpy()
    activities = pd.DataFrame(
        {
            "activity_id": np.arange(1, len(acts) + 1, dtype=np.int64),
            "lead_id": lead_id[acts["lead"].to_numpy()],
            "occurred_at": clock.to_timestamps(acts["day"].to_numpy()),
            "activity_type": np.array(vocab.ACTIVITY_TYPES, dtype=object)[kind],
            "detail": _details(rng, kind),
        }
    )

    ev = pd.DataFrame(
        {
            "row": np.concatenate(events.rows),
            "stage": np.concatenate(events.stages),
            "day": np.concatenate(events.days),
            "reason": np.concatenate(events.reasons),
        }
    )
    ev["seq"] = ev["stage"].map(_STAGE_ORDER)
    ev = ev.sort_values(["day", "row", "seq"], kind="stable").reset_index(drop=True)
    stage_history = pd.DataFrame(
        {
            "stage_history_id": np.arange(1, len(ev) + 1, dtype=np.int64),
            "lead_id": lead_id[ev["row"].to_numpy()],
            "stage": ev["stage"].to_numpy(dtype=object),
            "entered_at": clock.to_timestamps(ev["day"].to_numpy()),
            "reason": ev["reason"].to_numpy(dtype=object),
        }
    )

    last_stage = ev.drop_duplicates("row", keep="last").set_index("row")
    status = pd.Series("Open", index=np.arange(n), dtype=object)
    status[last_stage.index] = last_stage["stage"]
    last_touch = np.maximum.reduce(
        [
            created,
            pd.Series(acts["day"].to_numpy())
            .groupby(acts["lead"].to_numpy())
            .max()
            .reindex(np.arange(n))
            .fillna(-np.inf)
            .to_numpy(),
            last_stage["day"].reindex(np.arange(n)).fillna(-np.inf).to_numpy(),
        ]
    )
    leads = pd.DataFrame(
        {
            "lead_id": lead_id,
            "account_id": obs["account_id"],
            "created_at": clock.to_timestamps(created),
            "first_name": obs["first_name"],
            "last_name": obs["last_name"],
            "email": obs["email"],
            "phone": obs["phone"],
            "job_title": obs["job_title"],
            "lead_source": obs["lead_source"],
            "campaign_id": obs["campaign_id"],
            "country": obs["country"],
            "budget_range": budget,
            "purchase_timeframe": timeframe,
            "status": status.to_numpy(),
            "updated_at": clock.to_timestamps(last_touch),
        }
    )
    leads = leads.iloc[order].reset_index(drop=True)
    leads.attrs["lead_id_by_row"] = lead_id
    return {
        "campaigns": campaigns.drop(columns=["_start_day", "_end_day"]),
        "accounts": accounts,
        "leads": leads,
        "activities": activities,
        "stage_history": stage_history,
    }
