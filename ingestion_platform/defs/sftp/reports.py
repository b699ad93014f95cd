"""The two report kinds and how a report file becomes good rows and rejected rows.

Report files come from tenants' own exports, so the parser expects what such files contain: a BOM, CRLF line ends,
quoted fields holding commas and newlines, header-only files, latin-1 instead of UTF-8, the same key twice (the
later row wins) and values that do not parse. Bad rows are kept with their file, line and reason and never stop
the good rows; a header missing a required column fails the file, because every row would be wrong.

The file is read by pyarrow's CSV reader block by block (`open_report(...).batches()`), typed per block and handed
to the loader as it is read, so memory is bounded by a block, not by the file. pyarrow numbers records, not lines;
the physical line of each record is rebuilt from those numbers and the newlines inside its quoted fields. Rows it
cannot split into the header's fields become `Reject`s that the loader writes beside its own quarantined rows.
"""

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ingestion_platform.warehouse import Column, Reject, TableSpec

SCHEMA = "crm"
TEMPORARY_NAME = re.compile(r"(^\.)|(\.(part|filepart|tmp)$)", re.IGNORECASE)


class ReportFormatError(ValueError):
    """The file cannot be read as this report at all (encoding, missing columns)."""


@dataclass(frozen=True)
class ReportKind:
    name: str
    key: str
    text_columns: tuple[str, ...]
    timestamp_columns: tuple[str, ...] = ()
    float_columns: tuple[str, ...] = ()
    # Columns the header must have; the other declared columns load as NULL when a tenant's export lacks them.
    required: tuple[str, ...] = ()
    description: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.key, *self.text_columns, *self.timestamp_columns, *self.float_columns)

    @property
    def table(self) -> TableSpec:
        types = {c: "text" for c in self.text_columns} | {c: "timestamptz" for c in self.timestamp_columns}
        types |= {c: "double precision" for c in self.float_columns}
        return TableSpec(
            schema=SCHEMA,
            name=self.name,
            columns=(
                Column("tenant_id", "text", nullable=False),
                Column(self.key, "text", nullable=False),
                *(Column(c, types[c]) for c in self.columns[1:]),
                Column("extra", "jsonb", description="columns of the file this report does not declare"),
                Column("source_file", "text", nullable=False),
                Column("source_line", "integer", nullable=False),
                Column("report_date", "date", nullable=False),
            ),
            key=("tenant_id", self.key),
            version="report_date",
            line_column="source_line",
        )

    @property
    def rejects_table(self) -> TableSpec:
        """The loader's quarantine for this report's table, where parse failures and bad values both go."""
        return self.table.rejects


USERS = ReportKind(
    name="users",
    key="user_id",
    text_columns=("email", "company_name", "first_name", "last_name"),
    timestamp_columns=("created_at", "updated_at"),
    required=("email",),
    description="Users report (one file per tenant and day), upserted by (tenant_id, user_id).",
)
LOCATIONS = ReportKind(
    name="locations",
    key="location_id",
    text_columns=("location_name", "address", "city", "region", "country", "postal_code"),
    float_columns=("latitude", "longitude"),
    required=("location_name", "latitude", "longitude"),
    description="Locations report (one file per tenant and day), upserted by (tenant_id, location_id).",
)
REPORT_KINDS = {k.name: k for k in (USERS, LOCATIONS)}
# Rows are typed and handed to the loader one pyarrow block at a time: memory is bounded by the block, not the file.
BLOCK_BYTES = 8 << 20
REJECT_COLUMNS = ["tenant_id", "source_file", "line_number", "reason", "raw", "report_date"]


@dataclass
class ParsedReport:
    rows: pd.DataFrame
    rejects: pd.DataFrame
    rows_read: int
    duplicate_keys: int
    extra_columns: list[str] = field(default_factory=list)


