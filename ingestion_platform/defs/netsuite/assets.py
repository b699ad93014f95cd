"""`netsuite/<table>`: one asset per SuiteQL table, tenant x day partitions of the last-modified date.

Which tables get an asset is decided when the definitions load, which must do no I/O: so the list is not read
from tenants.yaml but is `NETSUITE_DEFAULT_TABLES`, or the comma-separated `INGESTION_NETSUITE_TABLES` for a
deployment that extracts custom records (`customrecord_*`) or fewer tables. A tenant whose own `tables:` setting
lacks a table is skipped by that asset (reported in the check's metadata), so tenants can differ without the
definitions reading their settings.

A backfill of a date range is one run per tenant (`BackfillPolicy.single_run`) and one key-set query over the
whole range: the initial full load from the tenant's `start_date` is a backfill, not thousands of day runs. The
window reaches `lag_minutes` back before the first day (see `suiteql.day_window`).
"""

import os
from datetime import date, datetime, timedelta

import dagster as dg

from ingestion_platform.assets import Check, TenantRun, tenant_partitioned_asset
from ingestion_platform.defs.netsuite.extract import base_spec, extract_window
from ingestion_platform.defs.netsuite.suiteql import range_window
from ingestion_platform.resources.netsuite import NetSuiteResource
from ingestion_platform.tenants import NETSUITE_DEFAULT_TABLES, Tenant, daily_by_tenant

TABLES_ENV = "INGESTION_NETSUITE_TABLES"
POOL = "netsuite"
NETSUITE_PARTITIONS = daily_by_tenant()

RECONCILED = Check(
    "reconciled_with_source",
    "Rows extracted equal NetSuite's COUNT(*) over the same last-modified window and the first page's "
    "totalResults. A failure means rows changed in NetSuite during the extraction (re-run the partition) or rows "
    "were lost in paging.",
)


def configured_tables() -> tuple[str, ...]:
    """The tables with an asset: INGESTION_NETSUITE_TABLES (comma-separated) or the default list."""
    raw = os.environ.get(TABLES_ENV, "").strip()
    if not raw:
        return NETSUITE_DEFAULT_TABLES
    tables = tuple(dict.fromkeys(t.strip().lower() for t in raw.split(",") if t.strip()))
    for table in tables:
        base_spec(table)  # a name that is no SQL identifier fails here, at load, naming the variable's value
    return tables


def build_table_asset(table: str) -> dg.AssetsDefinition:
    spec = base_spec(table)

    @tenant_partitioned_asset(
        key=["netsuite", table],
        description=(
            f"NetSuite `{table}` rows by last-modified day, upserted into `{spec.qualified_name}` by "
            f"({', '.join(spec.key)}); deleted records keep their row with `deleted_at` set from `deletedrecord`."
        ),
        table=spec,
        partitions_def=NETSUITE_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=POOL,
        kinds={"netsuite", "postgres"},
        resources={"netsuite": NetSuiteResource},
        checks=[RECONCILED],
    )
    def _table_asset(run: TenantRun, tenant: Tenant, days: list[date]) -> None:
        settings = tenant.netsuite()
        first = max(days[0], date.fromisoformat(settings.start_date))
        if table not in settings.tables or first > days[-1]:
            reason = "table not in the tenant's tables" if table not in settings.tables else "before start_date"
            run.log.info(f"{tenant.id}: skipping {table} for {days[0]}..{days[-1]}: {reason}")
            run.check(RECONCILED.name, passed=True, skipped=reason)
            return
        resource = run.resource("netsuite", NetSuiteResource)
        window = range_window(first, days[-1], timedelta(minutes=resource.lag_minutes))
        with resource.client(settings) as client:
            extraction = extract_window(
                client,
                run.warehouse,
                table=table,
                tenant_id=tenant.id,
                window=window,
                page_size=resource.page_size,
            )
            requests, waits = client.requests, client.concurrency_waits
        run.log.info(
            f"{tenant.id}: {extraction.rows} {table} rows modified in [{window.start}, {window.end}) in "
            f"{extraction.pages} pages and {len(extraction.loads)} load(s); {extraction.deleted_records} deleted"
        )
        run.loaded(*extraction.loads)
        run.count(
            rows_extracted=extraction.rows,
            suiteql_requests=requests,
            concurrency_waits=waits,
            deleted_records=extraction.deleted_records,
            **({"deleted_lines": extraction.deleted_lines} if table == "transactionline" else {}),
            http_seconds=round(extraction.http_seconds, 3),
        )
        run.collect("windows", [f"{tenant.id}: {window.start:%Y-%m-%d %H:%M} .. {window.end:%Y-%m-%d %H:%M}"])
        run.collect("added_columns", extraction.added_columns, unique=True)
        run.preview(extraction.preview)
        run.check(
            RECONCILED.name,
            passed=extraction.reconciled,
            extracted=extraction.rows,
            source_count=extraction.source_count,
            total_results=extraction.total_results,
            window=[_iso(window.start), _iso(window.end)],
        )

    return _table_asset


def _iso(moment: datetime) -> str:
    return moment.isoformat(sep=" ")


netsuite_table_assets = [build_table_asset(table) for table in configured_tables()]
