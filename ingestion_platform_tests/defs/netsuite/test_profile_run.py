"""A profiling asset built on `run_profile`, materialized by Dagster against the real warehouse: metadata and the
drift, anomaly and key checks as the UI would show them."""

import dagster as dg

from ingestion_platform.defs.netsuite.profile_run import (
    ANOMALY_CHECK,
    CHECK_NAMES,
    KEY_CHECK,
    SCHEMA_DRIFT_CHECK,
    run_profile,
)
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform_tests.defs.netsuite.test_metadata_repo import SOURCE, make_vendor

KEY = dg.AssetKey(["netsuite", "profile", "vendor"])


@dg.asset(key=KEY, check_specs=[dg.AssetCheckSpec(name, asset=KEY) for name in CHECK_NAMES])
def vendor_profile(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    outcome = run_profile(
        warehouse, SOURCE, "netsuite", "vendor", run_id=context.run.run_id, key=("tenant_id", "id"), tenant_id="acme"
    )
    return dg.MaterializeResult(metadata=outcome.metadata(), check_results=outcome.check_results())


def materialize(warehouse: WarehouseResource, instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
    result = dg.materialize([vendor_profile], resources={"warehouse": warehouse}, instance=instance)
    assert result.success
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_profile_asset_reports_drift_and_anomalies_against_its_history(warehouse: WarehouseResource) -> None:
    make_vendor(warehouse)
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(3):
        checks = materialize(warehouse, instance)
        assert all(c.passed for c in checks.values()), {n: c.description for n, c in checks.items()}
    assert "no anomaly against 2 earlier profiles" in (checks[ANOMALY_CHECK].description or "")

    event = instance.get_latest_materialization_event(KEY)
    assert event is not None and event.asset_materialization is not None
    metadata = event.asset_materialization.metadata
    assert metadata["dagster/row_count"].value == 40
    schema = metadata["dagster/column_schema"].value
    assert isinstance(schema, dg.TableSchema)
    assert [c.name for c in schema.columns] == ["tenant_id", "id", "companyname", "email", "balance"]
    assert warehouse.scalar("SELECT count(*) FROM metadata.profile_runs") == 3

    with warehouse.raw_connection() as conn:
        conn.execute("DELETE FROM netsuite.vendor WHERE id > 10; ALTER TABLE netsuite.vendor ADD COLUMN phone text")
    checks = materialize(warehouse, instance)
    assert not checks[SCHEMA_DRIFT_CHECK].passed and checks[SCHEMA_DRIFT_CHECK].description == "added phone"
    assert checks[SCHEMA_DRIFT_CHECK].severity == dg.AssetCheckSeverity.WARN
    assert not checks[ANOMALY_CHECK].passed
    assert "row_count is 10, against a mean of 40" in (checks[ANOMALY_CHECK].description or "")
    assert checks[KEY_CHECK].passed
    assert warehouse.scalar("SELECT count(*) FROM metadata.profile_runs") == 4
