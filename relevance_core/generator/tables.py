"""``generate_tables``: the whole marketplace in memory as Arrow tables plus the planted ground truth.

The order of operations matters for consistency: sessions are simulated, everything after a unique piece's
first sale is removed, then whole sessions are trimmed to hit the exact event count, then sales are
recomputed from what is left (so a sold item always has its purchase event and nothing after it), and only
then are exact duplicates added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from relevance_core.generator import vocabulary as V
from relevance_core.generator.catalog import Catalog, build_catalog
from relevance_core.generator.config import MarketplaceConfig
from relevance_core.generator.interactions import (
    NEVER,
    EventArrays,
    SessionSimulator,
    first_sale_ms,
    simulate_bots,
)
from relevance_core.generator.strings import MS_PER_DAY, format_ids, id_width, take_strings
from relevance_core.generator.users import Users, build_users
from relevance_core.schemas import EVENT_ARROW_SCHEMA, EVENT_TYPES, TS

MAX_BATCHES = 6


@dataclass
class MarketplaceTruth:
    """What the generator planted; written outside the landing zone (``generator_truth/``)."""

    users: pa.Table
    #: level-2 category path -> the category people look at next
    complements: dict[str, str]
    stats: dict[str, int] = field(default_factory=dict)
    #: positions (in the events table) of the injected second copies, for per-day accounting
    duplicate_positions: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    catalog: Catalog | None = None
    user_model: Users | None = None


def window_start_ms(cfg: MarketplaceConfig) -> int:
    start = datetime(cfg.start_day.year, cfg.start_day.month, cfg.start_day.day, tzinfo=UTC)
    return int(start.timestamp() * 1000)


def _streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent random streams per part, so changing one part leaves the others' draws unchanged."""
    names = ("catalog", "users", "sessions", "bots", "trim", "duplicates")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.Generator(np.random.PCG64(c)) for n, c in zip(names, children, strict=True)}


def _events_table(ev: EventArrays, users: Users, catalog: Catalog, n_sessions: int) -> pa.Table:
    n_users = users.n_humans + users.n_bots
    return pa.table(
        {
            "user_id": format_ids("u", ev.user, id_width(n_users)),
            "session_id": format_ids("s", ev.session, id_width(n_sessions)),
            "item_id": format_ids("i", ev.item, id_width(catalog.n_items)),
            "event_type": take_strings(EVENT_TYPES, ev.etype),
            "timestamp": pa.array(ev.ts_ms * 1000, type=TS),
            "device_type": take_strings(V.DEVICE_TYPES, ev.device),
        },
        schema=EVENT_ARROW_SCHEMA,
    )


def _time_order(ts_ms: np.ndarray, t0: int) -> np.ndarray:
    """Positions in time order, ties kept in input order. Packing (time, position) into one unique int64
    and sorting values is faster than a stable argsort and gives the same result on every CPU."""
    n = len(ts_ms)
    rel = ts_ms - t0
    pos_bits = max(int(n).bit_length(), 1)
    if n == 0 or int(rel.max()).bit_length() + pos_bits > 62 or rel.min() < 0:
        return np.argsort(ts_ms, kind="stable")
    keys = (rel << pos_bits) | np.arange(n, dtype=np.int64)
    keys.sort()
    return keys & ((1 << pos_bits) - 1)


