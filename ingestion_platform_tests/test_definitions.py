"""The whole code location loads, without I/O, and every asset spec follows the house rules and the contract."""

import datetime as dt
import socket

import dagster as dg
import pytest

from ingestion_platform.definitions import defs
from ingestion_platform.resources.netsuite import NetSuiteResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.tenants import NETSUITE_DEFAULT_TABLES

CONTRACT_KEYS = {
    "ga4/purchase",
    "ga4/add_to_cart",
    "ga4/page_view",
    "ga4/view_item",
    "ga4/view_search_results",
    "ga4/no_search_results",
    "sftp/users",
    "sftp/locations",
    "commerce/customers",
    "commerce/products",
    "commerce/orders",
    "commerce/order_items",
    "recsys/interactions",
    "recsys/items",
    "recsys/user_features",
    "recsys/item_features",
    "recsys/training_samples",
    *(f"netsuite/{table}" for table in NETSUITE_DEFAULT_TABLES),
    "netsuite/profile",
}


@pytest.fixture(scope="module")
def definitions(monkeypatch_module: pytest.MonkeyPatch) -> dg.Definitions:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading definitions must not open network connections")

    monkeypatch_module.setattr(socket.socket, "connect", no_network)
    loaded = defs()
    monkeypatch_module.undo()
    return loaded


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_definitions_load_and_validate(definitions: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(definitions)


def test_contract_asset_keys_exist(definitions: dg.Definitions) -> None:
    keys = {k.to_user_string() for k in definitions.resolve_all_asset_keys()}
    assert keys >= CONTRACT_KEYS


def test_every_asset_spec_is_complete(definitions: dg.Definitions) -> None:
    for spec in definitions.resolve_all_asset_specs():
        name = spec.key.to_user_string()
        assert spec.group_name == spec.key.path[0], name  # group per source, matching the key prefix
        assert spec.owners, f"{name} has no owners"
        assert spec.kinds, f"{name} has no kinds"
        assert spec.description, f"{name} has no description"
        if spec.partitions_def is not None and isinstance(spec.partitions_def, dg.MultiPartitionsDefinition):
            dimensions = {d.name for d in spec.partitions_def.partitions_defs}
            # Uploads are discovered, not dated: recsys keys them by tenant and content hash.
            assert dimensions == ({"tenant", "upload"} if name.startswith("recsys/") else {"date", "tenant"}), name


def test_ga4_assets_are_parallel_pooled_and_backfill_in_single_runs(definitions: dg.Definitions) -> None:
    graph = definitions.resolve_asset_graph()
    for key in (k for k in CONTRACT_KEYS if k.startswith("ga4/")):
        node = graph.get(dg.AssetKey.from_user_string(key))
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
        assert node.pools == {"bigquery"}
    schedule = definitions.resolve_schedule_def("ga4_daily_schedule")
    assert (schedule.job.tags or {}).get("dagster/max_runtime") == "1800"


def test_schedule_requests_one_range_run_per_tenant(definitions: dg.Definitions) -> None:
    schedule = definitions.resolve_schedule_def("ga4_daily_schedule")
    with dg.instance_for_test() as instance:
        at = dt.datetime(2024, 3, 10, 9, tzinfo=dt.UTC)
        # A schedule context opens its own instance from the ref; closing it here (not at garbage collection)
        # keeps Dagster's current-instance context variable from being restored to a disposed instance later.
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=at) as context:
            empty = schedule.evaluate_tick(context)
        assert empty.skip_message and "no tenants" in empty.skip_message
        instance.add_dynamic_partitions("tenant", ["globex", "acme"])
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=at) as context:
            tick = schedule.evaluate_tick(context)
        requests = tick.run_requests or []
    ranges = [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in requests
    ]
    assert ranges == [
        ("2024-03-09|acme", "2024-03-09|acme"),
        ("2024-03-07|acme", "2024-03-08|acme"),
        ("2024-03-09|globex", "2024-03-09|globex"),
        ("2024-03-07|globex", "2024-03-08|globex"),
    ]


def test_tenant_sync_sensor_makes_partitions_equal_the_registry(definitions: dg.Definitions, tmp_path) -> None:
    registry = tmp_path / "tenants.yaml"
    registry.write_text("tenants:\n  acme: {}\n  initech: {}\n")
    sensor = definitions.resolve_sensor_def("tenant_partitions_sync")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "gone"])
        context = dg.build_sensor_context(instance=instance, resources={"tenants": TenantsResource(path=str(registry))})
        result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        requests = {type(r).__name__: sorted(r.partition_keys) for r in result.dynamic_partitions_requests or []}
    assert requests == {"AddDynamicPartitionsRequest": ["initech"], "DeleteDynamicPartitionsRequest": ["gone"]}


