"""Per-lead features fixed at creation: fit, title, source and campaign, self-reported answers, bogus-lead signals.

All of these come from what the creation form and the account record hold, so they are known from `created_at`
on. Names, e-mail addresses and phone numbers are read only to derive signals (free-mail domain, placeholder
names, impossible numbers); they never become features themselves. `leads.status` and `leads.updated_at` are
current values, a leak, and are never read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import FeaturesParams
from pipelines.crm import vocab
from pipelines.crm.titles import DEPARTMENTS, SENIORITIES, parse_titles
from pipelines.features import timeline as tl

OTHER: Final = "Other"
#: One feature column: a NumPy array or a pandas categorical.
Column = np.ndarray | pd.Categorical
#: Words people type into a form field they do not want to fill in.
PLACEHOLDER_WORDS: Final[frozenset[str]] = frozenset(
    {
        "test",
        "testing",
        "tester",
        "asdf",
        "asd",
        "qwerty",
        "xxx",
        "xx",
        "x",
        "n/a",
        "na",
        "none",
        "null",
        "nil",
        "fake",
        "sample",
        "demo",
        "abc",
        "aaa",
        "foo",
        "bar",
        "dummy",
        "unknown",
        "-",
        ".",
        "?",
        "no",
        "nobody",
    }
)
#: Famous placeholder people.
PLACEHOLDER_PEOPLE: Final[frozenset[tuple[str, str]]] = frozenset(
    {
        ("mickey", "mouse"),
        ("minnie", "mouse"),
        ("donald", "duck"),
        ("john", "doe"),
        ("jane", "doe"),
        ("test", "user"),
        ("first", "last"),
        ("firstname", "lastname"),
        ("john", "smith"),
    }
)
#: Example, test and disposable e-mail domains.
TEST_MAIL_DOMAINS: Final[frozenset[str]] = frozenset(
    {
        "example.com",
        "example.org",
        "example.net",
        "test.com",
        "test.de",
        "mailinator.com",
        "fake.com",
        "fake.org",
        "none.com",
        "asdf.com",
        "abc.com",
        "yopmail.com",
        "guerrillamail.com",
        "10minutemail.com",
        "trashmail.com",
        "tempmail.com",
        "sharklasers.com",
        "dispostable.com",
        "throwawaymail.com",
        "maildrop.cc",
    }
)
PLACEHOLDER_MAILBOXES: Final[frozenset[str]] = PLACEHOLDER_WORDS | {"noreply", "no-reply", "donotreply"}
_VALID_EMAIL: Final = r"^[^@\s]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}$"

#: (name, kind, family) of every column `static_features` returns, in order.
STATIC_SPECS: Final[tuple[tuple[str, str, str], ...]] = (
    ("industry", "categorical", "fit"),
    ("employee_count", "numeric", "fit"),
    ("annual_revenue", "numeric", "fit"),
    ("region", "categorical", "fit"),
    ("country", "categorical", "fit"),
    ("has_account", "numeric", "fit"),
    ("free_mail", "numeric", "fit"),
    ("email_matches_account", "numeric", "fit"),
    ("icp_industry", "numeric", "fit"),
    ("icp_size", "numeric", "fit"),
    ("icp_region", "numeric", "fit"),
    ("icp_fit_count", "numeric", "fit"),
    ("icp_match", "numeric", "fit"),
    ("seniority", "categorical", "title"),
    ("department", "categorical", "title"),
    ("title_missing", "numeric", "title"),
    ("lead_source", "categorical", "source"),
    ("campaign_id", "categorical", "source"),
    ("campaign_channel", "categorical", "source"),
    ("campaign_region", "categorical", "source"),
    ("budget_range", "categorical", "self_reported"),
    ("purchase_timeframe", "categorical", "self_reported"),
    ("name_missing", "numeric", "bogus"),
    ("name_placeholder", "numeric", "bogus"),
    ("name_repeated", "numeric", "bogus"),
    ("name_too_short", "numeric", "bogus"),
    ("name_has_digit", "numeric", "bogus"),
    ("email_missing", "numeric", "bogus"),
    ("email_invalid", "numeric", "bogus"),
    ("email_test_domain", "numeric", "bogus"),
    ("email_placeholder_mailbox", "numeric", "bogus"),
    ("phone_missing", "numeric", "bogus"),
    ("phone_invalid", "numeric", "bogus"),
    ("title_placeholder", "numeric", "bogus"),
    ("bogus_signal_count", "numeric", "bogus"),
)


@dataclass(frozen=True)
class Categories:
    """The fixed category list of every categorical feature, so all chunks and all runs share one encoding."""

    levels: dict[str, tuple[str, ...]]

    @classmethod
    def from_tables(cls, tables: Mapping[str, pd.DataFrame], params: FeaturesParams) -> Categories:
        """Vocabulary-based levels, plus the ICP's industries and the campaign ids present in the CRM."""
        industries = tuple(dict.fromkeys((*vocab.INDUSTRIES, *params.icp.industries, OTHER)))
        campaign_ids = tuple(str(c) for c in sorted(tables["campaigns"]["campaign_id"].astype("int64").tolist()))
        return cls(
            levels={
                "industry": industries,
                "region": vocab.REGIONS,
                "country": (*sorted(vocab.COUNTRY_REGION), OTHER),
                "lead_source": vocab.LEAD_SOURCES,
                "campaign_id": campaign_ids,
                "campaign_channel": vocab.CAMPAIGN_CHANNELS,
                "campaign_region": (*vocab.REGIONS, "Global"),
                "budget_range": vocab.BUDGET_RANGES,
                "purchase_timeframe": vocab.PURCHASE_TIMEFRAMES,
                "seniority": SENIORITIES,
                "department": DEPARTMENTS,
                "stage_at_t": ("none", *vocab.STAGES),
            }
        )

    def encode(self, name: str, values: pd.Series | np.ndarray | pa.Array) -> pd.Categorical:
        """Values as a categorical with this feature's fixed levels; unknown values become NaN (or Other)."""
        levels = self.levels[name]
        array = values if isinstance(values, pa.Array) else _arrow(values)
        codes = pc.index_in(array, value_set=pa.array(levels, type=pa.large_string()))
        if OTHER in levels:
            codes = pc.if_else(pc.and_(pc.is_null(codes), pc.is_valid(array)), levels.index(OTHER), codes)
        coded: np.ndarray = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int16)
        # the stubs type a str-category Categorical apart from the declared Categorical[object]
        return pd.Categorical.from_codes(coded, categories=pd.Index(list(levels)))  # type: ignore[return-value]


