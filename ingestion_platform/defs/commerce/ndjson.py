"""Streaming NDJSON parsing of commerce files into bounded Arrow record batches plus rejected lines.

Why this shape: pyarrow's JSON reader parses a clean block of lines in C++ on every core, but one bad line fails
the whole block. So each block of complete lines is tried with pyarrow first (the fast path, taken by almost every
block), and only a block that fails is re-read line by line with orjson, which isolates the bad lines with their
reasons while the good lines of that block still load. Memory stays at one block (a few MB) whatever the file size.

A line that is not JSON, a truncated last line, a non-object, a value of the wrong JSON type and invalid UTF-8 are
rejects (file, line number, raw line, reason); an unknown field is kept in the `extra` JSON column; a BOM and blank
lines are skipped. Semantic checks (UUIDs, ranges, currencies, ...) are `validate.py`'s job.
"""

import gzip
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import IO, Literal, Protocol

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

Kind = Literal["uuid", "text", "decimal", "integer", "boolean", "timestamp", "json"]

# Decimals are read exactly from their text (JSON number or string) at a generous scale; validate.py narrows them
# to the table's scale and rejects values with more places, so a precise reason replaces a failed block.
DECIMAL_READ_TYPE = pa.decimal128(38, 9)
_PARSE_TYPES: dict[Kind, pa.DataType] = {
    "uuid": pa.string(),
    "text": pa.string(),
    "decimal": DECIMAL_READ_TYPE,
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "timestamp": pa.string(),
}
_JSON_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
DEFAULT_BLOCK_BYTES = 8 << 20

# Columns the parser adds to every row: lineage for rejects and the warehouse, and the raw line (binary, dropped
# before loading) so a row that fails validation later is still quarantined with its exact text.
META_COLUMNS = ("tenant_id", "batch_id", "source_file", "source_line", "extra", "raw_line")
REJECT_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("batch_id", pa.string()),
        ("table_name", pa.string()),
        ("source_file", pa.string()),
        ("line_number", pa.int64()),
        ("raw_line", pa.string()),
        ("reason", pa.string()),
    ]
)


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    required: bool = False
    max_length: int | None = None


@dataclass(frozen=True)
class Entity:
    """One commerce file kind: its fields as the old system's seed wrote them, and its natural id."""

    name: str
    id_field: str
    fields: tuple[Field, ...]

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def parse_schema(self) -> pa.Schema:
        """The declared scalar fields for pyarrow; JSON-valued fields are taken as text by the slow path."""
        return pa.schema([(f.name, _PARSE_TYPES[f.kind]) for f in self.fields if f.kind != "json"])

    @property
    def row_schema(self) -> pa.Schema:
        types = {**_PARSE_TYPES, "json": pa.string()}
        return pa.schema(
            [
                ("tenant_id", pa.string()),
                ("batch_id", pa.string()),
                ("source_file", pa.string()),
                ("source_line", pa.int64()),
                *((f.name, types[f.kind]) for f in self.fields),
                ("extra", pa.string()),
                ("raw_line", pa.binary()),
            ]
        )


CUSTOMERS = Entity(
    "customers",
    "customer_id",
    (
        Field("customer_id", "uuid", required=True),
        Field("name", "text", required=True, max_length=255),
        Field("email", "text", required=True, max_length=254),
        Field("metadata", "json"),
        Field("created_at", "timestamp"),
    ),
)
PRODUCTS = Entity(
    "products",
    "product_id",
    (
        Field("product_id", "uuid", required=True),
        Field("sku", "text", required=True, max_length=64),
        Field("name", "text", required=True, max_length=255),
        Field("price", "decimal", required=True),
        Field("category_id", "uuid"),
        Field("active", "boolean"),
        Field("created_at", "timestamp"),
    ),
)
ORDERS = Entity(
    "orders",
    "order_id",
    (
        Field("order_id", "uuid", required=True),
        Field("external_order_id", "text", max_length=255),
        Field("customer_id", "uuid", required=True),
        Field("customer_name_snapshot", "text", max_length=255),
        Field("customer_email_snapshot", "text", max_length=254),
        Field("total_amount", "decimal", required=True),
        Field("currency", "text", required=True, max_length=3),
        Field("order_status", "text", required=True, max_length=32),
        Field("order_date", "timestamp", required=True),
        Field("raw_payload", "json"),
        Field("created_at", "timestamp"),
    ),
)
ORDER_ITEMS = Entity(
    "order_items",
    "order_item_id",
    (
        Field("order_item_id", "uuid", required=True),
        Field("order_id", "uuid", required=True),
        Field("product_id", "uuid", required=True),
        Field("quantity", "integer", required=True),
        Field("unit_price", "decimal", required=True),
        Field("line_total", "decimal", required=True),
    ),
)
# Dependency (foreign-key) order: parents before children.
ENTITIES: dict[str, Entity] = {e.name: e for e in (CUSTOMERS, PRODUCTS, ORDERS, ORDER_ITEMS)}


