"""The GA4 export generator, and the queries the GA4 assets run, checked against the BigQuery emulator."""

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from google.api_core.exceptions import BadRequest, NotFound
from google.cloud import bigquery

from ingestion_platform.sandbox.ga4_export import (
    DAILY_SCHEMA,
    IGNORED_EVENTS,
    INGESTED_EVENTS,
    INTRADAY_SCHEMA,
    generate_events,
    seed_ga4_export,
)

PROJECT = "tenant-ga4-project"
DATASET = "analytics_123456"
SEED = "test"
N_EVENTS = 400
DAYS = (date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3))
# Intraday overlapping the last daily day, as while GA4 is still finalising it, and one day later.
INTRADAY_DAYS = (date(2024, 3, 3), date(2024, 3, 4))
FRESH_DAYS = (date(2024, 3, 2),)


def _params(event: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {param["key"]: param["value"] for param in event["event_params"]}


def _typed(value: dict[str, Any]) -> str | None:
    """What the typed coalesce in the GA4 query yields, computed from the generated row."""
    kinds = ("string_value", "int_value", "double_value", "float_value")
    return next((str(value[kind]) for kind in kinds if value[kind] is not None), None)


@pytest.fixture(scope="module")
def seeded(bigquery_client: bigquery.Client) -> dict[str, int]:
    return seed_ga4_export(
        bigquery_client,
        PROJECT,
        DATASET,
        DAYS,
        seed=SEED,
        n_events=N_EVENTS,
        intraday_days=INTRADAY_DAYS,
        fresh_days=FRESH_DAYS,
    )


def test_generator_is_deterministic() -> None:
    events = generate_events(DAYS[0], seed=SEED, n_events=N_EVENTS)

    assert generate_events(DAYS[0], seed=SEED, n_events=N_EVENTS) == events
    assert generate_events(DAYS[0], seed="other", n_events=N_EVENTS) != events
    assert generate_events(DAYS[1], seed=SEED, n_events=N_EVENTS) != events


def test_generated_day_has_the_quirks_of_the_real_export() -> None:
    day = DAYS[0]
    events = generate_events(day, seed=SEED, n_events=N_EVENTS)
    names = Counter(event["event_name"] for event in events)
    day_start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000

    assert len(events) == N_EVENTS
    assert set(names) == set(INGESTED_EVENTS) | set(IGNORED_EVENTS)
    assert {event["event_date"] for event in events} == {"20240301"}
    assert all(day_start <= event["event_timestamp"] < day_start + 86_400_000_000 for event in events)
    assert any(event["user_id"] is None for event in events)
    assert any(event["user_id"] is not None for event in events)
    keys = Counter(
        (
            event["event_timestamp"],
            event["user_pseudo_id"],
            event["event_name"],
            _typed(_params(event)["ga_session_id"]),
        )
        for event in events
    )
    assert sum(count - 1 for count in keys.values()) == N_EVENTS // 50
    value_kinds = {
        (key, kind)
        for event in events
        for key, value in _params(event).items()
        if key in ("ga_session_id", "value")
        for kind, typed in value.items()
        if typed is not None
    }
    assert value_kinds == {
        ("ga_session_id", "int_value"),
        ("ga_session_id", "string_value"),
        ("value", "double_value"),
        ("value", "int_value"),
        ("value", "float_value"),
    }
    for event in events:
        params = _params(event)
        if event["event_name"] == "purchase":
            assert 1 <= len(event["items"]) <= 4
            assert event["ecommerce"]["transaction_id"] == params["transaction_id"]["string_value"]
            assert event["ecommerce"]["purchase_revenue"] > 0
            assert params["currency"]["string_value"]
        elif event["event_name"] in ("add_to_cart", "view_item"):
            [item] = event["items"]
            assert item["item_id"] and item["item_name"] and item["price"] > 0 and item["quantity"] >= 1
        elif event["event_name"] in ("view_search_results", "no_search_results"):
            assert params["search_term"]["string_value"]
        elif event["event_name"] == "page_view":
            assert params["page_location"]["string_value"].startswith("https://")


def test_seeding_creates_one_table_per_day_and_kind(bigquery_client: bigquery.Client, seeded: dict[str, int]) -> None:
    expected = {
        "events_20240301": N_EVENTS,
        "events_20240302": N_EVENTS,
        "events_20240303": N_EVENTS,
        "events_intraday_20240303": N_EVENTS,
        "events_intraday_20240304": N_EVENTS,
        "events_fresh_20240302": N_EVENTS,
    }
    assert seeded == expected
    for table_name, rows in expected.items():
        assert bigquery_client.get_table(f"{PROJECT}.{DATASET}.{table_name}").num_rows == rows
    intraday = bigquery_client.get_table(f"{PROJECT}.{DATASET}.events_intraday_20240304")
    assert [field.name for field in intraday.schema] == [field.name for field in INTRADAY_SCHEMA]
    assert "traffic_source" in [field.name for field in DAILY_SCHEMA]
    assert "traffic_source" not in [field.name for field in intraday.schema]

    again = seed_ga4_export(bigquery_client, PROJECT, DATASET, DAYS[:1], seed=SEED, n_events=N_EVENTS)

    assert again == {"events_20240301": N_EVENTS}
    assert bigquery_client.get_table(f"{PROJECT}.{DATASET}.events_20240301").num_rows == N_EVENTS


def test_wildcard_over_daily_tables_with_parameters(bigquery_client: bigquery.Client, seeded: dict[str, int]) -> None:
    """`events_20*` leaves the suffix after `20`, so the bounds are YYMMDD; intraday and fresh tables never match.

    The counts include the export's exact duplicates, which the emulator would drop without our UNION ALL fix.
    """
    start, end = DAYS[0] + timedelta(days=1), DAYS[-1] + timedelta(days=1)
    job = bigquery_client.query(
        f"SELECT _TABLE_SUFFIX AS suffix, event_date, COUNT(*) AS n FROM `{PROJECT}.{DATASET}.events_20*` "
        "WHERE _TABLE_SUFFIX BETWEEN @start AND @end AND event_name = @event_name GROUP BY 1, 2 ORDER BY 1",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("start", "STRING", f"{start:%y%m%d}"),
                bigquery.ScalarQueryParameter("end", "STRING", f"{end:%y%m%d}"),
                bigquery.ScalarQueryParameter("event_name", "STRING", "page_view"),
            ]
        ),
    )

    expected = [
        (
            f"{day:%y%m%d}",
            f"{day:%Y%m%d}",
            Counter(e["event_name"] for e in generate_events(day, seed=SEED, n_events=N_EVENTS))["page_view"],
        )
        for day in DAYS[1:]
    ]
    assert [tuple(row.values()) for row in job.result()] == expected
    suffixes = bigquery_client.query(f"SELECT DISTINCT _TABLE_SUFFIX FROM `{PROJECT}.{DATASET}.events_20*`").result()
    assert sorted(row[0] for row in suffixes) == ["240301", "240302", "240303"]