def test_sftp_reports_are_sensor_driven_and_include_today(definitions: dg.Definitions) -> None:
    for kind in ("users", "locations"):
        sensor = definitions.resolve_sensor_def(f"sftp_{kind}_files")
        assert sensor.asset_selection is not None
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        spec = next(s for s in definitions.resolve_all_asset_specs() if s.key.to_user_string() == f"sftp/{kind}")
        assert spec.metadata["dagster/table_name"] == f"crm.{kind}"
        today = dt.datetime.now(dt.UTC).date().isoformat()
        assert isinstance(spec.partitions_def, dg.MultiPartitionsDefinition)
        days = next(d.partitions_def for d in spec.partitions_def.partitions_defs if d.name == "date")
        assert days.get_last_partition_key() == today


def test_brightdata_flow_is_wired(definitions: dg.Definitions, tmp_path) -> None:
    keys = {k.to_user_string() for k in definitions.resolve_all_asset_keys()}
    assert {"brightdata/raw_snapshot", "brightdata/posts"} <= keys
    graph = definitions.resolve_asset_graph()
    posts = graph.get(dg.AssetKey(["brightdata", "posts"]))
    assert posts.automation_condition is not None
    assert posts.parent_keys == {dg.AssetKey(["brightdata", "raw_snapshot"])}
    for key in ("raw_snapshot", "posts"):
        partitions = graph.get(dg.AssetKey(["brightdata", key])).partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name == "snapshot"
    sensor = definitions.resolve_sensor_def("brightdata_progress")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert definitions.resolve_job_def("brightdata_trigger") is not None

    registry = tmp_path / "tenants.yaml"
    target = {"platform": "facebook", "competitor": "c", "brand": "b", "category": "k", "url": "https://fb.com/p"}
    registry.write_text(
        "tenants:\n  acme: {}\n"
        f"  globex:\n    brightdata:\n      api_key_env: GLOBEX_BD_KEY\n      targets: [{target}]\n".replace("'", '"')
    )
    schedule = definitions.resolve_schedule_def("brightdata_daily_crawls")
    at = dt.datetime(2026, 11, 21, 3, tzinfo=dt.UTC)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance, scheduled_execution_time=at, resources={"tenants": TenantsResource(path=str(registry))}
        ) as context,
    ):
        requests = schedule.evaluate_tick(context).run_requests
    assert requests is not None
    [request] = requests
    assert request.tags["tenant"] == "globex" and request.run_key == "globex:2026-11-20"
    config = request.run_config["ops"]["trigger_crawls"]["config"]
    assert (config["tenant"], config["start_date"], config["end_date"]) == ("globex", "2026-11-20", "2026-11-20")


def test_commerce_assets_follow_the_foreign_keys_and_the_sensor_requests_all_four(
    definitions: dg.Definitions,
) -> None:
    graph = definitions.resolve_asset_graph()
    parents = {
        name: {p.to_user_string() for p in graph.get(dg.AssetKey(["commerce", name])).parent_keys}
        for name in ("customers", "products", "orders", "order_items")
    }
    assert parents == {
        "customers": set(),
        "products": set(),
        "orders": {"commerce/customers"},
        "order_items": {"commerce/orders", "commerce/products"},
    }
    spec = next(s for s in definitions.resolve_all_asset_specs() if s.key.to_user_string() == "commerce/orders")
    assert isinstance(spec.partitions_def, dg.DynamicPartitionsDefinition)
    assert spec.partitions_def.name == "commerce_batch"
    assert spec.metadata["dagster/table_name"] == "commerce.orders"
    checks = {k.name for k in definitions.resolve_asset_graph().asset_check_keys if k.asset_key == spec.key}
    assert "pending_age" in checks
    sensor = definitions.resolve_sensor_def("commerce_batches")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.asset_selection is not None