@dataclass(frozen=True)
class Source:
    """Where rows come from; every row and reject carries it."""

    tenant_id: str
    batch_id: str
    file_name: str


@dataclass(frozen=True)
class ParsedChunk:
    """One block's rows (`entity.row_schema`) and the lines rejected while parsing it (`REJECT_SCHEMA`)."""

    rows: pa.RecordBatch
    rejects: pa.Table
    used_fallback: bool


class ByteReader(Protocol):
    """What the parser reads from: a plain or gzip stream, never seeked."""

    def read(self, size: int = -1, /) -> bytes: ...


def open_maybe_gzip(stream: IO[bytes]) -> ByteReader:
    """Recognise gzip by its magic bytes, not the file name, so a mislabelled file still reads."""
    head = stream.read(2)
    rest = _Prepend(head, stream)
    return gzip.GzipFile(fileobj=rest, mode="rb") if head == GZIP_MAGIC else rest


class _Prepend:
    """A read-only stream yielding `head` and then the rest of `stream`: sniffing must not need a seekable input."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = head
        self._stream = stream

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Named by GzipFile's file protocol, but only seeking the GzipFile would call it; the parser never does."""
        raise io.UnsupportedOperation("a sniffed stream cannot seek")

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(size)
        if 0 <= size < len(self._head):
            out, self._head = self._head[:size], self._head[size:]
            return out
        head, self._head = self._head, b""
        return head + self._stream.read(-1 if size < 0 else size - len(head))


def empty_rejects() -> pa.Table:
    return REJECT_SCHEMA.empty_table()


def make_rejects(source: Source, table_name: str, lines: list[int], raws: list[str], reasons: list[str]) -> pa.Table:
    n = len(lines)
    return pa.table(
        {
            "tenant_id": pa.array([source.tenant_id] * n, pa.string()),
            "batch_id": pa.array([source.batch_id] * n, pa.string()),
            "table_name": pa.array([table_name] * n, pa.string()),
            "source_file": pa.array([source.file_name] * n, pa.string()),
            "line_number": pa.array(lines, pa.int64()),
            "raw_line": pa.array(raws, pa.string()),
            "reason": pa.array(reasons, pa.string()),
        },
        schema=REJECT_SCHEMA,
    )


def raw_text(raw: bytes) -> str:
    """A raw line as storable text: invalid UTF-8 replaced and NUL removed (PostgreSQL text cannot hold it)."""
    return raw.decode("utf-8", errors="replace").replace("\x00", "").rstrip()


