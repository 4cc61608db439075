"""The Dagster code location: every definition under ``relevance_assets/defs``, the shared resources, and
the freshness policies / automation declared in one place (``relevance_assets.automation``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from relevance_assets.automation import apply_policies, automation_sensor
from relevance_assets.resources import default_resources


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs()


def build_defs(resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The code location, with some of the default resources replaced (``resources``; the session
    benchmark's Spark settings, say)."""
    folder = dg.load_from_defs_folder(project_root=Path(__file__).resolve().parent.parent)
    # In-process executor: every step of a run shares the run's one SparkSession (a JVM start costs
    # ~30 s here; a process per step would pay it per step). Spark and torch parallelise inside a step.
    merged = dg.Definitions.merge(
        folder,
        dg.Definitions(
            resources=default_resources() | dict(resources or {}),
            sensors=[automation_sensor],
            executor=dg.in_process_executor,
        ),
    )
    return apply_policies(merged)
