"""SuiteQL building and response parsing, as pure functions (the sandbox tests run the same queries for real)."""

from datetime import date, datetime, timedelta

import pytest

from ingestion_platform.defs.netsuite import suiteql
from ingestion_platform.defs.netsuite.suiteql import (
    NetSuiteError,
    Window,
    count_query,
    day_window,
    deleted_records_query,
    discover_columns,
    key_column,
    keyset_pages,
    last_modified_column,
    parse_count,
    parse_error,
    parse_metadata_catalog,
    parse_page,
    range_window,
    select_query,
    timestamp_literal,
)


def test_last_modified_and_key_columns_per_table() -> None:
    assert last_modified_column("customer") == "lastmodifieddate"
    assert last_modified_column("transactionline") == "linelastmodifieddate"
    assert last_modified_column("customrecord_shipment") == "lastmodified"
    assert key_column("transaction") == "id"
    assert key_column("transactionline") == "uniquekey"


def test_timestamps_do_not_depend_on_the_accounts_date_format() -> None:
    assert (
        timestamp_literal(datetime(2026, 1, 2, 3, 4, 5))
        == "TO_TIMESTAMP('2026-01-02 03:04:05', 'YYYY-MM-DD HH24:MI:SS')"
    )
    assert suiteql.parse_timestamp("2026-01-02 03:04:05") == datetime(2026, 1, 2, 3, 4, 5)


def test_day_window_is_inclusive_at_the_cursor_and_reaches_back_by_the_lag() -> None:
    assert day_window(date(2026, 1, 2)) == Window(datetime(2026, 1, 2), datetime(2026, 1, 3))
    lagged = day_window(date(2026, 1, 2), lag=timedelta(minutes=15))
    assert lagged.start == datetime(2026, 1, 1, 23, 45)
    assert lagged.end == datetime(2026, 1, 3)
    assert range_window(date(2026, 1, 1), date(2026, 1, 3)) == Window(datetime(2026, 1, 1), datetime(2026, 1, 4))
    with pytest.raises(ValueError, match="must end after it starts"):
        Window(datetime(2026, 1, 2), datetime(2026, 1, 2))


def test_select_query_is_a_keyset_page_with_a_unique_order() -> None:
    window = day_window(date(2026, 1, 2))
    query = select_query("customer", ["companyname", "lastmodifieddate"], window, after_id=41)
    assert query == (
        "SELECT id, companyname, TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lastmodifieddate "
        "FROM customer WHERE lastmodifieddate >= TO_TIMESTAMP('2026-01-02 00:00:00', 'YYYY-MM-DD HH24:MI:SS') "
        "AND lastmodifieddate < TO_TIMESTAMP('2026-01-03 00:00:00', 'YYYY-MM-DD HH24:MI:SS') AND id > 41 ORDER BY id"
    )
    dated = select_query("transaction", ["trandate", "memo"], window, timestamp_columns=["trandate"])
    assert dated.startswith("SELECT id, TO_CHAR(trandate, 'YYYY-MM-DD HH24:MI:SS') AS trandate, memo FROM")
    first = select_query("transactionline", ["transaction", "linelastmodifieddate"], window)
    assert first.startswith("SELECT uniquekey, transaction, TO_CHAR(linelastmodifieddate,")
    assert first.endswith("ORDER BY uniquekey")
    assert " > " not in first.split("WHERE")[1].replace(">=", "")


def test_select_star_is_refused_on_transaction_and_identifiers_are_checked() -> None:
    window = day_window(date(2026, 1, 2))
    assert select_query("customer", None, window).startswith("SELECT * FROM customer")
    with pytest.raises(ValueError, match="never SELECT \\* on 'transaction'"):
        select_query("transaction", None, window)
    with pytest.raises(ValueError, match="not a SuiteQL identifier"):
        select_query("customer", ["id; DELETE FROM customer"], window)
    with pytest.raises(ValueError, match="not a SuiteQL identifier"):
        select_query("customer where 1=1 --", ["id"], window)


def test_count_and_deleted_record_queries() -> None:
    window = day_window(date(2026, 1, 2))
    assert count_query("transactionline", window).startswith(
        "SELECT COUNT(*) AS count FROM transactionline WHERE linelastmodifieddate >= TO_TIMESTAMP("
    )
    deleted = deleted_records_query("transaction", window, after_id=7)
    assert "FROM deletedrecord WHERE deleteddate >= " in deleted
    assert "type IN ('salesorder', 'invoice', " in deleted
    assert deleted.endswith("AND recordid > 7 ORDER BY recordid")


