"""The interaction stream: sessions walked step by step, vectorised across all sessions at once.

Each session is a short walk through the catalog. Step ``j`` of every session still running is drawn in one
batch of numpy operations, so the Python loop runs ``max_session_steps`` times, never once per event. The
walk carries the structure a recommender should learn:

- intent: a session starts in one of the user's preferred categories (or, rarely, anywhere) and mostly
  stays there; sometimes it drifts to a new intent, sometimes it glances at a complement category;
- sequence: a step often stays with the previous item's brand, so the next item is predictable from the
  last one, not only from the user;
- choice: candidates are drawn by Zipf popularity inside a category, and the user keeps the one closest to
  their price band and home city;
- funnel: view -> click -> favourite / cart -> contact_seller / purchase, each stage likelier when the item
  matches the user;
- supply: a listing can only be seen after it was created, and a unique piece disappears after its first
  purchase.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from relevance_core.generator import vocabulary as V
from relevance_core.generator.catalog import Catalog, hour_weights
from relevance_core.generator.config import MarketplaceConfig
from relevance_core.generator.strings import MS_PER_DAY
from relevance_core.generator.users import MAX_PREFS, Users
from relevance_core.schemas import EVENT_TYPES

VIEW, CLICK, FAV, CART, CONTACT, PURCHASE = (
    EVENT_TYPES.index(n)
    for n in ("view", "click", "add_to_favorites", "add_to_cart", "contact_seller", "purchase")
)
N_CANDIDATES = 3
MAX_GAP_MS = 20 * 60_000  # inside a session: below the 30-minute gap that cuts sessions without an id


@dataclass
class EventArrays:
    """Events as parallel arrays; codes index the vocabulary, -1 means null."""

    user: np.ndarray  # int32 (humans then bots), -1 anonymous
    session: np.ndarray  # int64 session number, -1 no session id
    item: np.ndarray  # int32
    etype: np.ndarray  # int8 index into schemas.EVENT_TYPES
    ts_ms: np.ndarray  # int64 epoch ms
    device: np.ndarray  # int8 index into vocabulary.DEVICE_TYPES, -1 null
    order_key: np.ndarray  # int64: session draw order (iid), used to trim whole sessions; -1 for bots

    def __len__(self) -> int:
        return len(self.item)

    def take(self, idx: np.ndarray) -> EventArrays:
        return EventArrays(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: list[EventArrays]) -> EventArrays:
        return EventArrays(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in EventArrays.__dataclass_fields__)
        )


def day_weights(cfg: MarketplaceConfig) -> np.ndarray:
    weekday0 = cfg.start_day.weekday()
    w = np.array(
        [V.WEEKDAY_PROFILE[(weekday0 + d) % 7] * (1.0 + 0.01 * d) for d in range(cfg.n_days)],
        dtype=np.float64,
    )
    return w / w.sum()


def zipf_rank(size: np.ndarray, u: np.ndarray, exponent: float) -> np.ndarray:
    """Inverse-CDF draw of a rank in ``0..size-1`` with P(r) ~ 1/(r+1)^exponent (continuous approximation)."""
    n = size.astype(np.float32) + np.float32(1.0)  # float32: exact for ranks < 2**24, twice as fast
    if abs(exponent - 1.0) < 1e-9:
        x = np.exp(u * np.log(n))
    else:
        a = np.float32(1.0 - exponent)
        x = ((n**a - np.float32(1.0)) * u + np.float32(1.0)) ** (np.float32(1.0) / a)
    return np.minimum(x.astype(np.int64) - 1, np.maximum(size - 1, 0))


class SessionSimulator:
    """Draws sessions of human users; stateless across batches so more sessions can be added later."""

    def __init__(self, cfg: MarketplaceConfig, catalog: Catalog, users: Users, window_start_ms: int):
        self.cfg = cfg
        self.cat = catalog
        self.users = users
        self.t0 = window_start_ms
        self.complement = np.array(
            [[c.l2 for c in V.CATEGORIES].index(c.complement) for c in V.CATEGORIES], dtype=np.int16
        )
        self.cond_new = catalog.condition <= 1  # new or like new: bought, not haggled over
        self.cat_size = np.diff(catalog.cat_start)
        self.grp_size = np.diff(catalog.grp_start)

    # -- drawing one step for many sessions ------------------------------------------------------------
    def _random_intent(self, rng: np.random.Generator, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A category for each user: a preferred one (and which) or, otherwise, any by popularity."""
        us = self.users
        r = rng.random(len(u))
        which = (r[:, None] > us.pref_mix_cum[u]).sum(axis=1).clip(0, MAX_PREFS - 1)
        preferred = rng.random(len(u)) < self.cfg.preferred_category_rate
        anywhere = rng.choice(len(V.CATEGORIES), size=len(u), p=self.cat.category_weight).astype(np.int16)
        cat = np.where(preferred, us.pref_cats[u, which], anywhere)
        return cat, np.where(preferred, which, -1)

    def _pick(
        self, rng: np.random.Generator, cat: np.ndarray, group: np.ndarray, u: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One item per row from its brand group (when >= 0 and non-empty) or else its category."""
        c = self.cat
        m = len(cat)
        g = np.maximum(group, 0)
        use_group = (group >= 0) & (self.grp_size[g] > 0)
        size = np.where(use_group, self.grp_size[g], self.cat_size[cat])
        start = np.where(use_group, c.grp_start[g], c.cat_start[cat])
        rank = zipf_rank(
            size[:, None], rng.random((m, N_CANDIDATES), dtype=np.float32), self.cfg.zipf_exponent
        )
        pos = np.minimum(start[:, None] + rank, len(c.by_popularity) - 1)
        cand = c.by_popularity[pos]
        valid = (size > 0)[:, None] & (c.created_ms[cand] <= t[:, None])
        groups = c.brand_group[cand]
        pref = self.users.pref_groups[u]
        fav_brand = (groups == pref[:, 0:1]) | (groups == pref[:, 1:2]) | (groups == pref[:, 2:3])
        score = (
            np.abs(c.price_q[cand] - self.users.price_q[u][:, None])
            + 0.25 * (c.location[cand] != self.users.home[u][:, None])
            - 0.3 * fav_brand
            + 0.2 * rng.random((m, N_CANDIDATES), dtype=np.float32)
        )
        score[~valid] = np.inf
        best = np.argmin(score, axis=1)
        rows = np.arange(m)
        return cand[rows, best], valid[rows, best]

    def _funnel(self, rng: np.random.Generator, item: np.ndarray, u: np.ndarray):
        """How deep each step goes (0 view .. 3 final action), which intermediate and final action, and
        the offsets of each action after the view."""
        c, us = self.cat, self.users
        m = len(item)
        live = np.arange(MAX_PREFS)[None, :] < us.n_prefs[u][:, None]
        in_pref = ((us.pref_cats[u] == c.category[item][:, None]) & live).any(axis=1)
        brand_match = ((us.pref_groups[u] == c.brand_group[item][:, None]) & live).any(axis=1)
        price_match = np.abs(c.price_q[item] - us.price_q[u]) < 0.2
        near = c.location[item] == us.home[u]
        match = 0.45 * in_pref + 0.35 * brand_match + 0.2 * price_match
        r = rng.random((m, 8), dtype=np.float32)
        clicked = r[:, 0] < 0.2 + 0.3 * match
        intent = clicked & (r[:, 1] < 0.15 + 0.25 * match)
        final = intent & (r[:, 2] < 0.35 + 0.2 * match + 0.1 * near)
        depth = clicked.astype(np.int8) + intent + final
        is_new = self.cond_new[item]
        mid_action = np.where(r[:, 3] < np.where(is_new, 0.65, 0.35), CART, FAV).astype(np.int8)
        buy_p = np.where(is_new, 0.7, 0.3 - 0.1 * near)
        last_action = np.where(r[:, 4] < buy_p, PURCHASE, CONTACT).astype(np.int8)
        # Seconds between the actions of one step: click soon after the view, decisions take longer.
        low = np.array([1_500, 4_000, 8_000], dtype=np.float32)
        span = np.array([8_500, 41_000, 112_000], dtype=np.float32)
        offsets = np.zeros((m, 4), dtype=np.int64)
        offsets[:, 1:] = np.cumsum((low + r[:, 5:8] * span).astype(np.int64), axis=1)
        return depth, mid_action, last_action, offsets

    # -- whole sessions --------------------------------------------------------------------------------
    def simulate(self, rng: np.random.Generator, n_sessions: int, key_base: int) -> EventArrays:
        cfg, us = self.cfg, self.users
        s = n_sessions
        user = rng.choice(us.n_humans, size=s, p=us.activity).astype(np.int32)
        day = rng.choice(cfg.n_days, size=s, p=day_weights(cfg)).astype(np.int64)
        hours = rng.choice(24, size=s, p=hour_weights()).astype(np.int64)
        start = self.t0 + day * MS_PER_DAY + hours * 3_600_000 + rng.integers(0, 3_600_000, size=s)
        mu = np.log(max(cfg.mean_session_steps - 0.5, 0.6)) - 0.5 * 0.8**2
        n_steps = np.clip(np.rint(rng.lognormal(mu, 0.8, size=s) + 0.5), 1, cfg.max_session_steps).astype(
            np.int64
        )
        intent, which = self._random_intent(rng, user)
        anonymous = rng.random(s) < cfg.anonymous_session_rate
        no_session_id = ~anonymous & (rng.random(s) < cfg.null_session_id_rate)
        device = np.where(
            rng.random(s) < 0.85,
            us.device[user],
            rng.choice(len(V.DEVICE_TYPES), size=s, p=np.asarray(V.DEVICE_WEIGHTS)),
        ).astype(np.int8)
        device[rng.random(s) < cfg.null_device_rate] = -1

        # Longest sessions first: the sessions still running at step j are then a prefix.
        perm = np.argsort(-n_steps, kind="stable")
        user, start, n_steps, intent, which = (
            user[perm],
            start[perm],
            n_steps[perm],
            intent[perm],
            which[perm],
        )
        anonymous, no_session_id, device = anonymous[perm], no_session_id[perm], device[perm]
        key = key_base + perm.astype(np.int64)
        running = np.searchsorted(-n_steps, -np.arange(cfg.max_session_steps), side="right")

        cur_cat = intent.astype(np.int16).copy()
        prev_group = np.full(s, -1, dtype=np.int32)
        t = start.copy()
        parts: list[tuple[np.ndarray, ...]] = []
        for j in range(cfg.max_session_steps):
            m = int(running[j])
            if m == 0:
                break
            u = user[:m]
            if j == 0:
                cat = cur_cat[:m].copy()
                from_pref = which[:m] >= 0
                use_brand = from_pref & (rng.random(m) < cfg.preferred_brand_rate)
                group = np.where(use_brand, us.pref_groups[u, np.maximum(which[:m], 0)], -1)
            else:
                r = rng.random(m)
                d1 = cfg.drift_rate
                d2 = d1 + cfg.complement_rate
                d3 = d2 + cfg.same_brand_rate
                drift = r < d1
                if drift.any():
                    idx = np.flatnonzero(drift)
                    cur_cat[idx] = self._random_intent(rng, u[idx])[0]
                cat = cur_cat[:m].copy()
                comp = (r >= d1) & (r < d2)
                cat[comp] = self.complement[cat[comp]]
                group = np.where((r >= d2) & (r < d3), prev_group[:m], -1)
            item, ok = self._pick(rng, cat, group, u, t[:m])
            depth, mid, last, offsets = self._funnel(rng, item, u)
            rows = np.flatnonzero(ok)
            parts.append((rows, item[rows], t[:m][rows], depth[rows], mid[rows], last[rows], offsets[rows]))
            prev_group[:m] = np.where(ok, self.cat.brand_group[item], prev_group[:m])
            gap = np.minimum(rng.lognormal(np.log(35_000), 0.9, size=m), MAX_GAP_MS).astype(np.int64)
            t[:m] += offsets[np.arange(m), depth] + gap

        sess = np.concatenate([p[0] for p in parts])
        item = np.concatenate([p[1] for p in parts])
        step_t = np.concatenate([p[2] for p in parts])
        depth = np.concatenate([p[3] for p in parts]).astype(np.int64)
        codes = np.empty((len(sess), 4), dtype=np.int8)
        codes[:, 0], codes[:, 1] = VIEW, CLICK
        codes[:, 2] = np.concatenate([p[4] for p in parts])
        codes[:, 3] = np.concatenate([p[5] for p in parts])
        offsets = np.concatenate([p[6] for p in parts])

        # Expand steps into events: a step of depth d yields d + 1 events.
        n_ev = depth + 1
        step_of = np.repeat(np.arange(len(sess)), n_ev)
        first = np.cumsum(n_ev) - n_ev
        level = np.arange(len(step_of)) - np.repeat(first, n_ev)
        flat = step_of * 4 + level
        ev_sess = sess[step_of]
        return EventArrays(
            user=np.where(anonymous[ev_sess], -1, user[ev_sess]).astype(np.int32),
            session=np.where(no_session_id[ev_sess], -1, key[ev_sess]),
            item=item[step_of].astype(np.int32),
            etype=codes.reshape(-1)[flat],
            ts_ms=step_t[step_of] + offsets.reshape(-1)[flat],
            device=device[ev_sess],
            order_key=key[ev_sess],
        )

    def expected_events_per_session(self) -> float:
        """A first guess to size the first batch; later batches use the measured rate."""
        return self.cfg.mean_session_steps * 1.45


def simulate_bots(
    cfg: MarketplaceConfig, catalog: Catalog, users: Users, rng: np.random.Generator, n_events: int, t0: int
) -> EventArrays:
    """Bots crawl in bursts, an event every few seconds, across old listings at random, without session
    ids: a rate no human reaches, which is what a bot filter keys on."""
    nb = users.n_bots
    if n_events == 0 or nb == 0:
        return EventArrays(
            *(
                np.empty(0, dtype=dt)
                for dt in (np.int32, np.int64, np.int32, np.int8, np.int64, np.int8, np.int64)
            )
        )
    group = np.sort(rng.integers(0, nb * cfg.n_days, size=n_events))
    bot, day = group // cfg.n_days, group % cfg.n_days
    burst_start = rng.integers(0, 20 * 3_600_000, size=nb * cfg.n_days)
    elapsed = np.cumsum(200 + rng.exponential(2_300.0, size=n_events).astype(np.int64))
    firsts = np.searchsorted(group, group, side="left")
    elapsed = elapsed - elapsed[firsts]
    ts = t0 + day * MS_PER_DAY + burst_start[group] + elapsed
    return EventArrays(
        user=(users.n_humans + bot).astype(np.int32),
        session=np.full(n_events, -1, dtype=np.int64),
        item=rng.integers(0, max(catalog.n_initial, 1), size=n_events).astype(np.int32),
        etype=np.where(rng.random(n_events) < 0.92, VIEW, CLICK).astype(np.int8),
        ts_ms=ts.astype(np.int64),
        device=np.full(n_events, V.DEVICE_TYPES.index("desktop"), dtype=np.int8),
        order_key=np.full(n_events, -1, dtype=np.int64),
    )


NEVER = np.iinfo(np.int64).max


def first_sale_ms(ev: EventArrays, catalog: Catalog, mask: np.ndarray | None = None) -> np.ndarray:
    """Per item: when its first purchase sold it out (unique pieces only), else ``NEVER``.
    ``mask`` restricts the events considered."""
    sold = np.full(catalog.n_items, NEVER, dtype=np.int64)
    p = np.flatnonzero(ev.etype == PURCHASE)
    if mask is not None:
        p = p[mask[p]]
    p = p[catalog.single_quantity[ev.item[p]]]
    np.minimum.at(sold, ev.item[p], ev.ts_ms[p])
    return sold
