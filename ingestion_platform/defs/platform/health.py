"""`platform/health`: the replaced services' job-status and availability endpoints as one table, per source and tenant.

Operators (and dashboards without Dagster access) read `platform.health` for each source and tenant: the last
success (when, which asset and partition, which run), the lag since then, the last failure with its root error,
and whether a freshness check currently names the tenant stale. It is rebuilt from the Dagster instance every
15 minutes by `platform_health_schedule` (RUNNING by default).

It stays cheap however long the history grows: the instance's asset keys, per asset the newest materialization
records only (capped, indexed by asset key) and the latest `freshness` evaluation, and the newest failed runs of
the last `FAILURE_LOOKBACK` (capped), reading a run's step-failure events (indexed by run id) only while it may
still be some row's latest failure. Nothing scans the event log.
"""

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd

from ingestion_platform.asset_events import latest_updates_by_tenant, tenant_of_tags
from ingestion_platform.assets import OWNERS
from ingestion_platform.defs.platform.run_failures import root_cause
from ingestion_platform.freshness import CHECK_NAME as FRESHNESS_CHECK
from ingestion_platform.metadata import definition_metadata, preview_md
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.tenants import TENANT_DIMENSION
from ingestion_platform.warehouse import Column, TableSpec

HEALTH_KEY = dg.AssetKey(["platform", "health"])
PLATFORM_GROUP = "platform"
# Sources whose tenants are listed in tenants.yaml: a listed tenant with no load yet gets a `never loaded` row.
REGISTERED_SOURCES = ("ga4", "sftp", "brightdata", "netsuite")
RECORDS_PER_ASSET = 200
FAILED_RUNS_LIMIT = 200
FAILURE_LOOKBACK = timedelta(days=30)
NO_TENANT = "-"

HEALTH = TableSpec(
    schema="platform",
    name="health",
    columns=(
        Column("source", "text", nullable=False),
        Column("tenant_id", "text", nullable=False, description=f"'{NO_TENANT}' for runs no tenant can be named for"),
        Column("status", "text", nullable=False, description="failing | stale | ok | never loaded"),
        Column("last_success_at", "timestamptz"),
        Column("last_success_asset", "text"),
        Column("last_success_partition", "text"),
        Column("last_success_run_id", "text"),
        Column("lag_seconds", "double precision", description="checked_at - last_success_at"),
        Column("last_failure_at", "timestamptz"),
        Column("last_failure_run_id", "text"),
        Column("last_failure_job", "text"),
        Column("last_failure_error", "text", description="the root error of each failed step"),
        Column("stale_assets", "text[]", description="assets whose freshness check names this tenant stale"),
        Column("checked_at", "timestamptz", nullable=False),
    ),
    key=("source", "tenant_id"),
)


@dataclass
class Row:
    source: str
    tenant_id: str
    last_success_at: float | None = None
    last_success_asset: str | None = None
    last_success_partition: str | None = None
    last_success_run_id: str | None = None
    last_failure_at: float | None = None
    last_failure_run_id: str | None = None
    last_failure_job: str | None = None
    last_failure_error: str | None = None
    stale_assets: list[str] = field(default_factory=list)

    def status(self) -> str:
        if self.last_failure_at is not None and (
            self.last_success_at is None or self.last_failure_at > self.last_success_at
        ):
            return "failing"
        if self.stale_assets:
            return "stale"
        return "ok" if self.last_success_at is not None else "never loaded"

    def record(self, checked_at: datetime) -> dict[str, object]:
        def ts(value: float | None) -> datetime | None:
            return datetime.fromtimestamp(value, UTC) if value is not None else None

        return {
            "source": self.source,
            "tenant_id": self.tenant_id,
            "status": self.status(),
            "last_success_at": ts(self.last_success_at),
            "last_success_asset": self.last_success_asset,
            "last_success_partition": self.last_success_partition,
            "last_success_run_id": self.last_success_run_id,
            "lag_seconds": round(checked_at.timestamp() - self.last_success_at, 1) if self.last_success_at else None,
            "last_failure_at": ts(self.last_failure_at),
            "last_failure_run_id": self.last_failure_run_id,
            "last_failure_job": self.last_failure_job,
            "last_failure_error": self.last_failure_error,
            "stale_assets": sorted(self.stale_assets) or None,
            "checked_at": checked_at,
        }


