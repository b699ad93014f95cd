"""SFTP report partitions: one per report day and tenant, the day being the date in the file name.

Today is included: a tenant's report for a day is usually uploaded during that day."""

from ingestion_platform.tenants import daily_by_tenant

SFTP_START_DATE = "2024-01-01"
SFTP_PARTITIONS = daily_by_tenant(SFTP_START_DATE, end_offset=1)
