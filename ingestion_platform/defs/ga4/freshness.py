"""GA4 freshness: a tenant's day is loaded by 12:00 UTC the next day.

The daily schedule runs at 09:00 UTC (yesterday, plus a two-day lookback); three hours cover a slow export or one
failed attempt retried. Only tenants with `ga4:` settings are expected.
"""

from datetime import time

import dagster as dg

from ingestion_platform.defs.ga4.assets import ga4_event_assets
from ingestion_platform.freshness import DayLoadedBy, freshness_definitions, targets_for, tenants_with_source

GA4_DEADLINE = DayLoadedBy(deadline=time(12, 0), day_lag=1)


@dg.definitions
def ga4_freshness() -> dg.Definitions:
    return freshness_definitions(
        "ga4",
        targets_for(ga4_event_assets, GA4_DEADLINE, tenants_with_source("ga4")),
        description="Yesterday's events are loaded for every GA4 tenant by 12:00 UTC",
    )
