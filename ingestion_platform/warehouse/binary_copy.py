"""Arrow columns as PostgreSQL's binary COPY format, built with Arrow compute kernels and numpy, no per-value Python.

Why: CSV costs twice. pyarrow renders every timestamp, date and number as text (about 2 s per million 10-column
rows on the development machine), and the server parses that text back (timestamptz input is the dearest of its
input functions). Binary COPY sends fixed-width values as they are stored: measured on 1M GA4-like rows, encoding
took 0.75-1.0 s against 1.8-2.6 s for CSV, and the server staged them in 1.2-1.8 s against 2.8 s, to identical
staged rows. Apache Arrow's ADBC PostgreSQL driver does the same in C, but over its own libpq session, which cannot
see the loader's temporary staging table (see `loader.py`).

The format (PostgreSQL docs, "COPY ... Binary Format"): a signature and header, then per row a big-endian int16
field count and per field an int32 byte length (-1 for NULL) followed by the value in the type's `*_send` form.
Each field is built as a binary array (length prefix + value) and the fields are joined row-wise with
`binary_join_element_wise`, whose data buffer is then the rows back to back: the payload for COPY.

Only the staging types below are encoded; the loader stages every other column as text, which is its UTF-8 bytes.
"""

import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # signature, flags, header extension length
TRAILER = struct.pack("!h", -1)

# Staging type -> numpy big-endian dtype of its binary send form.
FIXED_WIDTH: dict[str, str] = {
    "bigint": ">i8",
    "integer": ">i4",
    "smallint": ">i2",
    "double precision": ">f8",
    "boolean": "u1",
    "date": ">i4",  # days since 2000-01-01
    "timestamptz": ">i8",  # microseconds since 2000-01-01 00:00 UTC
    "timestamp": ">i8",  # microseconds since 2000-01-01 00:00, wall time
}
ENCODED_TYPES = frozenset({*FIXED_WIDTH, "text"})

_ARROW_NUMBER = {"bigint": pa.int64(), "integer": pa.int32(), "smallint": pa.int16(), "boolean": pa.uint8()}
_POSTGRES_EPOCH_DAYS = 10_957  # 2000-01-01 - 1970-01-01
_POSTGRES_EPOCH_US = 946_684_800_000_000
_NULL_FIELD = b"\xff\xff\xff\xff"
_EMPTY = pa.scalar(b"", pa.large_binary())


def _fixed_size(data: np.ndarray, width: int, rows: int) -> pa.Array:
    """`rows` values of `width` bytes each from a contiguous buffer, as a large_binary array (what the join takes)."""
    fixed = pa.Array.from_buffers(pa.binary(width), rows, [None, pa.py_buffer(np.ascontiguousarray(data))])
    return fixed.cast(pa.large_binary())


def _microseconds(column: pa.Array) -> np.ndarray:
    """Microseconds since the Unix epoch, rounded half to even from nanoseconds as PostgreSQL rounds input text."""
    unit = column.type.unit
    if unit == "ns":
        nanos = column.cast(pa.int64()).fill_null(0).to_numpy()
        micros, rest = np.divmod(nanos, 1000)
        return micros + ((rest > 500) | ((rest == 500) & (micros % 2 == 1)))
    # s and ms widen to us with Arrow's overflow check: a value beyond int64 microseconds raises, never wraps.
    return column.cast(pa.timestamp("us", column.type.tz)).cast(pa.int64()).fill_null(0).to_numpy()


def _values(column: pa.Array, staged: str) -> np.ndarray:
    if staged == "date":
        return column.cast(pa.date32(), safe=False).cast(pa.int32()).fill_null(0).to_numpy() - _POSTGRES_EPOCH_DAYS
    if staged in ("timestamptz", "timestamp"):
        return _microseconds(column) - _POSTGRES_EPOCH_US
    if staged == "double precision":
        # A 64-bit integer beyond 2**53 rounds to the nearest double, as PostgreSQL's float8 input would.
        return column.cast(pa.float64(), safe=False).fill_null(0).to_numpy()
    return column.cast(_ARROW_NUMBER[staged]).fill_null(0).to_numpy()


def _fields(column: pa.Array, staged: str) -> list[pa.Array]:
    """Each value of `column` as one binary COPY field: int32 length, then the value (or length -1 for NULL), as
    arrays whose row-wise concatenation is the field (a text field stays two arrays, so its data is copied once,
    by the final join)."""
    rows = len(column)
    if column.null_count == rows:
        return [_fixed_size(np.frombuffer(_NULL_FIELD * rows, np.uint8), 4, rows)]
    if staged in FIXED_WIDTH:
        dtype = np.dtype(FIXED_WIDTH[staged])
        packed = np.empty(rows, dtype=[("length", ">i4"), ("value", dtype)])
        packed["length"] = dtype.itemsize
        packed["value"] = _values(column, staged)
        field = _fixed_size(packed.view(np.uint8), 4 + dtype.itemsize, rows)
        if column.null_count:
            field = pc.if_else(column.is_valid(), field, pa.scalar(_NULL_FIELD, pa.large_binary()))
        return [field]
    data = column.cast(pa.large_binary())
    lengths = pc.binary_length(data).to_numpy(zero_copy_only=False)
    if data.null_count:
        lengths = np.where(data.is_valid().to_numpy(zero_copy_only=False), lengths, -1)
        data = data.fill_null(b"")
    return [_fixed_size(lengths.astype(">i4").view(np.uint8), 4, rows), data]


def encode_rows(table: pa.Table, staged: list[str]) -> pa.Buffer:
    """The rows of `table` in binary COPY form (no signature or trailer); `staged[i]` is column i's staging type,
    one of `ENCODED_TYPES` (a text column must hold strings)."""
    rows = table.num_rows
    header = _fixed_size(np.full(rows, len(staged), ">i2").view(np.uint8), 2, rows)
    fields = [f for i, t in enumerate(staged) for f in _fields(table.column(i).combine_chunks(), t)]
    joined = pc.binary_join_element_wise(header, *fields, _EMPTY)
    offsets = np.frombuffer(joined.buffers()[1], np.int64, rows + 1, joined.offset * 8)
    return joined.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
