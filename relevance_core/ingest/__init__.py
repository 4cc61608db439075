"""Landing zone → lake: validation with quarantine, exact accounting, atomic publish."""

from relevance_core.ingest.catalog import CatalogIngestConfig, ingest_catalog
from relevance_core.ingest.events import EventIngestConfig, ingest_events_day
from relevance_core.ingest.landing import LandingFileError, LandingMissingError
from relevance_core.ingest.report import AccountingError, IngestReport

__all__ = [
    "AccountingError",
    "CatalogIngestConfig",
    "EventIngestConfig",
    "IngestReport",
    "LandingFileError",
    "LandingMissingError",
    "ingest_catalog",
    "ingest_events_day",
]
