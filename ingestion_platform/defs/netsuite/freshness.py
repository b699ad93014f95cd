"""NetSuite freshness: a tenant's day of changes is extracted by the next morning, 08:00 UTC.

The daily schedule runs at 04:00 UTC; four hours leave room for a large day and a retried run. A tenant is expected
on a table only if its `netsuite:` settings extract that table (tables differ per account).
"""

from collections.abc import Iterable
from datetime import time

import dagster as dg

from ingestion_platform.defs.netsuite.assets import netsuite_table_assets
from ingestion_platform.freshness import DayLoadedBy, freshness_definitions, targets_for
from ingestion_platform.tenants import TenantConfigError, TenantRegistry

NETSUITE_DEADLINE = DayLoadedBy(deadline=time(8, 0), day_lag=1)


def tenants_extracting(registry: TenantRegistry, asset_key: dg.AssetKey) -> Iterable[str]:
    table = asset_key.path[-1]
    for tenant in registry.with_source("netsuite"):
        try:
            if table in tenant.netsuite().tables:
                yield tenant.id
        except TenantConfigError:
            yield tenant.id  # misconfigured settings load nothing: the tenant is stale, not exempt


@dg.definitions
def netsuite_freshness() -> dg.Definitions:
    return freshness_definitions(
        "netsuite",
        targets_for(netsuite_table_assets, NETSUITE_DEADLINE, tenants_extracting),
        description="Yesterday's changes are extracted for every NetSuite tenant by 08:00 UTC",
    )
