"""The one feature code path: features of (lead, t) pairs from what the CRM knew at t, for training and scoring.

`build_features(tables, snapshots, params)` computes every feature of every requested (lead_id, snapshot_at)
pair; training calls it with the snapshot grid (many t per lead), nightly scoring through `features_as_of` with one
t for all open leads. Dynamic features (engagement, recency, velocity, content, stage, account) only look at
activity and stage rows stamped at or before t: every count is a difference of prefix sums over events sorted by
(lead, time) and located with `np.searchsorted`, so there is no loop per lead. Leads are processed in chunks of
whole accounts (account features need every lead of the account) to bound memory as the CRM grows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from pipelines.config import FeaturesParams
from pipelines.crm import vocab
from pipelines.crm.schema import PERSONAL_COLUMNS, UTC_NS
from pipelines.features import timeline as tl
from pipelines.features.attributes import LeadAttributes
from pipelines.features.columns import feature_allowed, input_tables
from pipelines.features.readiness import ChunkEvents, readiness_features, readiness_specs
from pipelines.features.snapshots import STAGE_CODES, TARGET_STAGES, StageIndex, open_leads_at
from pipelines.features.spec import FeatureSpec
from pipelines.features.static import STATIC_SPECS, Categories, Reference, static_features

log = logging.getLogger(__name__)

#: Signals whose recency ("days since the last one") is a feature.
KEY_SIGNALS: Final[tuple[str, ...]] = (
    "pricing_page_visit",
    "demo_request",
    "form_submit",
    "webinar_attend",
    "content_download",
    "email_click",
)
#: Strong buying signals, counted across the account's other leads.
HIGH_INTENT: Final[tuple[str, ...]] = ("pricing_page_visit", "demo_request")
TYPE_CODES: Final[dict[str, int]] = {name: code for code, name in enumerate(vocab.ACTIVITY_TYPES)}
_N_TYPES: Final = len(vocab.ACTIVITY_TYPES)
_CONTENT_COLUMN: Final = _N_TYPES  # extra prefix-sum row: first download of a distinct content asset
KEY_COLUMNS: Final[tuple[str, ...]] = ("lead_id", "snapshot_at")
#: Stages that end a lead's time as an open contact of its account (a conversion or a disqualification).
_CLOSING: Final = vocab.SQL_OR_LATER | {"Disqualified"}
#: One output column: a NumPy array, or a pandas categorical / datetime array.
Column = np.ndarray | pd.Categorical | pd.api.extensions.ExtensionArray


def feature_specs(params: FeaturesParams) -> list[FeatureSpec]:
    """Every feature column `build_features` returns, in order, with kind and family.

    Features computed from current-value fields (budget, timeframe, firmographics) only when params opt in.
    """
    specs = [FeatureSpec(*spec) for spec in STATIC_SPECS if feature_allowed(spec[0], params.current_value_fields)]
    windows = [f"{w}d" for w in params.windows_days] + ["all"]
    specs += [FeatureSpec(f"n_{a}_{w}", "numeric", "engagement") for a in vocab.ACTIVITY_TYPES for w in windows]
    specs += [FeatureSpec(f"n_activities_{w}", "numeric", "engagement") for w in windows]
    specs += [FeatureSpec(f"days_since_{s}", "numeric", "recency") for s in (*KEY_SIGNALS, "any_activity")]
    v = params.velocity_days
    specs += [
        FeatureSpec(name, "numeric", "velocity")
        for name in (f"n_activities_last_{v}d", f"n_activities_prior_{v}d", f"activity_velocity_{v}d")
    ]
    specs += [
        FeatureSpec("distinct_content_all", "numeric", "content"),
        FeatureSpec("lead_age_days", "numeric", "lifecycle"),
    ]
    specs += [FeatureSpec("stage_at_t", "categorical", "stage")]
    specs += [
        FeatureSpec(name, "numeric", "stage")
        for name in (
            "ever_mql",
            "ever_sal",
            "ever_nurture",
            "ever_disqualified",
            "n_stage_entries",
            "days_since_stage_change",
        )
    ]
    specs += [
        FeatureSpec(name, "numeric", "account")
        for name in ("account_contacts", "account_other_mql", "account_other_sql")
    ]
    specs += [
        FeatureSpec(f"account_other_{what}_{w}", "numeric", "account")
        for what in ("activities", "high_intent")
        for w in windows
    ]
    return specs + readiness_specs(params)


# ----------------------------------------------------------------------------------------------------------------
# Preparation: leads ordered by account and cut into chunks, activities grouped by chunk, stages indexed
# ----------------------------------------------------------------------------------------------------------------

_TYPE_BITS: Final = 4  # activity type codes packed under the key when a chunk's activities are sorted
assert _N_TYPES <= 1 << _TYPE_BITS


@dataclass(frozen=True)
class _Prepared:
    """Everything the chunks share, with leads identified by their position in account order."""

    leads: pd.DataFrame  # the leads table in position order (chunks are slices of it)
    lead_ids: np.ndarray  # position -> lead_id
    group: np.ndarray  # position -> account_id, or -1 - position for leads without an account
    chunk_bounds: np.ndarray  # chunk k holds positions chunk_bounds[k] .. chunk_bounds[k + 1] - 1
    chunk_of: np.ndarray  # position -> chunk
    created_ns: np.ndarray  # position -> created_at (ns)
    created_known: np.ndarray  # position -> first whole second the lead is known
    activity_rows: np.ndarray  # activity rows grouped by chunk (chunk k: activity_cuts[k] .. [k + 1])
    activity_cuts: np.ndarray
    activity_owner: np.ndarray  # per activity row: lead position (-1: unknown lead)
    activity_sec: np.ndarray  # per activity row: first whole second it is known
    activity_type: np.ndarray  # per activity row: code into vocab.ACTIVITY_TYPES
    first_content: np.ndarray  # per activity row: the lead's first download of this content asset
    stages: StageIndex
    categories: Categories
    reference: Reference


@dataclass(frozen=True)
class _Activities:
    """One chunk's activities sorted by (local lead position, known second)."""

    keys: np.ndarray  # packed (local position, second)
    kinds: np.ndarray  # activity type codes
    first_content: np.ndarray  # bool


