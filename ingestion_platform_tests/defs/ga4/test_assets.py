"""GA4 assets end to end: the BigQuery emulator holds a seeded export, PostgreSQL receives the events."""

import uuid
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from google.cloud import bigquery

from ingestion_platform.defs.ga4.assets import ga4_event_assets
from ingestion_platform.defs.ga4.availability import ga4_availability
from ingestion_platform.defs.ga4.checks import duplicate_events, invalid_purchases
from ingestion_platform.defs.ga4.events import DEDUPE_COLUMNS, EVENT_TYPES_BY_NAME
from ingestion_platform.resources.bigquery import TenantBigQueryResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.bigquery import BigQueryEmulator
from ingestion_platform.sandbox.ga4_export import INGESTED_EVENTS, generate_events, seed_ga4_export

PROJECT = "acme-analytics"
DAY1, DAY2, DAY3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)
SEED = "acme"


def _param(event: dict, key: str) -> Any:
    for p in event["event_params"]:
        if p["key"] == key:
            value = p["value"]
            return next(
                v
                for v in (value.get(f) for f in ("int_value", "string_value", "double_value", "float_value"))
                if v is not None
            )
    return None


def expected_counts(day: date, seed: str = SEED, n_events: int = 400) -> Counter:
    """Distinct events per type, computed from the generator independently of the SQL under test."""
    seen = set()
    counts: Counter = Counter()
    for e in generate_events(day, seed=seed, n_events=n_events):
        if e["event_name"] not in INGESTED_EVENTS:
            continue
        identity = (
            e["event_timestamp"],
            e["user_pseudo_id"],
            e["event_name"],
            int(_param(e, "ga_session_id")),
            e.get("batch_event_index"),
            e.get("batch_ordering_id"),
            e.get("batch_page_id"),
        )
        if identity not in seen:
            seen.add(identity)
            counts[e["event_name"]] += 1
    return counts


@pytest.fixture
def ga4_env(
    tmp_path: Path, bigquery_emulator: BigQueryEmulator, bigquery_client: bigquery.Client, warehouse: WarehouseResource
):
    dataset = f"analytics_{uuid.uuid4().hex[:8]}"
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(
        yaml.safe_dump(
            {
                "tenants": {
                    "acme": {"ga4": {"project": PROJECT, "dataset": dataset}},
                    "ghost": {"ga4": {"project": PROJECT, "dataset": "does_not_exist"}},
                }
            }
        )
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tenant", ["acme", "ghost"])
    resources = {
        "bigquery": TenantBigQueryResource(emulator_host=bigquery_emulator.rest_url),
        "warehouse": warehouse,
        "tenants": TenantsResource(path=str(tenants_file)),
    }

    class Env:
        def __init__(self) -> None:
            self.dataset, self.warehouse, self.bigquery_client = dataset, warehouse, bigquery_client

        def seed(self, days=(), intraday=(), fresh=()) -> None:
            seed_ga4_export(
                bigquery_client,
                PROJECT,
                dataset,
                list(days),
                seed=SEED,
                intraday_days=list(intraday),
                fresh_days=list(fresh),
            )

        def run(
            self, partition_key: str | None = None, tags: dict | None = None, assets=None
        ) -> dg.ExecuteInProcessResult:
            return dg.materialize(
                assets or ga4_event_assets,
                partition_key=partition_key,
                tags=tags,
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )

    yield Env()
    instance.dispose()


def table_rows(warehouse: WarehouseResource, event: str) -> list[tuple]:
    frame = warehouse.query(
        f"SELECT * FROM ga4.{event} ORDER BY event_timestamp, user_pseudo_id, items::text"
        if event == "purchase"
        else f"SELECT * FROM ga4.{event} ORDER BY 1, 2, 3, 4, 5, 6"
    )
    return [tuple(map(str, r)) for r in frame.itertuples(index=False)]


def test_each_event_type_loads_a_seeded_day_with_typed_columns(ga4_env) -> None:
    ga4_env.seed(days=[DAY1], fresh=[DAY1])
    result = ga4_env.run(f"{DAY1}|acme")
    assert result.success
    wh = ga4_env.warehouse
    expected = expected_counts(DAY1)
    for event in INGESTED_EVENTS:
        assert wh.scalar(f"SELECT count(*) FROM ga4.{event} WHERE tenant_id = 'acme'") == expected[event], event
    # The typed coalesce reads ga_session_id whether it arrived as int or string.
    assert wh.scalar("SELECT count(*) FROM ga4.page_view WHERE ga_session_id IS NULL") == 0
    purchases = wh.query("SELECT * FROM ga4.purchase")
    assert (purchases["purchase_revenue"] >= 0).all() and purchases["transaction_id"].notna().all()
    assert (purchases["item_count"] == purchases["items"].map(len)).all()
    assert set(purchases["provenance"]) == {"daily"}
    assert purchases["traffic_source_source"].notna().all()
    assert str(purchases["event_timestamp"].dt.tz) == "UTC"
    searches = wh.query(
        "SELECT search_term FROM ga4.no_search_results UNION ALL SELECT search_term FROM ga4.view_search_results"
    )
    assert searches["search_term"].notna().all()
    carts = wh.query("SELECT item_id, price, quantity FROM ga4.add_to_cart")
    assert carts["item_id"].notna().all() and (carts["quantity"] > 0).all()
    checks = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert len(checks) == 13 and all(checks.values()), checks
    meta = result.asset_materializations_for_node("ga4__purchase")[0].metadata
    assert meta["dagster/row_count"].value == expected["purchase"]
    assert meta["source_tables"].value == [f"{PROJECT}.{ga4_env.dataset}.events_20240301"]
    assert "transaction_id" in meta["preview"].value


def test_rerunning_a_day_leaves_the_same_rows(ga4_env) -> None:
    ga4_env.seed(days=[DAY1])
    assert ga4_env.run(f"{DAY1}|acme").success
    first = {e: table_rows(ga4_env.warehouse, e) for e in INGESTED_EVENTS}
    assert ga4_env.run(f"{DAY1}|acme").success
    assert {e: table_rows(ga4_env.warehouse, e) for e in INGESTED_EVENTS} == first


def test_intraday_fallback_then_daily_table_replaces_it(ga4_env) -> None:
    ga4_env.seed(intraday=[DAY2])
    assert ga4_env.run(f"{DAY2}|acme").success
    views = ga4_env.warehouse.query("SELECT provenance, traffic_source_source FROM ga4.page_view")
    assert set(views["provenance"]) == {"intraday"} and views["traffic_source_source"].isna().all()

    ga4_env.seed(days=[DAY2])  # the day completes: the daily table appears beside the intraday one
    assert ga4_env.run(f"{DAY2}|acme").success
    views = ga4_env.warehouse.query("SELECT provenance FROM ga4.page_view")
    assert set(views["provenance"]) == {"daily"}
    assert len(views) == expected_counts(DAY2)["page_view"]


def test_a_date_range_runs_as_one_query_per_event_type(ga4_env) -> None:
    ga4_env.seed(days=[DAY1, DAY2, DAY3])
    result = ga4_env.run(
        tags={
            "dagster/asset_partition_range_start": f"{DAY1}|acme",
            "dagster/asset_partition_range_end": f"{DAY3}|acme",
        }
    )
    assert result.success
    for day in (DAY1, DAY2, DAY3):
        n = ga4_env.warehouse.scalar("SELECT count(*) FROM ga4.view_item WHERE event_date = :d", {"d": day})
        assert n == expected_counts(day)["view_item"]
    materializations = result.asset_materializations_for_node("ga4__view_item")
    assert {m.partition for m in materializations} == {f"{d}|acme" for d in (DAY1, DAY2, DAY3)}
    assert len(materializations[0].metadata["source_tables"].value) == 3


def test_missing_dataset_fails_without_retries_naming_tenant_and_table(ga4_env) -> None:
    result = ga4_env.run(f"{DAY1}|ghost", assets=[ga4_event_assets[0]])
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "tenant 'ghost'" in failure.message and f"{PROJECT}.does_not_exist" in failure.message
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]