def parse_ndjson(
    stream: IO[bytes], entity: Entity, source: Source, *, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> Iterator[ParsedChunk]:
    """Yield one `ParsedChunk` per block of complete lines read from `stream` (plain or gzip NDJSON).

    Line numbers are physical (1-based, counting blank lines), so an operator can open the file at the reported
    line. A gzip stream that ends early is read up to the break; its last partial line is a truncated-line reject.
    """
    reader = open_maybe_gzip(stream)
    carry = b""
    first_line = 1
    at_start = True
    while True:
        data, broken = _read_block(reader, block_bytes)
        if at_start and data:
            data, at_start = data.removeprefix(BOM), False
        block = carry + data
        cut = block.rfind(b"\n")
        complete, carry = block[: cut + 1], block[cut + 1 :]
        if complete:
            starts, ends = _line_bounds(complete)
            yield _parse_block(complete, starts, ends, first_line, entity, source, final=False, eof_error=None)
            first_line += len(starts)
        if broken is not None or not data:
            if carry:
                starts, ends = _line_bounds(carry)
                yield _parse_block(carry, starts, ends, first_line, entity, source, final=True, eof_error=broken)
            return


def _read_block(reader: ByteReader, size: int) -> tuple[bytes, str | None]:
    """Up to `size` bytes, and why the stream broke if it did.

    `read1` returns each decompressed piece as it comes, so a gzip stream cut short still yields everything before
    the cut (a plain `read(size)` discards the whole block when it hits the end of a truncated stream).
    """
    pieces: list[bytes] = []
    remaining = size
    read1 = getattr(reader, "read1", reader.read)
    while remaining > 0:
        try:
            piece = read1(remaining)
        except (EOFError, gzip.BadGzipFile, OSError) as exc:
            return b"".join(pieces), f"compressed stream ended early ({exc})"
        if not piece:
            break
        pieces.append(piece)
        remaining -= len(piece)
    return b"".join(pieces), None


def _line_bounds(block: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, without `\\r\\n`) byte offsets of each physical line in `block`."""
    buffer = np.frombuffer(block, dtype=np.uint8)
    newlines = np.flatnonzero(buffer == 10)
    ends = newlines if block.endswith(b"\n") else np.append(newlines, len(block))
    starts = np.concatenate(([0], newlines[: len(ends) - 1] + 1)) if len(ends) else np.zeros(0, np.int64)
    ends = ends.copy()
    if len(ends):
        has_cr = (ends > starts) & (buffer[np.maximum(ends - 1, 0)] == 13)
        ends[has_cr] -= 1
    return starts.astype(np.int64), ends.astype(np.int64)


def _parse_block(
    block: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    first_line: int,
    entity: Entity,
    source: Source,
    *,
    final: bool,
    eof_error: str | None,
) -> ParsedChunk:
    nonblank = np.flatnonzero(ends > starts)
    unterminated_last = final and not block.endswith(b"\n")
    if not unterminated_last and eof_error is None:
        fast = _fast_path(block, starts, ends, nonblank, first_line, entity, source)
        if fast is not None:
            return ParsedChunk(fast, empty_rejects(), used_fallback=False)
    return _slow_path(block, starts, ends, nonblank, first_line, entity, source, final=final, eof_error=eof_error)


def _raw_lines(block: bytes, starts: np.ndarray, ends: np.ndarray, *, contiguous: bool) -> pa.Array:
    """The rows' raw lines as a binary array.

    `contiguous` (every line of the block is a row, blank ones aside): the array shares the block's memory, each
    element running to the next row's start, so it carries the line end and any blank lines after it, which
    `raw_text` strips. Otherwise (some lines were rejected) the lines are gathered into a new buffer.
    """
    if len(block) >= 2**31:
        raise ValueError("block too large for 32-bit offsets")
    if contiguous:
        offsets = np.append(starts, len(block)).astype(np.int32)
        return pa.BinaryArray.from_buffers(pa.binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(block)])
    offsets = np.zeros(len(starts) + 1, dtype=np.int32)
    np.cumsum(ends - starts, out=offsets[1:])
    pieces = b"".join(block[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True))
    return pa.BinaryArray.from_buffers(pa.binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(pieces)])


def _fast_path(
    block: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    nonblank: np.ndarray,
    first_line: int,
    entity: Entity,
    source: Source,
) -> pa.RecordBatch | None:
    """Parse the whole block with pyarrow; None when it fails or rows cannot be matched to lines one to one."""
    try:
        table = pa_json.read_json(
            pa.BufferReader(block),
            read_options=pa_json.ReadOptions(use_threads=True, block_size=1 << 20),
            parse_options=pa_json.ParseOptions(
                explicit_schema=entity.parse_schema, unexpected_field_behavior="infer", newlines_in_values=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(nonblank):
        return None  # several objects on one line, or a whitespace-only line: let the slow path decide per line
    starts, ends = starts[nonblank], ends[nonblank]
    raw = _raw_lines(block, starts, ends, contiguous=True)
    n = table.num_rows
    json_fields = [f.name for f in entity.fields if f.kind == "json"]
    unknown = [c for c in table.column_names if c not in entity.parse_schema.names and c not in json_fields]
    needs_python = np.zeros(n, dtype=bool)
    for name in unknown:
        needs_python |= table.column(name).combine_chunks().is_valid().to_numpy(zero_copy_only=False)
    json_columns: dict[str, pa.Array] = {}
    for name in json_fields:
        if name not in table.column_names:
            json_columns[name] = pa.nulls(n, pa.string())
            continue
        present = table.column(name).combine_chunks().is_valid()
        text, found = _json_value_text(raw, name)
        taken = pc.and_(present, found)
        json_columns[name] = pc.if_else(taken, text, pa.scalar(None, pa.string()))
        needs_python |= pc.and_(present, pc.invert(taken)).to_numpy(zero_copy_only=False)
    extra = pa.nulls(n, pa.string())
    rows = np.flatnonzero(needs_python).tolist()
    if rows:
        # Unknown fields, and JSON values the pattern does not cover, are decoded per row, and only those rows.
        declared = set(entity.field_names)
        extra_values: list[str | None] = [None] * n
        overrides: dict[str, dict[int, str]] = {name: {} for name in json_fields}
        line_starts, line_ends = starts.tolist(), ends.tolist()
        for i in rows:
            obj = orjson.loads(block[line_starts[i] : line_ends[i]])
            for name in json_fields:
                if obj.get(name) is not None:
                    overrides[name][i] = _dumps(obj[name])
            rest = {k: v for k, v in obj.items() if k not in declared}
            if rest:
                extra_values[i] = _dumps(rest)
        extra = pa.array(extra_values, pa.string())
        for name, values in overrides.items():
            if values:
                merged = json_columns[name].to_pylist()
                for i, text_value in values.items():
                    merged[i] = text_value
                json_columns[name] = pa.array(merged, pa.string())
    columns = {
        f.name: json_columns[f.name] if f.kind == "json" else table.column(f.name).combine_chunks()
        for f in entity.fields
    }
    return _assemble(entity, source, first_line + nonblank, columns, extra, raw)


# A JSON string, and objects nested up to three deep, as RE2 patterns (RE2 has no recursion, hence the unrolling).
_STRING = r'"(?:[^"\\]|\\.)*"'


def _object_pattern(depth: int) -> str:
    inner = "" if depth == 1 else "|" + _object_pattern(depth - 1)
    return r"\{(?:[^{}\"]|" + _STRING + inner + r")*\}"


_OBJECT = _object_pattern(3)


def _json_value_text(raw: pa.Array, name: str) -> tuple[pa.Array, pa.Array]:
    """The exact text of the object value of top-level key `name` in each raw line, and where it was found.

    Copying the text avoids decoding and re-encoding each row in Python. It is only trusted where the key occurs
    once in the line (an escaped quote inside a string can never form `"name":`, so one occurrence is the key
    itself) and pyarrow parsed the line; anything else (deeper nesting, arrays, scalars) takes the per-row path.
    """
    key = '"' + re.escape(name) + r'"\s*:'
    once = pc.equal(pc.count_substring_regex(raw, key), 1)
    match = pc.extract_regex(raw, key + r"\s*(?P<value>" + _OBJECT + ")")
    found = pc.fill_null(pc.and_(once, match.is_valid()), False)
    return pc.cast(pc.struct_field(match, "value"), pa.string()), found


def _assemble(
    entity: Entity,
    source: Source,
    line_numbers: np.ndarray,
    columns: dict[str, pa.Array],
    extra: pa.Array,
    raw: pa.Array,
) -> pa.RecordBatch:
    n = len(line_numbers)
    arrays = [
        _constant(source.tenant_id, n),
        _constant(source.batch_id, n),
        _constant(source.file_name, n),
        pa.array(line_numbers, pa.int64()),
        *(columns[f.name] for f in entity.fields),
        extra,
        raw,
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=entity.row_schema)


def _constant(value: str, n: int) -> pa.Array:
    return pc.fill_null(pa.nulls(n, pa.string()), value)


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _utf8_error(line: bytes) -> str | None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8: invalid byte at position {exc.start}"
    return None


def _type_error(field: Field, value: object) -> str | None:
    """Why `value` cannot be this field's JSON type, or None. Decimals accept a number or a numeric string."""
    if value is None or field.kind == "json":
        return None
    got = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    if field.kind in ("uuid", "text", "timestamp"):
        ok = isinstance(value, str)
        expected = "string"
    elif field.kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "integer"
        # orjson reads integers beyond 64 bits as floats: say what is wrong with them, not "number".
        if isinstance(value, int | float) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            return f"out of range: {field.name} {value:g} does not fit in 64 bits"
    elif field.kind == "boolean":
        ok = isinstance(value, bool)
        expected = "boolean"
    else:
        expected = "decimal number or numeric string"
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            ok = False
        else:
            try:
                number = Decimal(str(value))
            except InvalidOperation:
                return f"wrong type: {field.name} is {got} {value!r}, expected {expected}"
            if not number.is_finite():
                return f"wrong type: {field.name} is {value!r}, expected a finite decimal"
            exponent = number.as_tuple().exponent
            assert isinstance(exponent, int)
            if -exponent > DECIMAL_READ_TYPE.scale or number.adjusted() >= DECIMAL_READ_TYPE.precision - 9:
                return f"out of range: {field.name} {value!r} exceeds {DECIMAL_READ_TYPE}"
            return None
    return None if ok else f"wrong type: {field.name} is {got}, expected {expected}"


def _slow_path(
    block: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    nonblank: np.ndarray,
    first_line: int,
    entity: Entity,
    source: Source,
    *,
    final: bool,
    eof_error: str | None,
) -> ParsedChunk:
    """Decode each line on its own: bad lines become rejects with a reason, good ones are typed by Arrow."""
    declared = set(entity.field_names)
    values: dict[str, list[object]] = {f.name: [] for f in entity.fields}
    extra: list[str | None] = []
    kept: list[int] = []
    reject_lines: list[int] = []
    reject_raw: list[str] = []
    reject_reasons: list[str] = []
    last = int(nonblank[-1]) if len(nonblank) else -1
    unterminated = final and not block.endswith(b"\n")
    for i in nonblank.tolist():
        line = block[starts[i] : ends[i]]
        reason = None
        obj: object = None
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            reason = _utf8_error(line)
            if reason is not None:
                pass
            elif i == last and (unterminated or eof_error):
                reason = f"truncated last line: {eof_error or 'no newline at end of file'} ({exc.msg})"
            else:
                reason = f"not JSON: {exc.msg} (column {exc.colno})"
        if reason is None and not isinstance(obj, dict):
            reason = f"not a JSON object: found {_JSON_TYPE_NAMES.get(type(obj), type(obj).__name__)}"
        if reason is None:
            assert isinstance(obj, dict)
            errors = [e for f in entity.fields if (e := _type_error(f, obj.get(f.name))) is not None]
            reason = "; ".join(errors) or None
        if reason is not None:
            reject_lines.append(first_line + i)
            reject_raw.append(raw_text(line))
            reject_reasons.append(reason)
            continue
        assert isinstance(obj, dict)
        kept.append(i)
        for f in entity.fields:
            value = obj.get(f.name)
            if f.kind == "json":
                value = None if value is None else _dumps(value)
            elif f.kind == "decimal" and value is not None:
                value = Decimal(str(value))
            values[f.name].append(value)
        unknown = {k: v for k, v in obj.items() if k not in declared}
        extra.append(_dumps(unknown) if unknown else None)
    types = {**_PARSE_TYPES, "json": pa.string()}
    columns = {f.name: pa.array(values[f.name], types[f.kind]) for f in entity.fields}
    kept_idx = np.array(kept, dtype=np.int64)
    rows = _assemble(
        entity,
        source,
        first_line + kept_idx,
        columns,
        pa.array(extra, pa.string()),
        _raw_lines(block, starts[kept_idx], ends[kept_idx], contiguous=False),
    )
    rejects = make_rejects(source, entity.name, reject_lines, reject_raw, reject_reasons)
    return ParsedChunk(rows, rejects, used_fallback=True)


class DuplicateTracker:
    """Counts ids seen more than once across all chunks of a table in one batch (files in batch order).

    The rows themselves stream on; "last wins" is applied where all of them meet, the loader's staging table, which
    keeps the last occurrence of a key. Holding only the id column keeps memory at ~40 bytes a row.
    """

    def __init__(self, id_field: str) -> None:
        self.id_field = id_field
        self._ids: list[pa.Array] = []

    def add(self, rows: pa.RecordBatch) -> None:
        self._ids.append(rows.column(self.id_field))

    @property
    def rows(self) -> int:
        return sum(len(a) for a in self._ids)

    def duplicates(self) -> int:
        """Rows superseded by a later row with the same id."""
        if not self._ids:
            return 0
        ids = pa.chunked_array(self._ids, pa.string())
        return self.rows - pc.count_distinct(ids, mode="only_valid").as_py() - ids.null_count

    def duplicate_ids(self, limit: int = 10) -> list[str]:
        if not self._ids:
            return []
        counts = pc.value_counts(pa.chunked_array(self._ids, pa.string()))
        repeated = counts.filter(pc.greater(counts.field("counts"), 1))
        return [v for v in repeated.field("values").to_pylist()[:limit] if v is not None]
