"""SFTP freshness: the report of the day is loaded the same day.

Tenants upload a day's users and locations files during that day and the sensor loads them within minutes, so
by 23:00 UTC the day's partition must exist; until then the previous day's report is what is expected. Only
tenants with `sftp:` settings are expected.
"""

from datetime import time

import dagster as dg

from ingestion_platform.defs.sftp.assets import sftp_report_assets
from ingestion_platform.freshness import DayLoadedBy, freshness_definitions, targets_for, tenants_with_source

SFTP_DEADLINE = DayLoadedBy(deadline=time(23, 0), day_lag=0)


@dg.definitions
def sftp_freshness() -> dg.Definitions:
    return freshness_definitions(
        "sftp",
        targets_for(sftp_report_assets, SFTP_DEADLINE, tenants_with_source("sftp")),
        description="Today's report is loaded for every SFTP tenant by 23:00 UTC",
    )
