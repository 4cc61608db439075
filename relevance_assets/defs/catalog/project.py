"""The dbt project handle, the dbt resource, and a manifest that exists wherever the definitions load.

``@dbt_assets`` needs ``target/manifest.json`` when the module is imported. dagster-dbt's ``prepare_if_dev()``
only parses under ``dagster dev``; tests, CI, ``dagster definitions validate`` and a deployed code server
would otherwise fail or — worse — load a stale manifest. So ``ensure_manifest`` runs ``dbt parse`` when the
manifest is missing or older than any file of the project (a few seconds, once), under a file lock so two
processes loading the definitions at once do not write the same manifest together. ``make dbt-parse`` does the
same thing explicitly for CI images.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import re
import shutil
import sys
from pathlib import Path
from subprocess import check_output

from dagster_dbt import DbtCliResource, DbtProject
from packaging import version

#: The dbt project directory (profiles.yml lives inside it).
DBT_PROJECT_DIR = Path(__file__).resolve().parents[3] / "dbt_project"

#: Concurrency pool of every DuckDB writer. DuckDB allows one writing process per file; dagster.yaml sets
#: ``concurrency: pools: default_limit: 1``, so at most one step of this pool runs at a time across runs.
DUCKDB_WRITER_POOL = "duckdb_writer"

_PROJECT_SUFFIXES = {".sql", ".yml", ".yaml", ".md", ".csv"}
_PROJECT_SUBDIRS = ("models", "macros", "tests", "seeds", "snapshots", "analyses")


def dbt_executable() -> str:
    """The ``dbt`` beside the running interpreter (the project's venv), else the one on PATH.

    dagster-dbt looks for ``dbt`` on PATH only; ``.venv/bin/python -m pytest`` does not put ``.venv/bin``
    there, and a code server started by absolute path neither.
    """
    beside = Path(sys.executable).parent / "dbt"
    if beside.exists():
        return str(beside)
    found = shutil.which("dbt")
    if not found:
        raise RuntimeError("dbt is not installed: `pip install -e .` installs dbt-core and dbt-duckdb")
    return found


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


class RelevanceDbtCliResource(DbtCliResource):
    """dagster-dbt's resource, minus one network round trip per run.

    dagster-dbt learns the CLI's version by running ``dbt --version``, and dbt-core answers that by asking
    PyPI for its latest release (seconds here, more on a machine without internet), once per resource
    instance, i.e. once per run. This project runs dbt-core from its own venv (pinned in pyproject.toml), so
    the installed distribution's version is the CLI's version.
    """

    @property
    def _cli_version(self) -> version.Version:
        try:
            return version.parse(importlib.metadata.version("dbt-core"))
        except importlib.metadata.PackageNotFoundError:  # dbt Fusion or a dbt outside this venv
            return version.parse(
                re.search(
                    r"(\d+\.\d+\.\d+)", check_output([self.dbt_executable, "--version"]).decode()
                ).group(1)
            )


def dbt_resource() -> DbtCliResource:
    """The ``dbt`` resource every dbt asset uses."""
    return RelevanceDbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())


def _newest_source_mtime(project: DbtProject) -> float:
    root = Path(project.project_dir)
    files = [root / "dbt_project.yml", Path(project.profiles_dir or root) / "profiles.yml"]
    for sub in _PROJECT_SUBDIRS:
        if (root / sub).is_dir():
            files += [p for p in (root / sub).rglob("*") if p.suffix in _PROJECT_SUFFIXES]
    return max((p.stat().st_mtime for p in files if p.exists()), default=0.0)


def manifest_is_current(project: DbtProject = dbt_project) -> bool:
    """True when ``target/manifest.json`` exists and no project file changed after it was written."""
    manifest = Path(project.manifest_path)
    return manifest.exists() and manifest.stat().st_mtime >= _newest_source_mtime(project)


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """Run ``dbt parse`` unless the manifest is current; returns the manifest path."""
    if manifest_is_current(project):
        return Path(project.manifest_path)
    target = Path(project.project_dir) / project.target_path
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not manifest_is_current(project):  # another process may have parsed while we waited
                dbt_resource().cli(["parse", "--quiet"], target_path=project.target_path).wait()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return Path(project.manifest_path)
