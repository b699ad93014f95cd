"""Per-row validation: every rule rejects exactly the rows that break it, with every reason, and types the rest."""

import io
import json
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from ingestion_platform.defs.commerce.currencies import ISO_4217
from ingestion_platform.defs.commerce.ndjson import (
    CUSTOMERS,
    ENTITIES,
    ORDER_ITEMS,
    ORDERS,
    PRODUCTS,
    DuplicateTracker,
    Entity,
    Source,
    parse_ndjson,
)
from ingestion_platform.defs.commerce.tables import TABLES
from ingestion_platform.defs.commerce.validate import (
    FileResult,
    output_schema,
    parse_timestamps,
    read_file,
    reasons_summary,
    validate,
)

ID = "123e4567-e89b-42d3-a456-426614174000"
ID2 = "AAAAAAAA-e89b-42d3-a456-426614174000"
SOURCE = Source("acme", "b0001", "f.ndjson")

GOOD: dict[str, dict[str, object]] = {
    "customers": {"customer_id": ID, "name": "Ann", "email": "ann@example.com", "created_at": "2024-01-01T00:00:00Z"},
    "products": {"product_id": ID, "sku": "S1", "name": "P", "price": "9.99", "category_id": ID, "active": True},
    "orders": {
        "order_id": ID,
        "customer_id": ID,
        "total_amount": "20.00",
        "currency": "EUR",
        "order_status": "paid",
        "order_date": "2024-05-01T10:00:00+02:00",
    },
    "order_items": {
        "order_item_id": ID,
        "order_id": ID,
        "product_id": ID,
        "quantity": 3,
        "unit_price": "3.33",
        "line_total": "9.99",
    },
}


def check(entity: Entity, *overrides: dict[str, object]) -> tuple[pa.RecordBatch, pa.Table]:
    """Validate one good row followed by one row per override; return (valid rows, rejects)."""
    lines = [GOOD[entity.name], *({**GOOD[entity.name], **o} for o in overrides)]
    data = "\n".join(json.dumps({k: v for k, v in line.items() if v is not ...}) for line in lines) + "\n"
    (chunk,) = parse_ndjson(io.BytesIO(data.encode()), entity, SOURCE)
    assert chunk.rejects.num_rows == 0
    result = validate(chunk.rows, entity)
    assert result.valid.schema == output_schema(entity)
    return result.valid, result.rejects


def reasons(rejects: pa.Table) -> list[str]:
    return rejects.column("reason").to_pylist()


@pytest.mark.parametrize(
    ("entity", "override", "reason"),
    [
        (CUSTOMERS, {"customer_id": "CUST-42"}, "customer_id is not a UUID"),
        (CUSTOMERS, {"customer_id": ID.replace("-", "")}, "customer_id is not a UUID"),
        (CUSTOMERS, {"customer_id": ...}, "customer_id is missing"),
        (CUSTOMERS, {"name": None}, "name is missing"),
        (CUSTOMERS, {"name": "   "}, "name is empty"),
        (CUSTOMERS, {"name": "x" * 256}, "name is longer than 255"),
        (CUSTOMERS, {"email": "ann at example.com"}, "email is not an email address"),
        (CUSTOMERS, {"created_at": "2024-02-30T00:00:00Z"}, "created_at is not an ISO 8601 timestamp"),
        (CUSTOMERS, {"created_at": "01/02/2024"}, "created_at is not an ISO 8601 timestamp"),
        (PRODUCTS, {"price": "-0.01"}, "price is negative"),
        (PRODUCTS, {"price": "1.001"}, "price has more than 2 decimal places"),
        (PRODUCTS, {"price": "10000000000"}, "price is out of range"),
        (PRODUCTS, {"sku": "S" * 65}, "sku is longer than 64"),
        (PRODUCTS, {"category_id": "cat-1"}, "category_id is not a UUID"),
        (ORDERS, {"currency": "XYZ"}, "currency is not an ISO 4217 currency code"),
        (ORDERS, {"currency": "EURO"}, "currency is not an ISO 4217 currency code; currency is longer than 3"),
        (ORDERS, {"order_status": "teleported"}, "order_status is not one of"),
        (ORDERS, {"order_date": "yesterday"}, "order_date is not an ISO 8601 timestamp"),
        (ORDERS, {"order_date": None}, "order_date is missing"),
        (ORDERS, {"total_amount": "-5"}, "total_amount is negative"),
        (ORDERS, {"customer_email_snapshot": "nobody"}, "customer_email_snapshot is not an email address"),
        (ORDER_ITEMS, {"quantity": 0, "line_total": "0"}, "quantity must be > 0"),
        (ORDER_ITEMS, {"quantity": -1, "line_total": "-3.33"}, "quantity must be > 0; line_total is negative"),
        (ORDER_ITEMS, {"quantity": 2_000_000}, "quantity is out of range"),
        (ORDER_ITEMS, {"line_total": "10.01"}, "line_total differs from quantity x unit_price"),
        (ORDER_ITEMS, {"product_id": None}, "product_id is missing"),
    ],
)
def test_each_rule_rejects_its_row_with_its_reason(entity: Entity, override: dict, reason: str) -> None:
    valid, rejects = check(entity, override)
    assert valid.num_rows == 1  # the good row
    (reject,) = rejects.to_pylist()
    assert reject["reason"].startswith(reason), reject["reason"]
    assert reject["line_number"] == 2 and reject["table_name"] == entity.name
    assert reject["tenant_id"] == "acme" and reject["batch_id"] == "b0001" and reject["source_file"] == "f.ndjson"
    assert json.loads(reject["raw_line"]) == {
        k: v for k, v in {**GOOD[entity.name], **override}.items() if v is not ...
    }


