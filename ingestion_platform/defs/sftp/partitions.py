"""SFTP report partitions: one per report day and tenant, the day being the date in the file name, from
INGESTION_PARTITIONS_START (see `tenants.partitions_start`).

Today is included: a tenant's report for a day is usually uploaded during that day."""

from ingestion_platform.tenants import daily_by_tenant

SFTP_PARTITIONS = daily_by_tenant(end_offset=1)
