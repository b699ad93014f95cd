"""`platform/health` on a real DagsterInstance and the embedded PostgreSQL: successes, failures and staleness per
source and tenant, from real runs."""

from datetime import UTC, datetime, time
from pathlib import Path

import dagster as dg
import pandas as pd

from ingestion_platform.defs.platform.health import HEALTH, health
from ingestion_platform.freshness import DayLoadedBy, freshness_definitions, targets_for, tenants_with_source
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.tenants import daily_by_tenant

DAYS = daily_by_tenant(start_date="2024-01-01")
SNAPSHOTS = dg.DynamicPartitionsDefinition(name="test_snapshot")


@dg.asset(key=["demo", "events"], partitions_def=DAYS)
def events(context: dg.AssetExecutionContext) -> None:
    if context.partition_key.keys_by_dimension["tenant"] == "globex":  # type: ignore[attr-defined]
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as exc:
            raise dg.Failure("tenant 'globex': the export table is gone", allow_retries=False) from exc


@dg.asset(key=["crawl", "raw"], partitions_def=SNAPSHOTS)
def raw() -> None:
    return None


@dg.asset(key=["crawl", "posts"], partitions_def=SNAPSHOTS, deps=[raw])
def posts() -> None:
    return None


def test_health_rows_show_success_lag_root_error_and_staleness_per_tenant(
    warehouse: WarehouseResource, tmp_path: Path
) -> None:
    registry = tmp_path / "tenants.yaml"
    registry.write_text("tenants:\n  acme:\n    ga4: {}\n  globex:\n    ga4: {}\n  initech:\n    ga4: {}\n")
    tenants = TenantsResource(path=str(registry))
    rule = DayLoadedBy(deadline=time(12, 0), day_lag=1)
    [freshness] = (
        freshness_definitions(
            "demo", targets_for([events], rule, tenants_with_source("ga4")), description="d"
        ).asset_checks
        or []
    )
    everything = [events, raw, posts, freshness, health]
    resources = {"warehouse": warehouse, "tenants": tenants}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex", "initech"])
        instance.add_dynamic_partitions("test_snapshot", ["s1"])
        ok = dg.materialize([events], instance=instance, partition_key="2024-03-09|acme")
        failed = dg.materialize([events], instance=instance, partition_key="2024-03-09|globex", raise_on_error=False)
        assert ok.success and not failed.success
        # A snapshot's tenant is its run's tag; the posts of that snapshot inherit it from the shared partition.
        assert dg.materialize([raw], instance=instance, partition_key="s1", tags={"tenant": "acme"}).success
        assert dg.materialize([raw, posts], selection=[posts], instance=instance, partition_key="s1").success
        # The freshness check (expecting yesterday) names every ga4 tenant stale.
        checked = dg.materialize(
            everything, selection=dg.AssetSelection.checks(freshness), instance=instance, resources=resources
        )
        [evaluation] = checked.get_asset_check_evaluations()
        assert not evaluation.passed

        before = datetime.now(UTC)
        result = dg.materialize(everything, selection=[health], instance=instance, resources=resources)
        assert result.success
        [materialization] = result.asset_materializations_for_node("platform__health")

    rows = warehouse.query("SELECT * FROM platform.health ORDER BY source, tenant_id")
    by_key = {(r["source"], r["tenant_id"]): r for r in rows.to_dict("records")}
    ga4 = {("ga4", t) for t in ("acme", "globex", "initech")}  # listed in tenants.yaml, never loaded
    assert set(by_key) == {("crawl", "acme"), ("demo", "acme"), ("demo", "globex"), ("demo", "initech"), *ga4}
    assert {by_key[k]["status"] for k in ga4} == {"never loaded"}

    acme = by_key[("demo", "acme")]
    assert acme["last_success_partition"] == "2024-03-09|acme" and acme["last_success_run_id"] == ok.run_id
    assert pd.isna(acme["last_failure_at"])
    assert acme["status"] == "stale" and list(acme["stale_assets"]) == ["demo/events"]
    assert acme["last_success_at"] <= before
    assert 0 <= acme["lag_seconds"] <= (datetime.now(UTC) - acme["last_success_at"]).total_seconds() + 1

    globex = by_key[("demo", "globex")]
    assert globex["status"] == "failing" and globex["last_failure_run_id"] == failed.run_id
    assert globex["last_failure_error"] == "demo__events: tenant 'globex': the export table is gone"
    assert pd.isna(globex["last_success_at"])

    assert by_key[("demo", "initech")]["status"] == "stale"  # listed, never loaded, and its check says so
    crawl = by_key[("crawl", "acme")]
    assert crawl["status"] == "ok" and crawl["last_success_asset"] == "crawl/posts"

    assert materialization.metadata["dagster/row_count"] == dg.MetadataValue.int(7)
    preview = materialization.metadata["preview"].value
    assert isinstance(preview, str) and "the export table is gone" in preview
    assert HEALTH.qualified_name == "platform.health"
