"""Freshness per tenant on a real DagsterInstance: fresh after a load, failing when a day or window is missed."""

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import dagster as dg
import pytest

from ingestion_platform.freshness import (
    NEXT_EVALUATION_KEY,
    DayLoadedBy,
    FreshnessTarget,
    UpdatedWithin,
    freshness_definitions,
    last_deadline,
    targets_for,
    tenants_with_source,
)
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.tenants import daily_by_tenant, load_registry

DAYS = daily_by_tenant(start_date="2024-01-01")
BATCHES = dg.DynamicPartitionsDefinition(name="test_batch")


@dg.asset(key=["demo", "events"], partitions_def=DAYS)
def events() -> None:
    return None


@dg.asset(key=["demo", "orders"], partitions_def=BATCHES)
def orders() -> None:
    return None


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  acme:\n    ga4: {}\n  globex:\n    ga4: {}\n  initech: {}\n")
    return path


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex", "initech"])
        yield instance


def load_day(instance: dg.DagsterInstance, day: str, tenant: str) -> None:
    assert dg.materialize([events], instance=instance, partition_key=f"{day}|{tenant}").success


def test_last_deadline_is_today_after_the_time_and_yesterday_before() -> None:
    noon = time(12, 0)
    assert last_deadline(datetime(2024, 3, 10, 13, tzinfo=UTC), noon) == datetime(2024, 3, 10, 12, tzinfo=UTC)
    assert last_deadline(datetime(2024, 3, 10, 11, tzinfo=UTC), noon) == datetime(2024, 3, 9, 12, tzinfo=UTC)


def test_day_rule_fails_per_missing_tenant_and_passes_once_every_day_is_loaded(
    instance: dg.DagsterInstance, registry_file: Path
) -> None:
    registry = load_registry(registry_file)
    [target] = targets_for([events], DayLoadedBy(deadline=time(12, 0), day_lag=1), tenants_with_source("ga4"))
    after_noon = datetime(2024, 3, 10, 13, tzinfo=UTC)

    never = target.evaluate(instance, registry, after_noon)
    assert not never.passed and never.stale == ["acme", "globex"]  # initech has no ga4 settings: not expected

    load_day(instance, "2024-03-09", "acme")
    load_day(instance, "2024-03-08", "globex")  # an older day does not make globex fresh
    partial = target.evaluate(instance, registry, after_noon)
    assert not partial.passed and partial.stale == ["globex"]
    assert "globex (expected 2024-03-09|globex" in partial.description

    load_day(instance, "2024-03-09", "globex")
    fresh = target.evaluate(instance, registry, after_noon)
    assert fresh.passed and fresh.stale == []
    assert fresh.fresh_until == datetime(2024, 3, 11, 12, tzinfo=UTC).timestamp()
    # Before the deadline the day before is still what counts; after the next deadline, the next day is due.
    assert target.evaluate(instance, registry, datetime(2024, 3, 10, 11, tzinfo=UTC)).stale == ["acme"]
    stale = target.evaluate(instance, registry, datetime(2024, 3, 11, 12, 1, tzinfo=UTC))
    assert not stale.passed and stale.stale == ["acme", "globex"]
    assert stale.check_result().metadata["expected_day"] == dg.MetadataValue.text("2024-03-10")


def test_window_rule_attributes_batches_by_run_tag_and_fails_once_the_window_passes(
    instance: dg.DagsterInstance,
) -> None:
    instance.add_dynamic_partitions("test_batch", ["acme/b1", "globex/b1"])
    for tenant in ("acme", "globex"):
        result = dg.materialize([orders], instance=instance, partition_key=f"{tenant}/b1", tags={"tenant": tenant})
        assert result.success
    rule = UpdatedWithin(window=timedelta(days=2), tenants_seen_within=timedelta(days=30))
    target = FreshnessTarget(orders, orders.key, rule, None)
    now = datetime.now(UTC)

    fresh = target.evaluate(instance, None, now)
    assert fresh.passed and [t.tenant_id for t in fresh.tenants] == ["acme", "globex"]
    assert fresh.fresh_until is not None and fresh.fresh_until > now.timestamp()

    later = target.evaluate(instance, None, now + timedelta(days=2, minutes=1))
    assert not later.passed and later.stale == ["acme", "globex"]
    assert "lack an update within 2 days" in later.description
    # Past the seen-within span the tenants have left the source: nothing is expected of them any more.
    gone = target.evaluate(instance, None, now + timedelta(days=31))
    assert gone.passed and gone.tenants == ()