def simulate_events(cfg: MarketplaceConfig):
    """Arrays of the final event stream in time order, the sold mask, stats, the number of session ids
    drawn and the positions of injected duplicates."""
    rngs = _streams(cfg.seed)
    t0 = window_start_ms(cfg)
    t_end = t0 + cfg.n_days * MS_PER_DAY
    catalog = build_catalog(cfg, rngs["catalog"], t0)
    users = build_users(cfg, catalog, rngs["users"])

    n_dup = int(round(cfg.duplicate_rate * cfg.n_events))
    n_base = cfg.n_events - n_dup
    bots = simulate_bots(
        cfg, catalog, users, rngs["bots"], int(round(cfg.bot_event_share * cfg.n_events)), t0
    )

    sim = SessionSimulator(cfg, catalog, users, t0)
    per_session = sim.expected_events_per_session()
    batches: list[EventArrays] = [bots]
    n_sessions = 0
    n_bots_in = int(np.count_nonzero(bots.ts_ms < t_end))
    humans_needed = n_base - n_bots_in
    while True:
        ev = EventArrays.concat(batches) if len(batches) > 1 else bots
        in_window = ev.ts_ms < t_end
        sold = first_sale_ms(ev, catalog, in_window)
        kept = in_window & (ev.ts_ms <= sold[ev.item])
        have = int(np.count_nonzero(kept & (ev.order_key >= 0)))
        if have >= humans_needed or len(batches) > MAX_BATCHES:
            break
        if n_sessions:
            per_session = max(have / n_sessions, 0.5)
        n_new = max(int(math.ceil((humans_needed - have) / per_session * 1.08)), 16)
        batches.append(sim.simulate(rngs["sessions"], n_new, n_sessions))
        n_sessions += n_new

    # Trim whole sessions, in their (random) draw order, to hit the exact count.
    human = kept & (ev.order_key >= 0)
    n_bot = int(np.count_nonzero(kept & (ev.order_key < 0)))
    target_humans = max(n_base - n_bot, 0)
    cum = np.cumsum(np.bincount(ev.order_key[human], minlength=n_sessions))
    cut = int(np.searchsorted(cum, target_humans, side="left"))
    keep = kept & (ev.order_key < cut)  # bots have key -1
    if cut < n_sessions:
        partial = np.flatnonzero(human & (ev.order_key == cut))
        room = target_humans - (int(cum[cut - 1]) if cut > 0 else 0)
        keep[partial[np.argsort(ev.ts_ms[partial], kind="stable")[:room]]] = True
    rows = np.flatnonzero(keep)

    # Sales from what is left: nothing of a sold piece follows its purchase (removed above).
    sold_mask = first_sale_ms(ev, catalog, keep) < NEVER

    # Time order, with exact duplicates right after their original.
    rows = rows[_time_order(ev.ts_ms[rows], t0)]
    n_dup = min(n_dup, len(rows))
    dup_positions = np.empty(0, dtype=np.int64)
    if n_dup:
        copies = np.ones(len(rows), dtype=np.int64)
        chosen = np.sort(rngs["duplicates"].choice(len(rows), size=n_dup, replace=False))
        copies[chosen] = 2
        rows = np.repeat(rows, copies)
        dup_positions = chosen + np.arange(1, n_dup + 1)  # each copy sits right after its original
    ev = ev.take(rows)

    sessions_seen = np.bincount(ev.order_key[ev.order_key >= 0], minlength=n_sessions)
    stats = {
        "items": catalog.n_items,
        "items_initial": catalog.n_initial,
        "items_new_in_window": catalog.n_items - catalog.n_initial,
        "items_sold": int(sold_mask.sum()),
        "users": users.n_humans,
        "bots": users.n_bots,
        "sessions": int(np.count_nonzero(sessions_seen)),
        "events": len(ev),
        "duplicates_injected": n_dup,
        "bot_events": int(np.count_nonzero(ev.order_key < 0)),
        "anonymous_events": int(np.count_nonzero(ev.user < 0)),
        "null_session_events": int(np.count_nonzero(ev.session < 0)),
    }
    return catalog, users, ev, sold_mask, stats, n_sessions, dup_positions


def generate_tables(cfg: MarketplaceConfig) -> tuple[pa.Table, pa.Table, MarketplaceTruth]:
    """The catalog snapshot (``ITEM_ARROW_SCHEMA``), the events in time order (``EVENT_ARROW_SCHEMA``) and
    the ground truth. Same config, same tables, bit for bit."""
    catalog, users, ev, sold_mask, stats, n_sessions, dup_positions = simulate_events(cfg)
    items = catalog.to_table(sold_mask)
    events = _events_table(ev, users, catalog, n_sessions)
    per_user = np.bincount(ev.user[ev.user >= 0], minlength=users.n_humans + users.n_bots)
    truth = MarketplaceTruth(
        users=users.truth_table(per_user),
        complements={f"{c.l1} > {c.l2}": _l2_path(c.complement) for c in V.CATEGORIES},
        stats=stats,
        duplicate_positions=dup_positions,
        catalog=catalog,
        user_model=users,
    )
    return items, events, truth


def _l2_path(l2: str) -> str:
    c = next(c for c in V.CATEGORIES if c.l2 == l2)
    return f"{c.l1} > {c.l2}"
