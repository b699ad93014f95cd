"""Turn one recommender upload (CSV, JSON array or NDJSON, optionally gzip) into an Arrow table of text columns.

Every column comes out as text on purpose: typing is validation's job, so a rating of "abc" or a timestamp of
"yesterday" reaches the Great Expectations suite and is rejected with its reason instead of failing the whole file
here. What fails the whole file is what no row-level check could answer: an empty or binary file, a CSV with the
wrong delimiter or no header, required columns missing. Those raise `UploadError` with a stable `code`.

CSV goes through pyarrow's reader. JSON goes through DuckDB's JSON functions instead of pyarrow's JSON reader,
because pyarrow's reader fails the whole file on one bad line or on a field that is a number in one record and a
string in the next, and both are row-level problems we must keep as rejects while loading the rest.
"""

import codecs
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

DataType = Literal["interactions", "items"]
Format = Literal["csv", "json", "ndjson"]

REQUIRED: dict[str, tuple[str, ...]] = {
    "interactions": ("user_id", "item_id", "interaction_type", "timestamp"),
    "items": ("item_id", "title"),
}
OPTIONAL: dict[str, tuple[str, ...]] = {
    "interactions": ("rating",),
    "items": ("category", "price", "brand", "description"),
}
ROW_NUMBER = "row_number"
# Malformed records (a CSV row with the wrong number of fields, a line that is not JSON) never reach the suite;
# they are rejects from the start, with this schema.
MALFORMED_SCHEMA = pa.schema([("row_number", pa.int64()), ("raw", pa.large_string()), ("reason", pa.string())])

_SNIFF_BYTES = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_BINARY_SIGNATURES = {
    b"PAR1": "a Parquet file",
    b"PK\x03\x04": "a ZIP archive (an Excel workbook?)",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\xd0\xcf\x11\xe0": "an old Office document",
}
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


