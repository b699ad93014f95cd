"""A warning while there is still time: BrightData deletes snapshots 16 days after they are ready, so a download
that keeps failing for days (a bad key, a full bucket) must reach an operator long before the data is gone."""

from datetime import timedelta

import dagster as dg

from ingestion_platform.defs.brightdata import crawls
from ingestion_platform.defs.brightdata.assets import RAW_SNAPSHOT_KEY
from ingestion_platform.resources.brightdata import BrightDataResource
from ingestion_platform.resources.warehouse import WarehouseResource

STUCK_CHECK = "downloads_not_stuck"


def stuck_downloads_evaluation(warehouse: WarehouseResource, max_age_days: float) -> dg.AssetCheckEvaluation:
    stuck = crawls.stuck_downloads(warehouse, timedelta(days=max_age_days))
    return dg.AssetCheckEvaluation(
        asset_key=RAW_SNAPSHOT_KEY,
        check_name=STUCK_CHECK,
        passed=not stuck,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "stuck_snapshots": dg.MetadataValue.int(len(stuck)),
            "max_age_days": dg.MetadataValue.float(max_age_days),
            "snapshots": dg.MetadataValue.json(
                [
                    {"tenant": c.tenant_id, "snapshot_id": c.snapshot_id, "ready_at": str(c.completed_at)}
                    for c in stuck[:50]
                ]
            ),
        },
    )


@dg.asset_check(
    asset=RAW_SNAPSHOT_KEY,
    name=STUCK_CHECK,
    blocking=False,
    description=(
        "Warns when a snapshot BrightData finished is still not in the object store after `stale_download_days` "
        "(default 3; BrightData keeps snapshots 16 days). Also evaluated by the brightdata_progress sensor, since "
        "a download that keeps failing never reaches this check's own step."
    ),
)
def downloads_not_stuck(warehouse: WarehouseResource, brightdata: BrightDataResource) -> dg.AssetCheckResult:
    evaluation = stuck_downloads_evaluation(warehouse, brightdata.stale_download_days)
    return dg.AssetCheckResult(passed=evaluation.passed, severity=evaluation.severity, metadata=evaluation.metadata)
