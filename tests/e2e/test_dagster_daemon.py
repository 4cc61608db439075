"""The Dagster webserver and daemon, for real: a materialization launched through GraphQL runs, freshness
turns PASS, and a new landing file makes the sensor launch the right partition.

Processes run on 127.0.0.1 with a temporary DAGSTER_HOME and RELEVANCE_HOME and are stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import httpx
import pytest
from dagster_graphql import DagsterGraphQLClient
from support.service_process import free_port, wait_for

from relevance_assets.freshness_state import read_freshness_states
from relevance_core.storage import LocalStore

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture()
def dagster_stack(tmp_path):
    home = tmp_path / "relevance_home"
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        f"""
storage:
  sqlite:
    base_dir: {dagster_home}/storage
run_coordinator:
  module: dagster._core.run_coordinator.queued_run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1
telemetry:
  enabled: false
"""
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "RELEVANCE_HOME": str(home),
        "FRESHNESS_DAEMON_INTERVAL_SECONDS": "3",
        "PYTHONUNBUFFERED": "1",
    }
    # Generate elsewhere, then expose only the first day (and the catalog) in the landing zone: the
    # second day is "dropped" by the test later, so the sensor's reaction to it can be observed.
    generated = tmp_path / "generated"
    subprocess.run(
        [str(BIN / "relevance"), "generate", "--preset", "tiny", "--days", "3", "--out", str(generated)],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
    )
    gen_store = LocalStore(generated)
    days = sorted(d.split("=", 1)[1] for d in gen_store.list_dirs("landing/events"))
    shutil.copytree(generated / "landing" / "catalog", home / "landing" / "catalog")
    shutil.copytree(
        generated / "landing" / "events" / f"date={days[0]}", home / "landing" / "events" / f"date={days[0]}"
    )
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [
        subprocess.Popen(
            [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=open(logs / "webserver.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
        subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=ROOT,
            env=env,
            stdout=open(logs / "daemon.log", "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
    ]

    def ready():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 180, step=2.0, what="dagster-webserver to answer")
        yield {
            "port": port,
            "home": home,
            "generated": generated,
            "days": days,
            "dagster_home": dagster_home,
            "logs": logs,
            "env": env,
        }
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _instance(dagster_home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(dagster_home))


def test_graphql_launch_freshness_and_landing_sensor(dagster_stack):
    port, home, dagster_home = dagster_stack["port"], dagster_stack["home"], dagster_stack["dagster_home"]
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    store = LocalStore(home)
    days = dagster_stack["days"]
    first_day = days[0]

    run_id = client.submit_job_execution(
        "__ASSET_JOB",
        repository_location_name="relevance",
        asset_selection=[["raw_events"], ["sessions"], ["training_pairs"]],
        tags={"dagster/partition": first_day},
    )

    def finished():
        status = client.get_run_status(run_id)
        return status if status.value in ("SUCCESS", "FAILURE", "CANCELED") else None

    status = wait_for(finished, 420, step=3, what="the GraphQL-launched run to finish")
    assert status.value == "SUCCESS", (dagster_stack["logs"] / "daemon.log").read_text()[-4000:]
    assert store.dir_exists(f"lake/raw_events/date={first_day}")
    assert store.dir_exists(f"lake/training_pairs/date={first_day}")

    keys = [dg.AssetKey("raw_events"), dg.AssetKey("sessions"), dg.AssetKey("training_pairs")]
    with _instance(dagster_home) as instance:
        states = wait_for(
            lambda: (
                (s := read_freshness_states(instance, keys)) and all(v == "PASS" for v in s.values()) and s
            ),
            120,
            step=2.0,
            what="freshness to turn PASS",
        )
    assert set(states.values()) == {"PASS"}

    # A new landing file for a day not yet ingested: the sensor launches exactly that partition.
    new_day = days[1]
    with _instance(dagster_home) as instance:
        before = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": new_day}))
        assert not before, "nothing may run for a day that has not landed"
        shutil.copytree(
            dagster_stack["generated"] / "landing" / "events" / f"date={new_day}",
            home / "landing" / "events" / f"date={new_day}",
        )

        def sensor_run():
            runs = instance.get_runs(
                filters=dg.RunsFilter(tags={"dagster/partition": new_day, "relevance/trigger": "landing"})
            )
            return runs[0] if runs else None

        run = wait_for(sensor_run, 240, step=3, what="the landing sensor to launch the new day's run")
        assert run.job_name == "ingest_day"

        def done():
            r = instance.get_run_by_id(run.run_id)
            return r if r.is_finished else None

        finished_run = wait_for(done, 900, step=3, what="the sensor's run to finish")
        assert finished_run.status == dg.DagsterRunStatus.SUCCESS
    assert store.dir_exists(f"lake/raw_events/date={new_day}")