class UploadError(ValueError):
    """The file as a whole cannot be read; `code` is one of empty, binary, wrong_delimiter, no_header,
    missing_columns, duplicate_columns, unparseable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ParsedUpload:
    data_type: DataType
    format: Format
    gzip: bool
    # The expected columns (required, then optional; an optional column absent from the file is all null), as
    # text, plus `row_number`: the record's 1-based position (well-formed data rows for CSV, lines for NDJSON,
    # elements for a JSON array); malformed CSV rows carry their line number instead.
    table: pa.Table
    # Columns the file has that the data type does not know. They are reported, not loaded: the accepted Parquet
    # keeps one schema per data type so features can read every upload of a tenant together.
    unknown_columns: tuple[str, ...]
    malformed: pa.Table
    bytes_read: int

    @property
    def rows(self) -> int:
        return self.table.num_rows + self.malformed.num_rows


def parse_upload(
    source: bytes | BinaryIO | str | os.PathLike[str],
    data_type: DataType,
    *,
    name: str | None = None,
    fmt: Format | None = None,
) -> ParsedUpload:
    """Parse an upload; `name` (or the path) only hints the format, the content decides when they disagree."""
    if data_type not in REQUIRED:
        raise ValueError(f"unknown data type {data_type!r}: expected interactions or items")
    raw = _read_bytes(source)
    if isinstance(source, str | os.PathLike) and name is None:
        name = str(source)
    if not raw:
        raise UploadError("empty", "the file is empty (0 bytes)")
    gzip = raw[:2] == _GZIP_MAGIC
    data = _gunzip(raw) if gzip else raw
    if not data.strip():
        raise UploadError("empty", "the file has no content" + (" after decompression" if gzip else ""))
    _reject_binary(data[:_SNIFF_BYTES])
    if data[:3] == codecs.BOM_UTF8:
        data = data[3:]
    fmt = _detect_format(data, name, fmt)
    if fmt == "csv":
        table, unknown, malformed = _parse_csv(data, data_type)
    else:
        table, unknown, malformed = _parse_json(data, data_type, fmt)
    return ParsedUpload(data_type, fmt, gzip, table, unknown, malformed, len(raw))


def _read_bytes(source: bytes | BinaryIO | str | os.PathLike[str]) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        return Path(source).read_bytes()
    return source.read()


def _gunzip(raw: bytes) -> bytes:
    try:
        # wbits=47 accepts concatenated gzip members as well as one.
        return zlib.decompress(raw, wbits=47)
    except zlib.error as exc:
        raise UploadError("unparseable", f"the file starts like gzip but does not decompress: {exc}") from exc


def _reject_binary(head: bytes) -> None:
    for signature, what in _BINARY_SIGNATURES.items():
        if head.startswith(signature):
            raise UploadError("binary", f"this is {what}, not CSV or JSON text")
    if b"\x00" in head:
        raise UploadError("binary", "the file is binary (it contains NUL bytes), not CSV or JSON text")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise UploadError(
            "binary", f"the file is not UTF-8 text (invalid byte at offset {exc.start}); save it as UTF-8 CSV or JSON"
        ) from exc


def _detect_format(data: bytes, name: str | None, fmt: Format | None) -> Format:
    first = data.lstrip()[:1]
    if first == b"[":
        return "json"
    if first == b"{":
        return "ndjson"
    if fmt in ("json", "ndjson"):
        raise UploadError("unparseable", f"expected {fmt} but the content does not start with '[' or '{{'")
    stem = (name or "").lower().removesuffix(".gz")
    if stem.endswith((".json", ".ndjson", ".jsonl")):
        raise UploadError("unparseable", f"{name} is named as JSON but its content does not start with '[' or '{{'")
    return "csv"


def _columns(names: list[str], data_type: DataType) -> tuple[dict[str, str], tuple[str, ...]]:
    """Map header names to expected columns (case and surrounding spaces ignored); raise on a header we cannot use."""
    known = REQUIRED[data_type] + OPTIONAL[data_type]
    normalized = [n.strip().lower() for n in names]
    dupes = sorted({n for n in normalized if normalized.count(n) > 1 and n})
    if dupes:
        raise UploadError("duplicate_columns", f"the header repeats column(s) {', '.join(dupes)}")
    mapping = {original: norm for original, norm in zip(names, normalized, strict=True) if norm in known}
    unknown = tuple(n for n, norm in zip(names, normalized, strict=True) if norm not in known)
    missing = [c for c in REQUIRED[data_type] if c not in mapping.values()]
    if missing and not mapping:
        raise UploadError(
            "no_header",
            f"no header row: the first line ({', '.join(names)[:200]}) names none of the {data_type} columns; "
            f"start the file with a header such as {','.join(REQUIRED[data_type])}",
        )
    if missing:
        raise UploadError(
            "missing_columns",
            f"required column(s) missing: {', '.join(missing)} (found: {', '.join(names)}); "
            f"{data_type} need {', '.join(REQUIRED[data_type])}",
        )
    return mapping, unknown


def _parse_csv(data: bytes, data_type: DataType) -> tuple[pa.Table, tuple[str, ...], pa.Table]:
    header = _csv_header(data)
    if len(header) == 1:
        for delimiter, label in _OTHER_DELIMITERS.items():
            if delimiter in header[0]:
                raise UploadError(
                    "wrong_delimiter",
                    f"the header is one column containing {label}s ({header[0][:120]!r}): the file looks "
                    f"{label}-separated; upload comma-separated CSV",
                )
    mapping, unknown = _columns(header, data_type)
    malformed: list[tuple[int | None, str, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # Called only for malformed rows, so a Python callback costs nothing on good files.
        # row.number is None when quoted values may span lines; the raw text still identifies the row.
        reason = f"malformed CSV row: expected {row.expected_columns} fields, got {row.actual_columns}"
        malformed.append((row.number, row.text, reason))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(block_size=16 << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                include_columns=list(mapping),
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise UploadError("unparseable", f"the CSV cannot be parsed: {exc}") from exc
    columns = {mapping[name]: table.column(name) for name in mapping}
    return _shape(columns, table.num_rows, data_type), unknown, _malformed(malformed)


def _csv_header(data: bytes) -> list[str]:
    end = data.find(b"\n")
    try:
        reader = pacsv.open_csv(
            pa.py_buffer(data if end < 0 else data[: end + 1]),
            read_options=pacsv.ReadOptions(block_size=_SNIFF_BYTES),
        )
    except pa.ArrowInvalid as exc:
        raise UploadError("unparseable", f"the CSV header cannot be parsed: {exc}") from exc
    return reader.schema.names


def _parse_json(data: bytes, data_type: DataType, fmt: Format) -> tuple[pa.Table, tuple[str, ...], pa.Table]:
    import duckdb

    known = REQUIRED[data_type] + OPTIONAL[data_type]
    con = duckdb.connect()
    text = pa.array([data.decode("utf-8", errors="replace")], pa.large_string())
    if fmt == "json":
        con.register("doc", pa.table({"doc": text}))
        if not con.sql("SELECT json_valid(doc) FROM doc").fetchone()[0]:  # type: ignore[index]
            raise UploadError("unparseable", "the file starts with '[' but is not a valid JSON array")
        if con.sql("SELECT json_type(doc) FROM doc").fetchone()[0] != "ARRAY":  # type: ignore[index]
            raise UploadError("unparseable", "the JSON document is not an array of records")
        records = (
            "SELECT n, e AS rec, json_type(e) = 'OBJECT' AS ok "
            "FROM doc, unnest(CAST(json(doc) AS JSON[])) WITH ORDINALITY AS x(e, n)"
        )
    else:
        lines = pc.split_pattern(text, "\n").flatten()
        con.register("lines_table", pa.table({"line": lines}))
        records = (
            "SELECT n, rec, ok FROM (SELECT row_number() OVER () AS n, line AS rec, "
            "json_valid(line) AND json_type(CASE WHEN json_valid(line) THEN line END) = 'OBJECT' AS ok, "
            "trim(line) = '' AS blank FROM lines_table) WHERE NOT blank"
        )
    con.execute(f"CREATE TEMP TABLE records AS {records}")
    keys = [row[0] for row in con.sql("SELECT DISTINCT unnest(json_keys(rec)) FROM records WHERE ok").fetchall()]
    if not keys and con.sql("SELECT count(*) FROM records WHERE ok").fetchone()[0] == 0:  # type: ignore[index]
        if con.sql("SELECT count(*) FROM records").fetchone()[0] == 0:  # type: ignore[index]
            raise UploadError("empty", "the JSON holds no records")
        raise UploadError("unparseable", "no line of the file is a JSON object")
    mapping, unknown = _columns(sorted(keys), data_type)
    extract = ", ".join(
        f'rec ->> \'$."{original}"\' AS "{column}"' for original, column in mapping.items() if column in known
    )
    good = con.sql(f"SELECT n, {extract} FROM records WHERE ok ORDER BY n").arrow()
    if isinstance(good, pa.RecordBatchReader):
        good = good.read_all()
    bad = con.sql(
        "SELECT n AS row_number, CAST(rec AS VARCHAR) AS raw, "
        f"'{'line is not a JSON object' if fmt == 'ndjson' else 'array element is not a JSON object'}' AS reason "
        "FROM records WHERE NOT ok ORDER BY n"
    ).arrow()
    if isinstance(bad, pa.RecordBatchReader):
        bad = bad.read_all()
    columns = {column: good.column(column) for column in mapping.values()}
    table = _shape(columns, good.num_rows, data_type, good.column("n").cast(pa.int64()))
    return table, unknown, bad.cast(MALFORMED_SCHEMA)


def _shape(
    columns: dict[str, pa.ChunkedArray], num_rows: int, data_type: DataType, row_number: pa.Array | None = None
) -> pa.Table:
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {}
    for column in REQUIRED[data_type] + OPTIONAL[data_type]:
        arrays[column] = columns[column].cast(pa.string()) if column in columns else pa.nulls(num_rows, pa.string())
    arrays[ROW_NUMBER] = row_number if row_number is not None else pa.array(np.arange(1, num_rows + 1, dtype=np.int64))
    return pa.table(arrays)


def _malformed(rows: list[tuple[int | None, str, str]]) -> pa.Table:
    return pa.table(
        {
            "row_number": pa.array([r[0] for r in rows], pa.int64()),
            "raw": pa.array([r[1] for r in rows], pa.large_string()),
            "reason": pa.array([r[2] for r in rows], pa.string()),
        },
        schema=MALFORMED_SCHEMA,
    )
