import argparse
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingestion_platform.defs.recsys.parse import parse_upload
from ingestion_platform.defs.recsys.validate import (
    ACCEPTED_SCHEMA,
    expectation_names,
    rejected_schema,
    validate_command,
    validate_file,
    validate_upload,
    validation_report,
)

INTERACTIONS = (
    "user_id,item_id,interaction_type,timestamp,rating\n"
    "u1,i1,click,2025-01-01T10:00:00Z,4.5\n"  # 1 ok
    ",i2,view,2025-01-01T10:00:00Z,\n"  # 2 user missing
    "u3,i3,bought,2025-01-01T10:00:00Z,\n"  # 3 bad type
    "u4,i4,view,yesterday,\n"  # 4 bad timestamp
    "u5,i5,like,2025-02-30T10:00:00Z,9\n"  # 5 impossible date and rating out of range
    "u6,i6,purchase,2025-01-01T12:00:00+02:00,abc\n"  # 6 rating not a number
    "u7,,view,,\n"  # 7 item and timestamp missing
    "u1,i1,click,2025-01-01T11:00:00+01:00,4.5\n"  # 8 duplicate of 1 (same instant)
    "u8,i8,add_to_cart,2025-01-02 08:30:00,1\n"  # 9 ok, zone-less read as UTC
    "u9,i9,view,2025-01-03,  \n"  # 10 ok, date only, blank rating
)


def test_interactions_accepted_rejected_with_reasons() -> None:
    result = validate_file(INTERACTIONS.encode(), "interactions")
    assert result.usable and result.rows_total == 10
    assert result.accepted.schema == ACCEPTED_SCHEMA["interactions"]
    assert result.accepted.to_pylist() == [
        {
            "user_id": "u1",
            "item_id": "i1",
            "interaction_type": "click",
            "timestamp": datetime(2025, 1, 1, 10, tzinfo=UTC),
            "rating": 4.5,
        },
        {
            "user_id": "u8",
            "item_id": "i8",
            "interaction_type": "add_to_cart",
            "timestamp": datetime(2025, 1, 2, 8, 30, tzinfo=UTC),
            "rating": 1.0,
        },
        {
            "user_id": "u9",
            "item_id": "i9",
            "interaction_type": "view",
            "timestamp": datetime(2025, 1, 3, tzinfo=UTC),
            "rating": None,
        },
    ]
    assert result.duplicates_dropped == 1
    assert result.rejected.schema == rejected_schema("interactions")
    reasons = dict(
        zip(
            result.rejected.column("row_number").to_pylist(),
            result.rejected.column("failed_expectations").to_pylist(),
            strict=True,
        )
    )
    assert reasons == {
        2: "user_id is missing",
        3: "interaction_type is not one of view, click, purchase, like, add_to_cart",
        4: "timestamp is missing or not an ISO-8601 date-time",
        5: "timestamp is missing or not an ISO-8601 date-time; rating is outside [1.0, 5.0]",
        6: "rating is not a number",
        7: "item_id is missing; timestamp is missing or not an ISO-8601 date-time",
    }
    # Rejected rows keep the text as uploaded.
    row6 = result.rejected.filter(result.rejected.column("row_number").to_numpy() == 6).to_pylist()[0]
    assert row6["rating"] == "abc" and row6["timestamp"] == "2025-01-01T12:00:00+02:00"
    summary = {s["expectation"]: s for s in result.summary()}
    assert tuple(summary) == expectation_names("interactions")
    assert summary["timestamp_iso8601"]["unexpected_count"] == 3
    assert summary["interaction_type_in_set"]["success"] is False
    assert summary["interaction_type_not_null"] == {
        "expectation": "interaction_type_not_null",
        "gx_type": "expect_column_values_to_not_be_null",
        "column": "interaction_type",
        "success": True,
        "unexpected_count": 0,
        "unexpected_percent": 0.0,
    }
    assert summary["rating_between_1_and_5"]["unexpected_count"] == 1
    assert result.rows_accepted + result.rows_rejected + result.duplicates_dropped == result.rows_total