def test_window_rule_with_a_deadline_expects_registry_tenants_inside_the_crawl_window(
    instance: dg.DagsterInstance, registry_file: Path
) -> None:
    instance.add_dynamic_partitions("test_batch", ["acme/s1"])
    assert dg.materialize([orders], instance=instance, partition_key="acme/s1", tags={"tenant": "acme"}).success
    loaded_at = datetime.now(UTC)
    deadline = (loaded_at + timedelta(minutes=30)).time().replace(second=0, microsecond=0)
    rule = UpdatedWithin(window=timedelta(hours=2), deadline=deadline)
    target = FreshnessTarget(orders, orders.key, rule, tenants_with_source("ga4"))
    registry = load_registry(registry_file)

    # Seen from now, the last window ended at yesterday's deadline; acme's snapshot is newer than its start.
    now = target.evaluate(instance, registry, loaded_at)
    assert now.stale == ["globex"] and not now.passed
    assert now.next_evaluation == (last_deadline(loaded_at, deadline) + timedelta(days=1)).timestamp()
    # Tomorrow's window starts after today's snapshot: acme is stale too until its next crawl lands.
    tomorrow = target.evaluate(instance, registry, loaded_at + timedelta(days=1, hours=1))
    assert tomorrow.stale == ["acme", "globex"]


def test_check_runs_with_the_load_and_the_sensor_records_only_due_evaluations(
    instance: dg.DagsterInstance, registry_file: Path
) -> None:
    rule = DayLoadedBy(deadline=time(12, 0), day_lag=1)
    defs = freshness_definitions("demo", targets_for([events], rule, tenants_with_source("ga4")), description="d")
    [checks] = list(defs.asset_checks or [])
    [sensor] = list(defs.sensors or [])
    assert isinstance(sensor, dg.SensorDefinition) and sensor.default_status == dg.DefaultSensorStatus.RUNNING
    tenants = TenantsResource(path=str(registry_file))
    check_key = dg.AssetCheckKey(events.key, "freshness")

    # Never evaluated: the sensor evaluates in its tick and returns a failing evaluation naming both tenants.
    result = sensor(dg.build_sensor_context(instance=instance, resources={"tenants": tenants}))
    assert isinstance(result, dg.SensorResult)
    [evaluation] = result.asset_events
    assert isinstance(evaluation, dg.AssetCheckEvaluation)
    assert not evaluation.passed and evaluation.metadata["stale_tenants"].value == ["acme", "globex"]
    instance.report_runless_asset_event(evaluation)  # what the daemon does with a sensor's asset events

    # Recorded with its next evaluation at the next deadline: nothing is due until then.
    again = sensor(dg.build_sensor_context(instance=instance, resources={"tenants": tenants}))
    assert isinstance(again, dg.SensorResult) and not again.asset_events and again.skip_reason is not None
    record = instance.get_latest_asset_check_evaluation_record(check_key)
    assert record is not None and record.event is not None and record.event.asset_check_evaluation is not None
    assert NEXT_EVALUATION_KEY in record.event.asset_check_evaluation.metadata

    # Loading the expected day re-evaluates the check in the load's own run: fresh once both tenants have it.
    day = (last_deadline(datetime.now(UTC), time(12, 0)).date() - timedelta(days=1)).isoformat()
    first = dg.materialize(
        [events, checks], instance=instance, partition_key=f"{day}|acme", resources={"tenants": tenants}
    )
    [in_run] = first.get_asset_check_evaluations()
    assert not in_run.passed and in_run.metadata["stale_tenants"].value == ["globex"]
    second = dg.materialize(
        [events, checks], instance=instance, partition_key=f"{day}|globex", resources={"tenants": tenants}
    )
    [passed] = second.get_asset_check_evaluations()
    assert passed.passed and passed.description == "every tenant (2) has day " + day + " loaded"
