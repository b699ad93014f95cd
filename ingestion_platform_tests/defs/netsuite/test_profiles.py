"""`netsuite/profile` end to end: tables loaded from the NetSuite sandbox, then profiled per tenant by the real
asset; each check is shown to fail on injected drift, anomaly and duplicates. Expected numbers come from the
warehouse or the sandbox by plain SQL, never from the profiler."""

import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from ingestion_platform.defs.netsuite.profile_run import ANOMALY_CHECK, KEY_CHECK, SCHEMA_DRIFT_CHECK
from ingestion_platform.defs.netsuite.profiles import PROFILE_AFTER_LOADS, PROFILE_KEY, build_profile_asset, fk_order
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

profiles = build_profile_asset(("transactionline", "customer", "transaction"))
DELETED_CUSTOMERS = "SELECT recordid FROM deletedrecord WHERE type = 'customer'"
LAST = START + timedelta(days=DAYS - 1)


def profile(env: Env, asset: dg.AssetsDefinition = profiles, tenant: str = "acme") -> Any:
    result = dg.materialize(
        [asset], partition_key=tenant, resources=env.resources, instance=env.instance, raise_on_error=False
    )
    assert result.success
    return result


def execute(env: Env, statement: str) -> None:
    with env.warehouse.raw_connection() as conn:
        conn.execute(statement)


def materialization(result: Any, asset: dg.AssetsDefinition = profiles) -> dg.AssetMaterialization:
    (event,) = result.asset_materializations_for_node(asset.node_def.name)
    return event


def test_profile_follows_the_load_and_records_history(make_env: Any) -> None:
    env = make_env()
    assert env.run_range([customer], START, LAST).success
    result = profile(env)
    event = materialization(result)
    assert event.partition == "acme"
    assert event.metadata["tables_profiled"].value == ["customer"]
    assert event.metadata["tables_skipped"].value == {
        "transaction": "nothing loaded",
        "transactionline": "nothing loaded",
    }
    assert str(event.metadata["profile_scope"].value).startswith("all tables: first profile")
    rows = env.warehouse.scalar("SELECT count(*) FROM netsuite.customer WHERE tenant_id = 'acme'")
    live, deleted = (len(env.truth(q)) for q in ("SELECT id FROM customer", DELETED_CUSTOMERS))
    assert rows == live + deleted and live > 0  # deleted records stay as tombstones
    table = event.metadata["profiles"]
    assert isinstance(table, dg.TableMetadataValue)
    (summary,) = table.records
    assert (summary.data["table"], summary.data["rows"]) == ("netsuite.customer", rows)
    assert event.metadata["rows_profiled"].value == rows
    schema = event.metadata["columns/customer"].value
    assert isinstance(schema, dg.TableSchema)
    columns = env.warehouse.query(
        "SELECT column_name FROM information_schema.columns WHERE (table_schema, table_name) = ('netsuite', "
        "'customer') ORDER BY ordinal_position"
    )["column_name"].tolist()
    assert [c.name for c in schema.columns] == columns
    email = next(c for c in schema.columns if c.name == "email")
    assert email.tags["pattern"] == "email" and "nulls" in (email.description or "")
    keys = event.metadata["candidate_keys"].value
    assert isinstance(keys, dict) and ["id"] in keys["customer"]
    outcome = checks(result)
    assert set(outcome) == {SCHEMA_DRIFT_CHECK, ANOMALY_CHECK, KEY_CHECK}
    assert all(c.passed for c in outcome.values()), {n: c.description for n, c in outcome.items()}
    assert outcome[SCHEMA_DRIFT_CHECK].partition == "acme"
    assert outcome[KEY_CHECK].metadata["tables_checked"].value == ["customer"]
    stored = env.warehouse.query(
        "SELECT t.row_count, s.column_name, s.null_count FROM metadata.tables t "
        "JOIN metadata.profile_stats s ON s.profile_run_id = t.last_profile_run_id "
        "JOIN metadata.data_sources d ON d.data_source_id = t.data_source_id "
        "WHERE d.tenant_id = 'acme' AND t.table_name = 'customer' AND s.column_name = 'email'"
    )
    nulls = env.warehouse.scalar("SELECT count(*) FROM netsuite.customer WHERE tenant_id = 'acme' AND email IS NULL")
    assert (int(stored["row_count"][0]), int(stored["null_count"][0])) == (rows, nulls)
    assert env.warehouse.scalar("SELECT refresh_schedule FROM metadata.data_sources") == "0 4 * * *"

    # Schema drift: a column added behind the profile's back fails the drift check (WARN), naming table and column.
    execute(env, "ALTER TABLE netsuite.customer ADD COLUMN fax text")
    result = profile(env)
    assert str(materialization(result).metadata["profile_scope"].value).startswith("all tables: nothing loaded")
    drifted = checks(result)[SCHEMA_DRIFT_CHECK]
    assert not drifted.passed and drifted.description == "customer: added fax"
    assert drifted.severity == dg.AssetCheckSeverity.WARN
    assert drifted.metadata["failing_tables"].value == ["customer"]

    # Anomaly: with three profiles of history, losing most rows fails the anomaly check.
    assert checks(profile(env))[ANOMALY_CHECK].passed
    execute(env, "DELETE FROM netsuite.customer WHERE tenant_id = 'acme' AND id % 10 <> 0")
    anomaly = checks(profile(env))[ANOMALY_CHECK]
    assert not anomaly.passed and "customer: " in (anomaly.description or "")
    reasons = anomaly.metadata["reasons"].value
    assert isinstance(reasons, dict) and "row_count" in reasons["customer"]
    assert anomaly.severity == dg.AssetCheckSeverity.WARN
    assert env.warehouse.scalar("SELECT count(*) FROM metadata.profile_runs") == 4


