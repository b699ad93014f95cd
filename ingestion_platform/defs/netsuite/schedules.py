"""The daily NetSuite load: yesterday, and the day before again.

The day before is re-read because rows stamped late in a day can commit after that day's run (the lag window
covers minutes, this covers a failed or late run), and because its reconciliation check is worth a second look once
the day is quiet. Both days are one range run per tenant: one key-set query per table over two days.
"""

from datetime import date, timedelta

import dagster as dg

from ingestion_platform.defs.netsuite.assets import netsuite_table_assets
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.tenants import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, SOURCE_TAG

NETSUITE_RECHECK_DAYS = 1
NETSUITE_DAILY_CRON = "0 4 * * *"

netsuite_tables_job = dg.define_asset_job(
    "netsuite_tables",
    selection=dg.AssetSelection.assets(*netsuite_table_assets),
    description="Extract the NetSuite tables for the selected day x tenant partitions.",
    tags={SOURCE_TAG: "netsuite"},
)


def netsuite_run_requests(scheduled_for: date, tenants: list[str]) -> list[dg.RunRequest]:
    last = scheduled_for - timedelta(days=1)
    first = last - timedelta(days=NETSUITE_RECHECK_DAYS)
    return [
        dg.RunRequest(
            run_key=f"netsuite:{tenant}:{first}:{last}",
            tags={
                PARTITION_RANGE_START_TAG: f"{first.isoformat()}|{tenant}",
                PARTITION_RANGE_END_TAG: f"{last.isoformat()}|{tenant}",
                "tenant": tenant,
            },
        )
        for tenant in sorted(tenants)
    ]


@dg.schedule(
    job=netsuite_tables_job,
    cron_schedule=NETSUITE_DAILY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 04:00 UTC: per tenant with NetSuite settings, load yesterday and re-check the day before.",
)
def netsuite_daily_schedule(
    context: dg.ScheduleEvaluationContext, tenants: TenantsResource
) -> list[dg.RunRequest] | dg.SkipReason:
    registered = set(context.instance.get_dynamic_partitions("tenant"))
    with_netsuite = [t.id for t in tenants.registry().with_source("netsuite") if t.id in registered]
    if not with_netsuite:
        return dg.SkipReason("no registered tenant has `netsuite:` settings")
    return netsuite_run_requests(context.scheduled_execution_time.date(), with_netsuite)
