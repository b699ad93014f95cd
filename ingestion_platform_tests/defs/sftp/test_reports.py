"""Parsing report files as tenants really send them (pure: files on disk, no server)."""

from pathlib import Path

import pandas as pd
import pytest

from ingestion_platform.defs.sftp.reports import LOCATIONS, USERS, ReportFormatError, parse_report

USERS_HEADER = "user_id,email,company_name,first_name,last_name,created_at,updated_at"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def parse(path: Path, kind=USERS, encoding: str = "utf-8-sig"):
    return parse_report(kind, path, encoding=encoding, tenant_id="acme", report_date="2024-03-01")


def test_bom_crlf_and_quoted_commas_and_newlines(tmp_path: Path) -> None:
    text = (
        "\ufeff" + USERS_HEADER + "\r\n"
        '1,a@x.io,"Acme, Inc.",Ann,"Lee",2024-01-01T10:00:00Z,2024-02-01 10:00\r\n'
        '2,b@x.io,"Multi\r\nline Co",Bob,Ray,,\r\n'
        "3,c@x.io,Initech,Cy,Zed,2024-01-03,2024-01-03\r\n"
    )
    parsed = parse(write(tmp_path, "users_20240301.csv", text))
    rows = parsed.rows.set_index("user_id")
    assert list(rows.index) == ["1", "2", "3"]
    assert rows.loc["1", "company_name"] == "Acme, Inc."
    assert rows.loc["2", "company_name"] == "Multi\r\nline Co"
    assert rows.loc["1", "created_at"] == pd.Timestamp("2024-01-01 10:00", tz="UTC")
    assert pd.isna(rows.loc["2", "created_at"])
    # Line numbers are physical lines where the record starts, so an operator can open the file at that line.
    assert list(parsed.rows["source_line"]) == [2, 3, 5]
    assert parsed.rejects.empty and parsed.rows_read == 3


def test_header_only_file_is_empty_not_an_error(tmp_path: Path) -> None:
    parsed = parse(write(tmp_path, "users_20240301.csv", USERS_HEADER + "\n"))
    assert parsed.rows.empty and parsed.rejects.empty and parsed.rows_read == 0


def test_latin1_needs_the_configured_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, "u.csv", USERS_HEADER + "\n1,z@x.io,Société Générale,Zoé,Müller,,\n", "latin-1")
    with pytest.raises(ReportFormatError, match=r"not valid utf-8-sig at byte \d+; set the tenant.s sftp .encoding."):
        parse(path)
    parsed = parse(path, encoding="latin-1")
    assert parsed.rows.iloc[0]["company_name"] == "Société Générale"
    assert parsed.rows.iloc[0]["last_name"] == "Müller"


def test_duplicate_keys_last_wins_and_are_counted(tmp_path: Path) -> None:
    text = USERS_HEADER + "\n1,old@x.io,A,,,,\n2,b@x.io,B,,,,\n1,new@x.io,A,,,,\n"
    parsed = parse(write(tmp_path, "u.csv", text))
    assert parsed.duplicate_keys == 1
    assert parsed.rows.set_index("user_id").loc["1", "email"] == "new@x.io"
    assert len(parsed.rows) == 2


def test_bad_values_are_rejected_with_line_and_reason_and_good_rows_stay(tmp_path: Path) -> None:
    text = USERS_HEADER + "\n1,a@x.io,A,,,not-a-date,\n,nokey@x.io,B,,,,\n3,c@x.io,C,,,2024-01-01,\n4,too,few\n"
    parsed = parse(write(tmp_path, "users_20240301.csv", text))
    assert list(parsed.rows["user_id"]) == ["3"]
    rejects = parsed.rejects.set_index("line_number")
    assert rejects.loc[2, "reason"] == "created_at 'not-a-date' is not a timestamp"
    assert rejects.loc[2, "raw"]["created_at"] == "not-a-date"
    assert rejects.loc[3, "reason"] == "user_id is empty"
    assert rejects.loc[5, "reason"] == "expected 7 fields, found 3"
    assert set(rejects["source_file"]) == {"users_20240301.csv"}


def test_unknown_columns_are_kept_in_extra_and_missing_ones_fail(tmp_path: Path) -> None:
    text = USERS_HEADER + ",Loyalty Tier\n1,a@x.io,A,,,,,gold\n2,b@x.io,B,,,,,\n"
    parsed = parse(write(tmp_path, "u.csv", text))
    assert parsed.extra_columns == ["loyalty_tier"]
    assert list(parsed.rows["extra"]) == [{"loyalty_tier": "gold"}, None]
    with pytest.raises(ReportFormatError, match=r"missing required column\(s\) \['email'\]"):
        parse(write(tmp_path, "v.csv", "user_id,company_name,first_name,last_name,created_at,updated_at\n1,A,,,,\n"))


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    parsed = parse(write(tmp_path, "u.csv", "user_id,email\n1,a@x.io\n"))
    row = parsed.rows.iloc[0]
    assert row["email"] == "a@x.io" and row["company_name"] is None and pd.isna(row["created_at"])


def test_locations_parse_coordinates(tmp_path: Path) -> None:
    header = "location_id,location_name,address,city,region,country,postal_code,latitude,longitude"
    text = header + "\nL1,HQ,1 Main St,Berlin,BE,DE,10115,52.52,13.40\nL2,Bad,,,,,,north,13\n"
    parsed = parse(write(tmp_path, "locations_20240301.csv", text), kind=LOCATIONS)
    assert parsed.rows.iloc[0]["latitude"] == pytest.approx(52.52)
    assert parsed.rejects.iloc[0]["reason"] == "latitude 'north' is not a number"


def test_streamed_blocks_keep_line_numbers_across_quoted_newlines_blank_and_bad_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv
    import io

    from ingestion_platform.defs.sftp import reports

    monkeypatch.setattr(reports, "BLOCK_BYTES", 4096)  # hundreds of blocks, records straddling their edges
    lines = [USERS_HEADER]
    for i in range(3000):
        if i % 97 == 0:
            lines.append(f"{i},short")
        elif i % 89 == 0:
            lines.append("")
        elif i % 7 == 0:
            lines.append(f'{i},u{i}@x.io,"Multi\r\nline\nCo {i}",A,B,,')
        else:
            lines.append(f"{i},u{i}@x.io,Co {i},A,B,2024-01-01,")
    text = "\r\n".join(lines) + "\r\n"
    path = write(tmp_path, "users_big.csv", text)
    # The reference: where the csv module says each non-empty record starts.
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    expected, previous_end = {}, reader.line_num
    for fields in reader:
        if fields:
            expected[fields[0]] = previous_end + 1
        previous_end = reader.line_num
    parsed = parse(path)
    got = dict(zip(parsed.rows["user_id"], parsed.rows["source_line"], strict=True))
    got |= {r["raw"]["user_id"]: r["line_number"] for r in parsed.rejects.to_dict("records")}
    assert got == expected
    assert parsed.rows_read == len(expected)
    assert set(parsed.rejects["reason"]) == {"expected 7 fields, found 2"}
    assert parsed.rows.set_index("user_id").loc["7", "company_name"] == "Multi\r\nline\nCo 7"