def _arrow(values: pd.Series | np.ndarray) -> pa.Array:
    """A text column as one Arrow large_string array (None/NaN become null)."""
    if isinstance(values, pd.Series) and values.dtype == object:
        values = values.to_numpy()
    array = pa.array(values, type=pa.large_string(), from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _text(values: pd.Series) -> pa.Array:
    """A text column trimmed and lower-cased, vectorised in C++."""
    return pc.utf8_lower(pc.utf8_trim_whitespace(_arrow(values)))


def _flag(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as int8 0/1, null counting as 0."""
    flags: np.ndarray = pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(np.int8)
    return flags


def _in(values: pa.Array, words: frozenset[str] | set[str]) -> pa.Array:
    return pc.is_in(values, value_set=pa.array(sorted(words), type=pa.large_string()))


def _split_email(emails: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(mailbox, text after the last "@") of each address; the suffix is null when there is no "@"."""
    has_at = pc.match_substring(emails, "@")
    empty, at = pa.scalar("", pa.large_string()), pa.scalar("@", pa.large_string())
    padded = pc.if_else(has_at, emails, pc.binary_join_element_wise(emails, empty, at))
    parts = pc.split_pattern(padded, "@", max_splits=1, reverse=True)
    return pc.list_element(parts, 0), pc.if_else(has_at, pc.list_element(parts, 1), None)


@lru_cache(maxsize=1 << 20)
def _domain_of_suffix(suffix: str) -> str | None:
    """`vocab.email_domain` of an address ending in "@" + suffix (memoised: company domains repeat a lot)."""
    return vocab.email_domain("@" + suffix)


def email_domain_array(emails: pd.Series) -> pa.Array:
    """`vocab.email_domain` of each address as an Arrow array, vectorised.

    The address is split at its last "@" in C++. A distinct suffix made only of lower-case ASCII letters, digits,
    dots, hyphens and underscores is its own domain (strip and lower are no-ops on it); the shared helper decides
    every other distinct suffix, once each.
    """
    _, suffix = _split_email(_arrow(emails))
    encoded = pc.dictionary_encode(suffix)
    distinct = encoded.dictionary
    plain = pc.match_substring_regex(distinct, r"^[a-z0-9._-]+$").to_numpy(zero_copy_only=False)
    domains = np.asarray(distinct.to_numpy(zero_copy_only=False), dtype=object)
    for i in np.flatnonzero(~plain):
        domains[i] = _domain_of_suffix(domains[i])
    return pa.array(domains, type=pa.large_string()).take(encoded.indices)


def email_domains(emails: pd.Series) -> pd.Series:
    """`vocab.email_domain` of each address (None where there is none), index preserved."""
    return pd.Series(email_domain_array(emails).to_pylist(), index=emails.index, dtype=object)


def _digits(phones: pd.Series) -> pa.Array:
    """The digits of each phone number (separators dropped by fast literal replaces, the rest by a regex)."""
    digits = _arrow(phones)
    for separator in (" ", "-", "+", "(", ")", ".", "/"):
        digits = pc.replace_substring(digits, separator, "")
    clean = pc.fill_null(pc.utf8_is_decimal(digits), True)
    if not pc.all(clean).as_py():
        digits = pc.if_else(clean, digits, pc.replace_substring_regex(digits, r"\D", ""))
    return digits


def bogus_signals(leads: pd.DataFrame, domains: pa.Array | None = None) -> dict[str, np.ndarray]:
    """Signals that a lead is junk, derived from name, e-mail, phone and title (which are never features)."""
    first, last = _text(leads["first_name"]), _text(leads["last_name"])
    email, title = _text(leads["email"]), _text(leads["job_title"])
    domain = email_domain_array(leads["email"]) if domains is None else domains
    mailbox, _ = _split_email(email)
    domain_label = pc.list_element(pc.split_pattern(domain, ".", max_splits=1), 0)
    digits = _digits(leads["phone"])
    n_digits = pc.fill_null(pc.utf8_length(digits), 0)
    first_len, last_len = pc.fill_null(pc.utf8_length(first), 0), pc.fill_null(pc.utf8_length(last), 0)
    pair = pc.binary_join_element_wise(first, last, pa.scalar("|", type=pa.large_string()))
    people = {f"{a}|{b}" for a, b in PLACEHOLDER_PEOPLE}
    out: dict[str, np.ndarray] = {}
    out["name_missing"] = _flag(pc.or_(pc.equal(first_len, 0), pc.equal(last_len, 0)))
    out["name_placeholder"] = _flag(
        pc.or_(pc.or_(_in(first, PLACEHOLDER_WORDS), _in(last, PLACEHOLDER_WORDS)), _in(pair, people))
    )
    out["name_repeated"] = _flag(pc.and_(pc.equal(first, last), pc.greater(first_len, 0)))
    out["name_too_short"] = _flag(pc.or_(pc.less(first_len, 2), pc.less(last_len, 2)))
    out["name_has_digit"] = _flag(pc.or_(pc.match_substring_regex(first, r"\d"), pc.match_substring_regex(last, r"\d")))
    out["email_missing"] = _flag(pc.equal(pc.fill_null(pc.utf8_length(email), 0), 0))
    out["email_invalid"] = _flag(pc.and_(pc.is_valid(email), pc.invert(pc.match_substring_regex(email, _VALID_EMAIL))))
    out["email_test_domain"] = _flag(pc.or_(_in(domain, TEST_MAIL_DOMAINS), _in(domain_label, PLACEHOLDER_WORDS)))
    out["email_placeholder_mailbox"] = _flag(_in(mailbox, PLACEHOLDER_MAILBOXES))
    out["phone_missing"] = _flag(pc.equal(n_digits, 0))
    repeated = pc.match_substring_regex(digits, "^(?:" + "|".join(f"{d}+" for d in range(10)) + ")$")
    sequence = _in(digits, {"1234567", "12345678", "123456789", "1234567890", "0123456789"})
    odd_length = pc.or_(pc.less(n_digits, 7), pc.greater(n_digits, 15))
    out["phone_invalid"] = _flag(pc.and_(pc.greater(n_digits, 0), pc.or_(pc.or_(odd_length, repeated), sequence)))
    out["title_placeholder"] = _flag(_in(title, PLACEHOLDER_WORDS))
    signals = [
        "name_placeholder",
        "name_repeated",
        "name_has_digit",
        "email_invalid",
        "email_test_domain",
        "email_placeholder_mailbox",
        "phone_invalid",
        "title_placeholder",
    ]
    out["bogus_signal_count"] = np.asarray(np.sum([out[c] for c in signals], axis=0, dtype=np.int8))
    return out


def _rows_of(ids: pd.Series, keys: np.ndarray) -> np.ndarray:
    """Position of each id within `keys`, -1 for a missing id or one not found."""
    values = ids.astype("Int64").fillna(-1).to_numpy(dtype=np.int64)
    return np.where(values >= 0, tl.index_of(keys, values), -1)


def _at(array: pa.Array, rows: np.ndarray) -> pa.Array:
    """`array` at `rows`, null where the row is -1."""
    return array.take(pa.array(rows, mask=rows < 0))


def _numbers_at(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`values` at `rows` as float64, NaN where the row is -1."""
    if len(values) == 0:
        return np.full(len(rows), np.nan)
    return np.where(rows >= 0, values[np.maximum(rows, 0)], np.nan)


@dataclass(frozen=True)
class Reference:
    """Account and campaign attributes as arrays, converted once and looked up by row in every chunk."""

    account_ids: np.ndarray
    campaign_ids: np.ndarray
    text: dict[str, pa.Array]
    numbers: dict[str, np.ndarray]

    @classmethod
    def from_tables(cls, tables: Mapping[str, pd.DataFrame]) -> Reference:
        """The lookups the static features need from the accounts and campaigns tables."""
        accounts, campaigns = tables["accounts"], tables["campaigns"]
        return cls(
            account_ids=accounts["account_id"].to_numpy(dtype=np.int64),
            campaign_ids=campaigns["campaign_id"].to_numpy(dtype=np.int64),
            text={
                "industry": _arrow(accounts["industry"]),
                "account_region": _arrow(accounts["region"]),
                "account_country": _arrow(accounts["country"]),
                "account_domain": _text(accounts["domain"]),
                "campaign_channel": _arrow(campaigns["channel"]),
                "campaign_region": _arrow(campaigns["region"]),
            },
            numbers={
                column: accounts[column].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
                for column in ("employee_count", "annual_revenue")
            },
        )


def static_features(
    leads: pd.DataFrame, reference: Reference, params: FeaturesParams, categories: Categories
) -> dict[str, Column]:
    """Creation-time feature columns of each lead (aligned with `leads` rows), in `STATIC_SPECS` order."""
    icp = params.icp
    account = _rows_of(leads["account_id"], reference.account_ids)
    campaign = _rows_of(leads["campaign_id"], reference.campaign_ids)
    text = reference.text
    domain_array = email_domain_array(leads["email"])
    country = _arrow(leads["country"])
    # vocab.lead_region's rule (own country's region, else the account's), in Arrow for this hot path.
    country_row = pc.index_in(country, value_set=pa.array(list(vocab.COUNTRY_REGION), type=pa.large_string()))
    region_of_country = pa.array(list(vocab.COUNTRY_REGION.values()), type=pa.large_string())
    region = pc.coalesce(region_of_country.take(country_row), _at(text["account_region"], account))
    country = pc.coalesce(country, _at(text["account_country"], account))
    industry = _at(text["industry"], account)
    employees = _numbers_at(reference.numbers["employee_count"], account)
    titles = parse_titles(leads["job_title"])

    out: dict[str, Column] = {}
    # fit
    out["industry"] = categories.encode("industry", industry)
    out["employee_count"] = employees.astype(np.float32)
    out["annual_revenue"] = _numbers_at(reference.numbers["annual_revenue"], account).astype(np.float32)
    out["region"] = categories.encode("region", region)
    out["country"] = categories.encode("country", country)
    out["has_account"] = (account >= 0).astype(np.int8)
    out["free_mail"] = _flag(_in(domain_array, vocab.FREE_MAIL_DOMAINS))
    out["email_matches_account"] = _flag(pc.equal(domain_array, _at(text["account_domain"], account)))
    out["icp_industry"] = _flag(_in(industry, set(icp.industries)))
    out["icp_size"] = ((employees >= icp.employees_min) & (employees <= icp.employees_max)).astype(np.int8)
    out["icp_region"] = _flag(_in(region, set(icp.regions)))
    fits = [np.asarray(out[c]) for c in ("icp_industry", "icp_size", "icp_region")]  # int8 0/1 arrays
    out["icp_fit_count"] = (fits[0] + fits[1] + fits[2]).astype(np.int8)
    out["icp_match"] = (out["icp_fit_count"] == 3).astype(np.int8)
    # title
    out["seniority"] = pd.Categorical(titles["seniority"], categories=categories.levels["seniority"])
    out["department"] = pd.Categorical(titles["department"], categories=categories.levels["department"])
    out["title_missing"] = _flag(pc.equal(pc.fill_null(pc.utf8_length(_text(leads["job_title"])), 0), 0))
    # source and campaign
    out["lead_source"] = categories.encode("lead_source", leads["lead_source"])
    campaign_key = pc.cast(
        pa.array(leads["campaign_id"].astype("Int64"), type=pa.int64(), from_pandas=True), pa.large_string()
    )
    out["campaign_id"] = categories.encode("campaign_id", campaign_key)
    out["campaign_channel"] = categories.encode("campaign_channel", _at(text["campaign_channel"], campaign))
    out["campaign_region"] = categories.encode("campaign_region", _at(text["campaign_region"], campaign))
    # self-reported on the creation form
    out["budget_range"] = categories.encode("budget_range", leads["budget_range"])
    out["purchase_timeframe"] = categories.encode("purchase_timeframe", leads["purchase_timeframe"])
    # bogus-lead signals
    out.update(bogus_signals(leads, domain_array))
    return out
