"""Ingestion assets: the landing zone's files become validated lake tables (thin wrappers over
``relevance_core.ingest``, so the CLI and the tests run exactly the same code)."""

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from relevance_assets.partitions import daily_partitions
from relevance_assets.resources import StorageResource
from relevance_core.ingest import IngestReport, ingest_catalog, ingest_events_day
from relevance_core.ingest.catalog import REASONS as ITEM_REASONS
from relevance_core.ingest.events import REASONS as EVENT_REASONS

GROUP = "ingestion"
#: Metadata keys the checks read back; constants so a rename cannot silently break a check.
QUARANTINE_RATE = "quarantine_rate"
ROWS_IN = "rows_in"


def report_metadata(report: IngestReport, reasons: tuple[str, ...]) -> dict[str, dg.MetadataValue]:
    """Every count as its own metadata entry (Dagster plots numeric entries over partitions/runs), one
    entry per known reason even when zero, so a reason that starts appearing is visible as a rise."""
    meta: dict[str, dg.MetadataValue] = {
        "summary": dg.MetadataValue.text(report.summary()),
        ROWS_IN: dg.MetadataValue.int(report.rows_in),
        "accepted": dg.MetadataValue.int(report.accepted),
        "quarantined": dg.MetadataValue.int(report.quarantined),
        "duplicates_removed": dg.MetadataValue.int(report.duplicates_removed),
        QUARANTINE_RATE: dg.MetadataValue.float(report.quarantine_rate),
        "dagster/row_count": dg.MetadataValue.int(report.accepted),
        "empty_input": dg.MetadataValue.bool(report.empty),
        "landing_files": dg.MetadataValue.int(len(report.files)),
        "skipped_files": dg.MetadataValue.json(report.skipped_files),
        "quarantine_reasons": dg.MetadataValue.json(report.reasons),
        "output": dg.MetadataValue.text(report.output_key),
        "quarantine": dg.MetadataValue.text(report.quarantine_key),
        "seconds": dg.MetadataValue.float(report.seconds),
    }
    if report.landing_fingerprint is not None:
        # the same value the lake records for the landing sensor: shows which landing state a run ingested
        meta["landing_fingerprint"] = dg.MetadataValue.text(report.landing_fingerprint)
    for reason in sorted(set(reasons) | set(report.reasons)):
        meta[f"quarantined_{reason}"] = dg.MetadataValue.int(report.reasons.get(reason, 0))
    return meta


@dg.asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds={"spark", "parquet"},
)
def raw_events(
    context: dg.AssetExecutionContext, storage: StorageResource, spark: LazyPySparkResource
) -> dg.MaterializeResult:
    """One day of interaction events from the landing zone, validated on Spark: schema, UTF-8, known event
    types, required item id, parseable timestamps inside the day. Refused rows go to
    `lake/quarantine/raw_events/date=D/` with their reason (never dropped silently); exact duplicates are
    removed and counted. rows in = accepted + quarantined + duplicates removed, always.

    Re-running a day replaces its partition atomically, so a late landing file is picked up by simply
    materializing the day again. An empty landing day yields an empty partition; a missing one fails.
    """
    report = ingest_events_day(spark.spark_session, storage.get_store(), context.partition_key)
    context.log.info(report.summary())
    return dg.MaterializeResult(metadata=report_metadata(report, EVENT_REASONS))


@dg.asset(group_name=GROUP, kinds={"duckdb", "parquet"})
def items(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The catalog: every snapshot in `landing/catalog/` validated (item id and title required, price
    numeric and non-negative, availability a boolean, creation time parseable) and reduced to the newest
    version of each listing. Refused rows go to `lake/quarantine/items/` with their reason.

    Not partitioned: a listing's current state is what recommendations need, and a snapshot replaces it.
    """
    report = ingest_catalog(storage.get_store())
    context.log.info(report.summary())
    return dg.MaterializeResult(metadata=report_metadata(report, ITEM_REASONS))
