"""Test helpers: put generated batches into the landing zone and run the four commerce assets on them."""

import json
from pathlib import Path
from typing import Any

import dagster as dg

from ingestion_platform.defs.commerce.assets import BATCH_PARTITIONS, COMMERCE_ASSETS
from ingestion_platform.defs.commerce.batches import MANIFEST_NAME, batch_prefix, partition_key
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.resources.warehouse import WarehouseResource


def land(
    store: ObjectStoreResource, folder: Path, tenant_id: str, batch_id: str | None = None, *, marker: bool = True
) -> str:
    """Upload a local batch folder (data files, then its manifest when `marker`); return the partition key."""
    batch_id = batch_id or folder.name
    prefix = batch_prefix(tenant_id, batch_id)
    for path in sorted(folder.iterdir()):
        if path.name != MANIFEST_NAME:
            store.put_file(prefix + path.name, path)
    if marker:
        # The same files landed under another tenant or batch id: the manifest must name where it sits.
        manifest = json.loads((folder / MANIFEST_NAME).read_bytes()) | {"tenant_id": tenant_id, "batch_id": batch_id}
        store.put(prefix + MANIFEST_NAME, json.dumps(manifest).encode())
    return partition_key(tenant_id, batch_id)


def run_batch(
    instance: dg.DagsterInstance,
    warehouse: WarehouseResource,
    store: ObjectStoreResource,
    key: str,
    *,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    if not instance.has_dynamic_partition(BATCH_PARTITIONS.name or "", key):
        instance.add_dynamic_partitions(BATCH_PARTITIONS.name or "", [key])
    return dg.materialize(
        COMMERCE_ASSETS,
        partition_key=key,
        instance=instance,
        resources={"warehouse": warehouse, "object_store": store},
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def metadata(result: dg.ExecuteInProcessResult, table: str) -> dict[str, Any]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["commerce", table])]
    assert event.materialization is not None
    return {k: v.value for k, v in event.materialization.metadata.items()}
