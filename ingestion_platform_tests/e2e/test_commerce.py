"""A commerce batch landed by `ingest commerce` is requested by the sensor once complete and loaded in key order."""

import pytest

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform_tests.e2e.conftest import Landed
from ingestion_platform_tests.e2e.stack import UIStack

pytestmark = pytest.mark.timeout(900)  # the sensors tick every 30 to 60 s; a loaded CI machine runs slowly


def test_the_batch_sensor_loads_a_landed_batch(ui_stack: UIStack, landed: Landed) -> None:
    batch = landed.commerce
    (run,) = ui_stack.wait_for_runs(
        {"dagster/sensor_name": "commerce_batches", "commerce/batch": batch.batch_id, "tenant": "acme"}, timeout=600
    )
    assert run["status"] == "SUCCESS", ui_stack.run_errors(run["runId"])
    assert run["tags"]["dagster/partition"].startswith("acme")
    warehouse = WarehouseResource(url=ui_stack.warehouse_url)
    for table in ("customers", "products", "orders"):
        loaded = warehouse.scalar(f"SELECT count(*) FROM commerce.{table} WHERE tenant_id = 'acme'")
        duplicates = batch.duplicates.get(table, 0)
        rejected = sum(1 for t, _ in batch.expected_rejects if t == table)
        assert loaded == batch.rows[table] - duplicates - rejected, table
    assert warehouse.scalar("SELECT count(*) FROM commerce.order_items WHERE tenant_id = 'acme'") > 0
    assert warehouse.scalar("SELECT count(*) FROM commerce.pending WHERE tenant_id = 'acme'") == 0
