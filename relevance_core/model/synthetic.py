"""Small synthetic marketplaces with *planted* structure, for the model's tests, benchmark and GPU check.

Why here and not only in ``relevance_core.generator``: the model's tests must know exactly which structure
is learnable (to assert on it), and the GPU check must run on a machine that only has torch, Lightning,
numpy, pandas and pyarrow. This module needs nothing else.

Planted structure: items live in a three-level category tree with per-top-level brands and
category-dependent prices; each user has a favourite leaf category and brand; each next interaction is
from the user's favourite leaf (mostly), a sibling leaf, or the global popularity distribution (noise), with
Zipf popularity inside each pool. A model that reads the history and understands categories/brands beats
"most popular" by a wide margin; a popularity baseline does not. Some items never get an interaction
(cold listings) but share content with warm ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from relevance_core.schemas import DEFAULT_EVENT_WEIGHTS

_ADJ = ["classic", "new", "pro", "mini", "max", "lite", "plus", "vintage", "smart", "eco", "ultra", "basic"]
_CITIES = ["berlin", "paris", "madrid", "rome", "lisbon", "vienna", "prague", "warsaw", "oslo", "dublin"]
_CONDITIONS = ["new", "like new", "good", "fair"]
_EVENTS = ["view", "click", "add_to_favorites", "add_to_cart", "contact_seller", "purchase"]
_EVENT_P = np.array([0.68, 0.15, 0.05, 0.05, 0.03, 0.04])


@dataclass
class SyntheticConfig:
    n_items: int = 2_000
    n_users: int = 1_500
    n_l1: int = 6
    n_l2: int = 4
    n_l3: int = 3
    brands_per_l1: int = 6
    events_per_user: tuple[int, int] = (6, 30)
    p_same_leaf: float = 0.7
    p_sibling: float = 0.15
    cold_fraction: float = 0.1
    history_length: int = 20
    validation_days: float = 3.0
    days: float = 30.0
    zipf: float = 0.6
    seed: int = 0


PRESETS = {
    "tiny": SyntheticConfig(
        n_items=400, n_users=400, n_l1=4, n_l2=3, n_l3=3, brands_per_l1=4, events_per_user=(5, 20)
    ),
    "small": SyntheticConfig(n_items=2_000, n_users=1_500),
    "medium": SyntheticConfig(n_items=6_000, n_users=6_000),
}


def make_marketplace(config: SyntheticConfig | str = "small") -> tuple[pa.Table, pd.DataFrame]:
    """(training_pairs table per docs/contracts.md, items frame with canonical item columns)."""
    c = PRESETS[config] if isinstance(config, str) else config
    rng = np.random.default_rng(c.seed)
    n_leaf = c.n_l1 * c.n_l2 * c.n_l3
    leaf = rng.integers(0, n_leaf, c.n_items)
    l1 = leaf // (c.n_l2 * c.n_l3)
    l2 = leaf // c.n_l3
    brand_local = rng.integers(0, c.brands_per_l1, c.n_items)
    brand = l1 * c.brands_per_l1 + brand_local
    price = np.round(np.exp(rng.normal(3 + (leaf % 7) * 0.5, 0.4)), 2)
    paths = [f"Dept{a} > Group{a}_{b % c.n_l2} > Leaf{lf}" for a, b, lf in zip(l1, l2, leaf, strict=True)]
    titles = [
        f"Brand{b} leaf{lf} {_ADJ[rng.integers(len(_ADJ))]} model {rng.integers(100)}"
        for b, lf in zip(brand, leaf, strict=True)
    ]
    item_ids = np.array([f"i{i:05d}" for i in range(c.n_items)])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": titles,
            "description": "",
            "category_path": paths,
            "price": price,
            "brand": [f"Brand{b}" for b in brand],
            "location": [_CITIES[i] for i in rng.integers(0, len(_CITIES), c.n_items)],
            "condition": [_CONDITIONS[i] for i in rng.integers(0, len(_CONDITIONS), c.n_items)],
            "image_url": None,
            "seller_id": [f"s{i}" for i in rng.integers(0, 50, c.n_items)],
            "available": True,
            "created_at": t0,
        }
    )
    cold = rng.random(c.n_items) < c.cold_fraction
    # Zipf popularity; cold items get none
    pop = 1.0 / (1 + rng.permutation(c.n_items)) ** c.zipf
    pop[cold] = 0.0
    pools_leaf = {f: np.flatnonzero((leaf == f) & ~cold) for f in range(n_leaf)}
    pools_l2 = {g: np.flatnonzero((l2 == g) & ~cold) for g in range(c.n_l1 * c.n_l2)}
    glob = np.flatnonzero(~cold)
    glob_p = pop[glob] / pop[glob].sum()
    # Generator.choice with p= rebuilds this CDF on every call (milliseconds at 1M items); the same
    # search on a CDF built once draws exactly what it would from the same stream
    glob_cdf = glob_p.cumsum()
    glob_cdf /= glob_cdf[-1]

    def draw_global() -> int:
        return int(glob[glob_cdf.searchsorted(rng.random(), side="right")])

    def draw(pool: np.ndarray, fav_brand: int) -> int:
        if len(pool) == 0:
            return draw_global()
        w = pop[pool] * np.where(brand[pool] == fav_brand, 4.0, 1.0)
        return int(rng.choice(pool, p=w / w.sum()))

    rows: dict[str, list] = {
        k: []
        for k in (
            "user_id",
            "session_key",
            "hist_item_ids",
            "hist_event_types",
            "hist_age_s",
            "target_item_id",
            "target_event_type",
            "target_weight",
            "target_ts",
            "split",
        )
    }
    horizon = c.days * 86400.0
    val_start = horizon - c.validation_days * 86400.0
    for u in range(c.n_users):
        fav_leaf = int(leaf[draw_global()])
        group = fav_leaf // c.n_l3
        fav_brand = (fav_leaf // (c.n_l2 * c.n_l3)) * c.brands_per_l1 + int(rng.integers(c.brands_per_l1))
        n = int(rng.integers(c.events_per_user[0], c.events_per_user[1] + 1))
        times = np.sort(rng.uniform(0, horizon, n))
        seq: list[int] = []
        evs: list[str] = []
        cur_leaf = fav_leaf
        for _ in range(n):
            r = rng.random()
            if r < c.p_same_leaf:
                it = draw(pools_leaf[cur_leaf], fav_brand)
            elif r < c.p_same_leaf + c.p_sibling:
                it = draw(pools_l2[group], fav_brand)
            else:
                it = draw_global()
            seq.append(it)
            evs.append(_EVENTS[int(rng.choice(len(_EVENTS), p=_EVENT_P))])
        for t in range(1, n):
            lo = max(0, t - c.history_length)
            rows["user_id"].append(f"u{u}")
            rows["session_key"].append(f"u{u}-s0")
            rows["hist_item_ids"].append([item_ids[j] for j in seq[lo:t]])
            rows["hist_event_types"].append(evs[lo:t])
            rows["hist_age_s"].append([float(times[t] - times[j]) for j in range(lo, t)])
            rows["target_item_id"].append(item_ids[seq[t]])
            rows["target_event_type"].append(evs[t])
            rows["target_weight"].append(float(DEFAULT_EVENT_WEIGHTS[evs[t]]))
            rows["target_ts"].append(t0 + timedelta(seconds=float(times[t])))
            rows["split"].append("validation" if times[t] >= val_start else "train")
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("session_key", pa.string()),
            ("hist_item_ids", pa.list_(pa.string())),
            ("hist_event_types", pa.list_(pa.string())),
            ("hist_age_s", pa.list_(pa.float64())),
            ("target_item_id", pa.string()),
            ("target_event_type", pa.string()),
            ("target_weight", pa.float64()),
            ("target_ts", pa.timestamp("us", tz="UTC")),
            ("split", pa.string()),
        ]
    )
    return pa.Table.from_pydict(rows, schema=schema), items


def write_pairs(table: pa.Table, directory, date: str = "2026-01-31", n_files: int = 2) -> None:
    """Write pairs like the Spark job does: ``<directory>/date=<date>/part-*.parquet``."""
    from pathlib import Path

    import pyarrow.parquet as pq

    d = Path(directory) / f"date={date}"
    d.mkdir(parents=True, exist_ok=True)
    step = -(-table.num_rows // n_files)
    for i in range(n_files):
        pq.write_table(table.slice(i * step, step), d / f"part-{i:05d}.parquet")
