"""Operations under the real daemon: freshness sensors evaluate and record checks; `platform/health` gets its rows."""

import dagster as dg

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.tenants import load_registry
from ingestion_platform_tests.e2e.conftest import Landed
from ingestion_platform_tests.e2e.stack import UIStack

FRESHNESS_SENSORS = ("ga4_freshness", "sftp_freshness", "brightdata_freshness", "netsuite_freshness")


def test_freshness_sensors_run_by_default_and_record_a_failing_check(ui_stack: UIStack) -> None:
    for name in FRESHNESS_SENSORS:
        assert ui_stack.sensor(name)["sensorState"]["status"] == "RUNNING", name  # nobody turned them on
    expected = sorted(t.id for t in load_registry(ui_stack.sandbox.tenants_file).with_source("sftp"))
    assert expected
    # No run loads sftp/locations here, so only the sensor can have evaluated its check: today's report (or, before
    # 23:00 UTC, yesterday's) was never dropped, so every SFTP tenant is stale.
    check_key = dg.AssetCheckKey(dg.AssetKey(["sftp", "locations"]), "freshness")

    def recorded() -> dg.AssetCheckEvaluation | None:
        with ui_stack.instance() as instance:
            record = instance.get_latest_asset_check_evaluation_record(check_key)
        return record.event.asset_check_evaluation if record and record.event and record.event.dagster_event else None

    evaluation = ui_stack.wait_until(recorded, 300, "sftp_freshness to record the sftp/locations check")
    assert not evaluation.passed
    assert evaluation.metadata["stale_tenants"].value == expected
    ticks = ui_stack.sensor("sftp_freshness")["sensorState"]["ticks"]
    assert ticks and all(t["error"] is None for t in ticks), ticks


def test_platform_health_has_the_sensor_loaded_report_per_tenant(ui_stack: UIStack, landed: Landed) -> None:
    assert ui_stack.schedule("platform_health_schedule")["scheduleState"]["status"] == "RUNNING"
    (loaded,) = ui_stack.wait_for_runs(
        {"dagster/sensor_name": "sftp_users_files", "sftp/file": landed.sftp_file}, timeout=420
    )
    assert loaded["status"] == "SUCCESS", ui_stack.log_tails()
    run_id = ui_stack.materialize([["platform", "health"]])
    assert ui_stack.wait_for_run(run_id, timeout=300) == "SUCCESS", ui_stack.log_tails()

    warehouse = WarehouseResource(url=ui_stack.warehouse_url)
    rows = warehouse.query("SELECT * FROM platform.health WHERE source = 'sftp' AND tenant_id = 'acme'")
    assert len(rows) == 1
    row = rows.iloc[0]
    # The newest success is at least as new as the sensor's run that loaded the dropped report.
    assert row["last_success_at"].timestamp() >= loaded["startTime"]
    assert row["last_success_asset"] in {"sftp/users", "sftp/locations"}
    assert str(row["last_success_partition"]).endswith("|acme")
    assert 0 <= row["lag_seconds"] < 3600
    assert row["status"] != "never loaded"
    # Every source the stack loads has rows, keyed by tenant (GA4 and NetSuite from backfills, SFTP from its sensor).
    sources = set(warehouse.query("SELECT DISTINCT source FROM platform.health")["source"])
    assert {"ga4", "sftp", "netsuite", "brightdata"} <= sources
