"""Point-in-time activity counts for the rules, on the features' clock (`pipelines.features.timeline`).

Every question a rule asks is "how many of this lead's activities of type k are known at t (and not older than a
window)?", or the decayed sum of them. Activities are packed into the timeline's sorted int64 keys, with the
owner being (lead position, activity type), so each count is a pair of `np.searchsorted` calls and no Python loop
runs per lead or row. The timeline's convention holds: an activity counts at t when its time, rounded up to the
whole second, is <= t rounded down (exactly `ts <= t` for whole-second stamps, which is what CRMs store).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from pipelines.crm import vocab
from pipelines.features import timeline as tl

#: Decayed sums are kept relative to a reference that moves every this many half-lives (no float overflow), and
#: activities older than that many half-lives before a snapshot (weight < 2**-400) are dropped.
_DECAY_EPOCH_HALF_LIVES: Final = 400
#: Owners (lead position x activity type, or x decay epoch) must fit above the timeline's seconds in an int64.
_MAX_OWNERS: Final = 1 << (63 - tl.SECOND_BITS)


def day_seconds(days: float) -> int:
    """A span of days as whole seconds (windows and half-lives of the rules file)."""
    return round(days * tl.DAY)


def _check_owners(n_owners: int) -> None:
    if n_owners >= _MAX_OWNERS:
        raise ValueError(f"too many leads x activity types to pack into int64 keys ({n_owners:,} >= {_MAX_OWNERS:,})")


class ActivityIndex:
    """The scored leads' activities as sorted timeline keys (owner = lead position x types + type code)."""

    def __init__(self, owner: np.ndarray, type_code: np.ndarray, seconds: np.ndarray, n_leads: int) -> None:
        self.n_types = len(vocab.ACTIVITY_TYPES)
        _check_owners(n_leads * self.n_types)
        self.owner = np.asarray(owner, dtype=np.int64)
        self.type_code = np.asarray(type_code, dtype=np.int64)
        self.seconds = np.asarray(seconds, dtype=np.int64)  # known at: rounded up to the whole second
        self.sorted_keys = np.sort(tl.make_keys(self.owner * self.n_types + self.type_code, self.seconds))


class Queries:
    """A batch of as-of questions (lead position, query second) against one activity index.

    The queries are kept sorted by (lead, time), so every needle handed to `np.searchsorted` is sorted (which is
    what makes the searches fast), and answers are cached per (activity type, window). `order` maps back: the
    i-th sorted query is the `order[i]`-th query as given.
    """

    def __init__(self, attributes: pd.DataFrame, index: ActivityIndex, owner: np.ndarray, seconds: np.ndarray) -> None:
        self.attributes = attributes
        self.index = index
        self.order = np.lexsort((seconds, owner))
        self.owner = np.asarray(owner, dtype=np.int64)[self.order]
        self.seconds = np.asarray(seconds, dtype=np.int64)[self.order]
        self._upto: dict[tuple[int, int], np.ndarray] = {}
        self._starts: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.seconds)

    def restore(self, values: np.ndarray) -> np.ndarray:
        """Values in sorted-query order back in the order the queries were given."""
        out = np.empty_like(values)
        out[self.order] = values
        return out

    def _count_upto(self, type_code: int, shift: int) -> np.ndarray:
        """Per query: the key position just past the lead's last activity of one type known at t - shift."""
        if (type_code, shift) not in self._upto:
            group = self.owner * self.index.n_types + type_code
            self._upto[(type_code, shift)] = tl.count_upto(self.index.sorted_keys, group, self.seconds - shift)
        return self._upto[(type_code, shift)]

    def count(self, types: tuple[str, ...], within: int | None = None) -> np.ndarray:
        """Per query: activities of `types` known at t (and not at t - within, when a window in seconds is given)."""
        total = np.zeros(len(self.seconds), dtype=np.int64)
        for name in types:
            code = vocab.ACTIVITY_TYPES.index(name)
            if within is not None:
                total += self._count_upto(code, 0) - self._count_upto(code, within)
                continue
            if code not in self._starts:
                group = self.owner * self.index.n_types + code
                self._starts[code] = tl.owner_start(self.index.sorted_keys, group)
            total += self._count_upto(code, 0) - self._starts[code]
        return total

    def decayed(self, types: tuple[str, ...], half_life: float, shift: int = 0) -> np.ndarray:
        """Per query: the sum over activities of `types` known at u = t - shift of 2 ** (-(u - ts) / half_life),
        times in seconds.

        Sums are kept relative to a reference that moves every `_DECAY_EPOCH_HALF_LIVES` half-lives, so no power
        of two overflows: each activity is filed under its own epoch and the next, and a query reads the
        cumulative sum of its own epoch's segment (older activities weigh < 2**-400 and are left out).
        """
        index = self.index
        mask = np.isin(index.type_code, [vocab.ACTIVITY_TYPES.index(t) for t in types])
        out = np.zeros(len(self.seconds), dtype=float)
        if not mask.any() or not len(self.seconds):
            return out
        ev_owner, ev_seconds = index.owner[mask], index.seconds[mask]
        span = int(_DECAY_EPOCH_HALF_LIVES * half_life)
        origin = int(ev_seconds.min())
        ev_epoch = (ev_seconds - origin) // span
        n_frames = int(ev_epoch.max()) + 2
        _check_owners((int(index.owner.max()) + 1) * n_frames)
        frame = np.concatenate([ev_epoch, ev_epoch + 1])
        keys = tl.make_keys(np.tile(ev_owner, 2) * n_frames + frame, np.tile(ev_seconds, 2))
        weight = np.exp2((np.tile(ev_seconds, 2) - (origin + (frame - 1) * span)) / half_life)
        order = np.argsort(keys, kind="stable")
        keys, weight = keys[order], weight[order]
        cumulative = pd.Series(weight).groupby(tl.key_owner(keys), sort=False).cumsum().to_numpy()
        at = self.seconds - shift
        q_frame = np.clip((at - origin) // span, 0, n_frames - 1)
        group = self.owner * n_frames + q_frame
        start = tl.owner_start(keys, group)
        last = tl.count_upto(keys, group, at) - 1
        hit = (last >= start) & (at >= origin)
        reference = origin + (q_frame[hit] - 1) * span
        out[hit] = cumulative[last[hit]] * np.exp2(-(at[hit] - reference) / half_life)
        return out
