"""The code location as users meet it: a real dagster-webserver loads workspace.yaml, a run is launched over
GraphQL, runs in its own process against the BigQuery emulator and PostgreSQL, and the rows arrive."""

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient
from google.cloud import bigquery

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.bigquery import BigQueryEmulator
from ingestion_platform.sandbox.ga4_export import seed_ga4_export

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2024, 5, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webserver(
    tmp_path: Path, bigquery_emulator: BigQueryEmulator, bigquery_client: bigquery.Client, warehouse_url: str
) -> Iterator[tuple[DagsterGraphQLClient, Path]]:
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
    # The webserver takes the GraphQL launch; the daemon dequeues it (dagster.yaml limits concurrent runs).
    commands = {
        "webserver": [
            sys.executable,
            "-m",
            "dagster_webserver",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "workspace.yaml",
        ],
        "daemon": [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
    }
    log = (tmp_path / "dagster.log").open("w")
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        for command in commands.values()
    ]
    process = processes[0]
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((tmp_path / "dagster.log").read_text()) from None
                time.sleep(0.5)
        yield DagsterGraphQLClient("127.0.0.1", port_number=port), home
    finally:
        for running in processes:
            running.terminate()
        for running in processes:
            running.wait(timeout=30)
        log.close()


def test_a_run_launched_over_graphql_loads_ga4_events(webserver, warehouse_url: str) -> None:
    client, _ = webserver
    run_id = client.submit_job_execution(
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
    deadline = time.monotonic() + 180
    status = client.get_run_status(run_id)
    while status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) and time.monotonic() < deadline:
        time.sleep(1)
        status = client.get_run_status(run_id)
    assert status == dg.DagsterRunStatus.SUCCESS
    warehouse = WarehouseResource(url=warehouse_url)
    assert (
        warehouse.scalar("SELECT count(*) FROM ga4.page_view WHERE tenant_id = 'acme' AND event_date = :d", {"d": DAY})
        > 0
    )
    assert warehouse.scalar("SELECT count(DISTINCT provenance) FROM ga4.purchase") == 1
