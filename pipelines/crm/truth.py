"""The demo CRM's ground truth: the file, the oracle, and the observable ceiling.

The generator (`pipelines.crm.demo`) writes each lead's latent traits, hazards and its account's in-market windows
into a separate frame (never a feature). Two yardsticks come from it:

- `oracle_probability`: the Bayes-optimal P(SQL in (t, t + horizon]) given the true state at t, including whether
  the account is in market: out of any model's reach, since the market state is latent.
- `observable_probability`: the *observable ceiling*. The same rates (the generator's true ones), but the account's
  market state is not known: it is filtered from what the CRM records, the account's activities, conversions and
  closures up to t (`market_posterior`), then integrated forward exactly as the oracle does. A model seeing the
  same history cannot beat it in expectation, so "model AUC / observable-ceiling AUC" is the honest gap.

The evaluate stage imports this module, not the generator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.atomic import atomic_path
from pipelines.crm.schema import UTC_NS
from pipelines.crm.story import (
    CREATION_EVENT,
    DAY_SECONDS,
    EMAIL_TYPES,
    ENGAGEMENT_AFTER_CONVERSION_DAYS,
    IN_MARKET_RATES,
    INTEREST_DECAY_DAYS,
    INTEREST_FLOOR,
    INTEREST_MIX,
    INTEREST_RATE,
)

log = logging.getLogger(__name__)

_TS_TYPE: Final = pa.timestamp("ns", tz="UTC")


def write_truth(truth: pd.DataFrame, path: Path) -> None:
    """Write the ground truth atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        truth.to_parquet(tmp, index=False)


@contextmanager
def truth_writer(path: Path) -> Iterator[Callable[[pd.DataFrame], None]]:
    """`add(part)` for the ground truth of a batched demo CRM, part by part into one Parquet file; the file
    appears (atomically) only when the block ends without error."""
    with atomic_path(path) as tmp:  # nothing written (no part added): the file is left as it was
        writer: pq.ParquetWriter | None = None

        def add(part: pd.DataFrame) -> None:
            nonlocal writer
            table = pa.Table.from_pandas(part, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))

        try:
            yield add
        finally:
            if writer is not None:
                writer.close()


def read_truth(path: Path) -> pd.DataFrame:
    """The ground truth as written, with the in-market window lists kept as Arrow lists."""
    table = pq.read_table(path)
    frame: pd.DataFrame = table.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_list(t) else None)
    return frame


