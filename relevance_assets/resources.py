"""Resources shared by every asset: the artifact store and the one Spark session.

Assets stay thin: they ask these resources for a store or a SparkSession and call ``relevance_core``.
"""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_pyspark import LazyPySparkResource
from pydantic import PrivateAttr

from relevance_core.settings import relevance_home, s3_endpoint
from relevance_core.spark import spark_conf
from relevance_core.storage import ArtifactStore, S3Store, store_from_uri


class StorageResource(dg.ConfigurableResource):
    """The lake and the artifacts under one base URI: a local directory (default) or ``s3://bucket/prefix``.

    For S3 the client comes from dagster-aws's ``S3Resource`` so credentials, endpoint and region are
    configured the way Dagster users expect (an S3-compatible server works through ``endpoint_url``).
    """

    base_uri: str = relevance_home()
    s3_endpoint_url: str | None = None
    s3_region_name: str | None = None

    _store: ArtifactStore | None = PrivateAttr(default=None)

    def get_store(self) -> ArtifactStore:
        if self._store is None:
            if self.base_uri.startswith("s3://"):
                client = S3Resource(
                    endpoint_url=self.s3_endpoint_url, region_name=self.s3_region_name
                ).get_client()
                bucket, _, prefix = self.base_uri[5:].partition("/")
                self._store = S3Store(client, bucket, prefix)
            else:
                self._store = store_from_uri(self.base_uri)
        return self._store


def default_resources() -> dict[str, object]:
    """The embedded defaults; each is swapped for the scale-out part by config alone."""
    return {
        "storage": StorageResource(
            base_uri=relevance_home(),
            s3_endpoint_url=s3_endpoint(),
        ),
        "spark": LazyPySparkResource(spark_config=spark_conf()),
    }
