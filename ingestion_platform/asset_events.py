"""Bounded reads of the Dagster instance by tenant: who loaded what, when, and which runs failed.

Freshness checks and `platform/health` both need "the latest update of this asset for each tenant". Dagster keeps
the latest materialization per asset (any partition) cheaply, but not per tenant, so these helpers read the newest
materialization records of one asset (one indexed query, newest first, capped by `limit`) and attribute each to a
tenant: from the partition key when the asset has a `tenant` dimension, else from the materializing run's `tenant`
tag (BrightData snapshots, commerce batches: their partitions are not tenant-shaped), else from a partition another
asset of the same source already attributed (`brightdata/posts` shares `raw_snapshot`'s snapshot partitions).
Run tags are read in one query for all the records' runs. A cap reached is reported (`truncated`), never hidden:
a tenant whose latest update lies beyond it looks older than it is, which errs toward "stale", never "fresh".
"""

import re
from collections.abc import Collection, Mapping, MutableMapping
from dataclasses import dataclass

import dagster as dg

from ingestion_platform.tenants import PARTITION_RANGE_START_TAG, TENANT_DIMENSION

TENANT_TAG = "tenant"
MULTI_PARTITION_TENANT_TAG = f"dagster/partition/{TENANT_DIMENSION}"
DEFAULT_RECORD_LIMIT = 1000
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Update:
    """One tenant's latest materialization of an asset."""

    tenant_id: str
    timestamp: float
    run_id: str
    partition_key: str | None


@dataclass(frozen=True)
class TenantUpdates:
    by_tenant: dict[str, Update]
    records_read: int
    truncated: bool
    unattributed: int


def tenant_of_partition(partitions_def: dg.PartitionsDefinition | None, partition_key: str | None) -> str | None:
    """The tenant a partition belongs to, when the partitioning says so (a `tenant` dimension or partitions)."""
    if partition_key is None or partitions_def is None:
        return None
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        if TENANT_DIMENSION not in {d.name for d in partitions_def.partitions_defs}:
            return None
        return partitions_def.get_partition_key_from_str(partition_key).keys_by_dimension[TENANT_DIMENSION]
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition) and partitions_def.name == TENANT_DIMENSION:
        return partition_key
    return None


def tenant_of_tags(tags: Mapping[str, str]) -> str | None:
    """The tenant of a run from its tags: ours (`tenant`), Dagster's per-dimension tag, or a range's start key."""
    tenant = tags.get(TENANT_TAG) or tags.get(MULTI_PARTITION_TENANT_TAG)
    if tenant:
        return tenant
    for key in (tags.get("dagster/partition"), tags.get(PARTITION_RANGE_START_TAG)):
        parts = (key or "").split("|")
        # Our day x tenant keys read `{date}|{tenant}`; other two-dimension runs carry the tags above.
        if len(parts) == 2 and _DAY.fullmatch(parts[0]):
            return parts[1]
    return None


def latest_updates_by_tenant(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    partitions_def: dg.PartitionsDefinition | None,
    *,
    after_timestamp: float | None = None,
    limit: int = DEFAULT_RECORD_LIMIT,
    partition_tenants: MutableMapping[str, str] | None = None,
    tenant_ids: Collection[str] = (),
) -> TenantUpdates:
    """Each tenant's newest materialization of `asset_key` among the newest `limit` records after `after_timestamp`.

    `partition_tenants` is read and extended: pass the same mapping for the assets of one source, upstream first,
    so an asset whose partitions and runs do not name the tenant inherits it from its upstream's partitions.
    Without `partitions_def` (a reader that has no definitions, like `platform/health`), a `{date}|{tenant}` key
    or a key among `tenant_ids` (the registered `tenant` partitions) names its tenant.
    """
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, after_timestamp=after_timestamp), limit=limit
    ).records
    known = partition_tenants if partition_tenants is not None else {}

    def from_partition(partition: str | None) -> str | None:
        if partitions_def is not None or partition is None:
            return tenant_of_partition(partitions_def, partition)
        if partition in tenant_ids:
            return partition
        return tenant_of_tags({"dagster/partition": partition})

    need_tags = {r.run_id for r in records if from_partition(r.partition_key) is None and r.run_id}
    tags_by_run = {
        record.dagster_run.run_id: record.dagster_run.tags
        for record in (
            instance.get_run_records(dg.RunsFilter(run_ids=sorted(need_tags)), limit=len(need_tags))
            if need_tags
            else []
        )
    }
    by_tenant: dict[str, Update] = {}
    unattributed = 0
    for record in records:  # newest first: the first record seen for a tenant is its latest
        partition = record.partition_key
        tenant = (
            from_partition(partition)
            or tenant_of_tags(tags_by_run.get(record.run_id, {}))
            or (known.get(partition) if partition else None)
        )
        if tenant is None:
            unattributed += 1
            continue
        if partition:
            known.setdefault(partition, tenant)
        if tenant not in by_tenant:
            by_tenant[tenant] = Update(tenant, record.timestamp, record.run_id, partition)
    return TenantUpdates(by_tenant, len(records), truncated=len(records) >= limit, unattributed=unattributed)


def partition_update(instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_key: str) -> Update | None:
    """The newest materialization of one partition (one indexed query, one row)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition_key]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return Update("", record.timestamp, record.run_id, record.partition_key)
