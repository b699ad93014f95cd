"""Recommender freshness: landing-driven, so a last-update window per tenant.

Tenants upload interactions daily and item catalogues when they change; nothing in tenants.yaml lists recsys
tenants, so the expected tenants are those that uploaded in the last 30 days. Interactions older than two days (a
daily upload plus a day's slack) or items older than eight days (weekly plus a day) make that tenant stale. The
derived features and training samples follow their uploads by automation and are not checked separately.
"""

from datetime import timedelta

import dagster as dg

from ingestion_platform.defs.recsys.uploads import upload_assets
from ingestion_platform.freshness import FreshnessTarget, UpdatedWithin, freshness_definitions

SEEN_WITHIN = timedelta(days=30)
WINDOWS = {"interactions": timedelta(days=2), "items": timedelta(days=8)}


@dg.definitions
def recsys_freshness() -> dg.Definitions:
    targets = [
        FreshnessTarget(
            asset, asset.key, UpdatedWithin(WINDOWS[asset.key.path[-1]], tenants_seen_within=SEEN_WITHIN), None
        )
        for asset in upload_assets
    ]
    return freshness_definitions(
        "recsys", targets, description="Every uploading tenant's latest upload is recent (last 30 days' uploaders)"
    )
