"""The demo CRM's generative rates that its ground truth needs too: how engagement follows interest and the latent
market state (docs/crm.md). One home, so the generator (`pipelines.crm.demo`) and the ground-truth computations
(`pipelines.crm.truth`, which the evaluate stage uses) agree without the evaluation importing the generator.
"""

from __future__ import annotations

from typing import Final

DAY_SECONDS: Final = 86_400.0
#: Activity (all of it: interest and in-market signals) goes on this long after a lead converts, then stops.
ENGAGEMENT_AFTER_CONVERSION_DAYS: Final = 30.0

# Engagement rates (events per day).
INTEREST_RATE: Final = 0.06
INTEREST_DECAY_DAYS: Final = 40.0
INTEREST_FLOOR: Final = 0.2
INTEREST_MIX: Final[dict[str, float]] = {
    "email_open": 0.42,
    "email_click": 0.12,
    "web_visit": 0.2,
    "content_download": 0.1,
    "webinar_register": 0.05,
    "webinar_attend": 0.03,
    "social_follow": 0.03,
    "pricing_page_visit": 0.02,
    "form_submit": 0.03,
}
IN_MARKET_RATES: Final[dict[str, float]] = {
    "pricing_page_visit": 0.05,
    "web_visit": 0.06,
    "demo_request": 0.008,
    "form_submit": 0.012,
    "email_click": 0.02,
    "content_download": 0.012,
}
EMAIL_TYPES: Final[frozenset[str]] = frozenset({"email_open", "email_click"})
#: The activity a lead of these sources logs at its creation (deterministic: it says nothing about the market).
CREATION_EVENT: Final[dict[str, str]] = {
    "trade_show": "trade_show_scan",
    "webinar": "webinar_register",
    "organic_search": "form_submit",
    "paid_search": "form_submit",
    "social": "form_submit",
    "partner": "form_submit",
    "content_syndication": "content_download",
}
