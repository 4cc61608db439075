"""What a synthetic marketplace looks like, as one value: a config plus named presets.

A config is a frozen msgspec Struct so that it can be printed in a report, hashed into a run's lineage and
rebuilt from JSON; every knob has a default that gives a plausible, lightly noisy marketplace.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal

import msgspec

EventFormat = Literal["csv", "jsonl", "parquet", "mixed"]
CatalogFormat = Literal["csv", "jsonl", "parquet"]

#: Dagster's daily partitions start here; data before it would land in no partition.
EARLIEST_START = date(2026, 1, 1)
#: "mixed" cycles day by day through these, so one run exercises every reader of the landing zone.
MIXED_CYCLE: tuple[str, ...] = ("csv", "jsonl", "parquet")


class MarketplaceConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Size, time window, output format, behaviour and noise of one generated marketplace."""

    n_items: int = 20_000
    n_users: int = 8_000
    n_days: int = 14
    #: exact number of valid event rows written (duplicates and bot events included; malformed rows,
    #: which only text files carry, come on top)
    n_events: int = 300_000
    start_date: str = "2026-01-05"
    seed: int = 0
    format: EventFormat = "parquet"
    catalog_format: CatalogFormat = "parquet"

    # -- catalog ----------------------------------------------------------------------------------------
    #: share of the catalog listed on each day of the window (the rest exists before it): cold start
    new_items_per_day: float = 0.02
    #: share of second-hand listings that are unique pieces: one purchase sells them out
    single_quantity_share: float = 0.6
    items_per_seller: float = 25.0

    # -- behaviour --------------------------------------------------------------------------------------
    #: Zipf exponent of item popularity inside a category
    zipf_exponent: float = 1.1
    #: how often a session's intent is one of the user's preferred categories
    preferred_category_rate: float = 0.85
    #: per step after the first: switch to a new intent / look at a complement / stay with the brand
    drift_rate: float = 0.07
    complement_rate: float = 0.08
    same_brand_rate: float = 0.3
    #: how often the first item of a preferred-category session is of the user's preferred brand
    preferred_brand_rate: float = 0.4
    mean_session_steps: float = 5.0
    max_session_steps: int = 40
    anonymous_session_rate: float = 0.08
    #: logged-in sessions whose events carry no session_id (consumers cut them by the 30-minute gap)
    null_session_id_rate: float = 0.1
    null_device_rate: float = 0.01

    # -- noise ------------------------------------------------------------------------------------------
    #: share of written rows that are exact copies of another row
    duplicate_rate: float = 0.003
    n_bots: int = 2
    #: share of written rows produced by bots
    bot_event_share: float = 0.01
    #: malformed lines per valid line, only in CSV / JSONL days (Parquet cannot carry them)
    malformed_rate: float = 0.002

    def __post_init__(self) -> None:
        if self.n_items < 50 or self.n_users < 10 or self.n_days < 1 or self.n_events < 100:
            raise ValueError("a marketplace needs >= 50 items, >= 10 users, >= 1 day and >= 100 events")
        if self.start_day < EARLIEST_START:
            raise ValueError(f"start_date {self.start_date} is before {EARLIEST_START} (first partition)")
        if self.new_items_per_day * self.n_days > 0.6:
            raise ValueError(
                "new_items_per_day * n_days must leave most of the catalog pre-existing (<= 0.6)"
            )
        for name in (
            "single_quantity_share",
            "preferred_category_rate",
            "preferred_brand_rate",
            "anonymous_session_rate",
            "null_session_id_rate",
            "null_device_rate",
            "duplicate_rate",
            "bot_event_share",
            "malformed_rate",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        if self.drift_rate + self.complement_rate + self.same_brand_rate >= 1.0:
            raise ValueError("drift_rate + complement_rate + same_brand_rate must be < 1")
        if self.bot_event_share > 0 and self.n_bots < 1:
            raise ValueError("bot_event_share > 0 needs n_bots >= 1")

    @property
    def start_day(self) -> date:
        return date.fromisoformat(self.start_date)

    def day_format(self, day_index: int) -> str:
        return MIXED_CYCLE[day_index % len(MIXED_CYCLE)] if self.format == "mixed" else self.format

    def replace(self, **changes) -> MarketplaceConfig:
        return msgspec.structs.replace(self, **changes)


def ending_yesterday(n_days: int, today: date | None = None) -> str:
    """The start date that makes an ``n_days`` window end yesterday (UTC), not before EARLIEST_START.

    Demo data dated like this looks like a shop's recent past: stored histories are within the service's
    state TTL, event ages are hours to days as in training, and every day is a complete partition."""
    today = today or datetime.now(UTC).date()
    return max(today - timedelta(days=n_days), EARLIEST_START).isoformat()


PRESETS: dict[str, MarketplaceConfig] = {
    # Unit tests: big enough for the planted structure to be measurable, small enough for < 1 s.
    # Noise is raised so every kind of bad row shows up in a handful of days.
    "tiny": MarketplaceConfig(
        n_items=2_000,
        n_users=300,
        n_days=6,
        n_events=12_000,
        format="mixed",
        duplicate_rate=0.01,
        n_bots=1,
        bot_event_share=0.02,
        malformed_rate=0.01,
    ),
    # `make demo`: the whole pipeline (Spark, dbt, training, FAISS) has to finish in minutes on 2 cores.
    "demo": MarketplaceConfig(n_items=20_000, n_users=8_000, n_days=14, n_events=300_000, format="mixed"),
    # `relevance bench generate` and the pipeline benchmark: the 1M items / 10M events.
    "bench": MarketplaceConfig(
        n_items=1_000_000,
        n_users=400_000,
        n_days=28,
        n_events=10_000_000,
        format="parquet",
        new_items_per_day=0.01,
        n_bots=20,
    ),
}


def preset(name: str, **overrides) -> MarketplaceConfig:
    """A named preset with some fields replaced (``preset("demo", seed=7, format="csv")``)."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return msgspec.structs.replace(base, **overrides) if overrides else base
