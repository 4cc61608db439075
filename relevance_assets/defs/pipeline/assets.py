"""``sessions`` and ``training_pairs``: thin Dagster wrappers around ``relevance_core.pipeline``.

Both are daily and take a partition *range* in one run (``BackfillPolicy.single_run``): a backfill of a
month is one Spark job, not thirty JVM round trips. The partition mappings declare the look-back the
code reads, so the UI's lineage and the automation see the real dependencies.
"""

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from relevance_assets.config import build_config, core_fields, to_core
from relevance_assets.partitions import daily_partitions
from relevance_assets.resources import StorageResource
from relevance_core.pipeline.config import PairsConfig, SessionConfig
from relevance_core.pipeline.pairs import build_training_pairs, history_days_needed
from relevance_core.pipeline.sessionize import build_sessions

#: the look-back the partition mappings declare (the defaults' reach)
_DEFAULT_SESSION = SessionConfig()
_DEFAULT_PAIRS = PairsConfig()

#: Run config of ``sessions``: ``SessionConfig``'s fields and defaults
SessionsConfig = build_config(
    "SessionsConfig",
    "Run config of ``sessions`` (``relevance_core.pipeline.config.SessionConfig``).",
    core_fields(SessionConfig),
)


class TrainingPairsConfig(
    build_config(
        "_TrainingPairsFields",
        "",
        core_fields(PairsConfig)
        | core_fields(SessionConfig, prefix="session_", only=("gap_minutes", "lookback_days")),
    )
):
    """Run config of ``training_pairs`` (``PairsConfig``); ``session_*`` must match what ``sessions`` ran with."""

    def to_core(self) -> tuple[PairsConfig, SessionConfig]:
        return to_core(self, PairsConfig), to_core(self, SessionConfig, prefix="session_")


@dg.asset(
    key="sessions",
    group_name="pipeline",
    kinds={"spark", "parquet"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        dg.AssetDep(
            "raw_events",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-_DEFAULT_SESSION.lookback_days, allow_nonexistent_upstream_partitions=True
            ),
        )
    ],
)
def sessions(
    context: dg.AssetExecutionContext,
    config: SessionsConfig,
    storage: StorageResource,
    spark: LazyPySparkResource,
) -> dg.MaterializeResult:
    """Validated events cut into sessions (explicit session id, else a 30-minute inactivity gap), bots
    quarantined. A session belongs to the day it closes (last event + gap), so sessions crossing midnight
    are whole and written once; the previous day is read as look-back. See
    ``relevance_core.pipeline.sessionize``."""
    keys = context.partition_key_range
    result = build_sessions(
        spark.spark_session, storage.get_store(), keys.start, keys.end, to_core(config, SessionConfig)
    )
    context.log.info(
        f"sessions {keys.start}..{keys.end}: {result.sessions} sessions, {result.events} events, "
        f"{result.bot_events} bot events quarantined"
    )
    return dg.MaterializeResult(
        metadata={
            "sessions": dg.MetadataValue.int(result.sessions),
            "events": dg.MetadataValue.int(result.events),
            "bot_events_filtered": dg.MetadataValue.int(result.bot_events),
            "bot_user_days": dg.MetadataValue.int(result.bot_user_days),
            "mean_session_length": dg.MetadataValue.float(round(result.mean_session_length, 4)),
            "sessions_at_lookback_edge": dg.MetadataValue.int(result.sessions_at_lookback_edge),
            "sessions_per_day": dg.MetadataValue.json(result.sessions_per_day),
            "input_days": dg.MetadataValue.json(result.input_days),
            "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        }
    )


@dg.asset(
    key="training_pairs",
    group_name="pipeline",
    kinds={"spark", "parquet"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        dg.AssetDep(
            "sessions",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-history_days_needed(_DEFAULT_PAIRS, _DEFAULT_SESSION),
                allow_nonexistent_upstream_partitions=True,
            ),
        )
    ],
)
def training_pairs(
    context: dg.AssetExecutionContext,
    config: TrainingPairsConfig,
    storage: StorageResource,
    spark: LazyPySparkResource,
) -> dg.MaterializeResult:
    """History → target examples for the two-tower model: up to L previous interactions (within the
    session and, for known users, their earlier sessions within the horizon), impressions excluded, with a
    time-based train/validation/test split (the last days are never trained on). Schema and reader:
    ``relevance_core.pipeline.pairs``."""
    keys = context.partition_key_range
    pcfg, scfg = config.to_core()
    result = build_training_pairs(spark.spark_session, storage.get_store(), keys.start, keys.end, pcfg, scfg)
    context.log.info(
        f"training_pairs {keys.start}..{keys.end}: {result.pairs} pairs {result.pairs_per_split}"
    )
    metadata = {
        "pairs": dg.MetadataValue.int(result.pairs),
        "mean_history_length": dg.MetadataValue.float(round(result.mean_history_length, 4)),
        "validation_start": dg.MetadataValue.text(result.validation_start),
        "test_start": dg.MetadataValue.text(result.test_start),
        "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
    }
    for split, n in result.pairs_per_split.items():
        metadata[f"pairs_{split}"] = dg.MetadataValue.int(n)
    return dg.MaterializeResult(metadata=metadata)
