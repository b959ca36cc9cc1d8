"""The CRM's controlled vocabularies: one definition shared by the generator, the schemas and the features.

Everything that names a category (activity types, funnel stages, lead sources, regions) lives here so that the
demo generator, the pandera schemas and the feature code can never disagree about the spelling of a value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

ACTIVITY_TYPES: Final[tuple[str, ...]] = (
    "email_open",
    "email_click",
    "web_visit",
    "pricing_page_visit",
    "content_download",
    "webinar_register",
    "webinar_attend",
    "trade_show_scan",
    "form_submit",
    "demo_request",
    "social_follow",
    "unsubscribe",
    "email_bounce",
)

#: Funnel stages in the order a lead normally travels; Disqualified, Nurture and Lost are exits or detours.
STAGES: Final[tuple[str, ...]] = (
    "MQL",
    "SAL",
    "SQL",
    "Opportunity",
    "Won",
    "Lost",
    "Disqualified",
    "Nurture",
)

#: Stages at or beyond sales qualification: a lead that has entered one of these has "converted" to SQL.
SQL_OR_LATER: Final[frozenset[str]] = frozenset({"SQL", "Opportunity", "Won", "Lost"})

#: `leads.status`: the latest stage, or "Open" for a lead that has entered none.
LEAD_STATUSES: Final[tuple[str, ...]] = ("Open", *STAGES)

LEAD_SOURCES: Final[tuple[str, ...]] = (
    "organic_search",
    "paid_search",
    "social",
    "webinar",
    "content_syndication",
    "trade_show",
    "purchased_list",
    "referral",
    "sales_generated",
    "partner",
)

CAMPAIGN_CHANNELS: Final[tuple[str, ...]] = (
    "email",
    "webinar",
    "paid_search",
    "social",
    "trade_show",
    "content_syndication",
    "partner",
)

REGIONS: Final[tuple[str, ...]] = ("NA", "EMEA", "APAC", "LATAM")

COUNTRY_REGION: Final[dict[str, str]] = {
    "US": "NA",
    "CA": "NA",
    "GB": "EMEA",
    "DE": "EMEA",
    "FR": "EMEA",
    "NL": "EMEA",
    "SE": "EMEA",
    "ES": "EMEA",
    "IT": "EMEA",
    "AE": "EMEA",
    "ZA": "EMEA",
    "IN": "APAC",
    "AU": "APAC",
    "JP": "APAC",
    "SG": "APAC",
    "CN": "APAC",
    "BR": "LATAM",
    "MX": "LATAM",
    "AR": "LATAM",
    "CL": "LATAM",
    "CO": "LATAM",
}

INDUSTRIES: Final[tuple[str, ...]] = (
    "Software",
    "Financial Services",
    "Healthcare",
    "Manufacturing",
    "Retail",
    "Professional Services",
    "Telecommunications",
    "Media",
    "Education",
    "Government",
    "Nonprofit",
    "Hospitality",
)

BUDGET_RANGES: Final[tuple[str, ...]] = ("<10k", "10k-50k", "50k-250k", ">250k")
PURCHASE_TIMEFRAMES: Final[tuple[str, ...]] = ("0-3 months", "3-6 months", "6-12 months", ">12 months", "no plans")

#: Consumer mail providers: a lead using one gives no company domain to match, a weak fit signal.
FREE_MAIL_DOMAINS: Final[frozenset[str]] = frozenset(
    {
        "gmail.com",
        "yahoo.com",
        "hotmail.com",
        "outlook.com",
        "aol.com",
        "icloud.com",
        "gmx.de",
        "mail.ru",
        "yandex.ru",
        "qq.com",
        "163.com",
        "proton.me",
        "live.com",
        "web.de",
    }
)


def email_domain(email: str | None) -> str | None:
    """The lower-cased part after the last "@", or None when there is none."""
    if not email or "@" not in email:
        return None
    domain = email.rsplit("@", 1)[1].strip().lower()
    return domain or None


def lead_region(country: pd.Series, account_region: pd.Series) -> pd.Series:
    """A lead's region: from its own country, else its account's region (None when neither is known).

    The features stage applies the same rule in Arrow on its hot path (`pipelines/features/static.py`).
    """
    own = country.map(COUNTRY_REGION)
    return own.where(own.notna(), account_region).astype(object).where(lambda s: s.notna(), None)


def codes(values: pd.Series, levels: Sequence[str]) -> np.ndarray:
    """Each value's position in `levels` (-1: missing or not a level), as `pd.Categorical(values, levels).codes`
    gives it, matched in Arrow's C++ (no Python string per value: a chunk of activities holds millions)."""
    array = pa.array(values, type=pa.large_string(), from_pandas=True)
    found = pc.index_in(array, value_set=pa.array(list(levels), type=pa.large_string()))
    out: np.ndarray = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return out
