"""One sensor per report kind: list every tenant's folder, request a run for each complete, new or changed file.

Tenants are listed in parallel with a short retry budget, so one unreachable host neither delays the others past
the sensor's time limit nor stops their runs; the failing tenant and the reason are logged on the tick.

A file is not requested when the latest materialization of its partition already loaded it with the same size and
mtime (its `loaded_files` metadata): the cursor alone would forget that for a new sensor (a fresh instance, a reset
cursor) and reload everything the demo or a backfill loaded.
"""

import json
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, date, datetime

import dagster as dg

from ingestion_platform.defs.sftp.assets import report_pattern
from ingestion_platform.defs.sftp.discovery import FolderState, Listed, Ready, evaluate_folder, loaded_files
from ingestion_platform.defs.sftp.reports import REPORT_KINDS, ReportKind
from ingestion_platform.resources.sftp import SFTPResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.tenants import SOURCE_TAG, TENANT_DIMENSION, Tenant

LOOKBACK_DAYS = 7
# Listing is cheap; a tenant that cannot be listed quickly is reported and tried again on the next tick.
LISTING_DEADLINE_SECONDS = 40
LISTING_TIMEOUTS = {"connect_timeout": 5.0, "banner_timeout": 10.0, "auth_timeout": 10.0, "read_timeout": 15.0}
# The old service failed a job after 30 minutes; run monitoring enforces this tag on sensor-requested runs.
MAX_RUNTIME_SECONDS = 1800
LISTING_ATTEMPTS = 2


def utc_today() -> date:
    """The sensors' clock: report days are dated in UTC."""
    return datetime.now(UTC).date()


def already_loaded(instance: dg.DagsterInstance, kind: ReportKind, tenant_id: str, ready: Ready) -> bool:
    """The partition's latest materialization recorded this very file (same name, size and mtime)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(["sftp", kind.name]), asset_partitions=[f"{ready.day.isoformat()}|{tenant_id}"]
        ),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return False
    return (ready.name, ready.size, ready.mtime) in loaded_files(records[0].asset_materialization.metadata)


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
        today=utc_today(),
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
        quick = sftp.model_copy(
            update={
                "max_attempts": LISTING_ATTEMPTS,
                **{name: min(getattr(sftp, name), limit) for name, limit in LISTING_TIMEOUTS.items()},
            }
        )
        pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"sftp-{kind.name}-listing")
        futures = {t.id: pool.submit(_scan, quick, kind, t, cursor.get(t.id, {})) for t in candidates}
        done, _ = wait(futures.values(), timeout=LISTING_DEADLINE_SECONDS)
        # A host that accepts connections but never answers must not hold the tick past Dagster's sensor timeout;
        # its thread ends on its own socket timeouts.
        pool.shutdown(wait=False, cancel_futures=True)
        requests: list[dg.RunRequest] = []
        failures: dict[str, str] = {}
        state: dict[str, FolderState] = {}
        for tenant_id, future in futures.items():
            try:
                if future not in done:
                    raise TimeoutError(f"no listing within {LISTING_DEADLINE_SECONDS}s")
                ready, state[tenant_id] = future.result()
            except Exception as exc:
                failures[tenant_id] = f"{type(exc).__name__}: {exc}"
                state[tenant_id] = cursor.get(tenant_id, {})
                context.log.error(f"tenant {tenant_id!r}: listing {kind.name} reports failed: {failures[tenant_id]}")
                continue
            loaded = [r for r in ready if already_loaded(context.instance, kind, tenant_id, r)]
            if loaded:
                context.log.info(
                    f"tenant {tenant_id!r}: already loaded, unchanged: {', '.join(r.name for r in loaded)}"
                )
            requests.extend(
                dg.RunRequest(
                    partition_key=f"{r.day.isoformat()}|{tenant_id}",
                    run_key=f"{tenant_id}:{r.run_key}",
                    tags={
                        SOURCE_TAG: "sftp",
                        "tenant": tenant_id,
                        "sftp/file": r.name,
                        "dagster/max_runtime": str(MAX_RUNTIME_SECONDS),
                    },
                )
                for r in ready
                if r not in loaded
            )
        skip = None
        if not requests:
            skip = f"failed tenants: {failures}" if failures else "no new complete files"
        elif failures:
            context.log.warning(f"{len(requests)} run(s) requested; tenants not listed: {failures}")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(state, sort_keys=True), skip_reason=skip)

    return _sensor


sftp_report_sensors = [build_report_sensor(kind) for kind in REPORT_KINDS.values()]
