"""`netsuite/profile/<table>` end to end: tables loaded from the NetSuite sandbox, then profiled per tenant by the
real asset; each check is shown to fail on injected drift, anomaly and duplicates. Expected numbers come from the
warehouse or the sandbox by plain SQL, never from the profiler."""

import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from ingestion_platform.defs.netsuite.profile_run import ANOMALY_CHECK, KEY_CHECK, SCHEMA_DRIFT_CHECK
from ingestion_platform.defs.netsuite.profiles import PROFILE_AFTER_LOADS, build_profile_asset, profile_key
from ingestion_platform.resources.netsuite import NetSuiteResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform_tests.defs.netsuite.test_assets import (
    DAYS,
    ROWS,
    START,
    Env,
    checks,
    customer,
    transaction,
    transactionline,
)

customer_profile = build_profile_asset("customer")
transaction_profile = build_profile_asset("transaction")
transactionline_profile = build_profile_asset("transactionline")
DELETED_CUSTOMERS = "SELECT recordid FROM deletedrecord WHERE type = 'customer'"
LAST = START + timedelta(days=DAYS - 1)


def profile(env: Env, asset: dg.AssetsDefinition, tenant: str = "acme") -> Any:
    result = dg.materialize(
        [asset], partition_key=tenant, resources=env.resources, instance=env.instance, raise_on_error=False
    )
    assert result.success
    return result


def execute(env: Env, statement: str) -> None:
    with env.warehouse.raw_connection() as conn:
        conn.execute(statement)


def materialization(result: Any, asset: dg.AssetsDefinition) -> dg.AssetMaterialization:
    (event,) = result.asset_materializations_for_node(asset.node_def.name)
    return event


def test_profile_follows_the_load_and_records_history(make_env: Any) -> None:
    env = make_env()
    assert env.run_range([customer], START, LAST).success
    result = profile(env, customer_profile)
    event = materialization(result, customer_profile)
    assert event.partition == "acme"
    rows = env.warehouse.scalar("SELECT count(*) FROM netsuite.customer WHERE tenant_id = 'acme'")
    live, deleted = (len(env.truth(q)) for q in ("SELECT id FROM customer", DELETED_CUSTOMERS))
    assert rows == live + deleted and live > 0  # deleted records stay as tombstones
    assert event.metadata["dagster/row_count"].value == rows
    schema = event.metadata["dagster/column_schema"].value
    assert isinstance(schema, dg.TableSchema)
    columns = env.warehouse.query(
        "SELECT column_name FROM information_schema.columns WHERE (table_schema, table_name) = ('netsuite', "
        "'customer') ORDER BY ordinal_position"
    )["column_name"].tolist()
    assert [c.name for c in schema.columns] == columns
    email = next(c for c in schema.columns if c.name == "email")
    assert email.tags["pattern"] == "email" and "nulls" in (email.description or "")
    keys = event.metadata["candidate_keys"].value
    assert isinstance(keys, list) and ["id"] in keys
    outcome = checks(result)
    assert set(outcome) == {SCHEMA_DRIFT_CHECK, ANOMALY_CHECK, KEY_CHECK}
    assert all(c.passed for c in outcome.values()), {n: c.description for n, c in outcome.items()}
    assert outcome[SCHEMA_DRIFT_CHECK].partition == "acme"
    stored = env.warehouse.query(
        "SELECT t.row_count, s.column_name, s.null_count FROM metadata.tables t "
        "JOIN metadata.profile_stats s ON s.profile_run_id = t.last_profile_run_id "
        "JOIN metadata.data_sources d ON d.data_source_id = t.data_source_id "
        "WHERE d.tenant_id = 'acme' AND t.table_name = 'customer' AND s.column_name = 'email'"
    )
    nulls = env.warehouse.scalar("SELECT count(*) FROM netsuite.customer WHERE tenant_id = 'acme' AND email IS NULL")
    assert (int(stored["row_count"][0]), int(stored["null_count"][0])) == (rows, nulls)
    assert env.warehouse.scalar("SELECT refresh_schedule FROM metadata.data_sources") == "0 4 * * *"

    # Schema drift: a column added behind the profile's back fails the drift check (WARN), naming it.
    execute(env, "ALTER TABLE netsuite.customer ADD COLUMN fax text")
    drifted = checks(profile(env, customer_profile))[SCHEMA_DRIFT_CHECK]
    assert not drifted.passed and drifted.description == "added fax"
    assert drifted.severity == dg.AssetCheckSeverity.WARN

    # Anomaly: with three profiles of history, losing most rows fails the anomaly check.
    assert checks(profile(env, customer_profile))[ANOMALY_CHECK].passed
    execute(env, "DELETE FROM netsuite.customer WHERE tenant_id = 'acme' AND id % 10 <> 0")
    anomaly = checks(profile(env, customer_profile))[ANOMALY_CHECK]
    assert not anomaly.passed and "row_count" in (anomaly.description or "")
    assert env.warehouse.scalar("SELECT count(*) FROM metadata.profile_runs") == 4


