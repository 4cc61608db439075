"""The one way relevance builds a SparkSession, shared by the Dagster resource, the CLI and the tests.

Defaults suit a 2-core machine (few shuffle partitions, no UI); every key can be overridden, and
``spark.master`` pointed at a cluster runs the same code unchanged.
"""

from __future__ import annotations

import os

DEFAULT_SPARK_CONF: dict[str, str] = {
    "spark.master": "local[*]",
    "spark.app.name": "relevance",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    "spark.driver.memory": "4g",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.ansi.enabled": "false",
    "spark.log.level": "WARN",
}


def spark_conf(overrides: dict[str, str] | None = None) -> dict[str, str]:
    conf = dict(DEFAULT_SPARK_CONF)
    if os.environ.get("RELEVANCE_SPARK_MASTER"):
        conf["spark.master"] = os.environ["RELEVANCE_SPARK_MASTER"]
    conf.update(overrides or {})
    return conf


def get_spark(overrides: dict[str, str] | None = None):
    """Get (or reuse) the process's SparkSession with relevance's defaults."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for k, v in spark_conf(overrides).items():
        builder = builder.config(k, v)
    return builder.getOrCreate()
