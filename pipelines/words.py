"""Business words shared by everything a salesperson reads: model reasons, rules that fired, the report.

One vocabulary so the reasons and the rules say "2 e-mail opens" the same way, with singular and plural right
("1 activity", "3 activities") and lead sources and channels in plain words ("came in through sales prospecting").
"""

from __future__ import annotations

from typing import Final

#: activity type -> (verb phrase, plural noun, singular noun): "visited the pricing page 3 times", "no pricing page
#: visits so far", "last pricing page visit 4 days ago", "2 pricing page visits".
ACTIVITY_WORDS: Final[dict[str, tuple[str, str, str]]] = {
    "email_open": ("opened marketing e-mails", "e-mail opens", "e-mail open"),
    "email_click": ("clicked marketing e-mails", "e-mail clicks", "e-mail click"),
    "web_visit": ("visited the website", "website visits", "website visit"),
    "pricing_page_visit": ("visited the pricing page", "pricing page visits", "pricing page visit"),
    "content_download": ("downloaded content", "content downloads", "content download"),
    "webinar_register": ("registered for webinars", "webinar registrations", "webinar registration"),
    "webinar_attend": ("attended webinars", "webinar attendances", "webinar attendance"),
    "trade_show_scan": ("was scanned at trade shows", "trade show scans", "trade show scan"),
    "form_submit": ("submitted forms", "form submissions", "form submission"),
    "demo_request": ("requested a demo", "demo requests", "demo request"),
    "social_follow": ("followed us on social media", "social follows", "social follow"),
    "unsubscribe": ("unsubscribed from e-mails", "unsubscribes", "unsubscribe"),
    "email_bounce": ("had e-mails bounce", "e-mail bounces", "e-mail bounce"),
    "activities": ("was active", "activities", "activity"),
    "any_activity": ("was active", "activities", "activity"),
}
#: `leads.lead_source` codes (pipelines.crm.vocab.LEAD_SOURCES) as a sentence: how the lead reached us.
LEAD_SOURCE_WORDS: Final[dict[str, str]] = {
    "organic_search": "came in through organic search",
    "paid_search": "came in through a paid search ad",
    "social": "came in through social media",
    "webinar": "came in through a webinar",
    "content_syndication": "came in through syndicated content",
    "trade_show": "came in through a trade show",
    "purchased_list": "came in from a purchased list",
    "referral": "came in through a referral",
    "sales_generated": "came in through sales prospecting",
    "partner": "came in through a partner",
}
#: Campaign channel codes (pipelines.crm.vocab.CAMPAIGN_CHANNELS) as a noun phrase.
CHANNEL_WORDS: Final[dict[str, str]] = {
    "email": "an e-mail campaign",
    "webinar": "a webinar campaign",
    "paid_search": "a paid search campaign",
    "social": "a social media campaign",
    "trade_show": "a trade show campaign",
    "content_syndication": "a content syndication campaign",
    "partner": "a partner campaign",
}
#: Region codes as people say them.
REGION_WORDS: Final[dict[str, str]] = {
    "NA": "North America",
    "EMEA": "EMEA",
    "APAC": "Asia-Pacific",
    "LATAM": "Latin America",
    "Global": "all regions",
}


def number(value: float) -> str:
    """A count or amount with thousands separators, one decimal only when it is not whole."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def plural(count: float, singular: str, plural_form: str | None = None) -> str:
    """ "1 activity", "3 activities", "2.5 points": the count and the noun in the right number."""
    noun = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{number(count)} {noun}"


def times(count: float) -> str:
    """ "once", "twice", "3 times"."""
    return "once" if count == 1 else "twice" if count == 2 else f"{number(count)} times"


def activity_count(activity: str, count: float) -> str:
    """ "1 e-mail open", "2 e-mail opens" (unknown types: their code in words)."""
    _, many, one = ACTIVITY_WORDS.get(activity, ("", activity.replace("_", " ") + "s", activity.replace("_", " ")))
    return plural(count, one, many)


def snapshots(count: int, days: int) -> str:
    """A count of snapshots at a cadence: "11 weekly snapshots", "1 daily snapshot", "5 snapshots, one every 3 days"."""
    adjective = {1: "daily", 7: "weekly", 14: "fortnightly"}.get(days)
    if adjective:
        return plural(count, f"{adjective} snapshot")
    return f"{plural(count, 'snapshot')}, one every {plural(days, 'day')}"


def snapshot_rows(days: int) -> str:
    """The unit of one open lead at one snapshot: "lead-weeks" at a weekly cadence, else "lead-snapshots"."""
    return {1: "lead-days", 7: "lead-weeks"}.get(days, "lead-snapshots")


def percent_level(level: float) -> str:
    """An interval's confidence level as people write it: 0.95 -> "95%", 0.9 -> "90%", 0.975 -> "97.5%"."""
    return f"{100 * level:.1f}".rstrip("0").rstrip(".") + "%"