def test_recsys_uploads_are_sensor_driven_and_features_follow_per_tenant(definitions: dg.Definitions) -> None:
    sensor = definitions.resolve_sensor_def("recsys_landing")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    specs = {s.key.to_user_string(): s for s in definitions.resolve_all_asset_specs()}
    for data_type in ("interactions", "items"):
        key = dg.AssetKey(["recsys", data_type])
        checks = {c.name: c for c in definitions.resolve_assets_def(key).check_specs}
        assert checks["file_usable"].blocking  # an unusable file stops what depends on it
        assert "item_id_not_null" in checks and not checks["item_id_not_null"].blocking
        assert specs[f"recsys/{data_type}"].automation_condition is None  # only the landing sensor starts uploads
    for name in ("user_features", "item_features", "training_samples"):
        spec = specs[f"recsys/{name}"]
        assert spec.partitions_def is not None and spec.partitions_def.name == "tenant"  # type: ignore[attr-defined]
        assert spec.automation_condition is not None
        for dep in spec.deps:
            if dep.asset_key.path[-1] in ("interactions", "items"):
                assert isinstance(dep.partition_mapping, dg.MultiToSingleDimensionPartitionMapping)
    assert definitions.resolve_sensor_def("automation").default_status == dg.DefaultSensorStatus.RUNNING


def test_netsuite_tables_are_pooled_single_run_backfills_with_a_reconciliation_check(
    definitions: dg.Definitions,
) -> None:
    graph = definitions.resolve_asset_graph()
    for table in NETSUITE_DEFAULT_TABLES:
        key = dg.AssetKey(["netsuite", table])
        node = graph.get(key)
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
        assert node.pools == {"netsuite"}
        assert node.group_name == "netsuite"
        assert dg.AssetCheckKey(key, "reconciled_with_source") in graph.asset_check_keys
        spec = next(s for s in definitions.resolve_all_asset_specs() if s.key == key)
        assert spec.metadata["dagster/table_name"] == f"netsuite.{table}"
    schedule = definitions.resolve_schedule_def("netsuite_daily_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert definitions.resources is not None
    assert isinstance(definitions.resources["netsuite"], NetSuiteResource)


def test_netsuite_table_list_comes_from_the_environment_not_tenants_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingestion_platform.defs.netsuite.assets import TABLES_ENV, configured_tables

    monkeypatch.delenv(TABLES_ENV, raising=False)
    assert configured_tables() == NETSUITE_DEFAULT_TABLES
    monkeypatch.setenv(TABLES_ENV, "customer, customrecord_loyalty ,customer")
    assert configured_tables() == ("customer", "customrecord_loyalty")
    monkeypatch.setenv(TABLES_ENV, "customer;drop")
    with pytest.raises(ValueError, match="identifier"):
        configured_tables()


def test_netsuite_profile_is_one_asset_per_tenant_following_every_tables_loads(definitions: dg.Definitions) -> None:
    graph = definitions.resolve_asset_graph()
    node = graph.get(dg.AssetKey(["netsuite", "profile"]))
    assert node.parent_keys == {dg.AssetKey(["netsuite", table]) for table in NETSUITE_DEFAULT_TABLES}
    for parent in node.parent_keys:
        mapping = graph.get_partition_mapping(node.key, parent)
        assert isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping)
        assert mapping.partition_dimension_name == "tenant"
    assert isinstance(node.partitions_def, dg.DynamicPartitionsDefinition) and node.partitions_def.name == "tenant"
    assert node.automation_condition is not None
    assert node.group_name == "netsuite" and node.pools == {"netsuite_profile"}
    assert {c.name for c in node.check_keys} == {"schema_drift", "profile_anomalies", "primary_key_unique"}
    assert not [k for k in graph.get_all_asset_keys() if k.path[:2] == ["netsuite", "profile"] and len(k.path) > 2]


def test_every_source_asset_has_a_freshness_check_evaluated_by_a_running_sensor(definitions: dg.Definitions) -> None:
    graph = definitions.resolve_asset_graph()
    fresh = {k.asset_key.to_user_string() for k in graph.asset_check_keys if k.name == "freshness"}
    expected = {k for k in CONTRACT_KEYS if not k.startswith("recsys/") and k.split("/")[0] != "netsuite"}
    expected |= {"recsys/interactions", "recsys/items", "brightdata/raw_snapshot"}
    expected |= {f"netsuite/{table}" for table in NETSUITE_DEFAULT_TABLES}
    assert fresh == expected
    for source in ("ga4", "sftp", "brightdata", "netsuite", "recsys", "commerce"):
        sensor = definitions.resolve_sensor_def(f"{source}_freshness")
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_platform_health_is_a_scheduled_asset_with_a_declared_table(definitions: dg.Definitions) -> None:
    spec = next(s for s in definitions.resolve_all_asset_specs() if s.key.to_user_string() == "platform/health")
    assert spec.group_name == "platform" and spec.metadata["dagster/table_name"] == "platform.health"
    schedule = definitions.resolve_schedule_def("platform_health_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "*/15 * * * *"
