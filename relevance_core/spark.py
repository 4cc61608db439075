"""The one way relevance builds a SparkSession, shared by the Dagster resource, the CLI and the tests.

Defaults suit a 2-core machine (few shuffle partitions, no UI); every key can be overridden, and
``spark.master`` pointed at a cluster runs the same code unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess

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


class JavaMissingError(RuntimeError):
    pass


def check_java(min_major: int = 17) -> int:
    """Spark 4 needs Java 17+; fail with the fix rather than a JVM stack trace."""
    java = shutil.which("java")
    if java is None and os.environ.get("JAVA_HOME"):
        java = os.path.join(os.environ["JAVA_HOME"], "bin", "java")
    if not java:
        raise JavaMissingError(
            f"Java {min_major}+ is required by Spark. Install it: apt-get install -y openjdk-17-jre-headless"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    import re

    m = re.search(r'version "(\d+)', out)
    major = int(m.group(1)) if m else 0
    if major < min_major:
        raise JavaMissingError(
            f"Java {min_major}+ is required by Spark, found {major}. "
            "Install it: apt-get install -y openjdk-17-jre-headless"
        )
    return major


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
