"""GA4 partitions: one per day and tenant, from INGESTION_PARTITIONS_START (see `tenants.partitions_start`)."""

from ingestion_platform.tenants import daily_by_tenant

GA4_PARTITIONS = daily_by_tenant()
