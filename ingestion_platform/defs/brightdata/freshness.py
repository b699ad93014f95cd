"""BrightData freshness: each crawling tenant's snapshot lands within the daily crawl window, 03:00-05:00 UTC.

`brightdata_daily_crawls` triggers at 03:00 UTC; `brightdata_progress` gives a crawl up to `crawl_timeout_minutes`
(60 by default) before marking it timed out, and the snapshot download follows within minutes, so by 05:00 every
tenant with crawl targets has a `raw_snapshot` materialized since 03:00. Snapshot partitions do not name the
tenant; the run's `tenant` tag does. `brightdata/posts` follows its snapshot by automation and is not checked
separately: a late snapshot is the cause worth paging for.
"""

from datetime import time, timedelta

import dagster as dg

from ingestion_platform.defs.brightdata.assets import raw_snapshot
from ingestion_platform.freshness import UpdatedWithin, freshness_definitions, targets_for
from ingestion_platform.tenants import TenantConfigError, TenantRegistry

CRAWL_WINDOW = UpdatedWithin(window=timedelta(hours=2), deadline=time(5, 0))


def tenants_crawling(registry: TenantRegistry, asset_key: dg.AssetKey) -> list[str]:
    crawling = []
    for tenant in registry.with_source("brightdata"):
        try:
            if tenant.brightdata().targets:
                crawling.append(tenant.id)
        except TenantConfigError:
            crawling.append(tenant.id)  # misconfigured settings crawl nothing: stale, not exempt
    return crawling


@dg.definitions
def brightdata_freshness() -> dg.Definitions:
    return freshness_definitions(
        "brightdata",
        targets_for([raw_snapshot], CRAWL_WINDOW, tenants_crawling),
        description="A snapshot landed for every crawling tenant within the 03:00-05:00 UTC crawl window",
    )
