"""The code location as users meet it: a real dagster-webserver and dagster-daemon load workspace.yaml, runs are
launched over GraphQL and run in their own processes (the forkserver executor, one process per step) against the
BigQuery emulator, an SFTP server and a fresh PostgreSQL database, and the daemon's sensors start what depends on
them. One stack per module: starting it costs more than the tests."""

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
import yaml
from dagster_graphql import DagsterGraphQLClient
from google.cloud import bigquery

from ingestion_platform.defs.sftp.assets import sftp_report_assets
from ingestion_platform.resources.sftp import SFTPResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.bigquery import BigQueryEmulator
from ingestion_platform.sandbox.crm_reports import users_report
from ingestion_platform.sandbox.ga4_export import seed_ga4_export
from ingestion_platform.sandbox.sftp_server import run_sftp_server

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2024, 5, 1)
AVAILABILITY = dg.AssetKey(["ga4", "availability"])
# The daemon's SFTP sensors look back 7 days from the real clock, which a test cannot fix in another process.
SFTP_LOADED_DAY = datetime.now(UTC).date() - timedelta(days=1)
SFTP_NEW_DAY = SFTP_LOADED_DAY - timedelta(days=1)
SFTP_MTIME = 1_700_000_000
SFTP_PASSWORD_ENV = "E2E_SFTP_PASSWORD"
SFTP_PASSWORD = "e2e-secret"


