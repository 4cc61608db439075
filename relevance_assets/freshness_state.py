"""The one wrapper around Dagster's (non-public) freshness read, so an upgrade breaks one function."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg


def read_freshness_states(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey]
) -> dict[dg.AssetKey, str]:
    """Freshness state per asset key: ``PASS`` / ``WARN`` / ``FAIL`` / ``UNKNOWN`` / ``NOT_APPLICABLE``.

    Keys the daemon has not evaluated yet are reported as ``UNKNOWN``.
    """
    records = instance.get_freshness_state_records(list(keys))
    return {key: (records[key].freshness_state.value if key in records else "UNKNOWN") for key in keys}
