"""GA4 partitions: one per day and tenant, from the first day any tenant's export is expected to hold."""

from ingestion_platform.tenants import daily_by_tenant

GA4_START_DATE = "2024-01-01"
GA4_PARTITIONS = daily_by_tenant(GA4_START_DATE)
