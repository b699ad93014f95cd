"""The six GA4 event assets: day x tenant partitions, each (tenant, day) slice replaced atomically.

Six separate assets rather than one multi-asset so that Dagster runs them as six parallel steps (the old
service's six-thread pool), bounded by the `bigquery` pool. A backfill of a date range becomes one run per tenant
(BackfillPolicy.single_run) and one BigQuery query over `_TABLE_SUFFIX` per event type.
"""

import time
from datetime import date

import dagster as dg

from ingestion_platform.defs.ga4.events import EVENT_TYPES, EventType
from ingestion_platform.defs.ga4.extract import extract_events
from ingestion_platform.defs.ga4.partitions import GA4_PARTITIONS
from ingestion_platform.metadata import definition_metadata, load_metadata, preview_md
from ingestion_platform.resources.bigquery import TenantBigQueryResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.retry import STEP_RETRY, per_tenant
from ingestion_platform.tenants import tenant_days


def build_event_asset(event: EventType) -> dg.AssetsDefinition:
    @dg.asset(
        key=["ga4", event.name],
        description=f"{event.description} Loaded into `{event.table.qualified_name}`; key (tenant_id, event_date).",
        group_name="ga4",
        partitions_def=GA4_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=STEP_RETRY,
        pool="bigquery",
        kinds={"bigquery", "postgres"},
        owners=["team:data-platform"],
        tags={"source": "ga4"},
        metadata=definition_metadata(event.table),
    )
    def _event_asset(
        context: dg.AssetExecutionContext,
        bigquery: TenantBigQueryResource,
        warehouse: WarehouseResource,
        tenants: TenantsResource,
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        registry = tenants.registry()
        loads, tables, preview, bytes_processed = [], [], [], 0

        def load_tenant(tenant_id: str, days: list[str]) -> None:
            nonlocal preview, bytes_processed
            settings = registry.get(tenant_id).ga4()
            day_values = [date.fromisoformat(d) for d in days]
            with bigquery.get_tenant_client(settings) as client:
                extraction, batches = extract_events(client, event, tenant_id, settings, day_values)
                result = warehouse.load(
                    event.table, batches, mode="replace", slice_={"tenant_id": [tenant_id], "event_date": day_values}
                )
            context.log.info(
                f"{tenant_id}: {result.rows_staged} {event.name} events for {days[0]}..{days[-1]} "
                f"from {', '.join(extraction.plan.tables)} (replaced {result.deleted})"
            )
            loads.append(result)
            tables.extend(f"{settings.project}.{settings.dataset}.{t}" for t in extraction.plan.tables)
            preview = preview or extraction.preview
            bytes_processed += extraction.bytes_processed

        per_tenant(tenant_days(context.partition_keys), load_tenant, context.log)
        return dg.MaterializeResult(
            metadata={
                **load_metadata(loads),
                "bytes_scanned": dg.MetadataValue.int(bytes_processed),
                "source_tables": dg.MetadataValue.json(tables),
                "intraday_tables_used": dg.MetadataValue.int(sum("_intraday_" in t for t in tables)),
                "duration_seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
                "preview": preview_md(preview),
            }
        )

    return _event_asset


ga4_event_assets = [build_event_asset(event) for event in EVENT_TYPES]
