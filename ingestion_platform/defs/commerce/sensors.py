"""The landing-zone sensor: every registered tenant's `landing/{tenant}/commerce/{batch_id}/` folders, one run per
complete batch.

A batch is requested once its `_SUCCESS` marker or manifest is there (`batches.batch_state`); before that it is
only logged as waiting. The run key is the partition plus a fingerprint of what made the batch complete (the
manifest's hash, or the marker and the data files' names and sizes), so a batch runs exactly once, and again only
if it is re-landed with different content. The partition is added in the same tick as the request.
"""

import hashlib
from collections import defaultdict

import dagster as dg

from ingestion_platform.defs.commerce.assets import BATCH_PARTITIONS, COMMERCE_KEYS
from ingestion_platform.defs.commerce.batches import (
    MANIFEST_NAME,
    batch_state,
    parse_landing_key,
    partition_key,
    tenant_prefix,
)
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.tenants import SOURCE_TAG

# A batch of a million order items loads in about a minute; half an hour means something is stuck.
MAX_RUNTIME_SECONDS = 1800


def scan_tenant(store: ObjectStoreResource, tenant_id: str) -> tuple[list[tuple[str, str]], list[str]]:
    """([(batch_id, fingerprint)] of complete batches, [log lines about batches still waiting or broken])."""
    folders: dict[str, dict[str, int]] = defaultdict(dict)
    for obj in store.list(tenant_prefix(tenant_id)):
        parsed = parse_landing_key(obj.key)
        if parsed is not None:
            folders[parsed[1]][parsed[2]] = obj.size
    ready, notes = [], []
    for batch_id, listing in sorted(folders.items()):
        manifest = (
            store.get(f"{tenant_prefix(tenant_id)}{batch_id}/{MANIFEST_NAME}") if MANIFEST_NAME in listing else None
        )
        state = batch_state(listing, manifest, tenant_id=tenant_id, batch_id=batch_id)
        if not state.complete:
            notes.append(f"{tenant_id}/{batch_id}: {state.reason}")
            continue
        digest = hashlib.sha256()
        if manifest is not None:
            digest.update(manifest)
        else:
            digest.update(repr(sorted((f.name, f.size) for f in state.files)).encode())
        ready.append((batch_id, digest.hexdigest()[:16]))
    return ready, notes


@dg.sensor(
    name="commerce_batches",
    asset_selection=COMMERCE_KEYS,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds each complete commerce landing batch to `commerce_batch` and requests one run of "
    "commerce/customers -> products -> orders -> order_items for it.",
)
def commerce_batch_sensor(
    context: dg.SensorEvaluationContext, object_store: ObjectStoreResource, tenants: TenantsResource
) -> dg.SensorResult:
    known = set(context.instance.get_dynamic_partitions(BATCH_PARTITIONS.name or "commerce_batch"))
    requests: list[dg.RunRequest] = []
    new_keys: list[str] = []
    for tenant_id in tenants.registry().ids:
        try:
            ready, notes = scan_tenant(object_store, tenant_id)
        except Exception as exc:  # one unreadable tenant folder must not stop the others' batches
            context.log.error(f"tenant {tenant_id!r}: listing the commerce landing zone failed: {exc}")
            continue
        for note in notes:
            context.log.info(f"waiting: {note}")
        for batch_id, fingerprint in ready:
            key = partition_key(tenant_id, batch_id)
            if key not in known:
                new_keys.append(key)
            requests.append(
                dg.RunRequest(
                    partition_key=key,
                    run_key=f"commerce:{key}:{fingerprint}",
                    asset_selection=COMMERCE_KEYS,
                    tags={
                        SOURCE_TAG: "commerce",
                        "tenant": tenant_id,
                        "commerce/batch": batch_id,
                        "dagster/max_runtime": str(MAX_RUNTIME_SECONDS),
                    },
                )
            )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[BATCH_PARTITIONS.build_add_request(new_keys)] if new_keys else [],
    )
