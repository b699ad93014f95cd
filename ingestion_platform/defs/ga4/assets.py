"""The six GA4 event assets: day x tenant partitions, each (tenant, day) slice replaced atomically.

Six separate assets rather than one multi-asset so that Dagster runs them as six parallel steps (the old
service's six-thread pool), bounded by the `bigquery` pool. A backfill of a date range becomes one run per tenant
(BackfillPolicy.single_run) and one BigQuery query over `_TABLE_SUFFIX` per event type. The checks run in the
asset's own step, on the slice just loaded: a separate check step would cost a process and a definitions load each.
"""

from datetime import date

import dagster as dg

from ingestion_platform.assets import Check, TenantRun, tenant_partitioned_asset
from ingestion_platform.defs.ga4.checks import duplicate_events, invalid_purchases, loaded_events
from ingestion_platform.defs.ga4.counts import DAILY_COUNTS, DayCounter
from ingestion_platform.defs.ga4.events import EVENT_TYPES, EventType
from ingestion_platform.defs.ga4.extract import count_source_events, extract_events
from ingestion_platform.defs.ga4.partitions import GA4_PARTITIONS
from ingestion_platform.resources.bigquery import TenantBigQueryResource
from ingestion_platform.tenants import Tenant

NO_DUPLICATES = Check("no_duplicate_events", "No event appears twice in a loaded (tenant, day) slice.", blocking=True)
ROW_COUNT = Check(
    "row_count_matches_source",
    "Rows in the warehouse equal distinct events in the export for the slice; a warning means late events arrived "
    "since the load (daily tables change for 72 hours) and the day needs a re-run.",
    severity=dg.AssetCheckSeverity.WARN,
)
PURCHASES_VALID = Check(
    "revenue_non_negative_and_transaction_id_present",
    "Every purchase has a transaction id and a revenue that is not negative.",
)


def build_event_asset(event: EventType) -> dg.AssetsDefinition:
    checks = [NO_DUPLICATES, ROW_COUNT, *([PURCHASES_VALID] if event.name == "purchase" else [])]

    @tenant_partitioned_asset(
        key=["ga4", event.name],
        description=f"{event.description} Loaded into `{event.table.qualified_name}`; key (tenant_id, event_date).",
        table=event.table,
        partitions_def=GA4_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool="bigquery",
        kinds={"bigquery", "postgres"},
        resources={"bigquery": TenantBigQueryResource},
        checks=checks,
    )
    def _event_asset(run: TenantRun, tenant: Tenant, days: list[date]) -> None:
        settings = tenant.ga4()
        counter = DayCounter(days)
        with run.resource("bigquery", TenantBigQueryResource).get_tenant_client(settings) as client:
            extraction, batches = extract_events(client, event, tenant.id, settings, days)
            result = run.warehouse.load(
                event.table,
                counter.count(batches),
                mode="replace",
                slice_={"tenant_id": [tenant.id], "event_date": days},
            )
            run.warehouse.load(
                DAILY_COUNTS,
                [counter.frame(tenant.id, event.name)],
                mode="replace",
                slice_={"tenant_id": [tenant.id], "event_name": [event.name], "event_date": days},
            )
            source_rows = count_source_events(client, event, tenant.id, settings, days)
        run.log.info(
            f"{tenant.id}: {result.rows_staged} {event.name} events for {days[0]}..{days[-1]} "
            f"from {', '.join(extraction.plan.tables)} (replaced {result.deleted})"
        )
        tables = [f"{settings.project}.{settings.dataset}.{t}" for t in extraction.plan.tables]
        run.loaded(result)
        run.count(bytes_scanned=extraction.bytes_processed, intraday_tables_used=sum("_intraday_" in t for t in tables))
        run.collect("source_tables", tables)
        run.preview(extraction.preview)

        duplicates = duplicate_events(run.warehouse, event, tenant.id, days)
        run.check(NO_DUPLICATES.name, passed=duplicates == 0, duplicates=duplicates)
        loaded = loaded_events(run.warehouse, event, tenant.id, days)
        run.check(ROW_COUNT.name, passed=loaded == source_rows, source=source_rows, warehouse=loaded)
        if event.name == "purchase":
            invalid = invalid_purchases(run.warehouse, tenant.id, days)
            run.check(PURCHASES_VALID.name, passed=invalid == 0, invalid=invalid)

    return _event_asset


ga4_event_assets = [build_event_asset(event) for event in EVENT_TYPES]