def test_missing_day_table_fails_naming_the_tables(ga4_env) -> None:
    ga4_env.seed(days=[DAY1])
    result = ga4_env.run(f"{DAY3}|acme", assets=[ga4_event_assets[0]])
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "events_20240303 / events_intraday_20240303" in message


def test_checks_detect_duplicates_and_invalid_purchases(ga4_env) -> None:
    ga4_env.seed(days=[DAY1])
    assert ga4_env.run(f"{DAY1}|acme").success
    wh = ga4_env.warehouse
    assert duplicate_events(wh, EVENT_TYPES_BY_NAME["purchase"], "acme", [DAY1]) == 0
    assert invalid_purchases(wh, "acme", [DAY1]) == 0
    with wh.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO ga4.purchase SELECT * FROM ga4.purchase LIMIT 1")
        conn.exec_driver_sql(
            "UPDATE ga4.purchase SET purchase_revenue = -1 WHERE ctid = (SELECT min(ctid) FROM ga4.purchase)"
        )
    assert duplicate_events(wh, EVENT_TYPES_BY_NAME["purchase"], "acme", [DAY1]) == 1
    assert invalid_purchases(wh, "acme", [DAY1]) >= 1
    assert set(DEDUPE_COLUMNS) <= set(EVENT_TYPES_BY_NAME["purchase"].table.column_names)


def test_availability_reports_first_last_day_and_gaps(ga4_env) -> None:
    ga4_env.seed(days=[DAY1, DAY3])
    assert ga4_env.run(f"{DAY1}|acme").success
    assert ga4_env.run(f"{DAY3}|acme").success
    assert ga4_env.run(assets=[ga4_availability]).success
    row = ga4_env.warehouse.query("SELECT * FROM ga4.availability WHERE event_name = 'page_view'").iloc[0]
    assert (row["first_day"], row["last_day"], row["days_loaded"]) == (DAY1, DAY3, 2)
    assert row["gaps"] == [["2024-03-02", "2024-03-02"]]
    # Summarised from the counts each load kept for its own days, never from the event rows.
    counts = ga4_env.warehouse.query(
        "SELECT event_date, rows FROM ga4.daily_counts WHERE tenant_id = 'acme' AND event_name = 'page_view' ORDER BY 1"
    )
    expected: list[list[Any]] = [[DAY1, expected_counts(DAY1)["page_view"]], [DAY3, expected_counts(DAY3)["page_view"]]]
    assert counts.values.tolist() == expected
    assert row["rows"] == sum(n for _, n in expected)


def test_a_run_holding_two_tenants_loads_one_and_names_the_other(ga4_env) -> None:
    ga4_env.seed(days=[DAY1])
    # A backfill of one day for several tenants becomes one run holding all of them.
    result = ga4_env.run(
        tags={
            "dagster/asset_partition_range_start": f"{DAY1}|acme",
            "dagster/asset_partition_range_end": f"{DAY1}|ghost",
        },
        assets=[ga4_event_assets[0]],
    )
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "1 of 2 tenants failed" in message and "tenant 'ghost'" in message
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert (
        ga4_env.warehouse.scalar("SELECT count(*) FROM ga4.purchase WHERE tenant_id = 'acme'")
        == expected_counts(DAY1)["purchase"]
    )
