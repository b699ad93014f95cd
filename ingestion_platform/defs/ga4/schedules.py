"""The daily GA4 load: yesterday, plus the two days before because daily tables take late events for 72 hours."""

from datetime import date, timedelta

import dagster as dg

from ingestion_platform.tenants import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, SOURCE_TAG, TENANT_DIMENSION

GA4_LOOKBACK_DAYS = 3
# The old service failed a job after 30 minutes; run monitoring (dagster.yaml) enforces this tag.
GA4_MAX_RUNTIME_SECONDS = 1800

ga4_events_job = dg.define_asset_job(
    "ga4_events",
    selection=dg.AssetSelection.groups("ga4") - dg.AssetSelection.assets(["ga4", "availability"]),
    description="Load GA4 event types for the selected day x tenant partitions.",
    tags={SOURCE_TAG: "ga4", "dagster/max_runtime": str(GA4_MAX_RUNTIME_SECONDS)},
)


def lookback_window(scheduled_for: date, days: int = GA4_LOOKBACK_DAYS) -> tuple[str, str]:
    """The days a run scheduled on `scheduled_for` reloads: the `days` days ending yesterday."""
    last = scheduled_for - timedelta(days=1)
    return (last - timedelta(days=days - 1)).isoformat(), last.isoformat()


def ga4_run_requests(scheduled_for: date, tenants: list[str]) -> list[dg.RunRequest]:
    """Per tenant: one run for yesterday, one for the two days before, each a single query per event type.

    Yesterday's daily table may not exist yet for a property without streaming export; keeping it in its own
    run means that failure never holds back the refresh of the earlier days, and tomorrow's lookback retries it.
    """
    first, last = lookback_window(scheduled_for)
    yesterday = date.fromisoformat(last)
    ranges = [(last, last), (first, (yesterday - timedelta(days=1)).isoformat())]
    return [
        dg.RunRequest(
            run_key=f"ga4:{tenant}:{start}:{end}",
            tags={
                PARTITION_RANGE_START_TAG: f"{start}|{tenant}",
                PARTITION_RANGE_END_TAG: f"{end}|{tenant}",
                "tenant": tenant,
            },
        )
        for tenant in sorted(tenants)
        for start, end in ranges
    ]


@dg.schedule(
    job=ga4_events_job,
    # Daily tables usually land in the morning of the property's time zone; 09:00 UTC catches most of them.
    cron_schedule="0 9 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 09:00 UTC: load yesterday and reload the two days before for every tenant.",
)
def ga4_daily_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    tenants = context.instance.get_dynamic_partitions(TENANT_DIMENSION)
    if not tenants:
        return dg.SkipReason("no tenants registered yet: the tenant sync sensor adds them from tenants.yaml")
    return ga4_run_requests(context.scheduled_execution_time.date(), list(tenants))