class Board:
    """The rows being assembled, one per (source, tenant)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}

    def has_failure(self, source: str, tenant: str | None) -> bool:
        row = self.rows.get((source, tenant or NO_TENANT))
        return row is not None and row.last_failure_at is not None

    def row(self, source: str, tenant: str | None) -> Row:
        key = (source, tenant or NO_TENANT)
        if key not in self.rows:
            self.rows[key] = Row(*key)
        return self.rows[key]


def source_assets(instance: dg.DagsterInstance) -> dict[str, list[dg.AssetKey]]:
    """Asset keys the instance has recorded, per source (the key prefix, also the group), without the platform's.

    Read from the instance, not from the run's definitions: a run of this one asset sees only itself in its job's
    asset graph, and the instance also knows the assets of a source whose definitions were renamed or removed.
    """
    by_source: dict[str, list[dg.AssetKey]] = {}
    for key in sorted(instance.get_asset_keys(), key=lambda k: k.to_user_string()):
        if len(key.path) > 1 and key.path[0] != PLATFORM_GROUP:
            by_source.setdefault(key.path[0], []).append(key)
    return by_source


def collect_successes(instance: dg.DagsterInstance, sources: Mapping[str, list[dg.AssetKey]], board: Board) -> None:
    tenant_ids = set(instance.get_dynamic_partitions(TENANT_DIMENSION))
    for source, keys in sources.items():
        # Assets of a source share partitions (a snapshot, a batch): a second pass attributes records whose tenant
        # only a sibling's records named.
        partition_tenants: dict[str, str] = {}
        pending = list(keys)
        for _ in range(2):
            retry = []
            for key in pending:
                found = latest_updates_by_tenant(
                    instance,
                    key,
                    None,
                    limit=RECORDS_PER_ASSET,
                    partition_tenants=partition_tenants,
                    tenant_ids=tenant_ids,
                )
                if found.unattributed:
                    retry.append(key)
                for tenant, update in found.by_tenant.items():
                    row = board.row(source, tenant)
                    if row.last_success_at is None or update.timestamp > row.last_success_at:
                        row.last_success_at = update.timestamp
                        row.last_success_asset = key.to_user_string()
                        row.last_success_partition = update.partition_key
                        row.last_success_run_id = update.run_id
            pending = retry


def collect_stale(instance: dg.DagsterInstance, sources: Mapping[str, list[dg.AssetKey]], board: Board) -> None:
    for source, keys in sources.items():
        for key in keys:
            check_key = dg.AssetCheckKey(key, FRESHNESS_CHECK)
            record = instance.get_latest_asset_check_evaluation_record(check_key)
            evaluation = (
                record.event.asset_check_evaluation if record and record.event and record.event.dagster_event else None
            )
            if evaluation is None or evaluation.passed:
                continue
            stale = evaluation.metadata.get("stale_tenants")
            for tenant in stale.value if stale is not None and isinstance(stale.value, list) else []:
                board.row(source, str(tenant)).stale_assets.append(key.to_user_string())


def _selected_sources(run: dg.DagsterRun) -> set[str]:
    """The sources a run's asset selection or `source` tag names (a sensor's or the UI's runs have one)."""
    sources = {key.path[0] for key in run.asset_selection or ()}
    return sources or ({run.tags["source"]} if run.tags.get("source") else set())


def _run_sources(run: dg.DagsterRun, step_keys: Iterable[str]) -> set[str]:
    """Which sources a failed run was loading: its failed steps' assets, else its selection; a run that names
    none (a job killed before any step) is filed under its job's name."""
    sources = {step.split("__")[0] for step in step_keys if "__" in step}
    return (sources or _selected_sources(run) or {run.job_name}) - {PLATFORM_GROUP}