def _normalise_header(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in {"utf-8", "utf8", "utf-8-sig"}


def check_encoding(path: Path, encoding: str, file_name: str) -> None:
    """Fail the file early, naming the byte, when it is not in the tenant's encoding (one streaming pass in C)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise ReportFormatError(
                    f"{file_name}: not valid {encoding} at byte {offset + exc.start}; "
                    "set the tenant's sftp `encoding` (e.g. latin-1)"
                ) from exc
            offset += len(chunk)


@dataclass
class ReportStream:
    """A report file read block by block: iterate `batches()` for the typed rows; `rejects` (parse failures) and
    the counts are complete once the batches are exhausted."""

    kind: ReportKind
    path: Path
    encoding: str
    tenant_id: str
    report_date: str
    header: list[str]
    raw_header: list[str]
    rejects: list[Reject] = field(default_factory=list)
    rows_read: int = 0
    extra_columns: list[str] = field(default_factory=list)

    def _reader(self, invalid: dict[int, str]) -> pa_csv.CSVStreamingReader:
        def skip(row: pa_csv.InvalidRow) -> str:
            invalid[row.number] = row.text
            return "skip"

        return pa_csv.open_csv(
            self.path,
            read_options=pa_csv.ReadOptions(
                use_threads=False,  # row numbers of invalid rows are only known when reading in order
                block_size=BLOCK_BYTES,
                encoding="utf8" if _is_utf8(self.encoding) else self.encoding,
            ),
            parse_options=pa_csv.ParseOptions(
                newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=skip
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(self.raw_header, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    def batches(self) -> Iterator[pd.DataFrame]:
        """Typed rows per block, with the physical line each record starts on (quoted newlines included)."""
        invalid: dict[int, str] = {}
        record = 2  # pyarrow numbers records from 1, the header
        line = 2
        width = len(self.header)

        def consume_invalid() -> None:
            nonlocal record, line
            while record in invalid:
                text = invalid.pop(record)
                fields = next(csv.reader(io.StringIO(text, newline="")), [])
                if text:  # a blank line is no record, as for the csv module
                    self.rows_read += 1
                    self.rejects.append(
                        Reject(
                            line_number=line,
                            reason=f"expected {width} fields, found {len(fields)}",
                            raw=dict(zip(self.header, fields, strict=False)),
                            tenant_id=self.tenant_id,
                        )
                    )
                line += 1 + text.count("\n")
                record += 1

        for batch in self._reader(invalid):
            table = pa.Table.from_batches([batch]).rename_columns(self.header)
            newlines = np.ones(table.num_rows, dtype=np.int64)
            for column in table.columns:
                newlines += pc.count_substring(column, "\n").to_numpy(zero_copy_only=False)
            lines = np.empty(table.num_rows, dtype=np.int64)
            pos = 0
            while pos < table.num_rows:
                consume_invalid()
                upcoming = min((n for n in invalid if n > record), default=record + table.num_rows)
                take = min(table.num_rows - pos, upcoming - record)
                spans = newlines[pos : pos + take]
                lines[pos : pos + take] = line + np.cumsum(spans) - spans
                line += int(spans.sum())
                record += take
                pos += take
            # A blank line reads as a row of empty strings: skip it like the csv module does.
            blank = np.ones(table.num_rows, dtype=bool)
            for column in table.columns:
                blank &= pc.equal(column, "").to_numpy(zero_copy_only=False)
            frame = table.to_pandas().astype(object)
            frame.insert(0, "_line", lines)
            frame = frame[~blank]
            self.rows_read += len(frame)
            if len(frame):
                yield self._rows(frame)
        consume_invalid()
        for number in sorted(invalid):
            record = number
            consume_invalid()

    def _rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        kind = self.kind
        for col in kind.columns:
            if col not in frame:
                frame[col] = None
        frame, bad = _convert(kind, frame)
        self.rejects.extend(
            Reject(line_number=line, reason=reason, raw=raw, tenant_id=self.tenant_id) for line, reason, raw in bad
        )
        extra = self.extra_columns
        return pd.DataFrame(
            {
                "tenant_id": self.tenant_id,
                **{c: frame[c] for c in kind.columns},
                "extra": [
                    {c: row[c] for c in extra if row[c] not in (None, "")} or None
                    for row in frame[extra].to_dict("records")
                ]
                if extra
                else None,
                "source_file": self.path.name,
                "source_line": frame["_line"].astype("int64"),
                "report_date": pd.Timestamp(self.report_date).date(),
            }
        )


def open_report(kind: ReportKind, path: Path, *, encoding: str, tenant_id: str, report_date: str) -> ReportStream:
    """Check the encoding and the header (failing the file, named, if a required column is missing)."""
    name = path.name
    check_encoding(path, encoding, name)
    try:
        raw = pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(
                use_threads=False, block_size=BLOCK_BYTES, encoding="utf8" if _is_utf8(encoding) else encoding
            ),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: "skip"),
        ).schema.names
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise ReportFormatError(f"{name}: empty file (not even a header)") from exc
        raise ReportFormatError(f"{name}: cannot be read as CSV: {exc}") from exc
    header = [_normalise_header(h) for h in raw]
    missing = [c for c in (kind.key, *kind.required) if c not in header]
    if missing:
        raise ReportFormatError(f"{name}: missing required column(s) {missing}; header is {header}")
    extra_columns = [h for h in header if h not in kind.columns]
    return ReportStream(kind, path, encoding, tenant_id, report_date, header, raw, extra_columns=extra_columns)


def parse_report(kind: ReportKind, path: Path, *, encoding: str, tenant_id: str, report_date: str) -> ParsedReport:
    """The whole file at once, duplicates removed (last wins): for tests and small files; assets stream instead."""
    stream = open_report(kind, path, encoding=encoding, tenant_id=tenant_id, report_date=report_date)
    frames = list(stream.batches())
    columns = [c.name for c in kind.table.columns]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    duplicate_keys = int(rows.duplicated(subset=[kind.key], keep="last").sum())
    rows = rows.drop_duplicates(subset=[kind.key], keep="last").reset_index(drop=True)
    reject_frame = pd.DataFrame(
        [
            {
                "tenant_id": tenant_id,
                "source_file": path.name,
                "line_number": r.line_number,
                "reason": r.reason,
                "raw": dict(r.raw),
                "report_date": pd.Timestamp(report_date).date(),
            }
            for r in sorted(stream.rejects, key=lambda r: r.line_number or 0)
        ],
        columns=REJECT_COLUMNS,
    )
    return ParsedReport(rows, reject_frame, stream.rows_read, duplicate_keys, stream.extra_columns)


def _convert(kind: ReportKind, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, str, dict]]]:
    """Type the declared columns; rows with a value that does not parse are taken out with the reason."""
    original = frame
    frame = frame.copy()
    for col in kind.columns:
        frame[col] = frame[col].map(lambda v: v.strip() if isinstance(v, str) else v).replace("", None)
    reasons = pd.Series("", index=frame.index, dtype=object)
    reasons[frame[kind.key].isna()] = f"{kind.key} is empty; "
    for col in kind.timestamp_columns:
        parsed = pd.to_datetime(frame[col], errors="coerce", utc=True, format="mixed")
        bad = frame[col].notna() & parsed.isna()
        reasons[bad] += frame.loc[bad, col].map(lambda v, c=col: f"{c} {v!r} is not a timestamp; ")
        frame[col] = parsed
    for col in kind.float_columns:
        parsed = pd.to_numeric(frame[col], errors="coerce")
        bad = frame[col].notna() & parsed.isna()
        reasons[bad] += frame.loc[bad, col].map(lambda v, c=col: f"{c} {v!r} is not a number; ")
        frame[col] = parsed
    rejected = reasons != ""
    header = [c for c in original.columns if c != "_line"]
    bad_rows = [
        (int(line), reason.rstrip("; "), raw)
        for line, reason, raw in zip(
            original.loc[rejected, "_line"],
            reasons[rejected],
            original.loc[rejected, header].to_dict("records"),
            strict=True,
        )
    ]
    return frame[~rejected], bad_rows
