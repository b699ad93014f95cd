"""Failed runs land in `platform.run_failures` through the real run-failure sensor."""

from datetime import UTC, datetime

import dagster as dg

from ingestion_platform.defs.platform.run_failures import failure_row, record_run_failures
from ingestion_platform.resources.warehouse import WarehouseResource

PARTITIONS = dg.MultiPartitionsDefinition(
    {"date": dg.DailyPartitionsDefinition(start_date="2024-01-01"), "tenant": dg.StaticPartitionsDefinition(["acme"])}
)


@dg.asset(partitions_def=PARTITIONS)
def always_fails() -> None:
    try:
        raise KeyError("inner detail")
    except KeyError as exc:
        raise dg.Failure("tenant 'acme': the export is gone", allow_retries=False) from exc


def test_failed_run_is_recorded_with_tenant_partition_and_error(warehouse: WarehouseResource) -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [always_fails], instance=instance, partition_key="2024-01-02|acme", raise_on_error=False
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(
            sensor_name="record_run_failures",
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"warehouse": warehouse},
        ).for_run_failure()
        record_run_failures(context)
        record_run_failures(context)  # the sensor may see an event twice after a daemon restart: still one row
    rows = warehouse.query("SELECT * FROM platform.run_failures")
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["run_id"], row["partition_key"], row["tenant_id"]) == (result.run_id, "2024-01-02|acme", "acme")
    assert row["error"] == "always_fails: tenant 'acme': the export is gone"


def test_range_runs_record_the_range_and_tenant_tag() -> None:
    run = dg.DagsterRun(
        job_name="ga4_events",
        run_id="r1",
        tags={
            "dagster/asset_partition_range_start": "2024-03-07|acme",
            "dagster/asset_partition_range_end": "2024-03-09|acme",
            "tenant": "acme",
        },
    )
    row = failure_row(run, "boom", datetime(2024, 3, 10, tzinfo=UTC))
    assert row["partition_key"] == "2024-03-07|acme..2024-03-09|acme" and row["tenant_id"] == "acme"
