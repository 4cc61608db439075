"""The synthetic catalog: every canonical item field, drawn per category so that content predicts
behaviour (a model's item tower can place a brand-new listing next to similar old ones).

Items are numbered in creation order, so the items that exist before the window are exactly
``0 .. n_initial - 1`` and each day's new listings follow; the simulation relies on that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from relevance_core.generator import vocabulary as V
from relevance_core.generator.config import MarketplaceConfig
from relevance_core.generator.strings import MS_PER_DAY, format_ids, id_width, join, take_strings
from relevance_core.schemas import ITEM_ARROW_SCHEMA, TS

N_BRANDS = 8  # brands per category in the vocabulary: group id = category * N_BRANDS + brand rank
N_FEATURES = 6
IMAGE_BASE = "https://images.relevance.example/items/"


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return w / w.sum()


def hour_weights() -> np.ndarray:
    w = np.asarray(V.HOUR_PROFILE, dtype=np.float64)
    return w / w.sum()


def time_in_day_ms(rng: np.random.Generator, n: int) -> np.ndarray:
    """Milliseconds after midnight following the daily traffic rhythm."""
    hours = rng.choice(24, size=n, p=hour_weights())
    return hours.astype(np.int64) * 3_600_000 + rng.integers(0, 3_600_000, size=n)


@dataclass
class Catalog:
    """Column arrays of the catalog (codes into the vocabulary) plus the lookups the simulation needs."""

    n_initial: int
    category: np.ndarray  # int16, index into vocabulary.CATEGORIES (level 2)
    l3: np.ndarray  # int16, global level-3 index
    brand_group: np.ndarray  # int32, category * N_BRANDS + brand rank
    feature: np.ndarray  # int16, category * N_FEATURES + feature
    adjective: np.ndarray
    color: np.ndarray
    condition: np.ndarray  # int8, index into vocabulary.CONDITIONS
    price: np.ndarray  # float64
    price_q: np.ndarray  # float32, price quantile inside the category: what users' price bands compare
    location: np.ndarray  # int16, index into vocabulary.CITIES
    seller: np.ndarray  # int32
    created_ms: np.ndarray  # int64 epoch ms
    pop_score: np.ndarray  # float32, latent popularity: rank inside a category / brand group
    single_quantity: np.ndarray  # bool: unique piece, sold out by its first purchase
    category_weight: np.ndarray  # float64 per category: share of listings and of undirected traffic
    city_weight: np.ndarray
    item_ids: pa.StringArray
    # CSR lookups: items of category c ordered by popularity are by_popularity[cat_start[c]:cat_start[c+1]];
    # items of brand group g are by_popularity[grp_start[g]:grp_start[g+1]] (offset into the same array).
    by_popularity: np.ndarray
    cat_start: np.ndarray
    grp_start: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.category)

    def to_table(self, sold: np.ndarray | None = None) -> pa.Table:
        """The catalog snapshot at the end of the window: sold unique pieces are ``available=False``."""
        cats = V.CATEGORIES
        l3_paths = [f"{c.l1} > {c.l2} > {name}" for c in cats for name, _ in c.l3]
        l3_nouns = [noun for c in cats for _, noun in c.l3]
        l3_lower = [name.lower() for c in cats for name, _ in c.l3]
        brands = [b for c in cats for b in c.brands]
        features = [f for c in cats for f in c.features]
        l2_names = [c.l2.lower() for c in cats]

        brand = take_strings(brands, self.brand_group)
        noun = take_strings(l3_nouns, self.l3)
        feature = take_strings(features, self.feature)
        color = take_strings(V.COLORS, self.color)
        adjective = take_strings(V.ADJECTIVES, self.adjective)
        location = take_strings(V.CITIES, self.location)
        title = join(adjective, " ", brand, " ", noun, " ", feature, ", ", color)
        description = join(
            brand,
            " ",
            noun,
            " (",
            feature,
            ", ",
            color,
            "), ",
            take_strings([c[1] for c in V.CONDITIONS], self.condition),
            ". ",
            adjective,
            " pick from our ",
            take_strings(l3_lower, self.l3),
            " in ",
            take_strings(l2_names, self.category),
            ". Pick-up in ",
            location,
            " or shipped.",
        )
        n_sellers = int(self.seller.max()) + 1 if len(self.seller) else 1
        available = np.ones(self.n_items, dtype=bool) if sold is None else ~sold
        columns = {
            "item_id": self.item_ids,
            "title": title,
            "description": description,
            "category_path": take_strings(l3_paths, self.l3),
            "price": pa.array(self.price, type=pa.float64()),
            "brand": brand,
            "location": location,
            "condition": take_strings([c[0] for c in V.CONDITIONS], self.condition),
            "image_url": join(IMAGE_BASE, self.item_ids, ".jpg"),
            "seller_id": format_ids("seller", self.seller, id_width(n_sellers)),
            "available": pa.array(available, type=pa.bool_()),
            "created_at": pa.array(self.created_ms * 1000, type=TS),
        }
        return pa.table(columns, schema=ITEM_ARROW_SCHEMA)


def build_catalog(cfg: MarketplaceConfig, rng: np.random.Generator, window_start_ms: int) -> Catalog:
    cats = V.CATEGORIES
    n_cats = len(cats)
    n = cfg.n_items
    n_new = int(round(n * cfg.new_items_per_day * cfg.n_days))
    n_initial = n - n_new

    # Creation times first: items are numbered in creation order.
    initial = window_start_ms - rng.integers(1, 365 * MS_PER_DAY, size=n_initial)
    new_days = rng.integers(0, cfg.n_days, size=n_new).astype(np.int64)
    new = window_start_ms + new_days * MS_PER_DAY + time_in_day_ms(rng, n_new)
    created = np.concatenate([np.sort(initial), np.sort(new)])

    category_weight = rng.dirichlet(np.full(n_cats, 4.0))
    category = rng.choice(n_cats, size=n, p=category_weight).astype(np.int16)
    l3_count = np.array([len(c.l3) for c in cats])
    l3_offset = np.concatenate([[0], np.cumsum(l3_count)[:-1]])
    l3 = (l3_offset[category] + (rng.random(n) * l3_count[category]).astype(np.int64)).astype(np.int16)
    brand_rank = rng.choice(N_BRANDS, size=n, p=zipf_weights(N_BRANDS, 0.8))
    brand_group = (category.astype(np.int32) * N_BRANDS + brand_rank).astype(np.int32)
    feature = (category.astype(np.int32) * N_FEATURES + rng.integers(0, N_FEATURES, size=n)).astype(np.int16)
    adjective = rng.integers(0, len(V.ADJECTIVES), size=n).astype(np.int16)
    color = rng.integers(0, len(V.COLORS), size=n).astype(np.int16)
    condition = rng.choice(len(V.CONDITIONS), size=n, p=np.asarray(V.CONDITION_WEIGHTS)).astype(np.int8)

    # Price: lognormal around the category's level, shifted per brand (premium brands) and by condition.
    mean_price = np.array([c.mean_price for c in cats])
    brand_premium = rng.normal(0.0, 0.3, size=n_cats * N_BRANDS)
    cond_mult = np.array([c[2] for c in V.CONDITIONS])
    log_price = np.log(mean_price[category]) + brand_premium[brand_group] + rng.normal(0.0, 0.45, size=n)
    price = np.maximum(np.round(np.exp(log_price) * cond_mult[condition], 2), 1.0)

    # Price quantile inside the category: users' price bands are relative to what the category costs.
    order = np.lexsort((price, category))
    cat_counts = np.bincount(category, minlength=n_cats)
    cat_start = np.concatenate([[0], np.cumsum(cat_counts)])
    rank_in_cat = np.empty(n, dtype=np.int64)
    rank_in_cat[order] = np.arange(n) - np.repeat(cat_start[:-1], cat_counts)
    price_q = ((rank_in_cat + 0.5) / np.maximum(cat_counts[category], 1)).astype(np.float32)

    city_weight = zipf_weights(len(V.CITIES), 0.9)
    n_sellers = max(5, int(round(n / cfg.items_per_seller)))
    seller_city = rng.choice(len(V.CITIES), size=n_sellers, p=city_weight)
    seller = rng.choice(n_sellers, size=n, p=zipf_weights(n_sellers, 0.6)).astype(np.int32)
    moved = rng.random(n) < 0.08
    location = np.where(moved, rng.choice(len(V.CITIES), size=n, p=city_weight), seller_city[seller]).astype(
        np.int16
    )

    pop_score = rng.random(n).astype(np.float32)
    single_quantity = (condition > 0) & (rng.random(n) < cfg.single_quantity_share)

    # Popularity-ordered CSR lookups, by category and by (category, brand).
    by_cat = np.lexsort((-pop_score, category))
    by_grp = np.lexsort((-pop_score, brand_group))
    grp_counts = np.bincount(brand_group, minlength=n_cats * N_BRANDS)
    grp_start = n + np.concatenate([[0], np.cumsum(grp_counts)])

    return Catalog(
        n_initial=n_initial,
        category=category,
        l3=l3,
        brand_group=brand_group,
        feature=feature,
        adjective=adjective,
        color=color,
        condition=condition,
        price=price,
        price_q=price_q,
        location=location,
        seller=seller,
        created_ms=created,
        pop_score=pop_score,
        single_quantity=single_quantity,
        category_weight=category_weight,
        city_weight=city_weight,
        item_ids=format_ids("i", np.arange(n), id_width(n)),
        by_popularity=np.concatenate([by_cat, by_grp]).astype(np.int32),
        cat_start=cat_start,
        grp_start=grp_start,
    )
