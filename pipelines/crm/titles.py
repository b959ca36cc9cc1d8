"""Seniority and department from messy free-text job titles ("VP Mktg", "Marketing intern", "cto", typos).

Titles are typed by people into web forms, so the parser normalises case and punctuation, expands common
abbreviations, repairs small typos against a keyword vocabulary, and then matches keywords in priority order.
It works on the distinct titles of a column and maps the answers back, so a million leads cost only as much as
their few thousand distinct titles.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from typing import Final

import pandas as pd

SENIORITIES: Final[tuple[str, ...]] = (
    "c_level",
    "vp",
    "director",
    "manager",
    "individual",
    "intern_student",
    "unknown",
)
DEPARTMENTS: Final[tuple[str, ...]] = (
    "marketing",
    "sales",
    "it",
    "engineering",
    "finance",
    "operations",
    "hr",
    "executive",
    "other",
    "unknown",
)

# Multi-word phrases are rewritten to single tokens before matching.
_PHRASES: Final[tuple[tuple[str, str], ...]] = (
    (r"\bvice[\s-]*president\b", "vp"),
    (r"\bv\s*p\b", "vp"),
    (r"\bco[\s-]*founder\b", "founder"),
    (r"\bchief executive( officer)?\b", "ceo"),
    (r"\bchief technology( officer)?\b", "cto"),
    (r"\bchief technical( officer)?\b", "cto"),
    (r"\bchief financial( officer)?\b", "cfo"),
    (r"\bchief marketing( officer)?\b", "cmo"),
    (r"\bchief information security( officer)?\b", "ciso"),
    (r"\bchief information( officer)?\b", "cio"),
    (r"\bchief operating( officer)?\b", "coo"),
    (r"\bchief revenue( officer)?\b", "cro"),
    (r"\bhead of\b", "head"),
    (r"\bhuman resources\b", "hr"),
    (r"\binformation technology\b", "it"),
    (r"\bbusiness development\b", "bizdev"),
    (r"\baccount executive\b", "ae"),
    (r"\bdemand gen(eration)?\b", "demandgen"),
    (r"\bmanaging director\b", "md"),
    (r"\bgeneral manager\b", "gm"),
    (r"\bsupply chain\b", "supplychain"),
)

_ABBREVIATIONS: Final[dict[str, str]] = {
    "mktg": "marketing",
    "mkt": "marketing",
    "mkting": "marketing",
    "mgr": "manager",
    "mngr": "manager",
    "dir": "director",
    "sr": "senior",
    "jr": "junior",
    "svp": "vp",
    "evp": "vp",
    "avp": "vp",
    "eng": "engineering",
    "engr": "engineer",
    "ops": "operations",
    "fin": "finance",
    "acct": "accounting",
    "dev": "developer",
    "sdr": "bdr",
    "admin": "administrator",
    "exec": "executive",
    "tech": "technology",
}

_SENIORITY_KEYWORDS: Final[tuple[tuple[str, frozenset[str]], ...]] = (
    ("intern_student", frozenset({"intern", "internship", "student", "trainee", "apprentice"})),
    (
        "c_level",
        frozenset(
            {"ceo", "cto", "cfo", "cmo", "cio", "coo", "cro", "ciso", "chief", "founder", "owner", "president", "md"}
        ),
    ),
    ("vp", frozenset({"vp"})),
    ("director", frozenset({"director", "head", "gm"})),
    ("manager", frozenset({"manager", "lead", "supervisor"})),
    (
        "individual",
        frozenset(
            {
                "specialist",
                "analyst",
                "engineer",
                "developer",
                "coordinator",
                "associate",
                "representative",
                "rep",
                "consultant",
                "assistant",
                "administrator",
                "ae",
                "bdr",
                "accountant",
                "recruiter",
                "designer",
                "writer",
                "architect",
                "scientist",
                "officer",
                "strategist",
                "generalist",
                "executive",
                "staff",
                "member",
            }
        ),
    ),
)

_DEPARTMENT_KEYWORDS: Final[tuple[tuple[str, frozenset[str]], ...]] = (
    (
        "marketing",
        frozenset(
            {
                "marketing",
                "cmo",
                "demandgen",
                "growth",
                "brand",
                "content",
                "digital",
                "campaign",
                "campaigns",
                "seo",
                "communications",
                "marcom",
                "social",
            }
        ),
    ),
    ("sales", frozenset({"sales", "cro", "bizdev", "ae", "bdr", "revenue", "account", "accounts"})),
    ("it", frozenset({"it", "cio", "ciso", "infrastructure", "systems", "security", "network", "helpdesk"})),
    ("finance", frozenset({"finance", "cfo", "accounting", "accountant", "controller", "treasury", "financial"})),
    ("hr", frozenset({"hr", "people", "talent", "recruiting", "recruiter", "payroll"})),
    (
        "engineering",
        frozenset(
            {
                "engineering",
                "engineer",
                "developer",
                "software",
                "cto",
                "technology",
                "data",
                "devops",
                "architect",
                "scientist",
                "product",
            }
        ),
    ),
    ("operations", frozenset({"operations", "coo", "supplychain", "logistics", "procurement", "facilities"})),
    ("executive", frozenset({"ceo", "founder", "owner", "president", "md", "gm", "executive", "chief"})),
)

_VOCABULARY: Final[tuple[str, ...]] = tuple(
    sorted(
        {w for _, words in _SENIORITY_KEYWORDS for w in words}
        | {w for _, words in _DEPARTMENT_KEYWORDS for w in words}
        | set(_ABBREVIATIONS.values())
    )
)
_SPLIT = re.compile(r"[^a-z0-9&]+")
#: Real words within typo distance of a keyword of another meaning ("Internal Audit" is no intern).
_NOT_TYPOS: Final[frozenset[str]] = frozenset(
    {"internal", "trainer", "trainers", "general", "producer", "production", "control"}
)


def _normalise(title: str) -> list[str]:
    """Lower-case tokens with phrases joined, abbreviations expanded and small typos repaired."""
    text = title.lower().replace(".", " ").replace("'", "")
    text = re.sub(r"\s+", " ", text)
    for pattern, replacement in _PHRASES:
        text = re.sub(pattern, replacement, text)
    tokens = []
    for raw in _SPLIT.split(text):
        if not raw:
            continue
        token = _ABBREVIATIONS.get(raw, raw)
        if len(token) >= 5 and token not in _VOCABULARY and token not in _NOT_TYPOS:
            close = difflib.get_close_matches(token, _VOCABULARY, n=1, cutoff=0.8)
            if close:
                token = close[0]
        tokens.append(token)
    return tokens


@lru_cache(maxsize=65536)
def parse_title(title: str | None) -> tuple[str, str]:
    """(seniority, department) of one title; ("unknown", "unknown") when the title is empty."""
    if title is None or not isinstance(title, str) or not title.strip():
        return "unknown", "unknown"
    tokens = set(_normalise(title))
    seniority = next((level for level, words in _SENIORITY_KEYWORDS if tokens & words), "individual")
    department = next((dept for dept, words in _DEPARTMENT_KEYWORDS if tokens & words), "other")
    return seniority, department


def parse_titles(titles: pd.Series) -> pd.DataFrame:
    """Seniority and department for a column of titles, index preserved; parses each distinct title once."""
    codes, uniques = pd.factorize(titles, use_na_sentinel=True)
    parsed = [parse_title(t) for t in uniques]
    sen_lookup = pd.array([p[0] for p in parsed] + ["unknown"], dtype="string")
    dep_lookup = pd.array([p[1] for p in parsed] + ["unknown"], dtype="string")
    idx = codes.copy()
    idx[idx < 0] = len(parsed)
    return pd.DataFrame(
        {
            "seniority": pd.Categorical(sen_lookup[idx], categories=SENIORITIES),
            "department": pd.Categorical(dep_lookup[idx], categories=DEPARTMENTS),
        },
        index=titles.index,
    )
