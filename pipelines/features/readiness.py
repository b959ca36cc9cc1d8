"""Account readiness: how much of the whole buying group (the account's leads, this one included) is engaging now.

A buying decision belongs to the account, not to one contact: when the company is in market, several of its people
visit the pricing page, read, ask for a demo, and colleagues reach sales. The per-lead windows and the colleagues'
counts in `pipelines.features.build` see that only in fixed windows; these features track it the way a practitioner
would watch an account:

- decay: the account's intent (pricing visits, demo requests) and active engagement as exponentially decayed counts
  (recent events count fully, old ones fade without a window edge), their change (the last `velocity_days`
  against the `velocity_days` before) and the days since the account's latest one (a quiet account cools down);
- breadth: how many of the account's contacts engaged within each window (the buying committee), its change, and how
  many contacts are open at all (the exposure against which a quiet account is evidence);
- funnel: colleagues who reached SQL within each window, and days since the latest one (a market phase is weeks to
  months long, so a recent colleague conversion says the account is buying now).

Everything is computed as of t from events stamped at or before t (the leakage property test covers these through
`build_features`). A lead without an account is its own group; its colleague counts are 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from pipelines.config import FeaturesParams
from pipelines.crm import vocab
from pipelines.features import timeline as tl
from pipelines.features.spec import FeatureSpec

#: Activity types that take intent: clicks, visits, downloads, forms, webinars attended, demo requests. Opens,
#: registrations, badge scans and follows cost nothing and mostly measure appetite for content.
ACTIVE_SIGNALS: Final[tuple[str, ...]] = (
    "email_click",
    "web_visit",
    "pricing_page_visit",
    "content_download",
    "webinar_attend",
    "form_submit",
    "demo_request",
)
#: Buying signals (the same as the colleagues' high-intent counts of `pipelines.features.build`).
INTENT_SIGNALS: Final[tuple[str, ...]] = ("pricing_page_visit", "demo_request")
FAMILY: Final = "account"
_NEVER: Final = np.iinfo(np.int64).max
_CODES: Final[dict[str, int]] = {name: code for code, name in enumerate(vocab.ACTIVITY_TYPES)}


def _windows(params: FeaturesParams) -> tuple[int, ...]:
    return tuple(params.windows_days)


def readiness_specs(params: FeaturesParams) -> list[FeatureSpec]:
    """The readiness feature columns, in output order."""
    v = params.velocity_days
    names = [f"account_{what}_decay_{h:g}d" for what in ("intent", "engagement") for h in params.decay_half_life_days]
    names += [f"account_{what}_change_{v}d" for what in ("intent", "engagement")]
    names += [f"days_since_account_{what}" for what in ("intent", "engagement")]
    names += [f"account_{what}_contacts_{w}d" for what in ("engaged", "intent") for w in _windows(params)]
    names += [f"account_engaged_contacts_change_{v}d", "account_open_contacts"]
    names += [f"account_other_sql_{w}d" for w in _windows(params)] + ["days_since_account_other_sql"]
    return [FeatureSpec(name, "numeric", FAMILY) for name in names]


@dataclass(frozen=True)
class ChunkEvents:
    """One chunk's activities and funnel milestones in chunk-local terms (lead positions 0..n_leads-1)."""

    group: np.ndarray  # lead -> group (account; a lead without one is its own group), 0..n_groups-1
    has_account: np.ndarray  # lead -> bool
    lead: np.ndarray  # per activity: lead
    seconds: np.ndarray  # per activity: first whole second it is known
    kind: np.ndarray  # per activity: code into vocab.ACTIVITY_TYPES
    created: np.ndarray  # lead -> first second it is known
    converted: np.ndarray  # lead -> first second of an SQL-or-later entry (int64 max: never)
    closed: np.ndarray  # lead -> first second of a conversion or disqualification (int64 max: never)