def lead_groups(account_id: pd.Series) -> np.ndarray:
    """Each lead's group, in table order: its account id, or -1 - row for a lead without an account (its own
    group). Leads are processed in the stable order of their groups: those without an account first."""
    account = account_id.astype("Int64")
    rows = np.arange(len(account), dtype=np.int64)
    groups: np.ndarray = np.where(account.isna().to_numpy(), -1 - rows, account.fillna(0).to_numpy(dtype=np.int64))
    return groups


def plan_chunks(group: np.ndarray, chunk_leads: int, first_position: int = 0) -> np.ndarray:
    """Chunk boundaries over positions sorted by group, never splitting a group (an account).

    `first_position`: where these positions start in the whole CRM's order (a part of it read on its own), so
    that a part cut at a chunk boundary is chunked exactly as the whole CRM is.
    """
    n = len(group)
    if n == 0:
        return np.array([0], dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    chunk_of_group = (starts + first_position) // chunk_leads
    firsts = starts[np.r_[True, chunk_of_group[1:] != chunk_of_group[:-1]]]
    bounds: np.ndarray = np.r_[firsts, n].astype(np.int64)
    return bounds


def _group_by_chunk(chunk: np.ndarray, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers grouped by chunk (a stable radix sort for up to 65,536 chunks) and each chunk's cut points."""
    small = chunk.astype(np.uint16 if n_chunks <= np.iinfo(np.uint16).max else np.uint32)
    rows = np.argsort(small, kind="stable")
    cuts = np.searchsorted(small[rows], np.arange(n_chunks + 1))
    return rows, cuts


def _activity_codes(values: pd.Series) -> np.ndarray:
    return vocab.codes(values, vocab.ACTIVITY_TYPES).astype(np.int8)


def _first_content(activities: pd.DataFrame, owner: np.ndarray, seconds: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Flag each lead's first download of each distinct content asset (`detail`), in time order."""
    flag = np.zeros(len(kinds), dtype=bool)
    rows = np.flatnonzero((kinds == TYPE_CODES["content_download"]) & (owner >= 0))
    if len(rows) == 0:
        return flag
    detail, _ = pd.factorize(activities["detail"].iloc[rows], use_na_sentinel=True)
    order = np.lexsort((seconds[rows], detail, owner[rows]))
    o, d = owner[rows][order], detail[order]
    first = np.r_[True, (o[1:] != o[:-1]) | (d[1:] != d[:-1])] & (d >= 0)
    flag[rows[order[first]]] = True
    return flag


def _prepare(tables: Mapping[str, pd.DataFrame], params: FeaturesParams, first_position: int = 0) -> _Prepared:
    """Order leads by account, cut chunks, group activities by chunk and index stage entries by (lead, time)."""
    leads = tables["leads"]
    group = lead_groups(leads["account_id"])
    order = np.argsort(group, kind="stable")
    group = group[order]
    lead_ids = leads["lead_id"].to_numpy(dtype=np.int64)[order]
    created = leads["created_at"].iloc[order]
    bounds = plan_chunks(group, params.chunk_leads, first_position)
    chunk_of = np.repeat(np.arange(len(bounds) - 1, dtype=np.int64), np.diff(bounds))

    activities = tables["activities"]
    owner = tl.index_of(lead_ids, activities["lead_id"].to_numpy())
    seconds = tl.known_seconds(activities["occurred_at"])
    kinds = _activity_codes(activities["activity_type"])
    owner[kinds < 0] = -1
    if (owner < 0).any():  # impossible for validated tables; never let a stray row corrupt the packed keys
        log.warning("ignoring %s activities of unknown leads or types", f"{int((owner < 0).sum()):,}")
    known = np.flatnonzero(owner >= 0)
    grouped, cuts = _group_by_chunk(chunk_of[owner[known]], len(bounds) - 1)
    return _Prepared(
        leads=leads.take(order).reset_index(drop=True),
        lead_ids=lead_ids,
        group=group,
        chunk_bounds=bounds,
        chunk_of=chunk_of,
        created_ns=tl.nanoseconds(created),
        created_known=tl.known_seconds(created),
        activity_rows=known[grouped],
        activity_cuts=cuts,
        activity_owner=owner,
        activity_sec=seconds,
        activity_type=kinds,
        first_content=_first_content(activities, owner, seconds, kinds),
        stages=StageIndex.build(tables["stage_history"], lead_ids),
        categories=Categories.from_tables(tables, params),
        reference=Reference.from_tables(tables),
    )


def _chunk_activities(prep: _Prepared, k: int) -> _Activities:
    """Chunk k's activities, sorted by one np.sort of (local position, second, type, first-content) packed."""
    if prep.chunk_bounds[k + 1] - prep.chunk_bounds[k] >= 1 << (63 - tl.SECOND_BITS - _TYPE_BITS - 1):
        raise ValueError(f"chunk {k} holds too many leads to pack (one account with millions of leads?)")
    rows = prep.activity_rows[prep.activity_cuts[k] : prep.activity_cuts[k + 1]]
    local = prep.activity_owner[rows] - prep.chunk_bounds[k]
    packed = tl.make_keys(local, prep.activity_sec[rows]) << (_TYPE_BITS + 1)
    packed |= prep.activity_type[rows].astype(np.int64) << 1
    packed |= prep.first_content[rows]
    packed.sort()
    return _Activities(
        keys=packed >> (_TYPE_BITS + 1),
        kinds=((packed >> 1) & ((1 << _TYPE_BITS) - 1)).astype(np.int8),
        first_content=(packed & 1).astype(bool),
    )


# ----------------------------------------------------------------------------------------------------------------
# One chunk of leads
# ----------------------------------------------------------------------------------------------------------------


def _window_names(params: FeaturesParams) -> list[tuple[str, int | None]]:
    return [(f"{w}d", w) for w in params.windows_days] + [("all", None)]


def _other_count(
    sorted_keys: np.ndarray, n_accounts: int, account: np.ndarray, seconds: np.ndarray, own: np.ndarray
) -> np.ndarray:
    """Events of the account known at `seconds`, minus the lead's own ones; 0 for leads without an account."""
    out = np.zeros(len(account), dtype=np.int32)
    has = account >= 0
    a, s = account[has], seconds[has]
    counts = tl.count_upto(sorted_keys, a, s) - tl.owner_starts(sorted_keys, 0, n_accounts)[a]
    out[has] = counts - own[has]
    return out


def _days_since(q_sec: np.ndarray, last_key: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Days from the packed key's time to the query; NaN when the key belongs to another owner (none yet)."""
    valid = (last_key >= 0) & (tl.key_owner(last_key) == owner)
    days = (q_sec - tl.key_seconds(last_key)) / tl.DAY
    return np.where(valid, days, np.nan).astype(np.float32)


def _type_prefix_sums(kinds: np.ndarray, first_content: np.ndarray) -> np.ndarray:
    """Row k (one per activity type, then distinct content) holds that column's prefix sums, contiguous."""
    sums = np.zeros((_N_TYPES + 1, len(kinds) + 1), dtype=np.int32)
    for code in range(_N_TYPES):
        np.cumsum(kinds == code, dtype=np.int32, out=sums[code, 1:])
    np.cumsum(first_content, dtype=np.int32, out=sums[_CONTENT_COLUMN, 1:])
    return sums


def _engagement(
    acts: _Activities,
    n_leads: int,
    q_pos: np.ndarray,
    q_sec: np.ndarray,
    params: FeaturesParams,
    cols: dict[str, Column],
) -> dict[str, np.ndarray]:
    """Counts per activity type and window, recency, velocity and distinct content; returns own totals.

    `q_pos` are chunk-local lead positions, as in `acts.keys`.
    """
    keys, kinds = acts.keys, acts.kinds
    sums = _type_prefix_sums(kinds, acts.first_content)
    first = tl.owner_starts(keys, 0, n_leads)[q_pos]
    prefix: dict[int, np.ndarray] = {0: tl.count_upto(keys, q_pos, q_sec)}

    def upto(days: int) -> np.ndarray:  # prefix lengths at t - days, computed once per distinct offset
        if days not in prefix:
            prefix[days] = tl.count_upto(keys, q_pos, q_sec - days * tl.DAY)
        return prefix[days]

    now = prefix[0]
    at_now = [sums[code][now] for code in range(_N_TYPES + 1)]
    high = [TYPE_CODES[a] for a in HIGH_INTENT]
    totals: dict[str, np.ndarray] = {}
    for name, days in _window_names(params):
        before = first if days is None else upto(days)
        high_intent = np.zeros(len(q_pos), dtype=np.int32)
        for code, kind in enumerate(vocab.ACTIVITY_TYPES):
            count = at_now[code] - sums[code][before]
            cols[f"n_{kind}_{name}"] = count
            if code in high:
                high_intent += count
        total = (now - before).astype(np.int32)
        cols[f"n_activities_{name}"] = total
        totals[f"activities_{name}"] = total
        totals[f"high_intent_{name}"] = high_intent
    cols["distinct_content_all"] = at_now[_CONTENT_COLUMN] - sums[_CONTENT_COLUMN][first]
    for signal in KEY_SIGNALS:
        last = tl.last_key_upto(keys, kinds == TYPE_CODES[signal], now)
        cols[f"days_since_{signal}"] = _days_since(q_sec, last, q_pos)
    any_last = np.where(now > first, keys[np.maximum(now - 1, 0)] if len(keys) else -1, -1)
    cols["days_since_any_activity"] = _days_since(q_sec, any_last, q_pos)
    v = params.velocity_days
    mid, early = upto(v), upto(2 * v)
    recent, prior = (now - mid).astype(np.int32), (mid - early).astype(np.int32)
    cols[f"n_activities_last_{v}d"] = recent
    cols[f"n_activities_prior_{v}d"] = prior
    cols[f"activity_velocity_{v}d"] = ((recent - prior) / (recent + prior + 1)).astype(np.float32)
    return totals


def _stage(stages: StageIndex, lo: int, hi: int, q_pos: np.ndarray, q_sec: np.ndarray, cols: dict[str, Column]) -> None:
    """The lead's own funnel so far: latest stage, stages ever entered, entries, days since the last change."""
    onehot = np.zeros((len(stages.keys), len(vocab.STAGES)), dtype=np.int8)
    onehot[np.arange(len(stages.keys)), stages.stage] = 1
    sums = tl.prefix_sums(onehot)
    first = tl.owner_starts(stages.keys, lo, hi - lo)[q_pos - lo]
    now = stages.prefix(q_pos, q_sec)
    ever = sums[now] - sums[first]
    has = now > first
    last = np.maximum(now - 1, 0)
    latest = np.where(has, stages.stage[last] if len(stages.keys) else -1, -1)
    key = np.where(has, stages.keys[last] if len(stages.keys) else -1, -1)
    cols["stage_at_t"] = latest.astype(np.int16) + 1  # 0 = "none"; codes follow Categories.levels["stage_at_t"]
    for stage in ("MQL", "SAL", "Nurture", "Disqualified"):
        cols[f"ever_{stage.lower()}"] = (ever[:, STAGE_CODES[stage]] > 0).astype(np.int8)
    cols["n_stage_entries"] = (now - first).astype(np.int32)
    cols["days_since_stage_change"] = _days_since(q_sec, key, q_pos)


def _first_entry(stages: StageIndex, wanted: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
    """(owner, first known second) of each owner's first entry into any of `wanted`."""
    hit = np.isin(stages.stage, [STAGE_CODES[s] for s in wanted])
    keys = stages.keys[hit]
    owners = tl.key_owner(keys)
    firsts = np.r_[True, owners[1:] != owners[:-1]] if len(keys) else np.zeros(0, dtype=bool)
    return owners[firsts], tl.key_seconds(keys[firsts])


def _first_entry_at(stages: StageIndex, wanted: frozenset[str], lo: int, hi: int) -> np.ndarray:
    """Per chunk-local lead, the first known second of an entry into any of `wanted` (int64 max: none)."""
    owner, seconds = _first_entry(stages, wanted)
    first_at = np.full(hi - lo, np.iinfo(np.int64).max, dtype=np.int64)
    first_at[owner - lo] = seconds
    return first_at


def _account(
    prep: _Prepared,
    acts: _Activities,
    stages: StageIndex,
    lo: int,
    hi: int,
    q_pos: np.ndarray,
    q_sec: np.ndarray,
    params: FeaturesParams,
    totals: dict[str, np.ndarray],
    cols: dict[str, Column],
) -> None:
    """Engagement, contacts and funnel progress of the OTHER leads of the same account, as of t.

    `q_pos` are chunk-local positions; `stages` holds global positions (lo..hi-1).
    """
    group = prep.group[lo:hi]
    account_of = np.where(group >= 0, pd.factorize(group)[0], -1).astype(np.int64)  # chunk-local account index
    n_accounts = int(account_of.max()) + 1 if len(account_of) else 0
    q_acc = account_of[q_pos]
    created = prep.created_known[lo:hi]
    own_created = (created[q_pos] <= q_sec).astype(np.int32)
    has = account_of >= 0
    contacts = np.sort(tl.make_keys(account_of[has], created[has]))
    cols["account_contacts"] = _other_count(contacts, n_accounts, q_acc, q_sec, own_created)
    first_entries: dict[str, np.ndarray] = {}
    for name, wanted in (("mql", frozenset({"MQL"})), ("sql", vocab.SQL_OR_LATER)):
        owner, seconds = _first_entry(stages, wanted)
        owner = owner - lo
        first_at = np.full(hi - lo, np.iinfo(np.int64).max, dtype=np.int64)
        first_at[owner] = seconds
        first_entries[name] = first_at
        with_acc = account_of[owner] >= 0
        milestones = np.sort(tl.make_keys(account_of[owner][with_acc], seconds[with_acc]))
        own = (first_at[q_pos] <= q_sec).astype(np.int32)
        cols[f"account_other_{name}"] = _other_count(milestones, n_accounts, q_acc, q_sec, own)

    acc = account_of[tl.key_owner(acts.keys)]
    with_acc = acc >= 0
    high = np.isin(acts.kinds, [TYPE_CODES[a] for a in HIGH_INTENT])
    packed = np.sort((tl.make_keys(acc[with_acc], tl.key_seconds(acts.keys[with_acc])) << 1) | high[with_acc])
    acc_keys, acc_high = packed >> 1, tl.prefix_sums((packed & 1).astype(np.int8))
    q_has = q_acc >= 0
    a, s = q_acc[q_has], q_sec[q_has]
    acc_first = tl.owner_starts(acc_keys, 0, n_accounts)[a]
    acc_now = tl.count_upto(acc_keys, a, s)
    for name, days in _window_names(params):
        before = acc_first if days is None else tl.count_upto(acc_keys, a, s - days * tl.DAY)
        for what, account_count in (
            ("activities", acc_now - before),
            ("high_intent", acc_high[acc_now] - acc_high[before]),
        ):
            out = np.zeros(len(q_pos), dtype=np.int32)
            out[q_has] = account_count - totals[f"{what}_{name}"][q_has]
            cols[f"account_other_{what}_{name}"] = out

    events = ChunkEvents(
        group=pd.factorize(group)[0].astype(np.int64),
        has_account=group >= 0,
        lead=tl.key_owner(acts.keys),
        seconds=tl.key_seconds(acts.keys),
        kind=acts.kinds,
        created=created,
        converted=first_entries["sql"],
        closed=_first_entry_at(stages, _CLOSING, lo, hi),
    )
    cols.update(readiness_features(events, q_pos, q_sec, params))


def _take(columns: Mapping[str, Column], index: np.ndarray) -> dict[str, Column]:
    """Rows of every column by position (categoricals keep their levels)."""
    out: dict[str, Column] = {}
    for name, values in columns.items():
        if isinstance(values, pd.Categorical):
            out[name] = pd.Categorical.from_codes(values.codes[index], dtype=values.dtype, validate=False)
        else:
            out[name] = np.asarray(values)[index]
    return out


def _chunk_features(
    prep: _Prepared,
    tables: Mapping[str, pd.DataFrame],
    k: int,
    q_pos: np.ndarray,
    q_sec: np.ndarray,
    q_ns: np.ndarray,
    params: FeaturesParams,
    specs: list[FeatureSpec],
) -> dict[str, Column]:
    """Feature columns of chunk k's queries (q_pos: global positions, sorted with q_sec by lead then time)."""
    lo, hi = int(prep.chunk_bounds[k]), int(prep.chunk_bounds[k + 1])
    local = q_pos - lo
    static = static_features(prep.leads.iloc[lo:hi].reset_index(drop=True), prep.reference, params, prep.categories)
    cols: dict[str, Column] = _take(static, local)
    acts = _chunk_activities(prep, k)
    totals = _engagement(acts, hi - lo, local, q_sec, params, cols)
    cols["lead_age_days"] = ((q_ns - prep.created_ns[q_pos]) / (tl.DAY * 1e9)).astype(np.float32)
    stages = prep.stages.owners(lo, hi)
    _stage(stages, lo, hi, q_pos, q_sec, cols)
    cols["stage_at_t"] = pd.Categorical.from_codes(
        np.asarray(cols["stage_at_t"]), categories=pd.Index(prep.categories.levels["stage_at_t"])
    )
    _account(prep, acts, stages, lo, hi, local, q_sec, params, totals, cols)
    return {s.name: cols[s.name] for s in specs}


@dataclass(frozen=True)
class FeatureChunk:
    """One chunk of feature rows: their positions in the snapshots frame and their columns, in output order."""

    rows: np.ndarray
    columns: dict[str, Column]

    def to_frame(self) -> pd.DataFrame:
        """The chunk as a DataFrame (numeric columns keep their compact dtypes; categoricals their levels)."""
        return pd.DataFrame(self.columns, copy=False)

    def to_arrow(self) -> pa.Table:
        """The chunk as an Arrow table without a pandas detour (numeric columns are not copied).

        NumPy columns cannot hold nulls (a missing number is NaN), so their fields are declared non-nullable,
        which makes Parquet encoding markedly cheaper; categoricals become dictionaries with nulls for NaN.
        """
        arrays, fields = [], []
        for name, values in self.columns.items():
            if isinstance(values, pd.Categorical):
                codes = values.codes
                array = pa.DictionaryArray.from_arrays(
                    pa.array(codes, mask=codes < 0), pa.array(list(values.categories), type=pa.string())
                )
                nullable = True
            elif isinstance(values, pd.arrays.DatetimeArray):  # UTC nanoseconds, straight from the int64 view
                ns = values.tz_convert("UTC").as_unit("ns").asi8  # type: ignore[attr-defined]  # pandas-stubs lack it
                array = pa.array(ns.view("datetime64[ns]"), type=pa.timestamp("ns", tz="UTC"), mask=ns == pd.NaT.value)
                nullable = array.null_count > 0
            else:
                array = pa.array(values)
                nullable = array.null_count > 0
            arrays.append(array)
            fields.append(pa.field(name, array.type, nullable=nullable))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _by_lead_then_time(rows: np.ndarray, local: np.ndarray, q_sec: np.ndarray) -> np.ndarray:
    """`rows` ordered by (local lead position, time), stably. A radix sort by position suffices when each lead's
    rows already come in time order (as the snapshot grid's do); otherwise a full sort of the keys."""
    if len(local) and local.max() <= np.iinfo(np.uint16).max:
        order = np.argsort(local.astype(np.uint16), kind="stable")
        keys = tl.make_keys(local[order], q_sec[rows[order]])
        if (keys[1:] >= keys[:-1]).all():
            return rows[order]
    return rows[np.argsort(tl.make_keys(local, q_sec[rows]), kind="stable")]


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


def iter_feature_chunks(
    tables: Mapping[str, pd.DataFrame],
    snapshots: pd.DataFrame,
    params: FeaturesParams,
    progress: bool = True,
    first_position: int = 0,
) -> Iterator[FeatureChunk]:
    """Feature rows chunk by chunk (whole accounts per chunk); extra snapshot columns (e.g. label) are carried.

    Each chunk's columns are lead_id, snapshot_at, any other columns of `snapshots`, then the features of
    `feature_specs(params)` in order, then a mapped CRM's lead attributes (`attribute_specs(tables)`); rows within
    a chunk are sorted by lead, then time. `first_position` (see `plan_chunks`): `tables` hold a part of the CRM
    whose leads start there in the whole CRM's order.
    """
    missing = [c for c in KEY_COLUMNS if c not in snapshots.columns]
    if missing:
        raise ValueError(f"snapshots need columns {list(KEY_COLUMNS)}; missing {missing}")
    tables = input_tables(tables, params.current_value_fields)  # explicit columns; current values not opted in blanked
    prep = _prepare(tables, params, first_position)
    specs = feature_specs(params)
    attributes = LeadAttributes.from_tables(tables, prep.lead_ids)  # a mapped CRM's extra features, if any
    q_owner = tl.index_of(prep.lead_ids, snapshots["lead_id"].to_numpy())
    if (q_owner < 0).any():
        unknown = snapshots["lead_id"].to_numpy()[q_owner < 0][:5].tolist()
        raise ValueError(f"snapshots refer to {int((q_owner < 0).sum())} unknown lead(s), e.g. {unknown}")
    at = snapshots["snapshot_at"]
    at = at.dt.tz_convert("UTC") if isinstance(at.dtype, pd.DatetimeTZDtype) else at.dt.tz_localize("UTC")
    at = at.astype(UTC_NS)
    q_ns = tl.nanoseconds(at)
    q_sec = tl.query_seconds(at)
    n_chunks = len(prep.chunk_bounds) - 1
    by_chunk, cuts = _group_by_chunk(prep.chunk_of[q_owner], n_chunks)
    carried = {
        c: snapshots[c].array
        if isinstance(snapshots[c].dtype, pd.api.extensions.ExtensionDtype)
        else snapshots[c].to_numpy()
        for c in snapshots.columns
        if c not in KEY_COLUMNS
    }
    chunks = tqdm(range(n_chunks), desc="features", unit="chunk", disable=not progress)
    for k in chunks:
        rows = by_chunk[cuts[k] : cuts[k + 1]]
        if len(rows) == 0:
            continue
        rows = _by_lead_then_time(rows, q_owner[rows] - prep.chunk_bounds[k], q_sec)
        columns: dict[str, Column] = {
            "lead_id": prep.lead_ids[q_owner[rows]],
            "snapshot_at": at.array[rows],
        }
        columns.update({c: values[rows] for c, values in carried.items()})
        features = _chunk_features(prep, tables, k, q_owner[rows], q_sec[rows], q_ns[rows], params, specs)
        features.update(attributes.take(q_owner[rows]))
        yield FeatureChunk(rows=rows, columns={**columns, **features})


def build_features(
    tables: Mapping[str, pd.DataFrame], snapshots: pd.DataFrame, params: FeaturesParams, progress: bool = False
) -> pd.DataFrame:
    """Features of every (lead_id, snapshot_at) row of `snapshots`, in the same order (index reset).

    Only what was known at each row's snapshot_at is used; `tables` are the five canonical CRM tables.
    """
    parts = list(iter_feature_chunks(tables, snapshots, params, progress=progress))
    if not parts:
        return empty_features(snapshots, params)
    rows = np.concatenate([part.rows for part in parts])
    frame = pd.concat([part.to_frame() for part in parts], ignore_index=True)
    return frame.iloc[np.argsort(rows, kind="stable")].reset_index(drop=True)


def empty_features(snapshots: pd.DataFrame, params: FeaturesParams) -> pd.DataFrame:
    """A zero-row frame with the columns `build_features` would return."""
    columns = list(dict.fromkeys([*KEY_COLUMNS, *snapshots.columns, *(s.name for s in feature_specs(params))]))
    return pd.DataFrame(columns=columns).astype({"snapshot_at": UTC_NS})


def features_as_of(
    tables: Mapping[str, pd.DataFrame], as_of: pd.Timestamp, params: FeaturesParams, progress: bool = False
) -> pd.DataFrame:
    """Features of every lead open at `as_of` (nightly scoring: t = now), through the same code as training."""
    return build_features(tables, open_leads_at(tables, as_of, params), params, progress=progress)


def personal_columns() -> frozenset[str]:
    """Columns that hold personal data and must never appear among the features."""
    return frozenset(c for cols in PERSONAL_COLUMNS.values() for c in cols) | {"job_title"}


__all__ = [
    "HIGH_INTENT",
    "KEY_SIGNALS",
    "TARGET_STAGES",
    "FeatureChunk",
    "FeatureSpec",
    "build_features",
    "empty_features",
    "feature_specs",
    "features_as_of",
    "iter_feature_chunks",
    "personal_columns",
]
