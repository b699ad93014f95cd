"""A report dropped into a tenant's SFTP folder is found by the daemon's sensor and loaded by the run it starts."""

import csv
import io
import json
from typing import Any

import pytest

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform_tests.e2e.conftest import SFTP_MTIME, SFTP_SENSOR, Landed
from ingestion_platform_tests.e2e.stack import UIStack

pytestmark = pytest.mark.timeout(900)  # the sensors tick every 30 to 60 s; a loaded CI machine runs slowly


def test_the_sftp_sensor_loads_a_new_report(ui_stack: UIStack, landed: Landed) -> None:
    # The sensor ticks once a minute and requests a file once it is unchanged across two listings.
    partition = f"{landed.sftp_file[6:10]}-{landed.sftp_file[10:12]}-{landed.sftp_file[12:14]}|acme"
    (run,) = ui_stack.wait_for_runs(
        {"dagster/sensor_name": SFTP_SENSOR, "sftp/file": landed.sftp_file, "dagster/partition": partition},
        timeout=600,
    )
    assert run["status"] == "SUCCESS", ui_stack.run_errors(run["runId"])
    lines = list(csv.reader(io.StringIO(landed.sftp_bytes.decode())))[1:]
    warehouse = WarehouseResource(url=ui_stack.warehouse_url)
    params = {"f": landed.sftp_file}
    # One line carries an impossible date: it is kept in the rejects table, the others are loaded.
    rejects = "SELECT count(*) FROM crm.users_rejects WHERE tenant_id = 'acme' AND source_file = :f"
    assert warehouse.scalar(rejects, params) == 1
    loaded = warehouse.scalar("SELECT count(*) FROM crm.users WHERE tenant_id = 'acme' AND source_file = :f", params)
    assert loaded == len(lines) - 1


def test_the_sftp_sensor_requests_only_files_not_already_loaded(ui_stack: UIStack, landed: Landed) -> None:
    """The sensor meets two complete files of globex it has never listed; one was already loaded by a launch from
    the UI: it requests only the other.

    The loaded one is left out because `sftp/users`' materialization recorded it with the server's size and mtime,
    which is what keeps a fresh or reset cursor from reloading everything the demo or a backfill loaded.
    """
    loaded_name, new_name = landed.sftp_loaded, landed.sftp_new
    loaded_size = (ui_stack.sandbox.home / "sandbox" / "sftp" / "globex" / "reports" / loaded_name).stat().st_size

    def requesting_tick() -> dict[str, Any] | None:
        # The sensor ticks once a minute; its first listing of a file only records it. Oldest first: the first tick
        # that found the files complete is the one that decided.
        for tick in reversed(ui_stack.sensor(SFTP_SENSOR)["sensorState"]["ticks"]):
            assert tick["error"] is None, tick["error"]
            state = json.loads(tick["cursor"] or "{}").get("globex", {})
            if state.get(loaded_name, [None, None, False])[2]:
                return tick
        return None

    requesting = ui_stack.wait_until(requesting_tick, 600, "a tick that found both globex files complete")
    state = json.loads(requesting["cursor"])["globex"]
    assert state[loaded_name] == [loaded_size, SFTP_MTIME, True]  # listed, complete, and deliberately not requested
    assert state[new_name][2] is True
    # The same tick may request acme's new report too (another test's); of globex's two files, one is requested.
    partitions = {run_id: ui_stack.run(run_id)["tags"] for run_id in requesting["runIds"]}
    globex_runs = [
        run_id
        for run_id, tags in partitions.items()
        if any(t["key"] == "dagster/partition" and t["value"].endswith("|globex") for t in tags)
    ]
    assert len(globex_runs) == 1
    requested = [
        r
        for r in ui_stack.runs({"dagster/sensor_name": SFTP_SENSOR})
        if r["tags"]["dagster/partition"].endswith("|globex")
    ]
    assert [r["tags"]["sftp/file"] for r in requested] == [new_name]
    assert ui_stack.wait_for_run(globex_runs[0]) == "SUCCESS", ui_stack.run_errors(globex_runs[0])
    warehouse = WarehouseResource(url=ui_stack.warehouse_url)
    files = warehouse.query("SELECT DISTINCT source_file FROM crm.users WHERE tenant_id = 'globex' ORDER BY 1")
    assert files["source_file"].tolist() == sorted([loaded_name, new_name])