def test_parse_page_reads_netsuite_paging_fields() -> None:
    body = {
        "links": [{"rel": "next", "href": "https://x/suiteql?limit=2&offset=2"}],
        "count": 2,
        "hasMore": True,
        "items": [{"links": [], "id": "1", "email": "a@b.c"}, {"links": [], "id": "2"}],
        "offset": 0,
        "totalResults": 5,
    }
    page = parse_page(body)
    assert page.items == [{"id": "1", "email": "a@b.c"}, {"id": "2"}]
    assert (page.has_more, page.total_results, page.count, page.offset) == (True, 5, 2, 0)
    assert page.links == {"next": "https://x/suiteql?limit=2&offset=2"}
    assert parse_count(parse_page({"items": [{"links": [], "count": "42"}], "hasMore": False})) == 42
    with pytest.raises(suiteql.SuiteQLResponseError, match="no 'items' list"):
        parse_page({"html": "proxy error"})


def test_parse_error_surfaces_code_and_message() -> None:
    error = parse_error(
        429,
        {
            "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.30",
            "title": "Too Many Requests",
            "status": 429,
            "o:errorDetails": [
                {
                    "detail": "Concurrent request limit exceeded. Request blocked.",
                    "o:errorCode": "CONCURRENCY_LIMIT_EXCEEDED",
                }
            ],
        },
    )
    assert isinstance(error, NetSuiteError)
    assert error.codes == ("CONCURRENCY_LIMIT_EXCEEDED",)
    assert str(error) == "NetSuite 429: CONCURRENCY_LIMIT_EXCEEDED: Concurrent request limit exceeded. Request blocked."
    assert error.is_concurrency_limit
    login = parse_error(401, {"o:errorDetails": [{"detail": "Invalid login attempt.", "o:errorCode": "INVALID_LOGIN"}]})
    assert not login.is_concurrency_limit
    assert "INVALID_LOGIN" in str(login)
    assert str(parse_error(502, "<html>Bad gateway</html>")) == "NetSuite 502: <html>Bad gateway</html>"


def test_columns_come_from_the_data_and_the_catalog() -> None:
    # NetSuite omits null fields, so a column may first appear on a later item.
    items: list[dict[str, object]] = [
        {"id": "1", "name": "a"},
        {"id": "2", "links": [], "custentity_tier": "gold", "name": "b"},
    ]
    assert discover_columns(items) == ["id", "name", "custentity_tier"]
    catalog = {"properties": {"id": {"type": "integer"}, "lastmodifieddate": {"type": "string", "format": "date-time"}}}
    assert parse_metadata_catalog(catalog) == {"id": "integer", "lastmodifieddate": "date-time"}
    assert suiteql.date_columns(parse_metadata_catalog(catalog)) == ["lastmodifieddate"]


def test_keyset_paging_refuses_a_key_that_does_not_advance() -> None:
    def post(query: str, limit: int, offset: int) -> dict[str, object]:
        return {"items": [{"id": "5"}], "hasMore": True, "totalResults": 9}

    pages = keyset_pages(post, lambda after: f"q {after}", page_size=1)
    assert next(pages).items == [{"id": "5"}]
    with pytest.raises(suiteql.SuiteQLResponseError, match="did not advance past id=5"):
        next(pages)
    with pytest.raises(ValueError, match="1 to 1000 rows"):
        next(keyset_pages(post, lambda after: "q", page_size=5000))


def test_queries_that_find_lines_removed_from_transactions() -> None:
    window = day_window(date(2026, 1, 2))
    modified = suiteql.modified_ids_query("transaction", window, after_id=3)
    assert modified.startswith("SELECT id, TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lastmodifieddate ")
    assert modified.endswith("AND id > 3 ORDER BY id")
    lines = suiteql.line_keys_query([5, 9], after_id=11)
    assert lines == (
        "SELECT uniquekey, transaction FROM transactionline WHERE transaction IN ('5', '9') AND uniquekey > 11 "
        "ORDER BY uniquekey"
    )
    with pytest.raises(ValueError, match="1 to 500 transaction ids"):
        suiteql.line_keys_query([])
    with pytest.raises(ValueError, match="1 to 500 transaction ids"):
        suiteql.line_keys_query(list(range(501)))
