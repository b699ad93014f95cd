import gzip
import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ingestion_platform.defs.recsys.parse import UploadError, parse_upload

HEADER = "user_id,item_id,interaction_type,timestamp,rating\n"
ROWS = "u1,i1,click,2025-01-01T10:00:00Z,4.5\nu2,i2,view,2025-01-02T11:00:00Z,\n"


def _error(data: bytes, data_type: str = "interactions", **kwargs: object) -> UploadError:
    with pytest.raises(UploadError) as info:
        parse_upload(data, data_type, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_csv_all_columns_as_text_in_file_order() -> None:
    parsed = parse_upload((HEADER + ROWS).encode(), "interactions")
    assert parsed.format == "csv" and not parsed.gzip
    assert parsed.table.column_names == ["user_id", "item_id", "interaction_type", "timestamp", "rating", "row_number"]
    assert parsed.table.to_pylist() == [
        {
            "user_id": "u1",
            "item_id": "i1",
            "interaction_type": "click",
            "timestamp": "2025-01-01T10:00:00Z",
            "rating": "4.5",
            "row_number": 1,
        },
        {
            "user_id": "u2",
            "item_id": "i2",
            "interaction_type": "view",
            "timestamp": "2025-01-02T11:00:00Z",
            "rating": None,
            "row_number": 2,
        },
    ]
    assert parsed.unknown_columns == () and parsed.malformed.num_rows == 0


def test_sources_bytes_file_object_path_and_gzip(tmp_path: Path) -> None:
    data = (HEADER + ROWS).encode()
    path = tmp_path / "upload.csv.gz"
    path.write_bytes(gzip.compress(data))
    for source in (io.BytesIO(data), path, str(path)):
        parsed = parse_upload(source, "interactions")
        assert parsed.table.num_rows == 2
    assert parse_upload(path, "interactions").gzip


def test_optional_column_absent_is_null_and_header_case_and_spaces_ignored() -> None:
    parsed = parse_upload(b" User_ID ,ITEM_ID,interaction_type,timestamp\nu1,i1,view,2025-01-01\n", "interactions")
    assert parsed.table.column("user_id").to_pylist() == ["u1"]
    assert parsed.table.column("rating").to_pylist() == [None]


def test_unknown_columns_reported_not_loaded() -> None:
    parsed = parse_upload(b"item_id,title,colour,price\ni1,Lamp,red,9.5\n", "items")
    assert parsed.unknown_columns == ("colour",)
    assert "colour" not in parsed.table.column_names
    assert parsed.table.column("price").to_pylist() == ["9.5"]


def test_quoted_newlines_and_bom() -> None:
    data = b'\xef\xbb\xbfitem_id,title,description\ni1,Lamp,"two\nlines"\n'
    parsed = parse_upload(data, "items")
    assert parsed.table.column("item_id").to_pylist() == ["i1"]
    assert parsed.table.column("description").to_pylist() == ["two\nlines"]


def test_malformed_csv_rows_kept_with_reason_and_good_rows_parsed() -> None:
    data = (HEADER + ROWS + "u3,i3,view\nu4,i4,like,2025-01-03T00:00:00Z,5,extra\n").encode()
    parsed = parse_upload(data, "interactions")
    assert parsed.table.column("user_id").to_pylist() == ["u1", "u2"]
    assert parsed.malformed.column("raw").to_pylist() == ["u3,i3,view", "u4,i4,like,2025-01-03T00:00:00Z,5,extra"]
    assert parsed.malformed.column("reason").to_pylist() == [
        "malformed CSV row: expected 5 fields, got 3",
        "malformed CSV row: expected 5 fields, got 6",
    ]
    assert parsed.rows == 4


def test_zero_byte_file() -> None:
    error = _error(b"")
    assert error.code == "empty" and "0 bytes" in str(error)


def test_whitespace_only_and_empty_gzip() -> None:
    assert _error(b"  \n\n").code == "empty"
    assert _error(gzip.compress(b"")).code == "empty"


def test_binary_files(tmp_path: Path) -> None:
    assert _error(b"\x00\x01\x02\x03garbage").code == "binary"
    table_path = tmp_path / "x.parquet"
    import pyarrow as pa

    pq.write_table(pa.table({"a": [1]}), table_path)
    error = _error(table_path.read_bytes())
    assert error.code == "binary" and "Parquet" in str(error)
    assert "ZIP" in str(_error(b"PK\x03\x04rest-of-xlsx"))
    error = _error("user_id,item_id\nü".encode("latin-1"))
    assert error.code == "binary" and "UTF-8" in str(error)


def test_corrupt_gzip() -> None:
    assert _error(b"\x1f\x8bnot really gzip").code == "unparseable"


@pytest.mark.parametrize(("delimiter", "label"), [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_wrong_delimiter(delimiter: str, label: str) -> None:
    data = (HEADER + ROWS).replace(",", delimiter).encode()
    error = _error(data)
    assert error.code == "wrong_delimiter" and label in str(error)


def test_no_header() -> None:
    error = _error(ROWS.encode())
    assert error.code == "no_header"
    assert "user_id,item_id,interaction_type,timestamp" in str(error)


def test_missing_required_columns() -> None:
    error = _error(b"user_id,item_id,rating\nu1,i1,4\n")
    assert error.code == "missing_columns"
    assert "interaction_type, timestamp" in str(error)
    assert _error(b"item_id,price\ni1,3\n", "items").code == "missing_columns"


def test_duplicate_columns() -> None:
    assert _error(b"item_id,title,Title\ni1,a,b\n", "items").code == "duplicate_columns"


def test_json_array_mixed_types_unknown_keys_and_non_objects() -> None:
    data = (
        b'[{"user_id": "u1", "item_id": "i1", "interaction_type": "click", "timestamp": "2025-01-01T10:00:00Z",'
        b' "rating": 5.0, "session": "s"},'
        b' {"user_id": 2, "item_id": "i2", "interaction_type": "view", "timestamp": "2025-01-01", "rating": "abc"},'
        b" 7]"
    )
    parsed = parse_upload(data, "interactions")
    assert parsed.format == "json"
    assert parsed.table.column("user_id").to_pylist() == ["u1", "2"]
    assert parsed.table.column("rating").to_pylist() == ["5.0", "abc"]
    assert parsed.table.column("row_number").to_pylist() == [1, 2]
    assert parsed.unknown_columns == ("session",)
    assert parsed.malformed.to_pylist() == [
        {"row_number": 3, "raw": "7", "reason": "array element is not a JSON object"}
    ]


def test_ndjson_bad_line_kept_and_gzip() -> None:
    data = (
        b'{"item_id": "i1", "title": "Lamp", "price": 9.99}\nthis is not json\n\n{"item_id": "i2", "title": "Desk"}\n'
    )
    parsed = parse_upload(gzip.compress(data), "items", name="items.ndjson.gz")
    assert parsed.format == "ndjson" and parsed.gzip
    assert parsed.table.column("item_id").to_pylist() == ["i1", "i2"]
    assert parsed.table.column("price").to_pylist() == ["9.99", None]
    assert parsed.table.column("row_number").to_pylist() == [1, 4]
    assert parsed.malformed.column("raw").to_pylist() == ["this is not json"]


def test_json_problems_of_the_whole_file() -> None:
    assert _error(b'[{"user_id": "u1"', "interactions").code == "unparseable"
    assert _error(b"[]", "interactions").code == "empty"
    assert _error(b'[{"foo": 1}]', "interactions").code == "no_header"
    assert _error(b'[{"user_id": "u1", "item_id": "i1"}]', "interactions").code == "missing_columns"
    error = _error(b"user_id,item_id\n", "interactions", name="upload.json")
    assert error.code == "unparseable" and "named as JSON" in str(error)