def test_key_check_fails_on_a_duplicated_key_in_the_loaded_table(make_env: Any) -> None:
    env = make_env()
    assert env.run_range([customer], START, LAST).success
    assert checks(profile(env))[KEY_CHECK].passed
    pk = env.warehouse.scalar(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'netsuite.customer'::regclass AND contype = 'p'"
    )
    execute(env, f'ALTER TABLE netsuite.customer DROP CONSTRAINT "{pk}"')
    execute(
        env,
        "INSERT INTO netsuite.customer SELECT * FROM netsuite.customer WHERE tenant_id = 'acme' ORDER BY id LIMIT 2",
    )
    key = checks(profile(env))[KEY_CHECK]
    assert not key.passed and key.description is not None and key.description.startswith("customer: 2 duplicated")
    assert key.metadata["duplicate_keys"].value == 2 and key.severity == dg.AssetCheckSeverity.ERROR
    assert key.metadata["failing_tables"].value == ["customer"]


def test_fk_order_puts_referenced_tables_first() -> None:
    assert fk_order(["transactionline", "customer", "transaction", "account"]) == [
        "customer",
        "account",
        "transaction",
        "transactionline",
    ]


def test_foreign_keys_then_only_what_was_loaded_since_the_last_profile(make_env: Any) -> None:
    env = make_env(rows={**ROWS, "transactionline": 600})
    assert env.run_range([transaction, transactionline], START, LAST).success

    def found(result: Any) -> set[tuple[str, str]]:
        candidates = materialization(result).metadata["candidate_foreign_keys"].value
        assert isinstance(candidates, dict)
        return {(fk["column"], fk["references"]) for fk in candidates["transactionline"]}

    # A profile asset over transactionline alone: transaction has no profile yet, its declared key is the reference.
    lines_only = build_profile_asset(("transactionline",))
    assert ("transaction", "netsuite.transaction.id") in found(profile(env, lines_only))
    # Nothing loaded since, but transaction was never profiled: it alone is profiled now.
    result = profile(env)
    assert materialization(result).metadata["tables_profiled"].value == ["transaction"]
    assert str(materialization(result).metadata["profile_scope"].value).startswith("tables loaded since")
    # A requested re-profile: every loaded table, transaction before its lines, whose candidates are then
    # transaction's recorded key candidates of this very run.
    result = profile(env)
    assert materialization(result).metadata["tables_profiled"].value == ["transaction", "transactionline"]
    candidates = found(result)
    assert ("transaction", "netsuite.transaction.id") in candidates
    assert len({column for column, _ in candidates}) == len(candidates)
    fks = env.warehouse.scalar("SELECT foreign_keys::text FROM metadata.tables WHERE table_name = 'transactionline'")
    assert '"ref_table": "transaction"' in fks
    # A load of one table for this tenant since the last profile: only that table is profiled again.
    assert env.run([transactionline], f"{LAST}|acme").success
    result = profile(env)
    assert materialization(result).metadata["tables_profiled"].value == ["transactionline"]
    assert all(c.passed for c in checks(result).values())


