"""Data-quality gates on ingestion: a day (or catalog) whose quarantine rate passes a threshold points at a
broken export upstream, and training on what is left would silently skew the model, so the check blocks
what depends on it until a person looks."""

import dagster as dg

from relevance_assets.defs.ingestion.assets import QUARANTINE_RATE, ROWS_IN
from relevance_assets.partitions import daily_partitions

# Asset keys, not the AssetsDefinitions: a module-level import of those would make the defs-folder loader
# find each asset twice.
RAW_EVENTS = dg.AssetKey("raw_events")
ITEMS = dg.AssetKey("items")
RAW_EVENTS_QUARANTINE_CHECK = "quarantine_rate_below_threshold"
ITEMS_QUARANTINE_CHECK = "quarantine_rate_below_threshold"
DEFAULT_MAX_QUARANTINE_RATE = 0.05


class QuarantineRateConfig(dg.Config):
    """``max_quarantine_rate``: the share of refused rows above which the check fails (default 5%: the
    synthetic marketplace's planted noise stays well below it; a broken export goes far above)."""

    max_quarantine_rate: float = DEFAULT_MAX_QUARANTINE_RATE


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    if not records:
        return {}
    materialization = records[0].asset_materialization
    return dict(materialization.metadata) if materialization else {}


def _evaluate(metadata: dict, threshold: float, what: str) -> dg.AssetCheckResult:
    if QUARANTINE_RATE not in metadata:
        return dg.AssetCheckResult(passed=False, description=f"no materialization of {what} to check")
    rate = float(metadata[QUARANTINE_RATE].value)
    rows_in = int(metadata[ROWS_IN].value) if ROWS_IN in metadata else 0
    passed = rate <= threshold
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            QUARANTINE_RATE: dg.MetadataValue.float(rate),
            "max_quarantine_rate": dg.MetadataValue.float(threshold),
            ROWS_IN: dg.MetadataValue.int(rows_in),
        },
        description=(
            f"{what}: quarantine rate {rate:.2%} {'<=' if passed else '>'} threshold {threshold:.2%}"
        ),
    )


@dg.asset_check(
    asset=RAW_EVENTS,
    name=RAW_EVENTS_QUARANTINE_CHECK,
    blocking=True,
    partitions_def=daily_partitions,
    description="Fails when the day's quarantined share of rows passes max_quarantine_rate (default 5%).",
)
def raw_events_quarantine_rate(
    context: dg.AssetCheckExecutionContext, config: QuarantineRateConfig
) -> dg.AssetCheckResult:
    partition = context.partition_key if context.has_partition_key else None
    metadata = _latest_metadata(context.instance, RAW_EVENTS, partition)
    return _evaluate(metadata, config.max_quarantine_rate, f"raw_events {partition or ''}".strip())


@dg.asset_check(
    asset=ITEMS,
    name=ITEMS_QUARANTINE_CHECK,
    blocking=True,
    description="Fails when the catalog's quarantined share of rows passes max_quarantine_rate (default 5%).",
)
def items_quarantine_rate(
    context: dg.AssetCheckExecutionContext, config: QuarantineRateConfig
) -> dg.AssetCheckResult:
    return _evaluate(_latest_metadata(context.instance, ITEMS, None), config.max_quarantine_rate, "items")
