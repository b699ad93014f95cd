"""`brightdata_progress`: the replaced service's polling threads, as one sensor over every pending crawl.

Each tick asks BrightData about every triggered crawl at once (a thread pool; each call bounded by the client's
timeout and short retries), so one slow or failing call delays only itself, and its crawl is simply asked again
next tick. Ready snapshots become `snapshot` partitions with a run of `brightdata/raw_snapshot`; failures and
timeouts are written to `social.crawl_metadata`; crawls BrightData refused with 429 are triggered again.
"""

import json
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from ingestion_platform import crawl_state
from ingestion_platform.defs.brightdata import crawls
from ingestion_platform.defs.brightdata.assets import RAW_SNAPSHOT_KEY, SNAPSHOT_PARTITIONS, raw_snapshot
from ingestion_platform.defs.brightdata.checks import stuck_downloads_evaluation
from ingestion_platform.defs.brightdata.crawls import Crawl
from ingestion_platform.resources.brightdata import BrightDataClient, BrightDataResource, Progress, TriggerResult
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.tenants import SOURCE_TAG, TenantRegistry

# BrightData keeps a snapshot 16 days; past that a ready crawl cannot be downloaded any more.
RETENTION = timedelta(days=16)


def _run_request(crawl: Crawl) -> dg.RunRequest:
    assert crawl.snapshot_id is not None
    return dg.RunRequest(
        run_key=f"raw_snapshot:{crawl.snapshot_id}",
        partition_key=crawl.snapshot_id,
        asset_selection=[RAW_SNAPSHOT_KEY],
        tags={SOURCE_TAG: "brightdata", "tenant": crawl.tenant_id, "brightdata/crawl_id": crawl.crawl_id},
    )


def check_progress(
    context: dg.SensorEvaluationContext,
    brightdata: BrightDataResource,
    warehouse: WarehouseResource,
    registry: TenantRegistry,
    timeout: timedelta,
) -> dg.SensorResult | dg.SkipReason:
    pending = crawls.pending(warehouse)
    now = datetime.now(UTC)
    engine = warehouse.engine
    ready: list[Crawl] = []
    counts: dict[str, int] = defaultdict(int)
    by_tenant: dict[str, list[Crawl]] = defaultdict(list)
    for crawl in pending:
        by_tenant[crawl.tenant_id].append(crawl)

    with ExitStack() as stack, ThreadPoolExecutor(max_workers=brightdata.progress_workers) as pool:
        clients: dict[str, BrightDataClient] = {}
        for tenant_id in by_tenant:
            try:
                settings = registry.get(tenant_id).brightdata()
                clients[tenant_id] = stack.enter_context(brightdata.client(settings.api_key_env))
            except Exception as exc:
                context.log.error(f"{tenant_id}: cannot reach BrightData for {len(by_tenant[tenant_id])} crawls: {exc}")
        futures: dict[Future[TriggerResult] | Future[Progress], Crawl] = {}
        for crawl in pending:
            client = clients.get(crawl.tenant_id)
            if client is None:
                continue
            if crawl.status == "queued":
                if now - crawl.triggered_at > timeout:
                    _give_up_queued(engine, crawl, now, timeout)
                    counts["timed_out"] += 1
                    continue
                request = crawl.request()
                futures[pool.submit(client.trigger, request.dataset_id, [request.brightdata_input()])] = crawl
            else:
                assert crawl.snapshot_id is not None
                futures[pool.submit(client.progress, crawl.snapshot_id)] = crawl
        for future, crawl in futures.items():
            try:
                answer = future.result()
            except Exception as exc:
                counts["errors"] += 1
                context.log.warning(f"{crawl.tenant_id}: crawl {crawl.crawl_id}: asked again next tick after: {exc}")
                continue
            if isinstance(answer, TriggerResult):
                if answer.snapshot_id:
                    crawl_state.set_status(
                        engine,
                        tenant_id=crawl.tenant_id,
                        crawl_id=crawl.crawl_id,
                        status="triggered",
                        snapshot_id=answer.snapshot_id,
                        # The crawl's own time limit starts when BrightData accepts it, not at the first refusal.
                        triggered_at=now,
                    )
                    counts["triggered"] += 1
                else:
                    crawl_state.set_status(
                        engine,
                        tenant_id=crawl.tenant_id,
                        crawl_id=crawl.crawl_id,
                        status="queued",
                        stage="trigger",
                        error=answer.refusal,
                    )
                    counts["queued"] += 1
                continue
            counts[_apply(engine, crawl, answer, now, timeout, ready)] += 1

    # The stuck-download warning is evaluated here too, since a download that keeps failing never reaches the
    # check's own step; it is reported when its outcome changes, not every 30 s.
    stuck = stuck_downloads_evaluation(warehouse, brightdata.stale_download_days)
    outcome = json.dumps(stuck.metadata["snapshots"].value, sort_keys=True)
    events = [] if context.cursor == outcome else [stuck]
    seen = {c.crawl_id for c in ready}
    ready += [c for c in crawls.ready_not_downloaded(warehouse, RETENTION) if c.crawl_id not in seen]
    if not pending and not ready and not events:
        return dg.SkipReason("no pending BrightData crawls")
    known = set(SNAPSHOT_PARTITIONS.get_partition_keys(dynamic_partitions_store=context.instance))
    new_ids = sorted({c.snapshot_id for c in ready if c.snapshot_id and c.snapshot_id not in known})
    context.log.info(f"BrightData progress: {dict(counts)}; requesting {len(ready)} snapshot download(s)")
    return dg.SensorResult(
        run_requests=[_run_request(c) for c in ready],
        dynamic_partitions_requests=[SNAPSHOT_PARTITIONS.build_add_request(new_ids)] if new_ids else [],
        asset_events=events,
        cursor=outcome,
    )