def test_typed_params_and_nested_columns(bigquery_client: bigquery.Client, seeded: dict[str, int]) -> None:
    day = DAYS[1]
    job = bigquery_client.query(
        f"""
        SELECT
          event_timestamp,
          user_pseudo_id,
          (SELECT COALESCE(p.value.string_value, CAST(p.value.int_value AS STRING),
                           CAST(p.value.double_value AS STRING), CAST(p.value.float_value AS STRING))
           FROM UNNEST(event_params) AS p WHERE p.key = 'ga_session_id') AS ga_session_id,
          TO_JSON_STRING(items) AS items_json,
          TIMESTAMP_MICROS(event_timestamp) AS event_time,
          ARRAY_LENGTH(items) AS item_count,
          device.category AS device_category,
          traffic_source.source AS traffic_source
        FROM `{PROJECT}.{DATASET}.events_20*`
        WHERE _TABLE_SUFFIX = @suffix AND event_name = @event_name
        ORDER BY event_timestamp, user_pseudo_id
        """,
        job_config=bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("suffix", "STRING", f"{day:%y%m%d}"),
                bigquery.ScalarQueryParameter("event_name", "STRING", "purchase"),
            ]
        ),
    )
    # The Storage Read API client would dial Google, not the emulator; the REST pages carry the same rows.
    rows = job.to_arrow(create_bqstorage_client=False).to_pylist()
    items = [json.loads(row.pop("items_json")) for row in rows]

    purchases = [
        event for event in generate_events(day, seed=SEED, n_events=N_EVENTS) if event["event_name"] == "purchase"
    ]
    assert purchases
    assert rows == [
        {
            "event_timestamp": event["event_timestamp"],
            "user_pseudo_id": event["user_pseudo_id"],
            "ga_session_id": _typed(_params(event)["ga_session_id"]),
            "event_time": datetime.fromtimestamp(event["event_timestamp"] / 1_000_000, UTC),
            "item_count": len(event["items"]),
            "device_category": event["device"]["category"],
            "traffic_source": event["traffic_source"]["source"],
        }
        for event in purchases
    ]
    assert items == [event["items"] for event in purchases]


def test_list_tables_shows_every_kind(bigquery_client: bigquery.Client, seeded: dict[str, int]) -> None:
    assert sorted(table.table_id for table in bigquery_client.list_tables(f"{PROJECT}.{DATASET}")) == sorted(seeded)


def test_missing_dataset(bigquery_client: bigquery.Client) -> None:
    with pytest.raises(NotFound, match="Not found: Dataset tenant-ga4-project:missing was not found in location US"):
        bigquery_client.query(f"SELECT 1 FROM `{PROJECT}.missing.events_20240301`").result()
    with pytest.raises(NotFound):
        bigquery_client.get_dataset(f"{PROJECT}.missing")
    # Emulator divergence: BigQuery answers 404 for a wildcard matching nothing, the emulator 400 (invalid).
    with pytest.raises(BadRequest, match=r"missing\.events_20\* does not match any table"):
        bigquery_client.query(f"SELECT 1 FROM `{PROJECT}.missing.events_20*`").result()


def test_total_bytes_processed_is_reported_as_zero(bigquery_client: bigquery.Client, seeded: dict[str, int]) -> None:
    """The emulator fills the statistic but never measures it, so metadata built on it reads 0 locally."""
    job = bigquery_client.query(f"SELECT event_name FROM `{PROJECT}.{DATASET}.events_20*`")
    job.result()

    assert job.total_bytes_processed == 0
