"""`ga4/availability` refreshes itself whenever any GA4 event partition is materialized (declarative automation)."""

import dagster as dg

from ingestion_platform.defs.ga4.assets import ga4_event_assets
from ingestion_platform.defs.ga4.availability import ga4_availability
from ingestion_platform.resources.bigquery import TenantBigQueryResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource


def test_availability_is_requested_after_any_event_partition_and_not_otherwise() -> None:
    # Evaluating conditions opens no connection; the resources are only there for the definitions to be complete.
    assets = dg.Definitions(
        assets=[*ga4_event_assets, ga4_availability],
        resources={
            "bigquery": TenantBigQueryResource(),
            "warehouse": WarehouseResource(),
            "tenants": TenantsResource(),
        },
    )
    availability = dg.AssetKey(["ga4", "availability"])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme"])
        instance.report_runless_asset_event(dg.AssetMaterialization(availability))
        result = dg.evaluate_automation_conditions(defs=assets, instance=instance)
        assert result.total_requested == 0

        instance.report_runless_asset_event(
            dg.AssetMaterialization(dg.AssetKey(["ga4", "page_view"]), partition="2024-03-01|acme")
        )
        result = dg.evaluate_automation_conditions(defs=assets, instance=instance, cursor=result.cursor)
        assert result.get_num_requested(availability) == 1
        assert result.total_requested == 1  # event partitions are never started by automation

        result = dg.evaluate_automation_conditions(defs=assets, instance=instance, cursor=result.cursor)
        assert result.total_requested == 0  # handled: not requested again until the next upstream update
