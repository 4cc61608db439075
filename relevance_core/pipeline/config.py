"""Settings of the event pipeline, shared by the Spark jobs, the DuckDB reference and the Dagster config.

Plain frozen dataclasses so ``relevance_core`` stays free of Dagster; the assets map their ``dg.Config``
onto these. Every rule that changes *which* data ends up where (the gap, the look-back, the bot rule,
the split) lives here, so the Spark path and the reference cannot silently disagree about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from relevance_core.schemas import DEFAULT_EVENT_WEIGHTS

#: Tie-break order for events with the same timestamp: the purchase funnel (an impression is shown before
#: it is viewed, a view precedes a click, ...). Then item_id, then device_type: a total order, so the
#: session arrays are the same whichever engine or partitioning produced them.
EVENT_TYPE_ORDER: dict[str, int] = {
    "impression": 0,
    "view": 1,
    "click": 2,
    "add_to_favorites": 3,
    "add_to_cart": 4,
    "contact_seller": 5,
    "purchase": 6,
}
#: Rank for an event type not listed above (raw_events validates types, so this is only a safety net).
UNKNOWN_EVENT_RANK = 9


@dataclass(frozen=True)
class SessionConfig:
    """How events become sessions.

    * ``gap_minutes``: inactivity that ends a session. A gap of *exactly* the threshold does **not**
      split (a session ends only after more than 30 minutes of silence); it applies to explicit session
      ids too, because the ownership rule below needs every session to close.
    * ``lookback_days``: previous raw_events partitions read so that sessions crossing midnight are
      whole. A session is exact when it lasts less than this many days.
    * Bot rule, per known user and UTC day: more than ``max_events_per_day`` events that day, or more
      than ``max_events_per_minute`` in any one clock minute, flags the user-day as a bot; its events go
      to ``lake/quarantine/sessions/date=D/`` and are counted. ``None`` disables a limit.
    """

    gap_minutes: float = 30.0
    lookback_days: int = 1
    max_events_per_minute: int | None = 60
    max_events_per_day: int | None = 5000
    event_weights: dict[str, float] = field(
        default_factory=lambda: {str(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()}
    )

    def __post_init__(self) -> None:
        if self.gap_minutes <= 0:
            raise ValueError("gap_minutes must be > 0")
        if self.lookback_days < 1:
            raise ValueError("lookback_days must be >= 1 (sessions crossing midnight need the previous day)")
        if self.gap_minutes >= 24 * 60 * self.lookback_days:
            raise ValueError("gap_minutes must be shorter than the look-back window")

    @property
    def gap_us(self) -> int:
        return int(round(self.gap_minutes * 60 * 1_000_000))

    def weight_of(self, event_type: str) -> float:
        return float(self.event_weights.get(event_type, 0.0))


@dataclass(frozen=True)
class PairsConfig:
    """How sessions become (history → target) training pairs.

    * ``history_length`` (L): at most this many previous interactions per target.
    * ``horizon_days``: a known user's earlier sessions contribute history only if no older than this
      (measured from the target). Anonymous sessions only ever see their own session.
    * Targets: every event except impressions whose weight is ``>= min_target_weight``; impressions are
      never targets and never history (the user did not act on them).
    * Split by the target's UTC date: ``>= test_start`` → test, ``>= validation_start`` → validation,
      else train. ``None`` derives them from the newest raw_events partition: the last ``test_days`` are
      test, the ``validation_days`` before them validation, so the last days are never trained on.
    """

    history_length: int = 20
    horizon_days: float = 7.0
    min_target_weight: float = 0.0
    test_start: str | None = None
    validation_start: str | None = None
    test_days: int = 1
    validation_days: int = 1

    def __post_init__(self) -> None:
        if self.history_length < 1:
            raise ValueError("history_length must be >= 1")
        if self.horizon_days < 0:
            raise ValueError("horizon_days must be >= 0")

    @property
    def horizon_us(self) -> int:
        return int(round(self.horizon_days * 86400 * 1_000_000))

    def split_dates(self, last_event_day: str | date | None) -> tuple[date, date]:
        """``(validation_start, test_start)``; explicit dates win over the derived ones."""
        if self.test_start is not None:
            test = date.fromisoformat(self.test_start)
        elif last_event_day is not None:
            last = date.fromisoformat(str(last_event_day))
            test = last - timedelta(days=self.test_days - 1)
        else:
            raise ValueError("no raw_events partition to derive the split from; set test_start")
        if self.validation_start is not None:
            val = date.fromisoformat(self.validation_start)
        else:
            val = test - timedelta(days=self.validation_days)
        if val > test:
            raise ValueError(f"validation_start {val} is after test_start {test}")
        return val, test


def day_range(start: str | date, end: str | date) -> list[str]:
    """Every ISO day from ``start`` to ``end`` inclusive."""
    s, e = date.fromisoformat(str(start)), date.fromisoformat(str(end))
    return [(s + timedelta(days=i)).isoformat() for i in range((e - s).days + 1)]


def shift_day(day: str | date, days: int) -> str:
    return (date.fromisoformat(str(day)) + timedelta(days=days)).isoformat()
