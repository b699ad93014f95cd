"""A report dropped into a tenant's SFTP folder is found by the daemon's sensor and loaded by the run it starts."""

import csv
import io

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform_tests.e2e.conftest import Landed
from ingestion_platform_tests.e2e.stack import UIStack


def test_the_sftp_sensor_loads_a_new_report(ui_stack: UIStack, landed: Landed) -> None:
    # The sensor ticks once a minute and requests a file once it is unchanged across two listings.
    (run,) = ui_stack.wait_for_runs(
        {"dagster/sensor_name": "sftp_users_files", "sftp/file": landed.sftp_file}, timeout=420
    )
    assert run["status"] == "SUCCESS", ui_stack.log_tails()
    assert run["tags"]["dagster/partition"].endswith("|acme")
    lines = list(csv.reader(io.StringIO(landed.sftp_bytes.decode())))[1:]
    warehouse = WarehouseResource(url=ui_stack.warehouse_url)
    params = {"f": landed.sftp_file}
    # One line carries an impossible date: it is kept in the rejects table, the others are loaded.
    assert warehouse.scalar("SELECT count(*) FROM crm.users_rejects WHERE source_file = :f", params) == 1
    loaded = warehouse.scalar("SELECT count(*) FROM crm.users WHERE tenant_id = 'acme' AND source_file = :f", params)
    assert loaded == len(lines) - 1