def test_malformed_rows_join_the_rejects() -> None:
    data = INTERACTIONS + "u10,i10,view\n"
    result = validate_file(data.encode(), "interactions")
    malformed = result.rejected.filter(result.rejected.column("raw").is_valid()).to_pylist()
    assert [(r["raw"], r["failed_expectations"]) for r in malformed] == [
        ("u10,i10,view", "malformed CSV row: expected 5 fields, got 3")
    ]
    assert result.malformed_rows == 1 and result.rows_rejected == 7


def test_items_unique_title_price() -> None:
    data = (
        "item_id,title,category,price,brand,description\n"
        "i1,Lamp,Home,19.99,Philips,warm light\n"
        "i2,Desk,Home,-5,,\n"
        "i3,,Home,10,,\n"
        "i4,Chair,Home,,,\n"
        "i5,Sofa,Home,cheap,,\n"
        "i6,Rug,Home,0,,\n"
        "i6,Rug again,Home,1,,\n"
        ",Nameless,Home,1,,\n"
    )
    result = validate_file(data.encode(), "items")
    assert result.accepted.schema == ACCEPTED_SCHEMA["items"]
    assert result.accepted.to_pylist() == [
        {
            "item_id": "i1",
            "title": "Lamp",
            "category": "Home",
            "price": 19.99,
            "brand": "Philips",
            "description": "warm light",
        },
        {"item_id": "i4", "title": "Chair", "category": "Home", "price": None, "brand": None, "description": None},
    ]
    reasons = dict(
        zip(
            result.rejected.column("row_number").to_pylist(),
            result.rejected.column("failed_expectations").to_pylist(),
            strict=True,
        )
    )
    assert reasons == {
        2: "price is negative",
        3: "title is missing",
        5: "price is not a number",
        6: "item_id appears more than once",
        7: "item_id appears more than once",
        8: "item_id is missing",
    }


def test_unusable_file_is_blocking() -> None:
    result = validate_file(b"user_id;item_id;interaction_type;timestamp\nu;i;view;2025-01-01\n", "interactions")
    assert not result.usable and result.blocking_code == "wrong_delimiter"
    assert result.rows_accepted == 0 and result.rows_rejected == 0
    report = validation_report(result, name="bad.csv")
    assert "UNUSABLE (wrong_delimiter)" in report and "nothing would be loaded" in report


def test_json_and_csv_give_the_same_result() -> None:
    csv = validate_file(b"item_id,title,price\ni1,Lamp,2.5\ni2,,3\n", "items")
    json = validate_upload(
        parse_upload(b'[{"item_id":"i1","title":"Lamp","price":2.5},{"item_id":"i2","price":3}]', "items")
    )
    assert csv.accepted.equals(json.accepted)
    assert (
        csv.rejected.column("failed_expectations").to_pylist()
        == json.rejected.column("failed_expectations").to_pylist()
        == ["title is missing"]
    )


def test_report_lists_expectations_and_examples() -> None:
    report = validation_report(validate_file(INTERACTIONS.encode(), "interactions"), name="x.csv")
    assert report.splitlines()[1] == "REJECTED ROWS: 10 rows read, 3 accepted, 6 rejected, 1 duplicates dropped"
    assert "timestamp_iso8601           timestamp               FAIL               3" in report
    assert "  row 3: interaction_type is not one of" in report


@pytest.mark.parametrize(
    ("content", "code", "verdict"),
    [
        ("user_id,item_id,interaction_type,timestamp\nu1,i1,view,2025-01-01T00:00:00Z\n", 0, "OK: 1 rows read"),
        (INTERACTIONS, 1, "REJECTED ROWS"),
        ("", 2, "UNUSABLE (empty)"),
    ],
)
def test_validate_command_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, code: int, verdict: str
) -> None:
    path = tmp_path / "upload.csv"
    path.write_text(content)
    assert validate_command(argparse.Namespace(data_type="interactions", file=str(path))) == code
    assert verdict in capsys.readouterr().out


def test_validate_command_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert validate_command(argparse.Namespace(data_type="items", file=str(tmp_path / "nope.csv"))) == 2
    assert "no such file" in capsys.readouterr().err
