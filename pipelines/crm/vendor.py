"""The demo CRM written in the shape of a vendor's export, so the presets in config/mappings/ can be tested on it.

`salesforce_files` gives the CSV files a Data Loader export of a Salesforce org would hold (Account, Campaign,
Lead, CampaignMember, Task, LeadHistory; API field names, 18-character ids, ISO 8601 UTC datetimes);
`hubspot_files` the files of a HubSpot contacts, companies and engagements export (internal property names,
numeric record ids, lifecycle-stage dates). Field names and their sources are listed in docs/mapping.md. Fields a
real org keeps in custom fields (names ending in `__c` on Salesforce, custom properties on HubSpot) are marked as
such there. `write_files` writes one folder atomically. Pure apart from `write_files`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
#: Salesforce key prefixes of the objects written (the first three characters of every record id).
SALESFORCE_PREFIX: Final[dict[str, str]] = {
    "Account": "001",
    "Lead": "00Q",
    "Campaign": "701",
    "CampaignMember": "00v",
    "Task": "00T",
    "LeadHistory": "017",
}
#: Lifecycle stages of HubSpot's default pipeline that the demo's stages map onto (internal values).
HUBSPOT_STAGE: Final[dict[str, str]] = {
    "MQL": "marketingqualifiedlead",
    "SQL": "salesqualifiedlead",
    "Opportunity": "opportunity",
    "Won": "customer",
}
#: Engagement types of a HubSpot export (hs_engagement_type) per demo activity type.
HUBSPOT_ENGAGEMENT: Final[dict[str, str]] = {
    "email_open": "EMAIL",
    "email_click": "EMAIL",
    "unsubscribe": "EMAIL",
    "email_bounce": "EMAIL",
    "webinar_register": "MEETING",
    "webinar_attend": "MEETING",
    "trade_show_scan": "MEETING",
    "demo_request": "CALL",
}


def label(value: object) -> object:
    """A vocabulary value as a picklist label: paid_search -> Paid Search (missing stays missing)."""
    return value if not isinstance(value, str) else " ".join(w.capitalize() for w in value.split("_"))


def salesforce_id(prefix: str, number: int) -> str:
    """An 18-character Salesforce id: key prefix, base-62 number, and the case-safe 3-character suffix."""
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
    short = prefix + digits.rjust(12, "0")
    suffix = "".join(_SUFFIX[sum(1 << i for i, ch in enumerate(short[k : k + 5]) if ch.isupper())] for k in (0, 5, 10))
    return short + suffix


def _ids(prefix: str, numbers: pd.Series) -> pd.Series:
    return numbers.map(lambda n: salesforce_id(prefix, int(n)), na_action="ignore").astype(object)


def _iso(stamps: pd.Series) -> pd.Series:
    """Data Loader's datetime text: 2025-10-16T08:52:53.000Z (UTC)."""
    at = pd.to_datetime(stamps, utc=True)
    return at.dt.strftime("%Y-%m-%dT%H:%M:%S.000Z").where(at.notna(), None)


def _day(stamps: pd.Series) -> pd.Series:
    """A Salesforce date field (Campaign.StartDate, EndDate): yyyy-MM-dd."""
    at = pd.to_datetime(stamps, utc=True)
    return at.dt.strftime("%Y-%m-%d").where(at.notna(), None)