def _sorted_keys(owner: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (owner, second) keys and the order that sorts them."""
    keys = tl.make_keys(owner, seconds)
    order = np.argsort(keys, kind="stable")
    return keys[order], order


def _count(keys: np.ndarray, owner: np.ndarray, since: np.ndarray | None, until: np.ndarray) -> np.ndarray:
    """Events of the owner with since < second <= until (since None: from the start)."""
    lower = tl.owner_start(keys, owner) if since is None else tl.count_upto(keys, owner, since)
    counts: np.ndarray = (tl.count_upto(keys, owner, until) - lower).astype(np.int32)
    return counts


def _days_since_last(keys: np.ndarray, owner: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Days since the owner's latest event known at `seconds` (NaN: none yet). A quiet account is evidence too."""
    now = tl.count_upto(keys, owner, seconds)
    has = now > tl.owner_start(keys, owner)
    days = np.full(len(owner), np.nan, dtype=np.float32)
    days[has] = (seconds[has] - tl.key_seconds(keys[now[has] - 1])) / tl.DAY
    return days


@dataclass(frozen=True)
class _Runs:
    """One kind of event per lead in (lead, time) order, with the time of the lead's next one (`_NEVER`: none)."""

    group: np.ndarray  # the lead's group, per event
    seconds: np.ndarray
    following: np.ndarray

    @classmethod
    def of(cls, ev: ChunkEvents, mask: np.ndarray) -> _Runs:
        lead, sec = ev.lead[mask], ev.seconds[mask]
        later = (lead[1:] > lead[:-1]) | ((lead[1:] == lead[:-1]) & (sec[1:] >= sec[:-1]))
        if not later.all():  # the chunk's events come sorted by (lead, time); sort only when they do not
            order = np.lexsort((sec, lead))
            lead, sec = lead[order], sec[order]
        nxt = np.r_[sec[1:], _NEVER] if len(sec) else sec
        last_of_lead = np.r_[lead[1:] != lead[:-1], True] if len(sec) else np.zeros(0, dtype=bool)
        return cls(ev.group[lead], sec, np.where(last_of_lead, _NEVER, nxt))


def _active_contacts(runs: _Runs, window_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Interval keys (start, end; each sorted by group) during which a lead counts as active in its group: from each
    of its events to the next one or the window's end, whichever is first."""
    end = np.minimum(runs.following, runs.seconds + window_days * tl.DAY)
    keep = end > runs.seconds  # a same-second repeat adds nothing
    g = runs.group[keep]
    return np.sort(tl.make_keys(g, runs.seconds[keep])), np.sort(tl.make_keys(g, end[keep]))


def readiness_features(
    ev: ChunkEvents, q_pos: np.ndarray, q_sec: np.ndarray, params: FeaturesParams
) -> dict[str, np.ndarray]:
    """The `readiness_specs` columns of queries (chunk-local lead position, second)."""
    cols: dict[str, np.ndarray] = {}
    q_group = ev.group[q_pos]
    v = params.velocity_days
    keys, order = _sorted_keys(ev.group[ev.lead], ev.seconds)
    masks = {  # per activity, in the chunk's order
        "intent": np.isin(ev.kind, [_CODES[a] for a in INTENT_SIGNALS]),
        "engagement": np.isin(ev.kind, [_CODES[a] for a in ACTIVE_SIGNALS]),
    }
    for what, mask in masks.items():
        for h in params.decay_half_life_days:
            decayed = tl.decayed_sums(keys, mask[order], q_group, q_sec, h)
            cols[f"account_{what}_decay_{h:g}d"] = decayed.astype(np.float32)
    for what, mask in masks.items():
        sub = keys[mask[order]]
        recent = _count(sub, q_group, q_sec - v * tl.DAY, q_sec)
        prior = _count(sub, q_group, q_sec - 2 * v * tl.DAY, q_sec - v * tl.DAY)
        cols[f"account_{what}_change_{v}d"] = recent - prior
        cols[f"days_since_account_{what}"] = _days_since_last(sub, q_group, q_sec)
    runs = {what: _Runs.of(ev, masks[kind]) for what, kind in (("engaged", "engagement"), ("intent", "intent"))}
    for what, of_kind in runs.items():
        for w in _windows(params):
            starts, ends = _active_contacts(of_kind, w)
            cols[f"account_{what}_contacts_{w}d"] = tl.covering_counts(starts, ends, q_group, q_sec)
    starts, ends = _active_contacts(runs["engaged"], v)
    now = tl.covering_counts(starts, ends, q_group, q_sec)
    cols[f"account_engaged_contacts_change_{v}d"] = now - tl.covering_counts(starts, ends, q_group, q_sec - v * tl.DAY)
    opened = ev.closed > ev.created
    starts = np.sort(tl.make_keys(ev.group[opened], ev.created[opened]))
    ends = np.sort(tl.make_keys(ev.group[opened], np.minimum(ev.closed[opened], tl.SECOND_MASK)))
    cols["account_open_contacts"] = tl.covering_counts(starts, ends, q_group, q_sec)
    _colleague_conversions(ev, q_pos, q_sec, params, cols)
    return cols


def _colleague_conversions(
    ev: ChunkEvents, q_pos: np.ndarray, q_sec: np.ndarray, params: FeaturesParams, cols: dict[str, np.ndarray]
) -> None:
    """Colleagues' first SQL-or-later entries within each window, and days since the latest one (NaN: none yet)."""
    converts = np.flatnonzero((ev.converted < _NEVER) & ev.has_account)
    keys, order = _sorted_keys(ev.group[converts], ev.converted[converts])
    who = converts[order]
    q_group = ev.group[q_pos]
    own_at = ev.converted[q_pos]
    for w in _windows(params):
        since = q_sec - w * tl.DAY
        own = ((own_at > since) & (own_at <= q_sec)).astype(np.int32)
        cols[f"account_other_sql_{w}d"] = _count(keys, q_group, since, q_sec) - own
    start = tl.owner_start(keys, q_group)
    now = tl.count_upto(keys, q_group, q_sec)
    latest = now - 1
    skip = (latest >= start) & (who[np.maximum(latest, 0)] == q_pos) if len(keys) else np.zeros(len(q_pos), bool)
    latest = np.where(skip, latest - 1, latest)  # a lead converts once: its own entry is skipped at most once
    has = latest >= start
    days = np.full(len(q_pos), np.nan, dtype=np.float32)
    days[has] = (q_sec[has] - tl.key_seconds(keys[latest[has]])) / tl.DAY
    cols["days_since_account_other_sql"] = days
