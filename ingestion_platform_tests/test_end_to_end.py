"""The code location as users meet it: a real dagster-webserver and dagster-daemon load workspace.yaml, runs are
launched over GraphQL and run in their own processes against the BigQuery emulator and PostgreSQL, and the daemon's
automation sensor starts what depends on them. One stack per module: starting it costs more than the tests."""

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster_graphql import DagsterGraphQLClient
from google.cloud import bigquery

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.bigquery import BigQueryEmulator
from ingestion_platform.sandbox.ga4_export import seed_ga4_export

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2024, 5, 1)
AVAILABILITY = dg.AssetKey(["ga4", "availability"])


@dataclass(frozen=True)
class Stack:
    client: DagsterGraphQLClient
    home: Path
    warehouse_url: str
    log: Path

    def launch_ga4_day(self) -> str:
        return self.client.submit_job_execution(
            "ga4_events",
            repository_location_name="ingestion_platform",
            repository_name="__repository__",
            # One run worker process instead of one per step keeps the suite fast; launch, queue and run are real.
            run_config={"execution": {"config": {"in_process": {}}}},
            tags={
                "dagster/partition": f"{DAY}|acme",
                "dagster/partition/date": str(DAY),
                "dagster/partition/tenant": "acme",
            },
        )

    def wait_for_run(self, run_id: str, timeout: float = 180) -> dg.DagsterRunStatus:
        deadline = time.monotonic() + timeout
        status = self.client.get_run_status(run_id)
        while status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) and time.monotonic() < deadline:
            time.sleep(1)
            status = self.client.get_run_status(run_id)
        return status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(log.read_text()) from None
            time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    bigquery_emulator: BigQueryEmulator,
    bigquery_client: bigquery.Client,
    postgres_server_url: str,
) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("e2e")
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    database = f"e2e_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    warehouse_url = sa.make_url(postgres_server_url).set(database=database).render_as_string(hide_password=False)
    dataset = f"analytics_{uuid.uuid4().hex[:8]}"
    seed_ga4_export(bigquery_client, "e2e-analytics", dataset, [DAY], seed="e2e")
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": {"acme": {"ga4": {"project": "e2e-analytics", "dataset": dataset}}}}))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "WAREHOUSE_URL": warehouse_url,
        "INGESTION_TENANTS_FILE": str(tenants),
        "BIGQUERY_EMULATOR_HOST": bigquery_emulator.rest_url,
    }
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("tenant", ["acme"])
    # The webserver takes GraphQL launches; the daemon dequeues them (dagster.yaml limits concurrent runs) and runs
    # the sensors, the automation sensor among them, with their default status: nothing is switched on by hand.
    commands = [
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
    ]
    log_path = tmp_path / "dagster.log"
    with log_path.open("w") as log:
        processes = [
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT) for command in commands
        ]
        try:
            _wait_for_port(port, processes[0], log_path)
            yield Stack(DagsterGraphQLClient("127.0.0.1", port_number=port), home, warehouse_url, log_path)
        finally:
            for running in processes:
                running.terminate()
            for running in processes:
                running.wait(timeout=30)
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.dispose()


@pytest.fixture(scope="module")
def ga4_run(stack: Stack) -> dg.DagsterRun:
    """One GA4 day launched over GraphQL, shared by the tests that look at what it did and what followed it."""
    run_id = stack.launch_ga4_day()
    assert stack.wait_for_run(run_id) == dg.DagsterRunStatus.SUCCESS, stack.log.read_text()[-5000:]
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        run = instance.get_run_by_id(run_id)
    assert run is not None
    return run


def test_a_run_launched_over_graphql_loads_ga4_events(stack: Stack, ga4_run: dg.DagsterRun) -> None:
    warehouse = WarehouseResource(url=stack.warehouse_url)
    assert (
        warehouse.scalar("SELECT count(*) FROM ga4.page_view WHERE tenant_id = 'acme' AND event_date = :d", {"d": DAY})
        > 0
    )
    assert warehouse.scalar("SELECT count(DISTINCT provenance) FROM ga4.purchase") == 1


def test_the_daemon_refreshes_availability_by_automation_after_a_ga4_run(stack: Stack, ga4_run: dg.DagsterRun) -> None:
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        finished = instance.get_run_record_by_id(ga4_run.run_id)
        assert finished is not None and finished.end_time is not None
        # The automation sensor ticks every 30 s; its run then starts in its own process.
        deadline = time.monotonic() + 150
        refreshed = None
        while refreshed is None and time.monotonic() < deadline:
            event = instance.get_latest_materialization_event(AVAILABILITY)
            if event is not None and event.timestamp > finished.end_time:
                refreshed = event
            else:
                time.sleep(2)
        assert refreshed is not None, "ga4/availability was not materialized after the GA4 run"
        run = instance.get_run_by_id(refreshed.run_id)
        assert run is not None
        assert run.tags.get("dagster/sensor_name") == "automation"
        assert run.tags.get("dagster/from_automation_condition") == "true"
    warehouse = WarehouseResource(url=stack.warehouse_url)
    days = warehouse.scalar(
        "SELECT days_loaded FROM ga4.availability WHERE tenant_id = 'acme' AND event_name = 'page_view'"
    )
    assert days == 1