def test_key_check_fails_on_a_duplicated_key_in_the_loaded_table(make_env: Any) -> None:
    env = make_env()
    assert env.run_range([customer], START, LAST).success
    assert checks(profile(env, customer_profile))[KEY_CHECK].passed
    pk = env.warehouse.scalar(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'netsuite.customer'::regclass AND contype = 'p'"
    )
    execute(env, f'ALTER TABLE netsuite.customer DROP CONSTRAINT "{pk}"')
    execute(
        env,
        "INSERT INTO netsuite.customer SELECT * FROM netsuite.customer WHERE tenant_id = 'acme' ORDER BY id LIMIT 2",
    )
    key = checks(profile(env, customer_profile))[KEY_CHECK]
    assert not key.passed
    assert key.metadata["duplicate_keys"].value == 2 and key.severity == dg.AssetCheckSeverity.ERROR


def test_foreign_keys_are_found_against_declared_keys_then_last_profiles(make_env: Any) -> None:
    env = make_env(rows={**ROWS, "transactionline": 600})
    assert env.run_range([transaction, transactionline], START, LAST).success

    def found() -> set[tuple[str, str]]:
        event = materialization(profile(env, transactionline_profile), transactionline_profile)
        candidates = event.metadata["candidate_foreign_keys"].value
        assert isinstance(candidates, list)
        return {(fk["column"], fk["references"]) for fk in candidates}

    # transaction has no profile yet: its declared key (tenant_id, id) is the reference.
    assert ("transaction", "netsuite.transaction.id") in found()
    profile(env, transaction_profile)
    # Now transaction's recorded key candidates are; each column keeps one candidate.
    candidates = found()
    assert ("transaction", "netsuite.transaction.id") in candidates
    assert len({column for column, _ in candidates}) == len(candidates)
    fks = env.warehouse.scalar("SELECT foreign_keys::text FROM metadata.tables WHERE table_name = 'transactionline'")
    assert '"ref_table": "transaction"' in fks


def test_a_tenant_without_the_table_is_skipped_not_failed(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    registry = yaml.safe_load(Path(env.resources["tenants"].path).read_text())
    registry["tenants"]["acme"]["netsuite"]["tables"] = ["vendor"]
    registry["tenants"]["globex"] = {"name": "no NetSuite"}
    path = tmp_path / "narrow.yaml"
    path.write_text(yaml.safe_dump(registry))
    env.resources["tenants"] = TenantsResource(path=str(path))
    env.instance.add_dynamic_partitions("tenant", ["globex"])
    for tenant, reason in (("acme", "not in tenant 'acme'"), ("globex", "no 'netsuite' settings")):
        result = profile(env, customer_profile, tenant)
        assert reason in str(materialization(result, customer_profile).metadata["skipped"].value)
        assert all(c.passed for c in checks(result).values())


def test_automation_profiles_a_tenant_once_after_a_long_backfill() -> None:
    """300 day partitions of one tenant loaded: one profile request for that tenant and table, then none."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tenant", ["acme", "globex"])
    # Evaluating conditions runs nothing: the resources only have to be bound.
    defs = dg.Definitions(
        assets=[customer, transactionline, customer_profile, transactionline_profile],
        resources={
            "warehouse": WarehouseResource(url="postgresql://unused"),
            "tenants": TenantsResource(path="unused.yaml"),
            "netsuite": NetSuiteResource(),
        },
    )
    assert customer_profile.automation_conditions_by_key[profile_key("customer")] == PROFILE_AFTER_LOADS
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.total_requested == 0
    first = date(2024, 1, 1)
    for day in range(300):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(customer.key, partition=f"{first + timedelta(days=day)}|acme")
        )
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 1
    assert result.get_requested_partitions(profile_key("customer")) == {"acme"}
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0
    instance.report_runless_asset_event(dg.AssetMaterialization(customer.key, partition=f"{first}|globex"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_requested_partitions(profile_key("customer")) == {"globex"}
    assert result.total_requested == 1
    instance.dispose()


def test_automation_waits_while_a_load_of_the_tenant_is_in_progress(make_env: Any) -> None:
    """Day runs of one tenant (a multi-run backfill): no profile while one of them still runs, one after."""
    env = make_env(latency_s=1.0)
    defs = dg.Definitions(assets=[customer, customer_profile], resources=env.resources)
    result = dg.evaluate_automation_conditions(defs=defs, instance=env.instance)
    assert env.run([customer], f"{START}|acme").success
    slow = threading.Thread(target=env.run, args=([customer], f"{START + timedelta(days=1)}|acme"))
    slow.start()
    deadline = time.monotonic() + 60
    while not env.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        assert time.monotonic() < deadline, "the second load never started"
        time.sleep(0.05)
    during = dg.evaluate_automation_conditions(defs=defs, instance=env.instance, cursor=result.cursor)
    slow.join()
    assert during.total_requested == 0  # day 1 is loaded, but day 2 of the same tenant is still loading
    after = dg.evaluate_automation_conditions(defs=defs, instance=env.instance, cursor=during.cursor)
    assert after.get_requested_partitions(profile_key("customer")) == {"acme"}
    assert after.total_requested == 1
