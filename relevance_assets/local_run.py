"""Runs of the real code location in this process: the demo, the session benchmark and the tests drive
the graph through this one class, so none of them keeps its own copy of an asset's body or wiring.

It executes the Definitions' implicit asset job (every asset, its checks, the resources and policies
``relevance_assets.definitions`` declares) for a selection of assets, one run at a time on one Dagster
instance, the way a backfill from the UI would: the ingestion per daily partition, then ``sessions`` and
``training_pairs`` over the partition range in one run, then whatever is downstream.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import dagster as dg


class LocalRun:
    """``home``: the store the code location's resources use (``RELEVANCE_HOME``). ``resources``
    replaces some of them for these runs (the session benchmark's Spark settings, say)."""

    def __init__(
        self,
        home: str,
        *,
        instance: dg.DagsterInstance | None = None,
        resources: Mapping[str, Any] | None = None,
        log_level: str | None = None,
        log: Callable[[str], None] = print,
    ):
        from relevance_assets.definitions import build_defs

        os.environ["RELEVANCE_HOME"] = home  # the code location's resources read it when loaded
        self.defs = build_defs(resources)
        self.job = self.defs.resolve_implicit_global_asset_job_def()
        if instance is None:
            instance = (
                dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
            )
        self.instance = instance
        self.loggers = {"console": {"config": {"log_level": log_level}}} if log_level else {}
        self.log = log
        #: step name -> success, in run order
        self.results: dict[str, bool] = {}

    def asset_names(self) -> list[str]:
        return sorted(k.to_user_string() for k in self.defs.resolve_asset_graph().get_all_asset_keys())

    def execute(
        self,
        name: str,
        assets: Iterable[str],
        *,
        ops: Mapping[str, Mapping[str, Any]] | None = None,
        quiet: bool = False,
        **kwargs: Any,
    ) -> dg.ExecuteInProcessResult:
        """One run materializing ``assets`` (``ops``: each op's run config). Logs one line, and on failure
        each failed step and failed check."""
        # no run config at all unless there is some: a partitioned run then gets its partition's own
        run_config: dict[str, Any] = {}
        if ops:
            run_config["ops"] = {op: {"config": dict(cfg)} for op, cfg in ops.items()}
        if self.loggers:
            run_config["loggers"] = self.loggers
        r = self.job.execute_in_process(
            instance=self.instance,
            asset_selection=[dg.AssetKey(a) for a in assets],
            raise_on_error=False,
            run_config=run_config or None,
            **kwargs,
        )
        self.results[name] = r.success
        if not (quiet and r.success):
            self.log(f"{name}: {'ok' if r.success else 'FAILED'}")
        if not r.success:
            for ev in r.all_events:
                if ev.event_type_value == "STEP_FAILURE" or (
                    ev.event_type_value == "ASSET_CHECK_EVALUATION" and not ev.event_specific_data.passed
                ):
                    self.log(f"  {ev.step_key}: {(ev.message or '')[:600]}")
        return r

    def execute_range(self, name: str, assets: Iterable[str], days: list[str], **kwargs: Any):
        """One run over the partition range ``days[0]..days[-1]`` (a backfill's single run)."""
        tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
        return self.execute(name, assets, tags=tags, **kwargs)


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """Materialization metadata of ``asset`` in a run's result, as plain values."""
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key.to_user_string() == asset:
            return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return {}
