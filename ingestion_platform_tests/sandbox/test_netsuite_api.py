"""The NetSuite sandbox through plain httpx and our auth: paging, limits, windows, deletions and schema change.

Expected rows come from the sandbox's own tables (`ground_truth`), so each test states what a correct extraction
returns independently of the SuiteQL the server parsed.
"""

import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest

from ingestion_platform.defs.netsuite.suiteql import (
    NetSuiteError,
    count_query,
    date_columns,
    day_window,
    deleted_records_query,
    discover_columns,
    keyset_pages,
    parse_count,
    parse_error,
    parse_metadata_catalog,
    parse_page,
    parse_timestamp,
    range_window,
    select_query,
)
from ingestion_platform.resources.netsuite_auth import NetSuiteTBA
from ingestion_platform.retry import retry_transient
from ingestion_platform.sandbox.netsuite_api import (
    CATALOG_PATH,
    SANDBOX_TBA_KEYS,
    SUITEQL_PATH,
    NetSuiteSandbox,
    NetSuiteSandboxConfig,
    generate_tables,
    run_netsuite_api,
)

START = date(2026, 1, 1)
DAYS = 6
ALL_DAYS = range_window(START, START + timedelta(days=DAYS - 1))
CUSTOMER_COLUMNS = ["entityid", "companyname", "email", "isinactive", "lastmodifieddate", "custentity_loyalty_tier"]


def client_for(sandbox: NetSuiteSandbox) -> httpx.Client:
    auth = NetSuiteTBA(sandbox.account_id, **SANDBOX_TBA_KEYS)
    return httpx.Client(base_url=sandbox.base_url, auth=auth, headers={"Prefer": "transient"}, timeout=30)


def poster(client: httpx.Client) -> Any:
    def post(query: str, limit: int, offset: int) -> Any:
        response = client.post(SUITEQL_PATH, params={"limit": limit, "offset": offset}, json={"q": query})
        if response.status_code != 200:
            raise parse_error(response.status_code, response.json())
        return response.json()

    return post


@pytest.fixture(scope="module")
def sandbox() -> Iterator[NetSuiteSandbox]:
    config = NetSuiteSandboxConfig(
        start=START, days=DAYS, rows={"customer": 600, "transaction": 300, "transactionline": 900, "subsidiary": 3}
    )
    with run_netsuite_api(config) as server:
        yield server


def test_keyset_paging_passes_the_offset_cap_and_returns_every_row_once() -> None:
    config = NetSuiteSandboxConfig(start=START, days=DAYS, rows={"transaction": 5300}, offset_cap=2000)
    with run_netsuite_api(config) as sandbox, client_for(sandbox) as client:
        post = poster(client)
        columns = ["tranid", "trandate", "foreigntotal", "lastmodifieddate"]
        pages = list(
            keyset_pages(post, lambda after: select_query("transaction", columns, ALL_DAYS, after), page_size=500)
        )
        ids = [int(item["id"]) for page in pages for item in page.items]
        expected = [row[0] for row in sandbox.ground_truth('SELECT id FROM "transaction" ORDER BY id')]
        assert len(expected) == 5300
        assert ids == expected
        assert len(pages) == 11
        assert parse_count(parse_page(post(count_query("transaction", ALL_DAYS), 1, 0))) == 5300

        # Offset paging, what peers do, stops at the cap with NetSuite's error.
        query = select_query("transaction", columns, ALL_DAYS)
        assert parse_page(post(query, 500, 1500)).has_more
        with pytest.raises(NetSuiteError, match="INVALID_PARAMETER") as capped:
            post(query, 500, 2000)
        assert capped.value.status == 400


def test_keyset_paging_past_the_real_100000_row_cap() -> None:
    config = NetSuiteSandboxConfig(start=START, days=DAYS, rows={"customer": 100_500})
    with run_netsuite_api(config) as sandbox, client_for(sandbox) as client:
        pages = keyset_pages(poster(client), lambda after: select_query("customer", ["entityid"], ALL_DAYS, after))
        ids = [int(item["id"]) for page in pages for item in page.items]
    assert len(ids) == len(set(ids)) == 100_500
    assert ids == sorted(ids)


