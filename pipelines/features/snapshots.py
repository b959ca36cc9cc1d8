"""The snapshot grid and its labels: which (lead, t) pairs are training examples, and did each one convert.

Training mirrors nightly scoring. On every grid date t (UTC midnight every `cadence_days`; Mondays when weekly)
each lead that is *open* at t is one example. Open at t means: created at or before t; by t it has not entered the
target stage or any later one, nor Won or Lost; and its latest stage by t is not Disqualified (a recycled lead
that re-enters the funnel is open again). The label says whether the lead enters the target stage (or later)
within (t, t + horizon]. A snapshot whose horizon runs past the end of history is dropped, never labelled
negative, because its outcome is not known yet. `max_lead_age_days` keeps only snapshots at which the lead is at
most that old (default: no cap). Long-open leads' rows are sampled by lead and weighted back (`weight`), which bounds
the rows while every figure still describes the whole open population that nightly scoring scores.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from pipelines.config import FeaturesParams
from pipelines.crm import vocab
from pipelines.crm.schema import UTC_NS
from pipelines.extract import history_end
from pipelines.features import timeline as tl
from pipelines.features.spec import WEIGHT

log = logging.getLogger(__name__)

#: For each selectable target, the stages whose entry counts as reaching it.
TARGET_STAGES: Final[dict[str, frozenset[str]]] = {
    "SAL": frozenset({"SAL"}) | vocab.SQL_OR_LATER,
    "SQL": vocab.SQL_OR_LATER,
    "Won": frozenset({"Won"}),
}
#: Terminal stages: a lead that has entered one is closed for good, whatever the target.
TERMINAL_STAGES: Final = frozenset({"Won", "Lost"})
DISQUALIFIED: Final = "Disqualified"
STAGE_CODES: Final[dict[str, int]] = {stage: code for code, stage in enumerate(vocab.STAGES)}


def stage_codes(stages: frozenset[str] | set[str]) -> np.ndarray:
    """The integer codes (positions in `vocab.STAGES`) of a set of stage names."""
    return np.array(sorted(STAGE_CODES[s] for s in stages), dtype=np.int8)


@dataclass(frozen=True)
class StageIndex:
    """Stage entries sorted by (lead position, known second, stage_history_id): the as-of view of the funnel."""

    keys: np.ndarray
    stage: np.ndarray

    @classmethod
    def build(cls, stage_history: pd.DataFrame, lead_ids: np.ndarray) -> StageIndex:
        """Index `stage_history` by the position of each row's lead within `lead_ids`; other leads are skipped."""
        owner = tl.index_of(lead_ids, stage_history["lead_id"].to_numpy())
        codes = vocab.codes(stage_history["stage"], vocab.STAGES)
        keep = (owner >= 0) & (codes >= 0)
        keys = tl.make_keys(owner[keep], tl.known_seconds(stage_history["entered_at"])[keep])
        ids = stage_history["stage_history_id"].to_numpy(dtype=np.int64)[keep]
        order = np.lexsort((ids, keys))
        return cls(keys=keys[order], stage=codes[keep][order].astype(np.int8))

    def owners(self, lo: int, hi: int) -> StageIndex:
        """The entries of owners lo..hi-1 only (keys unchanged, so queries by owner position still work)."""
        start, stop = np.searchsorted(self.keys, [lo << tl.SECOND_BITS, hi << tl.SECOND_BITS])
        return StageIndex(keys=self.keys[start:stop], stage=self.stage[start:stop])

    def prefix(self, owner: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Prefix length: entries of this owner known at `seconds` end just before this index."""
        return tl.count_upto(self.keys, owner, seconds)

    def start(self, owner: np.ndarray) -> np.ndarray:
        """Index of each owner's first entry."""
        return tl.owner_start(self.keys, owner)

    def count_in(
        self, stages: frozenset[str], owner: np.ndarray, since: np.ndarray | None, until: np.ndarray
    ) -> np.ndarray:
        """Entries into any of `stages` with since < known second <= until (since None: from the start)."""
        sums = tl.prefix_sums(np.isin(self.stage, stage_codes(stages)).astype(np.int32))
        lower = self.start(owner) if since is None else self.prefix(owner, since)
        counts: np.ndarray = sums[self.prefix(owner, until)] - sums[lower]
        return counts

    def latest(self, owner: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(stage code, key) of the latest entry known at `seconds`; code -1 and key -1 when there is none."""
        prefix = self.prefix(owner, seconds)
        has = prefix > self.start(owner)
        code = np.full(len(owner), -1, dtype=np.int8)
        key = np.full(len(owner), -1, dtype=np.int64)
        code[has] = self.stage[prefix[has] - 1]
        key[has] = self.keys[prefix[has] - 1]
        return code, key


def open_mask(
    stage_index: StageIndex, created_known: np.ndarray, owner: np.ndarray, seconds: np.ndarray, target_stage: str
) -> np.ndarray:
    """Whether each (lead position, second) is an open lead: created, not converted, not closed or disqualified."""
    created = created_known[owner] <= seconds
    closing = TARGET_STAGES[target_stage] | TERMINAL_STAGES
    closed = stage_index.count_in(closing, owner, None, seconds) > 0
    latest, _ = stage_index.latest(owner, seconds)
    disqualified = latest == STAGE_CODES[DISQUALIFIED]
    open_now: np.ndarray = created & ~closed & ~disqualified
    return open_now


def labels(
    stage_index: StageIndex, owner: np.ndarray, seconds: np.ndarray, target_stage: str, horizon_days: int
) -> np.ndarray:
    """1 when the lead enters the target stage (or later) within (t, t + horizon], else 0 (int8)."""
    until = seconds + horizon_days * tl.DAY
    return (stage_index.count_in(TARGET_STAGES[target_stage], owner, seconds, until) > 0).astype(np.int8)


def _grid_span(created_ns: np.ndarray, last_allowed: np.ndarray, cadence_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Per lead position: the index of its first grid date (since the anchor) and how many it has."""
    step = cadence_days * tl.DAY
    anchor = int(tl.GRID_ANCHOR.value // 1_000_000_000)
    created_sec = -(-created_ns // 1_000_000_000)
    first = -(-(created_sec - anchor) // step)
    last = (last_allowed - anchor) // step
    return first, np.clip(last - first + 1, 0, None)


def _grid_candidates(
    created_ns: np.ndarray, last_allowed: np.ndarray, cadence_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """(lead position, snapshot second) for every grid date from creation to `last_allowed`, vectorised."""
    step = cadence_days * tl.DAY
    anchor = int(tl.GRID_ANCHOR.value // 1_000_000_000)
    first, counts = _grid_span(created_ns, last_allowed, cadence_days)
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    seconds = anchor + (np.repeat(first, counts) + offsets) * step
    return owner, seconds


def first_entry_seconds(stage_index: StageIndex, stages: frozenset[str], n_leads: int) -> np.ndarray:
    """Per lead position, the known second of its first entry into any of `stages` (int64 max when never)."""
    keys = stage_index.keys[np.isin(stage_index.stage, stage_codes(stages))]
    owners = tl.key_owner(keys)
    first = np.r_[True, owners[1:] != owners[:-1]] if len(keys) else np.zeros(0, dtype=bool)
    out = np.full(n_leads, np.iinfo(np.int64).max, dtype=np.int64)
    out[owners[first]] = tl.key_seconds(keys[first])
    return out


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64 of each value: a fixed pseudo-random order of ids, independent of table order."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_cut(keys: np.ndarray, k: int) -> int:
    """The largest sample key (`sample_keys`, over the whole CRM) among the k smallest: the leads whose key is at
    most this are `sampled_leads`' k leads (the keys are distinct: the hash is a bijection); all when fewer."""
    if len(keys) <= k:
        return int(np.iinfo(np.uint64).max)
    return int(np.partition(keys, k - 1)[k - 1])


def sampled_leads(lead_ids: np.ndarray, eligible: np.ndarray, k: int) -> np.ndarray:
    """Mask of at most k eligible leads, picked by a fixed hash of lead_id (the same leads on every run)."""
    chosen = eligible.copy()
    candidates = np.flatnonzero(eligible)
    if len(candidates) > k:
        with np.errstate(over="ignore"):
            order = np.argsort(_mix(lead_ids[candidates]), kind="stable")
        chosen[:] = False
        chosen[candidates[order[:k]]] = True
        log.info(
            "training rows for a sample of %s of %s leads (features.sample_leads)", f"{k:,}", f"{len(candidates):,}"
        )
    return chosen


#: Outcome columns of the training rows (not features): did the lead reach each predicted stage within the horizon.
STAGE_OUTCOMES: Final[dict[str, frozenset[str]]] = {
    "reached_MQL": frozenset({"MQL"}) | TARGET_STAGES["SAL"],
    "reached_SAL": TARGET_STAGES["SAL"],
    "reached_SQL": TARGET_STAGES["SQL"],
}


def stage_outcomes(
    stage_index: StageIndex, owner: np.ndarray, seconds: np.ndarray, horizon_days: int
) -> dict[str, np.ndarray]:
    """Per predicted stage, 1 when the lead enters it or a later stage within (t, t + horizon] (int8).

    Each stage's list is judged on its own team's outcome (the SAL list on reaching SAL), beside the target label.
    """
    until = seconds + horizon_days * tl.DAY
    return {
        name: (stage_index.count_in(stages, owner, seconds, until) > 0).astype(np.int8)
        for name, stages in STAGE_OUTCOMES.items()
    }


@dataclass(frozen=True)
class _Span:
    """Per lead: its id, creation, stage entries and the last second a grid date may have (open, labelled)."""

    lead_ids: np.ndarray
    created_ns: np.ndarray
    stage_index: StageIndex
    last_allowed: np.ndarray
    end_sec: int

    @classmethod
    def of(cls, tables: Mapping[str, pd.DataFrame], params: FeaturesParams, end: pd.Timestamp) -> _Span:
        leads = tables["leads"]
        lead_ids = leads["lead_id"].to_numpy(dtype=np.int64)
        created_ns = tl.nanoseconds(leads["created_at"])
        stage_index = StageIndex.build(tables["stage_history"], lead_ids)
        closes = first_entry_seconds(stage_index, TARGET_STAGES[params.target_stage] | TERMINAL_STAGES, len(lead_ids))
        end_sec = int(end.value // 1_000_000_000)
        last_allowed = np.minimum(end_sec - params.horizon_days * tl.DAY, closes - 1)
        if params.max_lead_age_days is not None:
            last_allowed = np.minimum(last_allowed, created_ns // 1_000_000_000 + params.max_lead_age_days * tl.DAY)
        return cls(lead_ids, created_ns, stage_index, last_allowed, end_sec)


def sample_keys(tables: Mapping[str, pd.DataFrame], params: FeaturesParams, end: pd.Timestamp) -> np.ndarray:
    """The sample keys (hashes of lead_id) of the leads with at least one grid date: what `sample_cut` picks
    `features.sample_leads` from when the grid is built part by part."""
    span = _Span.of(tables, params, end)
    _, counts = _grid_span(span.created_ns, span.last_allowed, params.cadence_days)
    with np.errstate(over="ignore"):
        keys: np.ndarray = _mix(span.lead_ids[counts > 0])
    return keys


def snapshot_grid(
    tables: Mapping[str, pd.DataFrame],
    params: FeaturesParams,
    end: pd.Timestamp | None = None,
    sample_below: int | None = None,
    log_level: int = logging.INFO,
) -> pd.DataFrame:
    """Training examples: (lead_id, snapshot_at, label) for every open lead on every uncensored grid date.

    `end` is the end of history (default: the latest timestamp in the tables); a snapshot t is kept only when
    t + horizon <= end, so every label is fully observed. Rows come grouped by lead, in time order. Work is per
    lead, not per candidate row: a lead is open from creation until its first closing entry (target or later,
    Won, Lost), except while its latest stage is Disqualified, which is checked only for leads ever disqualified;
    its label at t is whether its first target entry (necessarily after t, as it is open) is within the horizon.

    With `features.sample_leads`, the sample is picked among these tables' leads, unless `sample_below` (a
    `sample_cut` over the whole CRM, when `tables` hold a part of it) says which sample keys are in it.
    """
    end = history_end(tables) if end is None else pd.Timestamp(end).tz_convert("UTC")
    span = _Span.of(tables, params, end)
    lead_ids, created_ns, stage_index, end_sec = span.lead_ids, span.created_ns, span.stage_index, span.end_sec
    n = len(lead_ids)
    target = TARGET_STAGES[params.target_stage]
    owner, seconds = _grid_candidates(created_ns, span.last_allowed, params.cadence_days)
    if params.sample_leads is not None:
        if sample_below is None:
            chosen = sampled_leads(lead_ids, np.bincount(owner, minlength=n) > 0, params.sample_leads)
        else:
            with np.errstate(over="ignore"):
                chosen = _mix(lead_ids) <= np.uint64(sample_below)
        keep = chosen[owner]
        owner, seconds = owner[keep], seconds[keep]
    owner, seconds, weight = sample_long_open(lead_ids, created_ns, owner, seconds, params, log_level)
    ever_dq = first_entry_seconds(stage_index, frozenset({DISQUALIFIED}), n) <= end_sec
    check = np.flatnonzero(ever_dq[owner])
    if len(check):
        latest, _ = stage_index.latest(owner[check], seconds[check])
        drop = check[latest == STAGE_CODES[DISQUALIFIED]]
        keep = np.ones(len(owner), dtype=bool)
        keep[drop] = False
        owner, seconds, weight = owner[keep], seconds[keep], weight[keep]
    reaches = first_entry_seconds(stage_index, target, n)[owner]
    label = (reaches <= seconds + params.horizon_days * tl.DAY).astype(np.int8)
    grid = pd.DataFrame(
        {
            "lead_id": lead_ids[owner],
            "snapshot_at": tl.from_seconds(seconds),
            "label": label,
            WEIGHT: weight,
            **stage_outcomes(stage_index, owner, seconds, params.horizon_days),
        }
    )
    last = tl.from_seconds(seconds.max(keepdims=True))[0] if len(grid) else "-"
    log.log(
        log_level,
        "snapshot grid: %s rows standing for %s open-lead weeks (%s leads, weighted positive rate %.2f%%) up "
        "to %s; history ends %s",
        f"{len(grid):,}",
        f"{float(weight.sum()):,.0f}",
        f"{int((np.bincount(owner, minlength=n) > 0).sum()):,}",
        100 * float((label * weight).sum() / weight.sum()) if len(label) else 0.0,
        last,
        end,
    )
    return grid


def sample_long_open(
    lead_ids: np.ndarray,
    created_ns: np.ndarray,
    owner: np.ndarray,
    seconds: np.ndarray,
    params: FeaturesParams,
    log_level: int = logging.INFO,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the rows of long-open leads (older than `old_lead_days`) for a fixed hash-sample of 1 lead in
    `old_lead_keep_one_in`, each weighted by that number; every other row stays with weight 1.

    Sampling whole leads (not single weeks) keeps each kept lead's weeks consecutive, so "was it on last week's
    list" stays answerable; the hash of lead_id (mixed twice, so independent of `sample_leads`' hash order) makes
    the sample the same on every run and independent of table order. Whole-number weights keep every count in
    open-lead weeks.
    """
    weight = np.ones(len(owner), dtype=np.float32)
    n = params.old_lead_keep_one_in
    if n == 1 or len(owner) == 0:
        return owner, seconds, weight
    old = seconds - created_ns[owner] // 1_000_000_000 > params.old_lead_days * tl.DAY
    with np.errstate(over="ignore"):
        kept_lead = _mix(_mix(lead_ids)) % np.uint64(n) == 0
    keep = ~old | kept_lead[owner]
    weight[old] = np.float32(n)
    log.log(
        log_level,
        "long-open rows (lead older than %d days): %s of %s kept (1 lead in %d), each weighted %d",
        params.old_lead_days,
        f"{int((old & keep).sum()):,}",
        f"{int(old.sum()):,}",
        n,
        n,
    )
    return owner[keep], seconds[keep], weight[keep]


def is_single_snapshot(tables: Mapping[str, pd.DataFrame]) -> bool:
    """Leads-only data: no activities and every lead created at one moment, so there is no time to slide over."""
    leads = tables["leads"]
    return len(leads) > 0 and len(tables["activities"]) == 0 and leads["created_at"].nunique() == 1


def single_snapshot_grid(tables: Mapping[str, pd.DataFrame], params: FeaturesParams) -> pd.DataFrame:
    """Leads-only data: one row per lead open at the common creation time t0; label = ever reached the target.

    A mapped leads-only export says only whether each lead converted, not when, so `horizon_days` and
    `max_lead_age_days` cannot apply: the label is "entered the target stage (or later) at any time after t0".
    """
    leads = tables["leads"]
    lead_ids = leads["lead_id"].to_numpy(dtype=np.int64)
    t0 = pd.Timestamp(leads["created_at"].iloc[0]).tz_convert("UTC")
    stage_index = StageIndex.build(tables["stage_history"], lead_ids)
    owner = np.arange(len(lead_ids), dtype=np.int64)
    seconds = np.full(len(owner), int(tl.known_seconds(leads["created_at"]).max()), dtype=np.int64)
    keep = open_mask(stage_index, tl.known_seconds(leads["created_at"]), owner, seconds, params.target_stage)
    reaches = first_entry_seconds(stage_index, TARGET_STAGES[params.target_stage], len(lead_ids))
    label = (reaches[keep] < np.iinfo(np.int64).max).astype(np.int8)
    grid = pd.DataFrame(
        {
            "lead_id": lead_ids[keep],
            "snapshot_at": tl.from_seconds(seconds[keep]),
            "label": label,
            WEIGHT: np.ones(int(keep.sum()), dtype=np.float32),
        }
    )
    log.info(
        "single snapshot (leads-only data) at %s: %s open leads, positive rate %.2f%%; the label is 'reached "
        "%s at any time' (horizon_days does not apply)",
        t0,
        f"{len(grid):,}",
        100 * float(label.mean()) if len(label) else 0.0,
        params.target_stage,
    )
    return grid


def open_leads_at(tables: Mapping[str, pd.DataFrame], as_of: pd.Timestamp, params: FeaturesParams) -> pd.DataFrame:
    """(lead_id, snapshot_at) of every lead open at `as_of`, whatever its age: the rows nightly scoring scores."""
    leads = tables["leads"]
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    lead_ids = leads["lead_id"].to_numpy(dtype=np.int64)
    owner = np.arange(len(lead_ids), dtype=np.int64)
    seconds = np.full(len(owner), int(as_of.value // 1_000_000_000), dtype=np.int64)
    stage_index = StageIndex.build(tables["stage_history"], lead_ids)
    keep = open_mask(stage_index, tl.known_seconds(leads["created_at"]), owner, seconds, params.target_stage)
    return pd.DataFrame(
        {
            "lead_id": lead_ids[keep],
            "snapshot_at": pd.Series(as_of, index=range(int(keep.sum())), dtype=UTC_NS),
        }
    )


def dated_flag_grid(
    tables: Mapping[str, pd.DataFrame], params: FeaturesParams, maturation_days: int, end: pd.Timestamp
) -> tuple[pd.DataFrame, int]:
    """Dates plus a won flag without conversion dates: one row per lead at its creation; label = reached the target.

    The flag says whether, not when, so the lead is scored at creation and its label is "reached the target stage
    by the export". A lead younger than `maturation_days` at the end of history (`end`, the export) may still
    convert: it is censored and left out, never labelled negative. Returns (grid, censored leads).
    """
    leads = tables["leads"]
    lead_ids = leads["lead_id"].to_numpy(dtype=np.int64)
    stage_index = StageIndex.build(tables["stage_history"], lead_ids)
    created = tl.known_seconds(leads["created_at"])
    owner = np.arange(len(lead_ids), dtype=np.int64)
    cutoff = int(end.value // 1_000_000_000) - maturation_days * tl.DAY
    mature = created <= cutoff
    keep = mature & open_mask(stage_index, created, owner, created, params.target_stage)
    reaches = first_entry_seconds(stage_index, TARGET_STAGES[params.target_stage], len(lead_ids))
    label = (reaches[keep] < np.iinfo(np.int64).max).astype(np.int8)
    grid = pd.DataFrame(
        {
            "lead_id": lead_ids[keep],
            "snapshot_at": tl.from_seconds(created[keep]),
            "label": label,
            WEIGHT: np.ones(int(keep.sum()), dtype=np.float32),
        }
    )
    censored = int((~mature).sum())
    log.info(
        "dated leads with a flag: %s leads labelled at creation (positive rate %.2f%%); %s created within %d "
        "days of the export (%s) left out as censored",
        f"{len(grid):,}",
        100 * float(label.mean()) if len(label) else 0.0,
        f"{censored:,}",
        maturation_days,
        end,
    )
    return grid, censored


def outcomes_as_of(
    stage_history: pd.DataFrame, lead_ids: np.ndarray, as_of: pd.Timestamp, params: FeaturesParams
) -> pd.DataFrame:
    """Per lead scored at `as_of`: the training label (`label`: entered the target stage or later within
    (as_of, as_of + horizon]) and each predicted stage's own outcome (`reached_<stage>`), from the same code that
    labels the snapshot grid, so a backtest judges a nightly run exactly as training judged its rows."""
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    ids = np.asarray(lead_ids, dtype=np.int64)
    stage_index = StageIndex.build(stage_history, ids)
    owner = np.arange(len(ids), dtype=np.int64)
    seconds = np.full(len(ids), int(as_of.value // 1_000_000_000), dtype=np.int64)
    return pd.DataFrame(
        {
            "lead_id": ids,
            "label": labels(stage_index, owner, seconds, params.target_stage, params.horizon_days),
            **stage_outcomes(stage_index, owner, seconds, params.horizon_days),
        }
    )