def test_a_row_breaking_several_rules_lists_every_reason() -> None:
    _, rejects = check(ORDERS, {"order_id": "x", "currency": "ABC", "order_status": "lost", "order_date": "soon"})
    (reason,) = reasons(rejects)
    assert reason.split("; ")[0] == "order_id is not a UUID"
    for part in ("currency is not an ISO 4217", "order_status is not one of", "order_date is not an ISO 8601"):
        assert part in reason


def test_line_total_within_a_cent_is_accepted() -> None:
    valid, rejects = check(ORDER_ITEMS, {"line_total": "10.00"}, {"line_total": "9.98"})
    assert rejects.num_rows == 0 and valid.num_rows == 3


def test_valid_rows_are_typed_and_normalised_for_the_warehouse() -> None:
    valid, rejects = check(
        ORDERS, {"order_id": ID2, "currency": " usd ", "order_status": "PAID", "raw_payload": {"channel": "web"}}
    )
    assert rejects.num_rows == 0
    row = valid.to_pylist()[1]
    assert row["order_id"] == ID2.lower()
    assert row["currency"] == "USD" and row["order_status"] == "paid"
    assert row["total_amount"] == Decimal("20.00")
    assert row["order_date"] == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert json.loads(row["raw_payload"]) == {"channel": "web"}
    assert valid.schema.field("total_amount").type == pa.decimal128(12, 2)


def test_output_columns_are_the_table_columns() -> None:
    for name, entity in ENTITIES.items():
        assert output_schema(entity).names == TABLES[name].column_names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01T12:30:00Z", datetime(2024, 3, 1, 12, 30, tzinfo=UTC)),
        ("2024-03-01 12:30:00+01:00", datetime(2024, 3, 1, 11, 30, tzinfo=UTC)),
        ("2024-03-01T12:30:00.123456", datetime(2024, 3, 1, 12, 30, 0, 123456, tzinfo=UTC)),  # no offset: UTC
        ("2024-03-01T12:30", datetime(2024, 3, 1, 12, 30, tzinfo=UTC)),
    ],
)
def test_timestamp_forms_accepted(text: str, expected: datetime) -> None:
    values, bad = parse_timestamps(pa.array([text]))
    assert bad.to_pylist() == [False]
    assert values.to_pylist() == [expected]


def test_impossible_dates_are_found_among_good_ones() -> None:
    values, bad = parse_timestamps(pa.array(["2024-01-01T00:00:00Z", "2023-02-29T00:00:00Z", None, "2024-13-01T00:00"]))
    assert bad.to_pylist() == [False, True, False, True]
    assert values.to_pylist()[0] == datetime(2024, 1, 1, tzinfo=UTC)
    assert values.to_pylist()[1:] == [None, None, None]


def test_currency_list_is_iso_4217() -> None:
    assert {"USD", "EUR", "JPY", "GBP", "CHF", "XCG", "ZWG", "SLE"} <= ISO_4217
    assert not {"XTS", "XXX", "ANG", "HRK", "ZWL", "EURO"} & ISO_4217
    assert len(ISO_4217) > 150 and all(len(c) == 3 and c.isupper() for c in ISO_4217)


def test_read_file_streams_valid_rows_rejects_and_counts() -> None:
    lines = [
        json.dumps({**GOOD["order_items"], "order_item_id": f"{i:08d}-e89b-42d3-a456-426614174000"}) for i in range(300)
    ]
    lines[10] = "{broken"
    lines[20] = json.dumps({**GOOD["order_items"], "quantity": 0})
    lines.append(lines[0])  # a duplicate id: last wins downstream, counted here
    data = ("\n".join(lines) + "\n").encode()
    tracker = DuplicateTracker("order_item_id")
    result = FileResult("f.ndjson")
    parts = list(read_file(io.BytesIO(data), ORDER_ITEMS, SOURCE, duplicates=tracker, result=result, block_bytes=4096))
    assert len(parts) > 1  # several blocks
    rejects = pa.concat_tables([p.rejects for p in parts])
    assert sorted(rejects.column("line_number").to_pylist()) == [11, 21]
    assert result.rows_valid == 299 and result.rows_rejected == 2 and result.blocks_on_slow_path == 1
    assert tracker.duplicates() == 1
    assert sum(p.valid.num_rows for p in parts) == 299
    summary = reasons_summary(rejects)
    # Each of a row's reasons counts once: the zero-quantity row also breaks line_total = quantity x unit_price.
    assert summary["quantity must be > 0"] == summary["line_total differs from quantity x unit_price"] == 1
    assert [k for k in summary if k.startswith("not JSON")] and sum(summary.values()) == 3
