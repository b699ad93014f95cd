"""Parsing commerce NDJSON: every structural problem becomes a reject with file, line, raw text and reason."""

import gzip
import io
import json

import pyarrow as pa
import pytest

from ingestion_platform.defs.commerce.ndjson import (
    CUSTOMERS,
    ORDER_ITEMS,
    ORDERS,
    REJECT_SCHEMA,
    DuplicateTracker,
    Entity,
    Source,
    parse_ndjson,
)

ID = "123e4567-e89b-42d3-a456-426614174000"
ID2 = "223e4567-e89b-42d3-a456-426614174000"
SOURCE = Source("acme", "b0001", "order_items_0001.ndjson")


def item(item_id: str = ID, quantity: str = "2", unit: str = '"1.50"', total: str = "3.0", tail: str = "") -> str:
    return (
        f'{{"order_item_id":"{item_id}","order_id":"{ID}","product_id":"{ID}","quantity":{quantity},'
        f'"unit_price":{unit},"line_total":{total}{tail}}}'
    )


def parse(data: bytes, entity: Entity = ORDER_ITEMS, block_bytes: int = 1 << 20) -> tuple[pa.Table, pa.Table, int]:
    chunks = list(parse_ndjson(io.BytesIO(data), entity, SOURCE, block_bytes=block_bytes))
    rows = pa.Table.from_batches([c.rows for c in chunks], schema=entity.row_schema)
    rejects = pa.concat_tables([c.rejects for c in chunks]) if chunks else REJECT_SCHEMA.empty_table()
    return rows, rejects, sum(c.used_fallback for c in chunks)


def test_clean_file_takes_the_fast_path_with_exact_decimals_and_physical_line_numbers() -> None:
    data = (item() + "\n\n" + item(ID2, unit="1.5", total='"3.00"') + "\r\n").encode()
    rows, rejects, slow = parse(data)
    assert slow == 0 and rejects.num_rows == 0
    assert rows.column("source_line").to_pylist() == [1, 3]  # the blank line 2 still counts
    assert [str(v) for v in rows.column("unit_price").to_pylist()] == ["1.500000000", "1.500000000"]
    assert rows.column("tenant_id").to_pylist() == ["acme", "acme"]
    assert rows.column("batch_id").to_pylist() == ["b0001", "b0001"]
    assert rows.column("extra").to_pylist() == [None, None]


def test_bom_is_skipped() -> None:
    rows, rejects, _ = parse(b"\xef\xbb\xbf" + item().encode() + b"\n")
    assert rows.num_rows == 1 and rejects.num_rows == 0
    assert rows.column("order_item_id").to_pylist() == [ID]


def test_gzip_input_is_recognised_by_its_bytes() -> None:
    rows, rejects, _ = parse(gzip.compress((item() + "\n" + item(ID2) + "\n").encode()))
    assert rows.column("order_item_id").to_pylist() == [ID, ID2] and rejects.num_rows == 0


