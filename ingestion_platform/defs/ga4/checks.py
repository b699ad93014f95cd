"""Quality checks on each loaded (tenant, day) slice, run in the same run right after the materialization."""

from datetime import date

import dagster as dg

from ingestion_platform.defs.ga4.events import DEDUPE_COLUMNS, EVENT_TYPES, EventType
from ingestion_platform.defs.ga4.extract import count_source_events
from ingestion_platform.defs.ga4.partitions import GA4_PARTITIONS
from ingestion_platform.resources.bigquery import TenantBigQueryResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.tenants import tenant_days


def _slices(context: dg.AssetCheckExecutionContext) -> dict[str, list[date]]:
    return {t: [date.fromisoformat(d) for d in days] for t, days in tenant_days(context.partition_keys).items()}


def duplicate_events(warehouse: WarehouseResource, event: EventType, tenant_id: str, days: list[date]) -> int:
    """Rows beyond the first for each event identity (NULLs compare equal, as the export's identity does)."""
    identity = ", ".join(f"coalesce({c}::text, '')" for c in DEDUPE_COLUMNS)
    return int(
        warehouse.scalar(
            f"SELECT count(*) - count(DISTINCT ({identity})) FROM {event.table.qualified_name} "
            "WHERE tenant_id = :tenant_id AND event_date = ANY(:days)",
            {"tenant_id": tenant_id, "days": days},
        )
    )


def invalid_purchases(warehouse: WarehouseResource, tenant_id: str, days: list[date]) -> int:
    return int(
        warehouse.scalar(
            "SELECT count(*) FROM ga4.purchase WHERE tenant_id = :tenant_id AND event_date = ANY(:days) "
            "AND (purchase_revenue < 0 OR transaction_id IS NULL OR transaction_id = '')",
            {"tenant_id": tenant_id, "days": days},
        )
    )


def loaded_events(warehouse: WarehouseResource, event: EventType, tenant_id: str, days: list[date]) -> int:
    return int(
        warehouse.scalar(
            f"SELECT count(*) FROM {event.table.qualified_name} "
            "WHERE tenant_id = :tenant_id AND event_date = ANY(:days)",
            {"tenant_id": tenant_id, "days": days},
        )
    )


def build_checks(event: EventType) -> list[dg.AssetChecksDefinition]:
    key = dg.AssetKey(["ga4", event.name])

    @dg.asset_check(
        asset=key,
        name="no_duplicate_events",
        blocking=True,
        partitions_def=GA4_PARTITIONS,
        description="No event appears twice in a loaded (tenant, day) slice.",
    )
    def no_duplicate_events(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        found = {t: duplicate_events(warehouse, event, t, days) for t, days in _slices(context).items()}
        return dg.AssetCheckResult(passed=not any(found.values()), metadata={"duplicates_by_tenant": found})

    @dg.asset_check(
        asset=key,
        name="row_count_matches_source",
        partitions_def=GA4_PARTITIONS,
        description="Rows in the warehouse equal distinct events in the export for the slice; a warning means "
        "late events arrived since the load (daily tables change for 72 hours) and the day needs a re-run.",
    )
    def row_count_matches_source(
        context: dg.AssetCheckExecutionContext,
        warehouse: WarehouseResource,
        bigquery: TenantBigQueryResource,
        tenants: TenantsResource,
    ) -> dg.AssetCheckResult:
        registry = tenants.registry()
        counts = {}
        for tenant_id, days in _slices(context).items():
            settings = registry.get(tenant_id).ga4()
            with bigquery.get_tenant_client(settings) as client:
                source = count_source_events(client, event, tenant_id, settings, days)
            counts[tenant_id] = {"source": source, "warehouse": loaded_events(warehouse, event, tenant_id, days)}
        return dg.AssetCheckResult(
            passed=all(c["source"] == c["warehouse"] for c in counts.values()),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"counts_by_tenant": counts},
        )

    return [no_duplicate_events, row_count_matches_source]


@dg.asset_check(
    asset=dg.AssetKey(["ga4", "purchase"]),
    name="revenue_non_negative_and_transaction_id_present",
    partitions_def=GA4_PARTITIONS,
    description="Every purchase has a transaction id and a revenue that is not negative.",
)
def purchases_valid(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    invalid = {t: invalid_purchases(warehouse, t, days) for t, days in _slices(context).items()}
    return dg.AssetCheckResult(passed=not any(invalid.values()), metadata={"invalid_by_tenant": invalid})


ga4_checks = [*(check for event in EVENT_TYPES for check in build_checks(event)), purchases_valid]
