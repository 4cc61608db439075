"""Where things live: one base URI, the same layout locally and on S3."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_HOME = "./.relevance"


def relevance_home() -> str:
    """``RELEVANCE_HOME`` or ``./.relevance``: a local directory or ``s3://bucket/prefix``."""
    return os.environ.get("RELEVANCE_HOME", DEFAULT_HOME)


def s3_endpoint() -> str | None:
    """``RELEVANCE_S3_ENDPOINT``: an S3-compatible server's URL (MinIO, moto); None: AWS itself."""
    return os.environ.get("RELEVANCE_S3_ENDPOINT") or None


@dataclass(frozen=True)
class LakeLayout:
    """Store keys of every dataset. Keys are relative to the store's base URI."""

    landing: str = "landing"
    catalog_landing: str = "landing/catalog"
    events_landing: str = "landing/events"
    lake: str = "lake"
    artifacts: str = "artifacts"

    def table(self, name: str) -> str:
        return f"{self.lake}/{name}"

    def partition(self, name: str, date: str) -> str:
        return f"{self.lake}/{name}/date={date}"

    def quarantine(self, name: str, date: str) -> str:
        return f"{self.lake}/quarantine/{name}/date={date}"

    def landing_day(self, date: str) -> str:
        return f"{self.events_landing}/date={date}"

    @property
    def bundles(self) -> str:
        return f"{self.artifacts}/bundles"

    @property
    def latest_pointer(self) -> str:
        return f"{self.artifacts}/LATEST"


LAYOUT = LakeLayout()
