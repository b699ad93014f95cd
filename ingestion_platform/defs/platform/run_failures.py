"""Failed runs recorded in the warehouse: the old services' job table with status `failed` and its error message.

The Dagster UI shows failed runs to operators; this table lets the warehouse's consumers (dashboards, alerts,
the data-availability report) see which tenant's load failed and why, in SQL, without access to Dagster.
"""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd
from dagster_shared.error import SerializableErrorInfo

from ingestion_platform.crawl_state import mark_snapshot_failed
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.tenants import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from ingestion_platform.warehouse import Column, TableSpec

RUN_FAILURES = TableSpec(
    schema="platform",
    name="run_failures",
    columns=(
        Column("run_id", "text", nullable=False),
        Column("job_name", "text", nullable=False),
        Column("partition_key", "text", description="the run's partition, or its range as start..end"),
        Column("tenant_id", "text"),
        Column("error", "text"),
        Column("failed_at", "timestamptz", nullable=False),
    ),
    key=("run_id",),
)


def failure_row(run: dg.DagsterRun, error: str | None, failed_at: datetime) -> dict[str, object]:
    tags = run.tags
    partition = tags.get("dagster/partition")
    if partition is None and PARTITION_RANGE_START_TAG in tags:
        partition = f"{tags[PARTITION_RANGE_START_TAG]}..{tags.get(PARTITION_RANGE_END_TAG)}"
    tenant = tags.get("tenant") or tags.get("dagster/partition/tenant")
    if tenant is None and partition and "|" in partition and ".." not in partition:
        tenant = partition.split("|")[1]
    return {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "partition_key": partition,
        "tenant_id": tenant,
        "error": error,
        "failed_at": failed_at,
    }


def root_cause(error: SerializableErrorInfo) -> str:
    """The first error below Dagster's own wrappers: our Failures name tenant and table, so stop there rather
    than at the library exception they wrap."""
    while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    message = error.message.strip()
    # A Failure's message is ours in full; its class path only adds noise to the table.
    return message.split(": ", 1)[-1] if error.cls_name == "Failure" else message


@dg.run_failure_sensor(
    name="record_run_failures",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes every failed run of this code location to `platform.run_failures`.",
)
def record_run_failures(context: dg.RunFailureSensorContext, warehouse: WarehouseResource) -> None:
    # The run's failure event only lists the failed steps; the step failures carry the messages operators need.
    steps = context.instance.all_logs(context.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    messages = [
        f"{e.step_key}: {root_cause(e.dagster_event.step_failure_data.error)}"
        for e in steps
        if e.dagster_event and e.dagster_event.step_failure_data and e.dagster_event.step_failure_data.error
    ]
    error = "\n".join(messages) or context.failure_event.message
    row = failure_row(context.dagster_run, error, datetime.now(UTC))
    warehouse.load(RUN_FAILURES, [pd.DataFrame([row])], mode="merge")
    # A BrightData snapshot's failed download or load is also the crawl's state, where the old failed event went.
    failed_steps = {e.step_key for e in steps}
    if row["partition_key"] and any(str(key).startswith("brightdata__") for key in failed_steps):
        stage = "download" if "brightdata__raw_snapshot" in failed_steps else "load"
        mark_snapshot_failed(warehouse.engine, str(row["partition_key"]), stage=stage, error=error)
    context.log.info(f"recorded failure of run {context.dagster_run.run_id} ({row['job_name']}, {row['tenant_id']})")
