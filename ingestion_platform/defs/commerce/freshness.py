"""Commerce freshness: landing-driven, so a last-update window per tenant.

Batches arrive when a tenant's bulk export runs, typically daily; nothing in tenants.yaml lists commerce tenants,
so the expected tenants are those that loaded a batch in the last 30 days. Orders and order items older than two
days (a daily batch plus a day's slack) make that tenant stale; customers and products change less often and
only need a batch within eight days. Batch partitions (`<tenant>/<batch>`) are attributed by the run's tenant tag.
"""

from datetime import timedelta

import dagster as dg

from ingestion_platform.defs.commerce.assets import COMMERCE_ASSETS
from ingestion_platform.freshness import FreshnessTarget, UpdatedWithin, freshness_definitions

SEEN_WITHIN = timedelta(days=30)
WINDOWS = {
    "customers": timedelta(days=8),
    "products": timedelta(days=8),
    "orders": timedelta(days=2),
    "order_items": timedelta(days=2),
}


@dg.definitions
def commerce_freshness() -> dg.Definitions:
    targets = [
        FreshnessTarget(
            asset, asset.key, UpdatedWithin(WINDOWS[asset.key.path[-1]], tenants_seen_within=SEEN_WITHIN), None
        )
        for asset in COMMERCE_ASSETS
    ]
    return freshness_definitions(
        "commerce", targets, description="Every loading tenant's latest batch is recent (last 30 days' loaders)"
    )
