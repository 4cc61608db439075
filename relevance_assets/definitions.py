"""The Dagster code location: every definition under ``relevance_assets/defs`` plus the shared resources."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from relevance_assets.resources import default_resources


@dg.definitions
def defs() -> dg.Definitions:
    folder = dg.load_from_defs_folder(project_root=Path(__file__).resolve().parent.parent)
    return dg.Definitions.merge(folder, dg.Definitions(resources=default_resources()))