@dataclass(frozen=True)
class Stack:
    client: DagsterGraphQLClient
    graphql_url: str
    home: Path
    warehouse_url: str
    log: Path
    sftp_folder: Path

    def launch_ga4_day(self) -> str:
        """The run the operators launch, with the code location's default executor: a step per process."""
        return self.client.submit_job_execution(
            "ga4_events",
            repository_location_name="ingestion_platform",
            repository_name="__repository__",
            tags={
                "dagster/partition": f"{DAY}|acme",
                "dagster/partition/date": str(DAY),
                "dagster/partition/tenant": "acme",
            },
        )

    def sensor_ticks(self, sensor_name: str) -> list[dict[str, Any]]:
        """The sensor's ticks, newest first, as the UI shows them."""
        query = """query Ticks($selector: SensorSelector!) {
          sensorOrError(sensorSelector: $selector) {
            __typename
            ... on Sensor { sensorState { ticks(limit: 20) { status cursor runIds skipReason error { message } } } }
          }
        }"""
        selector = {
            "repositoryLocationName": "ingestion_platform",
            "repositoryName": "__repository__",
            "sensorName": sensor_name,
        }
        answer = httpx.post(self.graphql_url, json={"query": query, "variables": {"selector": selector}}, timeout=30)
        answer.raise_for_status()
        sensor = answer.json()["data"]["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        return sensor["sensorState"]["ticks"]

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
    try:
        dataset = f"analytics_{uuid.uuid4().hex[:8]}"
        seed_ga4_export(bigquery_client, "e2e-analytics", dataset, [DAY], seed="e2e")
        sftp_root = tmp_path / "sftp"
        sftp_folder = sftp_root / "acme"
        sftp_folder.mkdir(parents=True)
        for day in (SFTP_LOADED_DAY, SFTP_NEW_DAY):
            path = sftp_folder / f"users_{day:%Y%m%d}.csv"
            path.write_bytes(users_report(day, seed="e2e"))
            os.utime(path, (SFTP_MTIME, SFTP_MTIME))
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
        port = _free_port()
        with (
            run_sftp_server(sftp_root, {"acme": SFTP_PASSWORD}, tmp_path / "sftp_host_key") as sftp,
            pytest.MonkeyPatch.context() as monkeypatch,
        ):
            monkeypatch.setenv(SFTP_PASSWORD_ENV, SFTP_PASSWORD)
            sftp_settings = {
                "host": sftp.host,
                "port": sftp.port,
                "username": "acme",
                "password_env": SFTP_PASSWORD_ENV,
                "host_keys": [sftp.host_key_line],
                "remote_dir": "/acme",
            }
            tenants = tmp_path / "tenants.yaml"
            tenants.write_text(
                yaml.safe_dump(
                    {
                        "tenants": {
                            "acme": {"ga4": {"project": "e2e-analytics", "dataset": dataset}, "sftp": sftp_settings}
                        }
                    }
                )
            )
            env = {
                **os.environ,
                "DAGSTER_HOME": str(home),
                "WAREHOUSE_URL": warehouse_url,
                "INGESTION_TENANTS_FILE": str(tenants),
                "BIGQUERY_EMULATOR_HOST": bigquery_emulator.rest_url,
            }
            with dg.DagsterInstance.from_config(str(home)) as instance:
                instance.add_dynamic_partitions("tenant", ["acme"])
                # As the demo loads a report before `dev` starts the daemon: the daemon's sensors then start with no
                # cursor, and only the asset's own materialization says that this file is loaded.
                users = next(a for a in sftp_report_assets if a.key.path == ["sftp", "users"])
                loaded = dg.materialize(
                    [users],
                    partition_key=f"{SFTP_LOADED_DAY}|acme",
                    instance=instance,
                    resources={
                        "sftp": SFTPResource(),
                        "warehouse": WarehouseResource(url=warehouse_url),
                        "tenants": TenantsResource(path=str(tenants)),
                    },
                )
                assert loaded.success
            yield from _run_stack(port, env, home, warehouse_url, tmp_path, sftp_folder)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.dispose()


def _run_stack(
    port: int, env: dict[str, str], home: Path, warehouse_url: str, tmp_path: Path, sftp_folder: Path
) -> Iterator[Stack]:
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
            yield Stack(
                DagsterGraphQLClient("127.0.0.1", port_number=port),
                f"http://127.0.0.1:{port}/graphql",
                home,
                warehouse_url,
                log_path,
                sftp_folder,
            )
        finally:
            for running in processes:
                running.terminate()
            for running in processes:
                running.wait(timeout=30)


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


def test_the_daemon_sftp_sensor_requests_only_files_not_already_loaded(stack: Stack) -> None:
    """A fresh sensor cursor meets one file the asset already loaded and one it did not: it requests only the latter.

    Both files are stable from the first listing, so the second tick finds both complete; the loaded one is left out
    because `sftp/users`' materialization recorded it with the server's size and mtime.
    """
    loaded_name = f"users_{SFTP_LOADED_DAY:%Y%m%d}.csv"
    new_name = f"users_{SFTP_NEW_DAY:%Y%m%d}.csv"
    loaded_size = (stack.sftp_folder / loaded_name).stat().st_size
    deadline = time.monotonic() + 180  # the sensor ticks once a minute; its first tick only records the listing
    requesting = None
    while requesting is None and time.monotonic() < deadline:
        for tick in stack.sensor_ticks("sftp_users_files"):
            assert tick["error"] is None, tick["error"]
            state = json.loads(tick["cursor"] or "{}").get("acme", {})
            if state.get(loaded_name, [None, None, False])[2]:
                requesting = tick
        if requesting is None:
            time.sleep(2)
    assert requesting is not None, f"no tick found both files complete\n{stack.log.read_text()[-5000:]}"
    state = json.loads(requesting["cursor"])["acme"]
    assert state[loaded_name] == [loaded_size, SFTP_MTIME, True]  # listed, complete, and deliberately not requested
    assert state[new_name][2] is True
    assert len(requesting["runIds"]) == 1
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        requested = instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": "sftp_users_files"}))
        assert [run.tags["sftp/file"] for run in requested] == [new_name]
    assert stack.wait_for_run(requesting["runIds"][0]) == dg.DagsterRunStatus.SUCCESS, stack.log.read_text()[-5000:]
    warehouse = WarehouseResource(url=stack.warehouse_url)
    files = warehouse.query("SELECT DISTINCT source_file FROM crm.users WHERE tenant_id = 'acme' ORDER BY 1")
    assert files["source_file"].tolist() == sorted([loaded_name, new_name])