def test_gzip_cut_short_keeps_the_rows_before_the_break() -> None:
    lines = [item(f"{i:08d}-e89b-42d3-a456-426614174000", quantity=str(i % 97 + 1)) for i in range(20_000)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    rows, rejects, _ = parse(data[: len(data) // 2])
    assert 0 < rows.num_rows < 20_000
    assert rows.column("source_line").to_pylist() == list(range(1, rows.num_rows + 1))
    (reject,) = rejects.to_pylist()
    assert reject["line_number"] == rows.num_rows + 1
    assert reject["reason"].startswith("truncated last line: compressed stream ended early")


def test_non_json_line_is_rejected_and_the_rest_of_its_block_loads() -> None:
    data = (item() + "\n" + "this is not json\n" + item(ID2) + "\n").encode()
    rows, rejects, slow = parse(data)
    assert slow == 1
    assert rows.column("source_line").to_pylist() == [1, 3]
    (reject,) = rejects.to_pylist()
    assert reject["line_number"] == 2 and reject["raw_line"] == "this is not json"
    assert reject["reason"].startswith("not JSON")
    assert reject["source_file"] == SOURCE.file_name and reject["tenant_id"] == "acme"
    assert reject["batch_id"] == "b0001" and reject["table_name"] == "order_items"


def test_truncated_last_line_is_rejected_as_such() -> None:
    full = item()
    rows, rejects, _ = parse((full + "\n" + full[:40]).encode())
    assert rows.num_rows == 1
    (reject,) = rejects.to_pylist()
    assert reject["line_number"] == 2 and reject["raw_line"] == full[:40]
    assert reject["reason"].startswith("truncated last line: no newline at end of file")


def test_complete_last_line_without_newline_loads() -> None:
    rows, rejects, _ = parse((item() + "\n" + item(ID2)).encode())
    assert rows.column("order_item_id").to_pylist() == [ID, ID2] and rejects.num_rows == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (item(quantity='"two"'), "wrong type: quantity is string, expected integer"),
        (item(quantity="2.5"), "wrong type: quantity is number, expected integer"),
        (item(unit="true"), "wrong type: unit_price is boolean"),
        (item(unit='"abc"'), "wrong type: unit_price is string 'abc'"),
        (item(total='"1.0000000001"'), "out of range: line_total"),
        (item(quantity="100000000000000000000"), "out of range: quantity"),
        ("[1, 2, 3]", "not a JSON object: found array"),
        ('"just a string"', "not a JSON object: found string"),
        ('{"order_item_id": 42}', "wrong type: order_item_id is integer, expected string"),
    ],
)
def test_wrong_types_are_rejected_with_the_field_named(line: str, reason: str) -> None:
    rows, rejects, _ = parse((item() + "\n" + line + "\n").encode())
    assert rows.num_rows == 1
    (reject,) = rejects.to_pylist()
    assert reject["line_number"] == 2 and reject["reason"].startswith(reason), reject["reason"]


def test_invalid_utf8_is_rejected_and_stored_as_readable_text() -> None:
    rows, rejects, _ = parse(item().encode() + b"\n" + b'{"order_item_id":"\xff\xfe\x00"}\n')
    assert rows.num_rows == 1
    (reject,) = rejects.to_pylist()
    assert reject["reason"].startswith("not UTF-8")
    assert "\x00" not in reject["raw_line"] and "\ufffd" in reject["raw_line"]


def test_two_objects_on_one_line_are_one_reject_not_two_rows() -> None:
    rows, rejects, _ = parse((item() + item(ID2) + "\n" + item(ID2) + "\n").encode())
    assert rows.column("source_line").to_pylist() == [2]
    assert rejects.column("line_number").to_pylist() == [1]


def test_unknown_fields_are_kept_in_extra_on_both_paths() -> None:
    line = item(tail=',"gift_wrap":true,"note":{"text":"héllo"}')
    rows, _, slow = parse((line + "\n" + item(ID2) + "\n").encode())
    assert slow == 0
    assert rows.column("extra").to_pylist() == ['{"gift_wrap":true,"note":{"text":"héllo"}}', None]
    rows, rejects, slow = parse((line + "\n" + "oops\n").encode())  # the bad line forces the per-line path
    assert slow == 1 and rejects.num_rows == 1
    assert rows.column("extra").to_pylist() == ['{"gift_wrap":true,"note":{"text":"héllo"}}']


def test_json_valued_fields_are_kept_as_json_text() -> None:
    line = (
        f'{{"customer_id":"{ID}","name":"Ann","email":"a@example.com","metadata":{{"tier":"gold","tags":["x"]}},'
        f'"created_at":"2024-01-01T00:00:00Z","vip":true}}'
    )
    rows, rejects, _ = parse((line + "\n" + f'{{"customer_id":"{ID2}","metadata":null}}\n').encode(), CUSTOMERS)
    assert rejects.num_rows == 0
    assert rows.column("metadata").to_pylist() == ['{"tier":"gold","tags":["x"]}', None]
    assert rows.column("extra").to_pylist() == ['{"vip":true}', None]


def test_json_fields_whose_shape_varies_between_rows_still_load() -> None:
    lines = [
        f'{{"order_id":"{ID}","raw_payload":{{"x":1}}}}',
        f'{{"order_id":"{ID2}","raw_payload":{{"x":"one"}}}}',  # pyarrow cannot infer one type for x
    ]
    rows, rejects, _ = parse(("\n".join(lines) + "\n").encode(), ORDERS)
    assert rejects.num_rows == 0
    assert rows.column("raw_payload").to_pylist() == ['{"x":1}', '{"x":"one"}']


@pytest.mark.parametrize(
    "value",
    [
        '{"a": {"b": {"c": 1}}, "s": "} { \\" ]"}',  # braces and an escaped quote inside a string
        '{"a": {"b": {"c": {"d": {"e": 1}}}}}',  # deeper than the pattern: decoded per row
        '["an", "array"]',
        '"a string"',
        "12.5",
    ],
)
def test_json_values_of_any_shape_are_kept_exactly(value: str) -> None:
    line = f'{{"order_id":"{ID}","raw_payload": {value},"currency":"EUR"}}'
    rows, rejects, slow = parse((line + "\n").encode(), ORDERS)
    assert rejects.num_rows == 0 and slow == 0
    (text,) = rows.column("raw_payload").to_pylist()
    assert json.loads(text) == json.loads(value)
    assert rows.column("currency").to_pylist() == ["EUR"] and rows.column("extra").to_pylist() == [None]


def test_a_json_field_name_repeated_in_a_nested_object_is_not_mistaken_for_the_field() -> None:
    line = f'{{"order_id":"{ID}","metadata":{{"raw_payload":{{"wrong":1}}}},"raw_payload":{{"right":2}}}}'
    rows, _, _ = parse((line + "\n").encode(), ORDERS)
    assert json.loads(rows.column("raw_payload")[0].as_py()) == {"right": 2}
    assert json.loads(rows.column("extra")[0].as_py()) == {"metadata": {"raw_payload": {"wrong": 1}}}


def test_small_blocks_give_the_same_rows_and_line_numbers_as_one_block() -> None:
    lines = [item(f"{i:08d}-e89b-42d3-a456-426614174000") for i in range(500)]
    lines[123] = "garbage"
    data = ("\n".join(lines) + "\n").encode()
    whole, whole_rejects, _ = parse(data)
    small, small_rejects, _ = parse(data, block_bytes=1000)
    assert small.column("source_line").to_pylist() == whole.column("source_line").to_pylist()
    assert small.column("order_item_id").to_pylist() == whole.column("order_item_id").to_pylist()
    assert small_rejects.column("line_number").to_pylist() == whole_rejects.column("line_number").to_pylist() == [124]


def test_duplicate_ids_within_and_across_files_are_counted() -> None:
    tracker = DuplicateTracker("order_item_id")
    first, _, _ = parse((item(ID) + "\n" + item(ID2) + "\n" + item(ID) + "\n").encode())
    second, _, _ = parse((item(ID2) + "\n").encode())
    for table in (first, second):
        for batch in table.to_batches():
            tracker.add(batch)
    assert tracker.rows == 4
    assert tracker.duplicates() == 2  # ID twice in the first file, ID2 once more in the second
    assert sorted(tracker.duplicate_ids()) == [ID, ID2]


def test_empty_file_gives_nothing() -> None:
    rows, rejects, _ = parse(b"")
    assert rows.num_rows == 0 and rejects.num_rows == 0
