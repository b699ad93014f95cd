"""`ingestion-platform validate interactions|items FILE` and `generate recsys`, through the real entry point."""

from pathlib import Path

import pyarrow.csv as pacsv
import pytest

from ingestion_platform.cli import main


def test_generate_recsys_then_validate_accepts_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    assert (
        main(["generate", "recsys", "--users", "40", "--items", "15", "--interactions", "300", "--out", str(out)]) == 0
    )
    assert "40 users, 15 items, 300 interactions" in capsys.readouterr().out
    assert pacsv.read_csv(out / "interactions.csv").num_rows == 300
    assert pacsv.read_csv(out / "items.csv").num_rows == 15
    assert main(["validate", "interactions", str(out / "interactions.csv")]) == 0
    assert "OK: 300 rows read, 300 accepted, 0 rejected" in capsys.readouterr().out
    assert main(["validate", "items", str(out / "items.csv")]) == 0


def test_validate_reports_rejected_rows_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "i.csv"
    path.write_text(
        "user_id,item_id,interaction_type,timestamp,rating\n"
        "u1,i1,view,2025-01-01T10:00:00Z,\n"
        "u1,i2,teleport,2025-01-01T11:00:00Z,7\n"
    )
    assert main(["validate", "interactions", str(path)]) == 1
    out = capsys.readouterr().out
    assert "REJECTED ROWS: 2 rows read, 1 accepted, 1 rejected" in out
    assert "interaction_type_in_set     interaction_type        FAIL               1" in out
    assert "row 2: interaction_type is not one of" in out and "rating is outside [1.0, 5.0]" in out


def test_validate_unusable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "items.csv"
    path.write_text("item_id;title\ni1;Lamp\n")
    assert main(["validate", "items", str(path)]) == 2
    assert "UNUSABLE (wrong_delimiter)" in capsys.readouterr().out


def test_generate_recsys_needs_an_output_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "recsys", "--users", "5"]) == 2
    assert "--out" in capsys.readouterr().err
