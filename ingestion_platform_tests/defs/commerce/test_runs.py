"""Run-level behaviour: re-execution from a failure at orders, and the landing sensor's view of batches."""

import json
import os
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from ingestion_platform.defs.commerce.assets import COMMERCE_ASSETS, COMMERCE_KEYS
from ingestion_platform.defs.commerce.batches import MANIFEST_NAME, batch_prefix
from ingestion_platform.defs.commerce.sensors import commerce_batch_sensor
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.commerce_data import generate_commerce
from ingestion_platform_tests.defs.commerce.landing import land


def commerce_job() -> dg.JobDefinition:
    """Reconstructable (re-execution needs it): resources from the environment the test sets."""
    defs = dg.Definitions(
        assets=COMMERCE_ASSETS,
        resources={
            "warehouse": WarehouseResource(url=os.environ["COMMERCE_TEST_WAREHOUSE_URL"]),
            "object_store": ObjectStoreResource(url=os.environ["COMMERCE_TEST_STORE_URL"]),
        },
        jobs=[dg.define_asset_job("commerce_batch", COMMERCE_KEYS, executor_def=dg.in_process_executor)],
    )
    return defs.resolve_job_def("commerce_batch")


def _steps(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    return {
        e.step_key
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        if e.step_key is not None
    }


def test_failure_at_orders_reexecutes_from_failure_without_reloading_customers(
    warehouse: WarehouseResource, warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ObjectStoreResource(url=(tmp_path / "objects").as_uri())
    monkeypatch.setenv("COMMERCE_TEST_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("COMMERCE_TEST_STORE_URL", store.url or "")
    (batch,) = generate_commerce(["acme"], 30, 10, 40, tmp_path / "gen", seed=3)
    key = land(store, batch.path, "acme")
    orders = next(p for p in batch.path.iterdir() if p.name.startswith("orders_"))
    good = orders.read_bytes()
    # Same size, other bytes: the manifest's sha256 no longer matches, so the orders step fails (not retried).
    store.put(batch_prefix("acme", "b0001") + orders.name, good.replace(b"paid", b"PAID", 1))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("commerce_batch", [key])
        job = dg.reconstructable(commerce_job)
        with dg.execute_job(job, instance, tags={"dagster/partition": key}, raise_on_error=False) as failed:
            assert not failed.success
            assert _steps(instance, failed.run_id) == {"commerce__customers", "commerce__products"}
        with warehouse.engine.connect() as conn:
            loaded_at = conn.execute(sa.text("SELECT max(loaded_at) FROM commerce.loaded_files")).scalar()
            assert conn.execute(sa.text("SELECT count(*) FROM commerce.orders")).scalar() == 0
        store.put(batch_prefix("acme", "b0001") + orders.name, good)
        options = dg.ReexecutionOptions.from_failure(failed.run_id, instance)
        with dg.execute_job(job, instance, tags={"dagster/partition": key}, reexecution_options=options) as again:
            assert again.success
            assert _steps(instance, again.run_id) == {"commerce__orders", "commerce__order_items"}
        with warehouse.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM commerce.orders")).scalar() == 40
            customer_loads = conn.execute(
                sa.text("SELECT count(*) FROM commerce.loaded_files WHERE table_name = 'customers' AND loaded_at > :t"),
                {"t": loaded_at},
            ).scalar()
            assert customer_loads == 0  # customers were not read again


def test_sensor_ignores_a_batch_until_its_marker_then_requests_it_once(
    store: ObjectStoreResource, tmp_path: Path
) -> None:
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump({"tenants": {"acme": {}, "globex": {}}}))
    (batch,) = generate_commerce(["acme"], 10, 5, 10, tmp_path / "gen", seed=1)
    land(store, batch.path, "acme", marker=False)
    resources = {"object_store": store, "tenants": TenantsResource(path=str(tenants_file))}
    with dg.instance_for_test() as instance:
        result = commerce_batch_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(result, dg.SensorResult)
        assert not result.run_requests and not result.dynamic_partitions_requests

        store.put(batch_prefix("acme", "b0001") + MANIFEST_NAME, (batch.path / MANIFEST_NAME).read_bytes())
        result = commerce_batch_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(result, dg.SensorResult)
        (request,) = result.run_requests or []
        assert request.partition_key == "acme/b0001"
        assert set(request.asset_selection or []) == set(COMMERCE_KEYS)
        (added,) = result.dynamic_partitions_requests or []
        assert isinstance(added, dg.AddDynamicPartitionsRequest) and list(added.partition_keys) == ["acme/b0001"]
        instance.add_dynamic_partitions("commerce_batch", ["acme/b0001"])

        # The next tick asks again with the same run key (Dagster drops it: exactly one run); no new partition.
        again = commerce_batch_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(again, dg.SensorResult)
        assert [r.run_key for r in again.run_requests or []] == [request.run_key]
        assert not again.dynamic_partitions_requests

        # Re-landed with other content: a new run key, so the changed batch runs again.
        manifest = json.loads((batch.path / MANIFEST_NAME).read_bytes())
        manifest["files"] = manifest["files"][:1]
        store.put(batch_prefix("acme", "b0001") + MANIFEST_NAME, json.dumps(manifest).encode())
        changed = commerce_batch_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(changed, dg.SensorResult)
        assert [r.run_key for r in changed.run_requests or []] != [request.run_key]