def test_a_tenant_without_the_tables_is_skipped_not_failed(make_env: Any, tmp_path: Path) -> None:
    env = make_env()
    registry = yaml.safe_load(Path(env.resources["tenants"].path).read_text())
    registry["tenants"]["acme"]["netsuite"]["tables"] = ["vendor"]
    registry["tenants"]["globex"] = {"name": "no NetSuite"}
    path = tmp_path / "narrow.yaml"
    path.write_text(yaml.safe_dump(registry))
    env.resources["tenants"] = TenantsResource(path=str(path))
    env.instance.add_dynamic_partitions("tenant", ["globex"])
    for tenant, reason in (("acme", "is in tenant 'acme'"), ("globex", "no 'netsuite' settings")):
        result = profile(env, tenant=tenant)
        assert reason in str(materialization(result).metadata["skipped"].value)
        assert all(c.passed for c in checks(result).values())


def test_automation_profiles_a_tenant_once_after_a_long_backfill() -> None:
    """300 day partitions of one tenant loaded: one profile request for that tenant, then none."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tenant", ["acme", "globex"])
    # Evaluating conditions runs nothing: the resources only have to be bound.
    defs = dg.Definitions(
        assets=[customer, transaction, transactionline, profiles],
        resources={
            "warehouse": WarehouseResource(url="postgresql://unused"),
            "tenants": TenantsResource(path="unused.yaml"),
            "netsuite": NetSuiteResource(),
        },
    )
    assert profiles.automation_conditions_by_key[PROFILE_KEY] == PROFILE_AFTER_LOADS
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.total_requested == 0
    first = date(2024, 1, 1)
    for day in range(300):
        for table in (customer, transactionline):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(table.key, partition=f"{first + timedelta(days=day)}|acme")
            )
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 1
    assert result.get_requested_partitions(PROFILE_KEY) == {"acme"}
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0
    instance.report_runless_asset_event(dg.AssetMaterialization(transaction.key, partition=f"{first}|globex"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.get_requested_partitions(PROFILE_KEY) == {"globex"}
    assert result.total_requested == 1
    instance.dispose()


def test_automation_waits_while_a_load_of_the_tenant_is_in_progress(make_env: Any) -> None:
    """Loads of one tenant in separate runs: no profile while one of them still runs (even of another table), one
    after."""
    env = make_env(latency_s=1.0)
    both = build_profile_asset(("customer", "transaction"))
    defs = dg.Definitions(assets=[customer, transaction, both], resources=env.resources)
    result = dg.evaluate_automation_conditions(defs=defs, instance=env.instance)
    assert env.run([customer], f"{START}|acme").success
    slow = threading.Thread(target=env.run, args=([transaction], f"{START + timedelta(days=1)}|acme"))
    slow.start()
    deadline = time.monotonic() + 60
    while not env.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        assert time.monotonic() < deadline, "the second load never started"
        time.sleep(0.05)
    during = dg.evaluate_automation_conditions(defs=defs, instance=env.instance, cursor=result.cursor)
    slow.join()
    assert during.total_requested == 0  # customer is loaded, but transaction of the same tenant is still loading
    after = dg.evaluate_automation_conditions(defs=defs, instance=env.instance, cursor=during.cursor)
    assert after.get_requested_partitions(PROFILE_KEY) == {"acme"}
    assert after.total_requested == 1
