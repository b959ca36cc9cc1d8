"""Point-in-time arithmetic shared by labels and features: whole-second clocks and (owner, time) event keys.

Every question the features stage asks has the form "how many of this owner's events happened at or before t?".
Packing owner and time into one sorted int64 key turns all of them into `np.searchsorted` calls, with no loop per
lead. Convention: an event stamped `ts` is known at `t` when `ts <= t`. Events are rounded *up* to the next whole
second and query times *down*, so the rounding can only hide an event for under a second, never reveal one early.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from pipelines.crm.schema import UTC_NS

#: Low bits of a key hold seconds since 1970 (good until the year 2514); high bits hold the owner's position.
SECOND_BITS: Final = 34
SECOND_MASK: Final = (1 << SECOND_BITS) - 1
DAY: Final = 86_400
_NS: Final = 1_000_000_000
#: The weekly snapshot grid is anchored on a Monday, so a 7-day cadence always lands on Mondays.
GRID_ANCHOR: Final = pd.Timestamp("1970-01-05", tz="UTC")


def nanoseconds(values: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC timestamps as int64 nanoseconds since 1970; NaT becomes the int64 minimum."""
    index = pd.DatetimeIndex(values)
    if index.tz is None:
        index = index.tz_localize("UTC")
    return index.as_unit("ns").asi8