def _flatten(lists: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """(row index of each element, the elements as UTC timestamps) of a list column."""
    arr = (
        pa.array(lists, type=pa.list_(_TS_TYPE))
        if not isinstance(lists.dtype, pd.ArrowDtype)
        else pa.chunked_array(lists.array._pa_array).combine_chunks()
    )
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
    values = pd.Series(pc.list_flatten(arr).to_pandas()).astype(UTC_NS)
    return parents, values


def _expm2(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, ...]:
    """Element-wise exp of 2x2 matrices [[a, b], [c, d]] with b*c >= 0 (real eigenvalues)."""
    s = (a + d) / 2.0
    q = np.sqrt(((a - d) / 2.0) ** 2 + b * c)
    ch = np.cosh(q)
    sh = np.where(q > 1e-12, np.sinh(q) / np.where(q > 1e-12, q, 1.0), 1.0)
    scale = np.exp(s)
    return (scale * (ch + sh * (a - s)), scale * sh * b, scale * sh * c, scale * (ch + sh * (d - s)))


def _survive(
    p_out: np.ndarray,
    p_in: np.ndarray,
    nu: np.ndarray,
    mu: np.ndarray,
    h_out: np.ndarray,
    h_in: np.ndarray,
    dt: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Unconverted mass in (out, in) market after `dt` days of the out<->in chain with conversion hazards."""
    e11, e12, e21, e22 = _expm2(-(nu + h_out) * dt, nu * dt, mu * dt, -(mu + h_in) * dt)
    return p_out * e11 + p_in * e21, p_out * e12 + p_in * e22


def oracle_probability(truth: pd.DataFrame, rows: pd.DataFrame, horizon_days: float) -> np.ndarray:
    """Bayes-optimal P(reach SQL in (t, t + horizon]) for (lead_id, snapshot_at) rows, given the true state at t.

    The oracle knows each lead's hazards and whether its account is in market at t, and the nurture period if it
    had begun by t; it does not know the future path of the market chain (it integrates over it exactly), so it
    is the limit a model that sees the lead's history could approach, not a clairvoyant.
    """
    t = rows[["lead_id", "snapshot_at"]].reset_index(drop=True)
    tr = truth.set_index("lead_id").loc[t["lead_id"]].reset_index()
    at = t["snapshot_at"]
    parents, starts = _flatten(truth["in_market_start"])
    _, ends = _flatten(truth["in_market_end"])
    windows = pd.DataFrame({"lead_id": truth["lead_id"].to_numpy()[parents], "start": starts, "end": ends})
    pos = pd.DataFrame({"lead_id": t["lead_id"], "at": at, "row": np.arange(len(t))}).merge(windows, on="lead_id")
    inside = (pos["start"] <= pos["at"]) & (pos["at"] < pos["end"])
    in_market = np.bincount(pos["row"].to_numpy(), weights=inside.to_numpy(), minlength=len(t)) > 0

    return _conversion_probability(tr, at, in_market.astype(float), horizon_days)


def _conversion_probability(tr: pd.DataFrame, at: pd.Series, p_in: np.ndarray, horizon_days: float) -> np.ndarray:
    """P(SQL in (t, t + horizon]) of each row's lead (`tr`: its truth rows) from P(account in market at t) =
    `p_in`: the out<->in chain with conversion hazards integrated exactly over the horizon, with the lead's
    nurture period when it had begun by t; closed leads get 0."""

    def days(col: str) -> np.ndarray:
        delta = (tr[col] - at).dt.total_seconds().to_numpy() / DAY_SECONDS
        return np.where(np.isnan(delta), np.inf, delta)

    horizon = float(horizon_days)
    nurture_known = (tr["nurture_entered_at"] <= at).fillna(False).to_numpy(dtype=bool)
    n_start = np.where(nurture_known, np.clip(days("nurture_start"), 0, horizon), horizon)
    n_end = np.where(nurture_known, np.clip(days("nurture_end"), 0, horizon), horizon)
    nu, mu = tr["market_entry_rate"].to_numpy(), tr["market_exit_rate"].to_numpy()
    h_out, h_in, h_n = (tr[c].to_numpy() for c in ("hazard_out", "hazard_in", "hazard_nurture"))
    p_in = np.asarray(p_in, dtype=float)
    p_out = 1.0 - p_in
    for begin, finish, extra in ((0.0, n_start, 0.0), (n_start, n_end, h_n), (n_end, horizon, 0.0)):
        p_out, p_in = _survive(p_out, p_in, nu, mu, h_out + extra, h_in + extra, np.maximum(finish - begin, 0.0))
    closed = (tr["closed_at"] <= at).fillna(False).to_numpy(dtype=bool)
    return np.where(closed, 0.0, np.clip(1.0 - (p_out + p_in), 0.0, 1.0))


# ----------------------------------------------------------------------------------------------------------------
# The observable ceiling: a forward filter of each account's market state from what the CRM records
# ----------------------------------------------------------------------------------------------------------------

#: Tables (and columns) the filter reads: the CRM's own record, as the extract stage wrote it.
OBSERVABLE_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "leads": ("lead_id", "account_id", "created_at", "lead_source"),
    "activities": ("lead_id", "occurred_at", "activity_type"),
}
_IN_MARKET_EMAIL: Final = sum(r for k, r in IN_MARKET_RATES.items() if k in EMAIL_TYPES)
_IN_MARKET_OTHER: Final = sum(r for k, r in IN_MARKET_RATES.items() if k not in EMAIL_TYPES)
_OPT_OUTS: Final = ("unsubscribe", "email_bounce")


def _days(values: pd.Series, origin: int) -> np.ndarray:
    """Days since `origin` (ns) of UTC timestamps; NaT becomes +inf."""
    at = pd.to_datetime(values, utc=True)
    ns = at.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return np.where(at.isna().to_numpy(), np.inf, (ns - origin) / (DAY_SECONDS * 1e9))


def _propagate(
    p_out: np.ndarray, p_in: np.ndarray, nu: np.ndarray, mu: np.ndarray, delta: np.ndarray, dt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The filter's prediction step, normalised: (p_out, p_in) after `dt` days of the out<->in chain when no event
    happens and the in-market state's total event intensity exceeds the out-of-market one by `delta`.

    exp(M) for M = dt [[-nu, nu], [mu, -mu - delta]] is written with its eigenvalues l1 >= l2 and scaled by
    exp(-l1) (the scale cancels on normalising), so long quiet spells cannot overflow.
    """
    a, b, c, d = -nu * dt, nu * dt, mu * dt, -(mu + delta) * dt
    s = (a + d) / 2.0
    q = np.sqrt(((a - d) / 2.0) ** 2 + b * c)
    small = q < 1e-12
    q_safe = np.where(small, 1.0, q)
    decay = np.exp(-2.0 * q)  # exp(l2 - l1)
    # exp(M) e^{-l1} = ((M - l2 I) - e^{l2 - l1} (M - l1 I)) / (2q); as q -> 0 it tends to I + (M - s I)
    l1, l2 = s + q, s - q
    e11 = np.where(small, 1.0 + a - s, ((a - l2) - decay * (a - l1)) / (2 * q_safe))
    e12 = np.where(small, b, b * (1 - decay) / (2 * q_safe))
    e21 = np.where(small, c, c * (1 - decay) / (2 * q_safe))
    e22 = np.where(small, 1.0 + d - s, ((d - l2) - decay * (d - l1)) / (2 * q_safe))
    new_out, new_in = p_out * e11 + p_in * e21, p_out * e12 + p_in * e22
    total = new_out + new_in
    return new_out / total, new_in / total


def market_posterior(truth: pd.DataFrame, tables: Mapping[str, pd.DataFrame], rows: pd.DataFrame) -> np.ndarray:
    """P(the row's account is in market at snapshot_at | what the CRM recorded up to then), per (lead_id,
    snapshot_at) row, by an exact forward filter of the two-state continuous-time chain (out <-> in at the
    account's true entry and exit rates; a lead without an account is its own group).

    Observations, each lead of the account from its creation on, with the generator's true rates:
    - every activity of a type the market state drives (pricing visits, web visits, demo requests, forms, e-mail
      clicks, downloads): intensity interest(t) out of market, interest(t) + in-market rate in market, so each
      event multiplies the odds by (interest(t) + rate) / interest(t) and quiet time lowers them;
    - conversions (reaching SQL): hazard h_out out of market, h_in in market (plus the nurture hazard, equal in
      both states), so a colleague's conversion raises the odds and survival lowers them;
    - the ends of observation the CRM records: conversion + 30 days (activity stops), closure (disqualified), the
      first unsubscribe or bounce (no more e-mail clicks).
    Not used (so this ceiling is, if anything, slightly low): activity types the market state does not drive, the
    BDR's accept/reject decision (which depends on the state at review), and the self-reported purchase timeframe.
    The creation activity a lead's source implies is deterministic and skipped.
    """
    leads, activities = tables["leads"], tables["activities"]
    tr = truth.set_index("lead_id").reindex(leads["lead_id"].to_numpy())
    if tr["hazard_in"].isna().any():
        raise ValueError("the ground truth lacks lead(s) of the CRM's leads table")
    origin = int(pd.to_datetime(leads["created_at"], utc=True).min().value)
    created = _days(leads["created_at"], origin)
    converted, closed = _days(tr["converted_at"], origin), _days(tr["closed_at"], origin)
    stop = np.minimum(converted + ENGAGEMENT_AFTER_CONVERSION_DAYS, closed)
    at_risk_until = np.minimum(converted, closed)
    account = pd.to_numeric(leads["account_id"], errors="coerce").astype("Int64")
    lead_ids = leads["lead_id"].to_numpy(dtype=np.int64)
    group_key = np.where(account.isna().to_numpy(), -1 - lead_ids, account.to_numpy(dtype=np.int64, na_value=0))
    group, _ = pd.factorize(group_key)
    nu = tr["market_entry_rate"].to_numpy(dtype=float)
    mu = tr["market_exit_rate"].to_numpy(dtype=float)
    h_out, h_in, h_n = (tr[c].to_numpy(dtype=float) for c in ("hazard_out", "hazard_in", "hazard_nurture"))
    n_start, n_end = _days(tr["nurture_start"], origin), _days(tr["nurture_end"], origin)
    interest = tr["interest"].to_numpy(dtype=float)

    # activities: the first opt-out of each lead, and the market-driven events
    pos = pd.Index(lead_ids).get_indexer(activities["lead_id"].to_numpy())
    kind = activities["activity_type"].astype(str).to_numpy()
    when = _days(activities["occurred_at"], origin)
    opt_out = np.full(len(leads), np.inf)
    is_opt = np.isin(kind, _OPT_OUTS) & (pos >= 0)
    np.minimum.at(opt_out, pos[is_opt], when[is_opt])
    creation_kind = pd.Series(leads["lead_source"].astype(object).to_numpy()).map(CREATION_EVENT).to_numpy()
    driven = np.isin(kind, list(IN_MARKET_RATES)) & (pos >= 0)
    driven &= ~((when == created[np.maximum(pos, 0)]) & (kind == creation_kind[np.maximum(pos, 0)]))
    driven &= when < stop[np.maximum(pos, 0)]
    a_pos, a_kind, a_when = pos[driven], kind[driven], when[driven]
    age = np.maximum(a_when - created[a_pos], 0.0)
    mix = pd.Series(a_kind).map(INTEREST_MIX).fillna(0.0).to_numpy()
    shape = INTEREST_FLOOR + (1 - INTEREST_FLOOR) * np.exp(-age / INTEREST_DECAY_DAYS)
    f_out_act = INTEREST_RATE * interest[a_pos] * shape * mix
    f_in_act = f_out_act + pd.Series(a_kind).map(IN_MARKET_RATES).to_numpy()

    # events: (lead position, time, order, delta change, factor out, factor in, query)
    n = len(leads)
    every = np.arange(n)
    email_end = np.minimum(stop, opt_out)
    hazard_gap = h_in - h_out
    parts: list[tuple[np.ndarray, ...]] = []

    def changes(lead: np.ndarray, t: np.ndarray, amount: np.ndarray) -> None:
        ok = np.isfinite(t)
        parts.append(
            (
                lead[ok],
                t[ok],
                np.zeros(ok.sum()),
                amount[ok],
                np.ones(ok.sum()),
                np.ones(ok.sum()),
                np.full(ok.sum(), -1),
            )
        )

    changes(every, created, np.full(n, _IN_MARKET_OTHER + _IN_MARKET_EMAIL) + hazard_gap)
    changes(every, np.where(stop > created, stop, np.inf), np.full(n, -_IN_MARKET_OTHER))
    changes(every, np.where(email_end > created, email_end, np.inf), np.full(n, -_IN_MARKET_EMAIL))
    changes(every, np.where(at_risk_until > created, at_risk_until, np.inf), -hazard_gap)
    parts.append(
        (a_pos, a_when, np.ones(len(a_pos)), np.zeros(len(a_pos)), f_out_act, f_in_act, np.full(len(a_pos), -1))
    )
    conv = np.flatnonzero(np.isfinite(converted) & (h_in > 0))
    nurturing = (n_start[conv] <= converted[conv]) & (converted[conv] < n_end[conv])
    extra = np.where(nurturing, h_n[conv], 0.0)
    parts.append(
        (
            conv,
            converted[conv],
            np.ones(len(conv)),
            np.zeros(len(conv)),
            h_out[conv] + extra,
            h_in[conv] + extra,
            np.full(len(conv), -1),
        )
    )
    q_pos = pd.Index(lead_ids).get_indexer(rows["lead_id"].to_numpy())
    if (q_pos < 0).any():
        raise ValueError("rows refer to leads the CRM's leads table lacks")
    q_when = _days(rows["snapshot_at"], origin)
    parts.append(
        (
            q_pos,
            q_when,
            np.full(len(q_pos), 2.0),
            np.zeros(len(q_pos)),
            np.ones(len(q_pos)),
            np.ones(len(q_pos)),
            np.arange(len(q_pos)),
        )
    )
    lead, t, order, change, f_out, f_in, query = (np.concatenate([p[i] for p in parts]) for i in range(7))
    g = group[lead]
    sort = np.lexsort((order, t, g))
    g, t, change, f_out, f_in, query = g[sort], t[sort], change[sort], f_out[sort], f_in[sort], query[sort]
    lead = lead[sort]
    first = np.r_[True, g[1:] != g[:-1]]
    starts = np.flatnonzero(first)
    rank = np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)]))

    n_groups = int(group.max()) + 1
    g_nu = np.zeros(n_groups)
    g_nu[group] = nu
    g_mu = np.zeros(n_groups)
    g_mu[group] = mu
    p_in = g_nu / (g_nu + g_mu)  # stationary: nothing is observed before the account's first lead appears
    p_out = 1.0 - p_in
    delta = np.zeros(n_groups)
    last = np.zeros(n_groups)
    last[g[starts]] = t[starts]
    out = np.full(len(rows), np.nan)
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2))
    for k in range(int(rank.max()) + 1):
        idx = by_rank[bounds[k] : bounds[k + 1]]
        gi = g[idx]
        dt = np.maximum(t[idx] - last[gi], 0.0)
        po, pi = _propagate(p_out[gi], p_in[gi], g_nu[gi], g_mu[gi], np.maximum(delta[gi], 0.0), dt)
        po, pi = po * f_out[idx], pi * f_in[idx]
        total = po + pi
        ok = total > 0
        po, pi = (
            np.where(ok, po / np.where(ok, total, 1.0), p_out[gi]),
            np.where(ok, pi / np.where(ok, total, 1.0), p_in[gi]),
        )
        p_out[gi], p_in[gi] = po, pi
        delta[gi] += change[idx]
        last[gi] = t[idx]
        asked = query[idx] >= 0
        out[query[idx][asked]] = pi[asked]
    log.info("market filter: %s events over %s groups (%d steps)", f"{len(g):,}", f"{n_groups:,}", int(rank.max()) + 1)
    return out


def observable_probability(
    truth: pd.DataFrame, tables: Mapping[str, pd.DataFrame], rows: pd.DataFrame, horizon_days: float
) -> np.ndarray:
    """The observable ceiling: P(SQL in (t, t + horizon]) per (lead_id, snapshot_at) row from the filtered market
    state (`market_posterior`) and the lead's true rates, integrated over the horizon exactly as the oracle does."""
    t = rows[["lead_id", "snapshot_at"]].reset_index(drop=True)
    tr = truth.set_index("lead_id").loc[t["lead_id"]].reset_index()
    p_in = market_posterior(truth, tables, t)
    return _conversion_probability(tr, t["snapshot_at"], p_in, horizon_days)
