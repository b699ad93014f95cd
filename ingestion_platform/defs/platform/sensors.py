"""Tenant partitions follow tenants.yaml: adding a tenant to the file makes its partitions appear in the UI."""

import dagster as dg

from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.tenants import TENANT_DIMENSION, tenant_partition_changes


@dg.sensor(
    name="tenant_partitions_sync",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds and removes `tenant` dynamic partitions so they equal the tenant registry.",
)
def tenant_partitions_sync(context: dg.SensorEvaluationContext, tenants: TenantsResource) -> dg.SensorResult:
    current = set(context.instance.get_dynamic_partitions(TENANT_DIMENSION))
    added, removed = tenant_partition_changes(current, tenants.registry())
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if added:
        requests.append(dg.AddDynamicPartitionsRequest(TENANT_DIMENSION, added))
    if removed:
        requests.append(dg.DeleteDynamicPartitionsRequest(TENANT_DIMENSION, removed))
    if requests:
        context.log.info(f"tenant partitions: added {added}, removed {removed}")
    return dg.SensorResult(dynamic_partitions_requests=requests)