def known_seconds(values: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Event times as whole seconds, rounded up: the first whole second at which the event is known."""
    ns = nanoseconds(values)
    return -(-ns // _NS)


def query_seconds(values: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Snapshot times as whole seconds, rounded down (a query never sees an event from later in its second)."""
    return nanoseconds(values) // _NS


def from_seconds(seconds: np.ndarray) -> pd.DatetimeIndex:
    """Whole seconds since 1970 back to tz-aware UTC timestamps (ns)."""
    ns = np.asarray(seconds, dtype=np.int64) * _NS
    return pd.DatetimeIndex(pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC").astype(UTC_NS))


def index_of(ids: np.ndarray | pd.Series, lookup: np.ndarray | pd.Series) -> np.ndarray:
    """Position of each id within `ids` (which must be unique), -1 when absent; a flat table when ids are dense."""
    ids = np.asarray(ids, dtype=np.int64)
    lookup = np.asarray(lookup, dtype=np.int64)
    if len(ids) and ids.min() >= 0 and ids.max() < 4 * len(ids) + 1024:
        table = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
        table[ids] = np.arange(len(ids), dtype=np.int64)
        inside = (lookup >= 0) & (lookup < len(table))
        out = np.full(len(lookup), -1, dtype=np.int64)
        out[inside] = table[lookup[inside]]
        return out
    positions: np.ndarray = pd.Index(ids).get_indexer(lookup).astype(np.int64)
    return positions


def make_keys(owner: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """One sortable int64 per (owner position, second); seconds are clipped into the key's range."""
    keys: np.ndarray = (np.asarray(owner, dtype=np.int64) << SECOND_BITS) | np.clip(seconds, 0, SECOND_MASK).astype(
        np.int64
    )
    return keys


def key_owner(keys: np.ndarray) -> np.ndarray:
    """The owner position packed in each key."""
    return np.asarray(keys) >> SECOND_BITS


def key_seconds(keys: np.ndarray) -> np.ndarray:
    """The seconds packed in each key."""
    return np.asarray(keys) & SECOND_MASK


def count_upto(sorted_keys: np.ndarray, owner: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """For each query, the index just past the last event with key <= (owner, seconds): prefix lengths."""
    return np.searchsorted(sorted_keys, make_keys(owner, seconds), side="right")


def owner_start(sorted_keys: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """For each owner, the index of its first event (where it would start when it has none)."""
    return np.searchsorted(sorted_keys, np.asarray(owner, dtype=np.int64) << SECOND_BITS, side="left")


def owner_starts(sorted_keys: np.ndarray, first_owner: int, n_owners: int) -> np.ndarray:
    """Index of the first event of each owner first_owner .. first_owner + n_owners - 1 (one search per owner).

    Gather with `starts[owner - first_owner]`: far cheaper than one search per query when owners have many
    queries each.
    """
    owners = np.arange(first_owner, first_owner + n_owners, dtype=np.int64)
    return np.searchsorted(sorted_keys, owners << SECOND_BITS, side="left")


def prefix_sums(values: np.ndarray) -> np.ndarray:
    """Cumulative sums with a leading zero row, so `out[j] - out[i]` sums rows i..j-1 (int32 columns)."""
    values = np.asarray(values)
    shape = (values.shape[0] + 1, *values.shape[1:])
    out = np.zeros(shape, dtype=np.int32)
    np.cumsum(values, axis=0, out=out[1:])
    return out


def last_key_upto(sorted_keys: np.ndarray, mask: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """For prefix lengths `prefix`, the key of the last event among the first `prefix` with `mask` set, else -1.

    The caller checks `key_owner(result) == owner`: a key from an earlier owner means "none yet".
    """
    running = np.maximum.accumulate(np.where(mask, sorted_keys, -1)) if len(sorted_keys) else sorted_keys
    out = np.full(len(prefix), -1, dtype=np.int64)
    has = prefix > 0
    out[has] = running[prefix[has] - 1]
    return out


#: Decayed sums restart their exponent every this many e-folding times, so exp() stays finite on any history.
_ERA_TAUS: Final = 256


def decayed_sums(
    sorted_keys: np.ndarray, weights: np.ndarray, owner: np.ndarray, seconds: np.ndarray, half_life_days: float
) -> np.ndarray:
    """For each query, sum of `weights` of the owner's events known at `seconds`, each times 0.5 ** (age / half-life).

    An exponentially decayed count: recent events count fully, older ones fade, with no window edge. Exact and
    vectorised: the events' weights times exp(time / tau) are summed per (owner, era) with a segmented cumulative
    sum (so no owner's sum cancels against another's), and an era's total is carried into the next one; eras are
    `_ERA_TAUS` e-folding times long, so the exponents stay bounded (< e^256) on histories of any length, and
    events two eras back weigh under e^-256 and are dropped.
    """
    tau = half_life_days * DAY / np.log(2.0)
    era_len = int(_ERA_TAUS * tau)
    times = key_seconds(sorted_keys)
    owners = key_owner(sorted_keys)
    era = times // era_len
    values = np.asarray(weights, dtype=np.float64) * np.exp((times - era * era_len) / tau)
    segment = np.r_[True, (owners[1:] != owners[:-1]) | (era[1:] != era[:-1])] if len(times) else np.zeros(0, bool)
    within = pd.Series(values).groupby(np.cumsum(segment)).cumsum().to_numpy()  # per segment: no cancellation
    q_era = np.asarray(seconds, dtype=np.int64) // era_len
    now = count_upto(sorted_keys, owner, seconds)
    last = np.maximum(now - 1, 0)
    out = np.zeros(len(now), dtype=np.float64)
    if not len(times):
        return out
    same_owner = (now > 0) & (owners[last] == owner)
    current = same_owner & (era[last] == q_era)
    out[current] = within[last[current]] * np.exp((q_era[current] * era_len - seconds[current]) / tau)
    # the previous era's total, carried over: its last event, when it is this owner's and one era back
    era_start = np.searchsorted(sorted_keys, make_keys(owner, q_era * era_len), side="left")
    prev = np.maximum(era_start - 1, 0)
    carried = (era_start > 0) & (owners[prev] == owner) & (era[prev] == q_era - 1) & (era_start <= now)
    out[carried] += within[prev[carried]] * np.exp(((q_era[carried] - 1) * era_len - seconds[carried]) / tau)
    return out


def covering_counts(start_keys: np.ndarray, end_keys: np.ndarray, owner: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """For each query, how many of the owner's intervals [start, end) contain `seconds` (both key arrays sorted).

    Distinct counts over time reduce to this: an interval per item from the moment it counts to the moment it
    stops, so "how many contacts were active in the last 30 days at t" is two searches, not a loop per query.
    """
    begun = count_upto(start_keys, owner, seconds) - np.searchsorted(start_keys, np.asarray(owner) << SECOND_BITS)
    ended = count_upto(end_keys, owner, seconds) - np.searchsorted(end_keys, np.asarray(owner) << SECOND_BITS)
    return (begun - ended).astype(np.int32)
