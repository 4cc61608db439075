"""Daily partitions shared by every event-derived asset (raw_events, sessions, training_pairs)."""

from __future__ import annotations

import os

import dagster as dg

#: First day of the event partitions; generated marketplaces start on or after it.
PARTITIONS_START = os.environ.get("RELEVANCE_PARTITIONS_START", "2026-01-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