def test_offset_paging_follows_netsuite_rules(sandbox: NetSuiteSandbox) -> None:
    with client_for(sandbox) as client:
        query = {"q": select_query("customer", ["entityid"], ALL_DAYS)}
        page = parse_page(client.post(SUITEQL_PATH, params={"limit": 100, "offset": 100}, json=query).json())
        assert (page.count, page.offset, page.total_results, page.has_more) == (100, 100, 600, True)
        assert set(page.links) == {"self", "first", "next", "previous", "last"}
        assert page.links["next"].endswith("limit=100&offset=200")
        for params, code in [
            ({"limit": 1001}, "INVALID_PARAMETER"),
            ({"limit": 100, "offset": 150}, "INVALID_PARAMETER"),
        ]:
            response = client.post(SUITEQL_PATH, params=params, json=query)
            assert response.status_code == 400
            assert parse_error(400, response.json()).codes == (code,)
        no_prefer = client.post(SUITEQL_PATH, json=query, headers={"Prefer": ""})
        assert parse_error(400, no_prefer.json()).codes == ("INVALID_HEADER",)
        for bad in ("SELECT nosuchcolumn FROM customer", "DELETE FROM customer", "SELECT id FROM nosuchtable"):
            response = client.post(SUITEQL_PATH, json={"q": bad})
            error = parse_error(response.status_code, response.json())
            assert (error.status, error.codes) == (400, ("INVALID_PARAMETER",))
            assert "Invalid search query" in str(error)


def test_a_day_window_fetches_only_that_days_rows(sandbox: NetSuiteSandbox) -> None:
    day = START + timedelta(days=2)
    with client_for(sandbox) as client:
        post = poster(client)
        items = [
            item
            for page in keyset_pages(
                post, lambda after: select_query("customer", CUSTOMER_COLUMNS, day_window(day), after), page_size=25
            )
            for item in page.items
        ]
        expected = sandbox.ground_truth(
            "SELECT id FROM customer WHERE CAST(lastmodifieddate AS DATE) = ? ORDER BY id", [day]
        )
        assert [int(i["id"]) for i in items] == [row[0] for row in expected]
        assert 0 < len(items) < 600
        assert {parse_timestamp(i["lastmodifieddate"]).date() for i in items} == {day}
        assert parse_count(parse_page(post(count_query("customer", day_window(day)), 1, 0))) == len(items)

        # The lag re-reads the end of the previous day, and nothing else.
        lag = timedelta(hours=3)
        lagged = [
            item
            for page in keyset_pages(
                post, lambda after: select_query("customer", ["id", "lastmodifieddate"], day_window(day, lag), after)
            )
            for item in page.items
        ]
        boundary = datetime.combine(day, datetime.min.time())
        extra = [i for i in lagged if parse_timestamp(i["lastmodifieddate"]) < boundary]
        assert {i["id"] for i in lagged} - {i["id"] for i in extra} == {i["id"] for i in items}
        assert extra and all(parse_timestamp(i["lastmodifieddate"]) >= boundary - lag for i in extra)


def test_values_read_as_netsuite_returns_them(sandbox: NetSuiteSandbox) -> None:
    with client_for(sandbox) as client:
        query = select_query("transaction", ["tranid", "trandate", "memo", "lastmodifieddate"], ALL_DAYS)
        items = parse_page(poster(client)(query, 200, 0)).items
        catalog = parse_metadata_catalog(client.get(f"{CATALOG_PATH}/transaction").json())
        query = select_query(
            "transaction", ["trandate", "lastmodifieddate"], ALL_DAYS, timestamp_columns=date_columns(catalog)
        )
        converted = parse_page(poster(client)(query, 200, 0)).items
        customers = parse_page(poster(client)(select_query("customer", ["isinactive"], ALL_DAYS), 50, 0)).items
    # Bare dates follow the account's format; TO_CHAR'd ones are full timestamps; nulls are left out.
    assert all(len(i["trandate"].split("/")) == 3 for i in items)
    assert all(len(i["lastmodifieddate"]) == 19 for i in items)
    assert [i["id"] for i in converted] == [i["id"] for i in items]
    for plain, typed in zip(items, converted, strict=True):
        month, day, year = plain["trandate"].split("/")
        assert parse_timestamp(typed["trandate"]) == datetime(int(year), int(month), int(day))
    assert 0 < sum("memo" in i for i in items) < len(items)
    assert {c["isinactive"] for c in customers} <= {"T", "F"}


