"""One sensor per report kind: list every tenant's folder, request a run for each complete, new or changed file.

Tenants are listed in parallel with a short retry budget, so one unreachable host neither delays the others past
the sensor's time limit nor stops their runs; the failing tenant and the reason are logged on the tick.
"""

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import dagster as dg

from ingestion_platform.defs.sftp.assets import report_pattern
from ingestion_platform.defs.sftp.discovery import FolderState, Listed, Ready, evaluate_folder
from ingestion_platform.defs.sftp.reports import REPORT_KINDS, ReportKind
from ingestion_platform.resources.sftp import SFTPResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.tenants import TENANT_DIMENSION, Tenant

LOOKBACK_DAYS = 7
LISTING_ATTEMPTS = 2


def _scan(
    sftp: SFTPResource, kind: ReportKind, tenant: Tenant, previous: FolderState
) -> tuple[list[Ready], FolderState]:
    settings = tenant.sftp()
    with sftp.session(settings, tenant.id) as session:
        listing = [Listed(f.name, f.size, f.mtime) for f in session.list_files()]
    return evaluate_folder(
        listing,
        previous,
        pattern=report_pattern(kind, settings),
        completion=settings.completion,
        marker_suffix=settings.marker_suffix,
        today=datetime.now(UTC).date(),
        lookback_days=LOOKBACK_DAYS,
    )


def build_report_sensor(kind: ReportKind) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"sftp_{kind.name}_files",
        asset_selection=[dg.AssetKey(["sftp", kind.name])],
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests `sftp/{kind.name}` for each tenant's complete {kind.name} report file "
        f"(new, or changed since it was loaded) dated within the last {LOOKBACK_DAYS} days.",
    )
    def _sensor(context: dg.SensorEvaluationContext, sftp: SFTPResource, tenants: TenantsResource) -> dg.SensorResult:
        cursor: dict[str, FolderState] = json.loads(context.cursor) if context.cursor else {}
        partitions = set(context.instance.get_dynamic_partitions(TENANT_DIMENSION))
        candidates = [t for t in tenants.registry().with_source("sftp") if t.id in partitions]
        quick = sftp.model_copy(update={"max_attempts": LISTING_ATTEMPTS})
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = {t.id: pool.submit(_scan, quick, kind, t, cursor.get(t.id, {})) for t in candidates}
        requests, failures, state = [], {}, {}
        for tenant_id, future in futures.items():
            try:
                ready, state[tenant_id] = future.result()
            except Exception as exc:
                failures[tenant_id] = f"{type(exc).__name__}: {exc}"
                state[tenant_id] = cursor.get(tenant_id, {})
                context.log.error(f"tenant {tenant_id!r}: listing {kind.name} reports failed: {failures[tenant_id]}")
                continue
            requests.extend(
                dg.RunRequest(
                    partition_key=f"{r.day.isoformat()}|{tenant_id}",
                    run_key=f"{tenant_id}:{r.run_key}",
                    tags={"tenant": tenant_id, "sftp/file": r.name},
                )
                for r in ready
            )
        skip = None
        if not requests:
            skip = f"failed tenants: {failures}" if failures else "no new complete files"
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(state, sort_keys=True), skip_reason=skip)

    return _sensor


sftp_report_sensors = [build_report_sensor(kind) for kind in REPORT_KINDS.values()]