def _give_up_queued(engine: sa.Engine, crawl: Crawl, now: datetime, timeout: timedelta) -> None:
    """A trigger BrightData keeps refusing (429: too many running jobs) is not retried forever: past the crawl
    timeout since the first attempt it is timed out at the `trigger` stage, so the operator sees it and the next
    day's schedule starts a fresh crawl."""
    waited = now - crawl.triggered_at
    error = (
        f"BrightData refused the trigger for {waited.total_seconds() / 60:.0f} minutes "
        f"(limit {timeout.total_seconds() / 60:.0f}); not tried again"
    )
    crawl_state.set_status(
        engine,
        tenant_id=crawl.tenant_id,
        crawl_id=crawl.crawl_id,
        status="timed_out",
        stage="trigger",
        error=error,
        completed_at=now,
    )


def _apply(
    engine: sa.Engine, crawl: Crawl, progress: Progress, now: datetime, timeout: timedelta, ready: list[Crawl]
) -> str:
    tenant_id, crawl_id = crawl.tenant_id, crawl.crawl_id
    if progress.status == "ready":
        crawl_state.set_status(engine, tenant_id=tenant_id, crawl_id=crawl_id, status="ready", completed_at=now)
        ready.append(crawl)
        return "ready"
    if progress.status == "failed":
        error = progress.error or "BrightData reported the crawl failed without a message"
        crawl_state.set_status(
            engine,
            tenant_id=tenant_id,
            crawl_id=crawl_id,
            status="failed",
            stage="crawl",
            error=error,
            completed_at=now,
        )
        return "failed"
    # starting, running, collecting, digesting, or a status BrightData adds later: still running.
    waited = now - crawl.triggered_at
    if waited > timeout:
        error = (
            f"no result after {waited.total_seconds() / 60:.0f} minutes (limit {timeout.total_seconds() / 60:.0f}); "
            f"BrightData last said {progress.status!r}"
        )
        crawl_state.set_status(
            engine,
            tenant_id=tenant_id,
            crawl_id=crawl_id,
            status="timed_out",
            stage="progress",
            error=error,
            completed_at=now,
        )
        return "timed_out"
    return "running"


@dg.sensor(
    name="brightdata_progress",
    description="Checks every pending BrightData crawl; requests the download of each ready snapshot.",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=[raw_snapshot],
)
def brightdata_progress(
    context: dg.SensorEvaluationContext,
    brightdata: BrightDataResource,
    warehouse: WarehouseResource,
    tenants: TenantsResource,
) -> dg.SensorResult | dg.SkipReason:
    timeout = timedelta(minutes=brightdata.crawl_timeout_minutes)
    return check_progress(context, brightdata, warehouse, tenants.registry(), timeout)
