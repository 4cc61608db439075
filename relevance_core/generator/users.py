"""Latent users: the hidden preferences the interaction stream is drawn from, and the ground truth a
test or an evaluation compares a model's behaviour against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from relevance_core.generator import vocabulary as V
from relevance_core.generator.catalog import N_BRANDS, Catalog, zipf_weights
from relevance_core.generator.config import MarketplaceConfig
from relevance_core.generator.strings import format_ids, id_width, take_strings

MAX_PREFS = 3
PRICE_BANDS: tuple[tuple[str, float], ...] = (("low", 0.18), ("mid", 0.5), ("high", 0.82))
#: how a user's session intents split over their 1, 2 or 3 preferred categories
PREF_MIX = np.array([[1.0, 0.0, 0.0], [0.65, 0.35, 0.0], [0.5, 0.3, 0.2]])


@dataclass
class Users:
    """Humans are ``0 .. n_humans-1``; bots follow. Arrays cover humans only unless noted."""

    n_humans: int
    n_bots: int
    activity: np.ndarray  # float64, share of sessions
    n_prefs: np.ndarray  # int8 in 1..3
    pref_cats: np.ndarray  # (n, 3) int16, category index; columns >= n_prefs are unused (-1)
    pref_mix_cum: np.ndarray  # (n, 3) cumulative intent shares over the preferred categories
    pref_groups: np.ndarray  # (n, 3) int32 brand group preferred inside each preferred category (-1)
    price_band: np.ndarray  # int8 index into PRICE_BANDS
    price_q: np.ndarray  # float32 preferred price quantile inside a category
    home: np.ndarray  # int16 city
    device: np.ndarray  # int8 index into DEVICE_TYPES
    user_ids: pa.StringArray  # humans then bots

    def truth_table(self, n_events_per_user: np.ndarray) -> pa.Table:
        """One row per user (bots included): what the generator planted, for tests and evaluation."""
        cats = V.CATEGORIES
        cat_names = [f"{c.l1} > {c.l2}" for c in cats]
        brands = [b for c in cats for b in c.brands]
        n, b = self.n_humans, self.n_bots
        mask = np.arange(MAX_PREFS)[None, :] < self.n_prefs[:, None]
        flat_cats = self.pref_cats[mask]
        flat_groups = self.pref_groups[mask]
        offsets = np.concatenate([[0], np.cumsum(self.n_prefs.astype(np.int64)), np.full(b, mask.sum())])
        offsets = pa.array(offsets.astype(np.int32))
        band_names = [name for name, _ in PRICE_BANDS]
        bots = np.full(b, -1)
        return pa.table(
            {
                "user_id": self.user_ids,
                "is_bot": pa.array(np.arange(n + b) >= n),
                "preferred_categories": pa.ListArray.from_arrays(offsets, take_strings(cat_names, flat_cats)),
                "preferred_brands": pa.ListArray.from_arrays(offsets, take_strings(brands, flat_groups)),
                "price_band": take_strings(band_names, np.concatenate([self.price_band, bots])),
                "price_quantile": pa.array(
                    np.concatenate([self.price_q, np.full(b, np.nan, np.float32)]), from_pandas=True
                ),
                "home_location": take_strings(V.CITIES, np.concatenate([self.home, bots])),
                "device_type": take_strings(
                    V.DEVICE_TYPES, np.concatenate([self.device, np.ones(b, np.int8)])
                ),
                "activity": pa.array(np.concatenate([self.activity, np.full(b, np.nan)]), from_pandas=True),
                "n_events": pa.array(n_events_per_user.astype(np.int64)),
            }
        )


def build_users(cfg: MarketplaceConfig, catalog: Catalog, rng: np.random.Generator) -> Users:
    n = cfg.n_users
    n_cats = len(V.CATEGORIES)
    activity = rng.lognormal(0.0, 1.0, size=n)
    activity /= activity.sum()
    n_prefs = rng.choice([1, 2, 3], size=n, p=[0.3, 0.45, 0.25]).astype(np.int8)
    # Preferred categories: a draw without replacement weighted by category size (Gumbel top-k).
    keys = np.log(catalog.category_weight)[None, :] + rng.gumbel(size=(n, n_cats))
    pref_cats = np.argsort(-keys, axis=1)[:, :MAX_PREFS].astype(np.int16)
    unused = np.arange(MAX_PREFS)[None, :] >= n_prefs[:, None]
    pref_cats[unused] = -1
    pref_mix_cum = np.cumsum(PREF_MIX[n_prefs - 1], axis=1)
    brand_rank = rng.choice(N_BRANDS, size=(n, MAX_PREFS), p=zipf_weights(N_BRANDS, 0.5))
    pref_groups = np.where(unused, -1, pref_cats.astype(np.int32) * N_BRANDS + brand_rank).astype(np.int32)
    price_band = rng.choice(len(PRICE_BANDS), size=n, p=[0.35, 0.4, 0.25]).astype(np.int8)
    centers = np.array([c for _, c in PRICE_BANDS])
    price_q = np.clip(centers[price_band] + rng.normal(0, 0.05, size=n), 0.02, 0.98).astype(np.float32)
    home = rng.choice(len(V.CITIES), size=n, p=catalog.city_weight).astype(np.int16)
    device = rng.choice(len(V.DEVICE_TYPES), size=n, p=np.asarray(V.DEVICE_WEIGHTS)).astype(np.int8)
    total = n + cfg.n_bots
    return Users(
        n_humans=n,
        n_bots=cfg.n_bots,
        activity=activity,
        n_prefs=n_prefs,
        pref_cats=pref_cats,
        pref_mix_cum=pref_mix_cum,
        pref_groups=pref_groups,
        price_band=price_band,
        price_q=price_q,
        home=home,
        device=device,
        user_ids=format_ids("u", np.arange(total), id_width(total)),
    )