def test_deleted_records_are_listed(sandbox: NetSuiteSandbox) -> None:
    with client_for(sandbox) as client:
        post = poster(client)
        deleted = [
            item
            for page in keyset_pages(
                post, lambda after: deleted_records_query("customer", ALL_DAYS, after), key="recordid"
            )
            for item in page.items
        ]
        live = {
            int(i["id"])
            for p in keyset_pages(post, lambda a: select_query("customer", ["id"], ALL_DAYS, a))
            for i in p.items
        }
    expected = sandbox.ground_truth("SELECT recordid FROM deletedrecord WHERE type = 'customer' ORDER BY 1")
    assert [int(d["recordid"]) for d in deleted] == [row[0] for row in expected]
    assert deleted, "the sandbox deletes a share of the customers"
    assert all(d["type"] == "customer" and parse_timestamp(d["deleteddate"]) for d in deleted)
    assert not live & {int(d["recordid"]) for d in deleted}


def test_a_custom_field_appears_midway(sandbox: NetSuiteSandbox) -> None:
    midway = sandbox.config.new_column_from
    with client_for(sandbox) as client:
        post = poster(client)

        def columns_on(day: date) -> list[str]:
            pages = keyset_pages(post, lambda after: select_query("customer", CUSTOMER_COLUMNS, day_window(day), after))
            return discover_columns(item for page in pages for item in page.items)

        assert "custentity_loyalty_tier" not in columns_on(midway.date() - timedelta(days=1))
        assert "custentity_loyalty_tier" in columns_on(midway.date())
        catalog = client.get(f"{CATALOG_PATH}/customer", headers={"Accept": "application/schema+json"})
    assert parse_metadata_catalog(catalog.json())["custentity_loyalty_tier"] == "string"
    assert parse_metadata_catalog(catalog.json())["lastmodifieddate"] == "date-time"


def test_the_concurrency_limit_answers_429_and_backoff_recovers() -> None:
    config = NetSuiteSandboxConfig(start=START, days=DAYS, rows={"customer": 50}, max_concurrency=2, latency_s=0.5)
    with run_netsuite_api(config) as sandbox:
        barrier = threading.Barrier(4)
        statuses: list[int] = []
        errors: list[NetSuiteError] = []
        recovered: list[int] = []

        def once() -> None:
            with client_for(sandbox) as client:
                barrier.wait()
                response = client.post(SUITEQL_PATH, json={"q": count_query("customer", ALL_DAYS)})
                statuses.append(response.status_code)
                if response.status_code == 429:
                    errors.append(parse_error(429, response.json()))

                # What the shared client does: back off on 429 (a transient error) and try again.
                def post() -> httpx.Response:
                    return client.post(SUITEQL_PATH, json={"q": count_query("customer", ALL_DAYS)}).raise_for_status()

                recovered.append(retry_transient(post)().status_code)

        threads = [threading.Thread(target=once) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses.count(429) >= 1 and statuses.count(200) >= 1
    assert all(e.codes == ("CONCURRENCY_LIMIT_EXCEEDED",) and e.is_concurrency_limit for e in errors)
    assert recovered == [200] * 4
    assert sandbox.stats.max_in_flight == 2


def test_the_sandbox_is_deterministic_for_a_seed() -> None:
    config = NetSuiteSandboxConfig(rows={"customer": 200, "transaction": 100, "transactionline": 300})
    first, again = generate_tables(config), generate_tables(config)
    other = generate_tables(NetSuiteSandboxConfig(seed="other", rows=config.rows))
    for table, frame in first.items():
        assert frame.equals(again[table]), table
    assert not first["customer"].equals(other["customer"])
    assert len(first["customer"]) == 200
    assert first["transactionline"]["uniquekey"].is_unique


def test_five_hundred_thousand_rows_build_quickly() -> None:
    started = time.perf_counter()
    tables = generate_tables(NetSuiteSandboxConfig(rows={"transaction": 500_000}))
    assert len(tables["transaction"]) == 500_000
    assert time.perf_counter() - started < 60  # a sanity bound for a loaded CI machine, not a benchmark