def salesforce_files(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The five CRM tables as a Salesforce org's Data Loader export: one frame per object file."""
    accounts, campaigns, leads = tables["accounts"], tables["campaigns"], tables["leads"]
    activities, stages = tables["activities"], tables["stage_history"]
    lead_ids = _ids("00Q", leads["lead_id"])
    by_lead = pd.Series(lead_ids.to_numpy(), index=leads["lead_id"].to_numpy())
    account = pd.DataFrame(
        {
            "Id": _ids("001", accounts["account_id"]),
            "Name": accounts["company_name"],
            "Website": accounts["domain"],
            "Industry": accounts["industry"],
            "NumberOfEmployees": accounts["employee_count"],
            "AnnualRevenue": accounts["annual_revenue"],
            "BillingCountryCode": accounts["country"],
            "Sales_Region__c": accounts["region"],
        }
    )
    campaign = pd.DataFrame(
        {
            "Id": _ids("701", campaigns["campaign_id"]),
            "Name": campaigns["name"],
            "Type": campaigns["channel"].map(label),
            "StartDate": _day(campaigns["start_date"]),
            "EndDate": _day(campaigns["end_date"]),
            "Region__c": campaigns["region"],
        }
    )
    lead = pd.DataFrame(
        {
            "Id": lead_ids,
            "CreatedDate": _iso(leads["created_at"]),
            "LastModifiedDate": _iso(leads["updated_at"]),
            "FirstName": leads["first_name"],
            "LastName": leads["last_name"],
            "Email": leads["email"],
            "Phone": leads["phone"],
            "Title": leads["job_title"],
            "LeadSource": leads["lead_source"].map(label),
            "CountryCode": leads["country"],
            "Status": leads["status"],
            "Account__c": _ids("001", leads["account_id"]),
            "Budget_Range__c": leads["budget_range"],
            "Purchase_Timeframe__c": leads["purchase_timeframe"],
        }
    )
    members = leads.loc[leads["campaign_id"].notna()].reset_index(drop=True)
    member = pd.DataFrame(
        {
            "Id": [salesforce_id("00v", i + 1) for i in range(len(members))],
            "CampaignId": _ids("701", members["campaign_id"]),
            "LeadId": by_lead.reindex(members["lead_id"]).to_numpy(),
            "CreatedDate": _iso(members["created_at"]),
        }
    )
    task = pd.DataFrame(
        {
            "Id": _ids("00T", activities["activity_id"]),
            "WhoId": by_lead.reindex(activities["lead_id"]).to_numpy(),
            "Type": activities["activity_type"].map(label),
            "Subject": activities["detail"],
            "CreatedDate": _iso(activities["occurred_at"]),
        }
    )
    # LeadHistory: one "created" row per lead (as Salesforce records it) and one Status row per stage entry
    ordered = stages.sort_values(["lead_id", "entered_at", "stage_history_id"], kind="stable")
    previous = ordered.groupby("lead_id")["stage"].shift(1)
    status_rows = pd.DataFrame(
        {
            "LeadId": by_lead.reindex(ordered["lead_id"]).to_numpy(),
            "Field": "Status",
            "OldValue": previous.fillna("Open").to_numpy(),
            "NewValue": ordered["stage"].to_numpy(),
            "CreatedDate": _iso(ordered["entered_at"]).to_numpy(),
            "_n": ordered["stage_history_id"].to_numpy(),
        }
    )
    created_rows = pd.DataFrame(
        {
            "LeadId": lead_ids.to_numpy(),
            "Field": "created",
            "OldValue": None,
            "NewValue": None,
            "CreatedDate": _iso(leads["created_at"]).to_numpy(),
            "_n": stages["stage_history_id"].max() + 1 + np.arange(len(leads))
            if len(stages)
            else np.arange(1, len(leads) + 1),
        }
    )
    history = pd.concat([created_rows, status_rows], ignore_index=True).sort_values(["CreatedDate", "_n"])
    history.insert(0, "Id", [salesforce_id("017", int(n)) for n in history["_n"]])
    files = {
        "Account": account,
        "Campaign": campaign,
        "Lead": lead,
        "CampaignMember": member,
        "Task": task,
        "LeadHistory": history.drop(columns="_n").reset_index(drop=True),
    }
    return {name: frame.reset_index(drop=True) for name, frame in files.items()}


def hubspot_id(kind: str, number: int) -> int:
    """A HubSpot-like record id: a large number, distinct per object type."""
    base = {
        "contact": 51_000_000_000,
        "company": 17_000_000_000,
        "engagement": 43_000_000_000,
        "campaign": 29_000_000_000,
    }[kind]
    return base + 7 * int(number)


def _hubspot_time(stamps: pd.Series) -> pd.Series:
    """HubSpot export datetime text: 2025-10-16 08:52 (UTC; exports drop the seconds)."""
    at = pd.to_datetime(stamps, utc=True)
    return at.dt.strftime("%Y-%m-%d %H:%M:%S").where(at.notna(), None)


def hubspot_files(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The CRM as a HubSpot export: contacts (with lifecycle-stage dates), companies and engagements.

    HubSpot records when a contact *first* became each lifecycle stage, for the default stages only: SAL, Lost,
    Disqualified and Nurture have no date property, and later re-entries are not kept. The round trip through
    this shape is therefore lossy by construction (docs/mapping.md says how much).
    """
    accounts, campaigns, leads = tables["accounts"], tables["campaigns"], tables["leads"]
    activities, stages = tables["activities"], tables["stage_history"]
    contact_ids = leads["lead_id"].map(lambda n: hubspot_id("contact", n))
    by_lead = pd.Series(contact_ids.to_numpy(), index=leads["lead_id"].to_numpy())
    company = pd.DataFrame(
        {
            "hs_object_id": accounts["account_id"].map(lambda n: hubspot_id("company", n)),
            "name": accounts["company_name"],
            "domain": accounts["domain"],
            "industry": accounts["industry"],
            "numberofemployees": accounts["employee_count"],
            "annualrevenue": accounts["annual_revenue"],
            "country": accounts["country"],
            "sales_region": accounts["region"],
        }
    )
    contact = pd.DataFrame(
        {
            "hs_object_id": contact_ids,
            "createdate": _hubspot_time(leads["created_at"]),
            "lastmodifieddate": _hubspot_time(leads["updated_at"]),
            "firstname": leads["first_name"],
            "lastname": leads["last_name"],
            "email": leads["email"],
            "phone": leads["phone"],
            "jobtitle": leads["job_title"],
            "lead_source": leads["lead_source"].map(label),
            "country": leads["country"],
            "associatedcompanyid": leads["account_id"].map(lambda n: hubspot_id("company", n), na_action="ignore"),
            "campaign_id": leads["campaign_id"].map(lambda n: hubspot_id("campaign", n), na_action="ignore"),
            "budget_range": leads["budget_range"],
            "purchase_timeframe": leads["purchase_timeframe"],
            "lifecyclestage": leads["status"].map(lambda s: HUBSPOT_STAGE.get(s, "lead")),
        }
    )
    first = stages.sort_values(["entered_at", "stage_history_id"]).drop_duplicates(["lead_id", "stage"])
    for stage, internal in HUBSPOT_STAGE.items():
        when = first.loc[first["stage"] == stage].set_index("lead_id")["entered_at"]
        contact[f"hs_lifecyclestage_{internal}_date"] = _hubspot_time(
            when.reindex(leads["lead_id"]).reset_index(drop=True)
        ).to_numpy()
    engagement = pd.DataFrame(
        {
            "hs_object_id": activities["activity_id"].map(lambda n: hubspot_id("engagement", n)),
            "hs_engagement_type": activities["activity_type"].map(lambda a: HUBSPOT_ENGAGEMENT.get(a, "NOTE")),
            "activity_type": activities["activity_type"].map(label),
            "hs_timestamp": _hubspot_time(activities["occurred_at"]),
            "hs_body_preview": activities["detail"],
            "contact_id": by_lead.reindex(activities["lead_id"]).to_numpy(),
        }
    )
    campaign = pd.DataFrame(
        {
            "hs_object_id": campaigns["campaign_id"].map(lambda n: hubspot_id("campaign", n)),
            "name": campaigns["name"],
            "channel": campaigns["channel"].map(label),
            "region": campaigns["region"],
            "start_date": _hubspot_time(campaigns["start_date"]),
            "end_date": _hubspot_time(campaigns["end_date"]),
        }
    )
    return {"contacts": contact, "companies": company, "engagements": engagement, "campaigns": campaign}


def write_files(files: Mapping[str, pd.DataFrame], out: Path) -> list[Path]:
    """Write `<out>/<name>.csv` for every frame (UTF-8, header, empty cell = missing), the folder atomically."""
    from pipelines.atomic import atomic_directory

    out = Path(out)
    with atomic_directory(out) as tmp:
        for name, frame in files.items():
            frame.to_csv(tmp / f"{name}.csv", index=False, encoding="utf-8")
    log.info("wrote %s to %s", ", ".join(f"{n}.csv ({len(f):,} rows)" for n, f in files.items()), out)
    return [out / f"{name}.csv" for name in files]


__all__ = ["hubspot_files", "salesforce_files", "salesforce_id", "write_files"]