def _failure_error(instance: dg.DagsterInstance, run_id: str) -> tuple[list[str], str | None]:
    """The failed steps and their root errors; for a run that failed outside any step, the run's own message."""
    steps = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    messages = []
    step_keys = []
    for entry in steps:
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        step_keys.append(event.step_key)
        error = event.step_failure_data.error if event.step_failure_data else None
        messages.append(f"{event.step_key}: {root_cause(error) if error else entry.message}")
    if messages:
        return step_keys, "\n".join(messages)
    run_failures = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return [], run_failures[-1].message if run_failures else None


def collect_failures(instance: dg.DagsterInstance, board: Board, now: datetime) -> None:
    records = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=now - FAILURE_LOOKBACK),
        limit=FAILED_RUNS_LIMIT,
    )
    for record in records:  # newest first: a (source, tenant) keeps the first failure it is given
        run = record.dagster_run
        tenant = tenant_of_tags(run.tags)
        selected = _selected_sources(run) - {PLATFORM_GROUP}
        if selected and all(board.has_failure(source, tenant) for source in selected):
            continue  # a newer failure already stands for every row this run could update: skip its logs
        step_keys, error = _failure_error(instance, run.run_id)
        for source in _run_sources(run, step_keys):
            row = board.row(source, tenant)
            if row.last_failure_at is None:
                row.last_failure_at = record.end_time or record.update_timestamp.timestamp()
                row.last_failure_run_id = run.run_id
                row.last_failure_job = run.job_name
                row.last_failure_error = error


def _iso(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds") if timestamp else ""


@dg.asset(
    key=HEALTH_KEY,
    group_name=PLATFORM_GROUP,
    kinds={"dagster", "postgres"},
    owners=list(OWNERS),
    tags={"source": PLATFORM_GROUP},
    metadata=definition_metadata(HEALTH),
    description="Last success, last failure with its root error, lag and staleness per source and tenant, read "
    "from the Dagster instance into `platform.health` (the old services' job-status and availability endpoints).",
)
def health(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, tenants: TenantsResource
) -> dg.MaterializeResult:
    now = datetime.now(UTC)
    instance = context.instance
    sources = source_assets(instance)
    board = Board()
    collect_successes(instance, sources, board)
    collect_failures(instance, board, now)
    collect_stale(instance, sources, board)
    registry = tenants.registry()
    for source in REGISTERED_SOURCES:
        for tenant in registry.with_source(source):
            board.row(source, tenant.id)
    rows = sorted(board.rows.values(), key=lambda r: (r.source, r.tenant_id))
    records = [row.record(now) for row in rows]
    # Every source this run looked at is replaced whole: a row that no longer applies disappears.
    replaced = sorted({row.source for row in rows} | set(sources) | set(REGISTERED_SOURCES))
    frame = pd.DataFrame(records, columns=HEALTH.column_names)
    result = warehouse.load(HEALTH, [frame], mode="replace", slice_={"source": replaced})
    statuses = Counter(row.status() for row in rows)
    preview = [
        {
            "source": row.source,
            "tenant": row.tenant_id,
            "status": row.status(),
            "last success": _iso(row.last_success_at),
            "lag (h)": round((now.timestamp() - row.last_success_at) / 3600, 1) if row.last_success_at else "",
            "last failure": (row.last_failure_error or "").split("\n")[0],
        }
        for row in rows
    ]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(records)),
            "rows_replaced": dg.MetadataValue.int(result.deleted),
            "by_status": dg.MetadataValue.json(dict(statuses)),
            "failing": dg.MetadataValue.json([f"{r.source}/{r.tenant_id}" for r in rows if r.status() == "failing"]),
            "preview": preview_md(preview, limit=50),
        }
    )


platform_health_schedule = dg.ScheduleDefinition(
    name="platform_health_schedule",
    target=health,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rebuilds `platform.health` every 15 minutes.",
)
