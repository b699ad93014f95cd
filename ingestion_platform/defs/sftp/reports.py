"""The two report kinds and how a report file becomes good rows and rejected rows.

Report files come from tenants' own exports, so the parser expects what such files contain: a BOM, CRLF line ends,
quoted fields holding commas and newlines, header-only files, latin-1 instead of UTF-8, the same key twice (the
later row wins) and values that do not parse. Bad rows are kept with their file, line and reason and never stop
the good rows; a header missing a required column fails the file, because every row would be wrong.
"""

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

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
REJECT_COLUMNS = ["tenant_id", "source_file", "line_number", "reason", "raw", "report_date"]


@dataclass
class ParsedReport:
    rows: pd.DataFrame
    rejects: pd.DataFrame
    rows_read: int
    duplicate_keys: int
    extra_columns: list[str] = field(default_factory=list)

    def reject_records(self) -> list[Reject]:
        """The parse failures in the form the loader quarantines beside its own rejects, in the same transaction."""
        return [
            Reject(line_number=int(r.line_number), reason=r.reason, raw=r.raw, tenant_id=r.tenant_id)
            for r in self.rejects.itertuples(index=False)
        ]


def _normalise_header(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _read_records(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (first physical line, fields) per record; the csv module handles quotes spanning lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return [], []
    records = []
    previous_end = reader.line_num
    for fields in reader:
        if fields:
            records.append((previous_end + 1, fields))
        previous_end = reader.line_num
    return header, records


def decode(data: bytes, encoding: str, file_name: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ReportFormatError(
            f"{file_name}: not valid {encoding} at byte {exc.start}; set the tenant's sftp `encoding` (e.g. latin-1)"
        ) from exc


def parse_report(kind: ReportKind, path: Path, *, encoding: str, tenant_id: str, report_date: str) -> ParsedReport:
    """Split a report file into rows to upsert and rejected rows with reasons (pure: no I/O beyond reading)."""
    name = path.name
    text = decode(path.read_bytes(), encoding, name)
    if encoding.lower().replace("_", "-") in {"utf-8", "utf8"}:
        text = text.removeprefix("\ufeff")
    raw_header, records = _read_records(text)
    header = [_normalise_header(h) for h in raw_header]
    if not header:
        raise ReportFormatError(f"{name}: empty file (not even a header)")
    missing = [c for c in (kind.key, *kind.required) if c not in header]
    if missing:
        raise ReportFormatError(f"{name}: missing required column(s) {missing}; header is {header}")
    extra_columns = [h for h in header if h not in kind.columns]
    absent = [c for c in kind.columns if c not in header]

    good, rejects = [], []
    for line, fields in records:
        raw = dict(zip(header, fields, strict=False))
        if len(fields) != len(header):
            rejects.append((line, f"expected {len(header)} fields, found {len(fields)}", raw))
            continue
        good.append({"_line": line, **raw, **dict.fromkeys(absent)})
    frame = pd.DataFrame(good, columns=["_line", *header, *absent], dtype=object)
    frame, bad = _convert(kind, frame)
    rejects.extend(bad)

    duplicate_keys = int(frame.duplicated(subset=[kind.key], keep="last").sum())
    frame = frame.drop_duplicates(subset=[kind.key], keep="last")
    rows = pd.DataFrame(
        {
            "tenant_id": tenant_id,
            **{c: frame[c] for c in kind.columns},
            "extra": [
                {c: row[c] for c in extra_columns if row[c] not in (None, "")} or None
                for row in frame[extra_columns].to_dict("records")
            ]
            if extra_columns
            else None,
            "source_file": name,
            "source_line": frame["_line"].astype("int64"),
            "report_date": pd.Timestamp(report_date).date(),
        }
    )
    reject_frame = pd.DataFrame(
        [
            {
                "tenant_id": tenant_id,
                "source_file": name,
                "line_number": line,
                "reason": reason,
                "raw": raw,
                "report_date": pd.Timestamp(report_date).date(),
            }
            for line, reason, raw in sorted(rejects, key=lambda r: r[0])
        ],
        columns=REJECT_COLUMNS,
    )
    return ParsedReport(rows, reject_frame, len(records), duplicate_keys, extra_columns)


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
