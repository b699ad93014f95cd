"""The landing sensor: each new complete upload in a tenant's landing folders becomes one partition and one run.

Completeness follows the platform's landing rules (`ingestion_platform.landing`): a file unchanged across two
ticks, or one whose `.done` marker has appeared; temporary and hidden names are never uploads. A complete file is
hashed once per (key, size, mtime) and the hash is its upload id, so:
- the same content under another name (or a re-upload of it) is not loaded again: a run for that tenant's
  upload partition already exists (the instance's run records are the memory, so a reset cursor does not reload
  everything), and the run key carries the hash for Dagster's own de-duplication;
- a file that later changes has a new hash, hence a new partition and a new run.
Only `landing/{tenant}/recsys/{interactions,items}/` is listed for a tenant, and the asset refuses a landing key
outside it, so no other path is ever read as that tenant's data.

Hashing reads every new byte, so it stops after a time budget; the remaining files are hashed on the next tick.
"""

import json
import time
from typing import Any

import dagster as dg

from ingestion_platform.defs.recsys.parse import DataType
from ingestion_platform.defs.recsys.partitions import (
    DATA_TYPES,
    UPLOAD_PARTITION_NAMES,
    landing_prefix,
    upload_id,
    upload_partition_key,
)
from ingestion_platform.defs.recsys.uploads import DATA_TYPE_TAG, LANDING_KEY_TAG
from ingestion_platform.landing import Listed, is_complete, is_marker, is_temporary, unchanged
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.tenants import SOURCE_TAG, TENANT_DIMENSION

HASH_BUDGET_SECONDS = 30.0

# tenant -> data type -> key -> [size, mtime_us, upload id or None]
Cursor = dict[str, dict[str, dict[str, list[Any]]]]


def already_requested(instance: dg.DagsterInstance, data_type: DataType, partition_key: str) -> bool:
    """Any run (queued, running, done or failed) for this upload of this tenant: the same content is tried once."""
    records = instance.get_run_records(
        dg.RunsFilter(tags={"dagster/partition": partition_key, DATA_TYPE_TAG: data_type}), limit=1
    )
    return bool(records)


def scan_folder(
    store: ObjectStoreResource,
    tenant: str,
    data_type: DataType,
    previous: dict[str, list[Any]],
    deadline: float,
) -> tuple[list[tuple[str, str]], dict[str, list[Any]]]:
    """(landing key, upload id) of each complete file hashed on this tick, and the folder state to remember."""
    prefix = landing_prefix(tenant, data_type)
    listing = [o for o in store.list(prefix) if o.key.startswith(prefix)]
    names = {o.key for o in listing}
    hashed: list[tuple[str, str]] = []
    state: dict[str, list[Any]] = {}
    for obj in listing:
        if is_temporary(obj.key) or is_marker(obj.key):
            continue
        listed = Listed(obj.key, obj.size, int(obj.mtime.timestamp() * 1_000_000))
        seen = previous.get(obj.key)
        known = seen[2] if unchanged(listed, seen) and seen is not None else None
        complete = is_complete(listed, seen, names, completion="marker") or is_complete(listed, seen, names)
        if complete and known is None and time.monotonic() < deadline:
            with store.open_read(obj.key) as stream:
                known = upload_id(stream)
            hashed.append((obj.key, known))
        state[obj.key] = [listed.size, listed.mtime, known]
    return hashed, state


@dg.sensor(
    name="recsys_landing",
    asset_selection=[dg.AssetKey(["recsys", data_type]) for data_type in DATA_TYPES],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests `recsys/interactions` or `recsys/items` once for each new complete upload in "
    "landing/{tenant}/recsys/, keyed by the content's hash.",
)
def recsys_landing_sensor(
    context: dg.SensorEvaluationContext, object_store: ObjectStoreResource, tenants: TenantsResource
) -> dg.SensorResult:
    cursor: Cursor = json.loads(context.cursor) if context.cursor else {}
    registered = set(context.instance.get_dynamic_partitions(TENANT_DIMENSION))
    deadline = time.monotonic() + HASH_BUDGET_SECONDS
    state: Cursor = {}
    requests: list[dg.RunRequest] = []
    new_uploads: dict[DataType, set[str]] = {data_type: set() for data_type in DATA_TYPES}
    failures: dict[str, str] = {}
    for tenant in (t for t in tenants.registry().ids if t in registered):
        for data_type in DATA_TYPES:
            previous = cursor.get(tenant, {}).get(data_type, {})
            try:
                hashed, folder = scan_folder(object_store, tenant, data_type, previous, deadline)
            except Exception as exc:  # one tenant's unreadable folder must not stop the others' uploads
                failures[f"{tenant}/{data_type}"] = f"{type(exc).__name__}: {exc}"
                context.log.error(f"tenant {tenant!r}: listing {data_type} uploads failed: {exc}")
                state.setdefault(tenant, {})[data_type] = previous
                continue
            state.setdefault(tenant, {})[data_type] = folder
            for key, upload in hashed:
                partition_key = upload_partition_key(tenant, upload)
                if upload in new_uploads[data_type] and any(r.partition_key == partition_key for r in requests):
                    context.log.info(f"{key}: same content as another upload on this tick ({upload})")
                    continue
                if already_requested(context.instance, data_type, partition_key):
                    context.log.info(f"{key}: content {upload} was already loaded for {tenant!r}")
                    continue
                new_uploads[data_type].add(upload)
                requests.append(
                    dg.RunRequest(
                        partition_key=partition_key,
                        run_key=f"{tenant}:{data_type}:{upload}",
                        asset_selection=[dg.AssetKey(["recsys", data_type])],
                        tags={SOURCE_TAG: "recsys", "tenant": tenant, DATA_TYPE_TAG: data_type, LANDING_KEY_TAG: key},
                    )
                )
    partition_requests = [
        dg.AddDynamicPartitionsRequest(UPLOAD_PARTITION_NAMES[data_type], sorted(uploads))
        for data_type, uploads in new_uploads.items()
        if uploads
    ]
    skip = None
    if not requests:
        skip = f"failed: {failures}" if failures else "no new complete uploads"
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=partition_requests,
        cursor=json.dumps(state, sort_keys=True),
        skip_reason=skip,
    )
