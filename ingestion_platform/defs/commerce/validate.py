"""Vectorised per-row validation of parsed commerce rows: valid rows typed for the warehouse, invalid rows quarantined.

Why vectorised: a batch holds up to a million order items, and a Python loop per row would cap the whole pipeline at
the old system's few thousand rows per second. Every rule below is one pyarrow.compute kernel over a column; a row's
reasons are joined from the rules it breaks, so an operator sees all of a row's problems at once. Foreign keys are
not checked here: whether an order's customer exists is the loader's question (the parent may arrive later).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc

from ingestion_platform.defs.commerce.currencies import ISO_4217
from ingestion_platform.defs.commerce.ndjson import (
    REJECT_SCHEMA,
    DuplicateTracker,
    Entity,
    Source,
    parse_ndjson,
    raw_text,
)

# The old system's Django choices for orders.order_status (the replaced service's doc names no values; these are the
# states its seed generator and API used). Compared after lower-casing.
ORDER_STATUSES = frozenset(
    {"pending", "processing", "paid", "shipped", "delivered", "completed", "cancelled", "refunded", "failed"}
)
# Money is numeric(12, 2) in the old schema: at most 10 digits before the point and 2 after.
MONEY_SCALE = 2
MONEY_LIMIT = Decimal(10) ** 10
MONEY_TYPE = pa.decimal128(12, MONEY_SCALE)
MAX_QUANTITY = 1_000_000
# line_total may differ from quantity x unit_price by at most a cent (rounding in the source's own arithmetic).
LINE_TOTAL_TOLERANCE = 0.01
EMAIL_FIELDS = frozenset({"email", "customer_email_snapshot"})

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}(:?\d{2})?)?$"
_HAS_OFFSET = r"([Zz]|[+-]\d{2}(:?\d{2})?)$"
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Validated:
    """Rows ready for the loader (`output_schema(entity)`) and the rejected rows (`ndjson.REJECT_SCHEMA`)."""

    valid: pa.RecordBatch
    rejects: pa.Table


def output_schema(entity: Entity) -> pa.Schema:
    """Arrow types whose CSV form COPY reads into the `tables.py` column types."""
    types = {
        "uuid": pa.string(),
        "text": pa.string(),
        "decimal": MONEY_TYPE,
        "integer": pa.int32(),
        "boolean": pa.bool_(),
        "timestamp": TIMESTAMP_TYPE,
        "json": pa.string(),
    }
    return pa.schema(
        [
            ("tenant_id", pa.string()),
            *((f.name, types[f.kind]) for f in entity.fields),
            ("extra", pa.string()),
            ("batch_id", pa.string()),
            ("source_file", pa.string()),
            ("source_line", pa.int64()),
        ]
    )


class _Reasons:
    """Collects (row mask, reason) pairs and joins them per row."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.parts: list[pa.Array] = []

    def add(self, mask: pa.Array, reason: str | pa.Array) -> None:
        mask = pc.fill_null(mask, False)
        if not pc.any(mask).as_py():
            return
        text = pa.array([reason] * self.n, pa.string()) if isinstance(reason, str) else reason
        self.parts.append(pc.if_else(mask, text, pa.scalar(None, pa.string())))

    def joined(self) -> pa.Array | None:
        if not self.parts:
            return None
        joined = self.parts[0]
        for part in self.parts[1:]:
            # Not null_handling="skip": pyarrow 26 drops rows where every input is null instead of emitting null.
            joined = pc.coalesce(pc.binary_join_element_wise(joined, part, "; "), joined, part)
        return joined


def parse_timestamps(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """ISO 8601 strings to UTC timestamps, and a mask of the non-null values that are not timestamps.

    A value without a zone offset is taken as UTC (the old system stored UTC). The whole column is cast in C++;
    only when that fails (an impossible date such as 2024-02-30 that still has the right shape) are the values
    checked one by one, and then only the well-shaped ones.
    """
    shaped = pc.fill_null(pc.match_substring_regex(values, TIMESTAMP_PATTERN), False)
    present = pc.is_valid(values)
    bad = pc.and_(present, pc.invert(shaped))
    candidates = pc.if_else(shaped, values, pa.scalar(None, pa.string()))
    with_offset = pc.fill_null(pc.match_substring_regex(candidates, _HAS_OFFSET), True)
    candidates = pc.if_else(with_offset, candidates, pc.binary_join_element_wise(candidates, "Z", ""))
    try:
        return pc.cast(candidates, TIMESTAMP_TYPE), bad
    except pa.ArrowInvalid:
        pass
    impossible = []
    for text in candidates.to_pylist():
        ok = True
        if text is not None:
            try:
                datetime.fromisoformat(text.replace("z", "Z"))
            except ValueError:
                ok = False
        impossible.append(not ok)
    impossible_mask = pa.array(impossible, pa.bool_())
    candidates = pc.if_else(impossible_mask, pa.scalar(None, pa.string()), candidates)
    return pc.cast(candidates, TIMESTAMP_TYPE), pc.or_(bad, impossible_mask)


def validate(rows: pa.RecordBatch, entity: Entity) -> Validated:
    """Split parsed rows (`entity.row_schema`) into loadable rows and rejects with every reason a row fails."""
    n = rows.num_rows
    reasons = _Reasons(n)
    out: dict[str, pa.Array] = {}
    for f in entity.fields:
        col = rows.column(f.name)
        if f.required:
            reasons.add(pc.is_null(col), f"{f.name} is missing")
        if f.kind == "uuid":
            reasons.add(pc.invert(pc.match_substring_regex(col, UUID_PATTERN)), f"{f.name} is not a UUID")
            col = pc.utf8_lower(col)
        elif f.kind == "text":
            col = pc.utf8_trim_whitespace(col)
            if f.required:
                reasons.add(pc.equal(col, ""), f"{f.name} is empty")
            if f.name == "currency":
                col = pc.utf8_upper(col)
                reasons.add(
                    pc.invert(pc.is_in(col, value_set=pa.array(sorted(ISO_4217)))),
                    f"{f.name} is not an ISO 4217 currency code",
                )
            elif f.name == "order_status":
                col = pc.utf8_lower(col)
                reasons.add(
                    pc.invert(pc.is_in(col, value_set=pa.array(sorted(ORDER_STATUSES)))),
                    f"{f.name} is not one of {sorted(ORDER_STATUSES)}",
                )
            elif f.name in EMAIL_FIELDS:
                reasons.add(
                    pc.invert(pc.match_substring_regex(col, EMAIL_PATTERN)), f"{f.name} is not an email address"
                )
            if f.max_length is not None:
                reasons.add(pc.greater(pc.utf8_length(col), f.max_length), f"{f.name} is longer than {f.max_length}")
        elif f.kind == "decimal":
            reasons.add(pc.less(col, 0), f"{f.name} is negative")
            reasons.add(pc.greater_equal(pc.abs(col), MONEY_LIMIT), f"{f.name} is out of range (>= {MONEY_LIMIT:,})")
            rounded = pc.round(col, MONEY_SCALE)
            reasons.add(pc.not_equal(rounded, col), f"{f.name} has more than {MONEY_SCALE} decimal places")
            fits = pc.fill_null(pc.less(pc.abs(col), MONEY_LIMIT), True)
            col = pc.cast(pc.if_else(fits, rounded, pa.scalar(None, col.type)), MONEY_TYPE)
        elif f.kind == "integer":
            reasons.add(pc.less_equal(col, 0), f"{f.name} must be > 0")
            reasons.add(pc.greater(col, MAX_QUANTITY), f"{f.name} is out of range (> {MAX_QUANTITY:,})")
            fits = pc.fill_null(pc.less_equal(pc.abs(col), MAX_QUANTITY), True)
            col = pc.cast(pc.if_else(fits, col, pa.scalar(None, col.type)), pa.int32())
        elif f.kind == "timestamp":
            col, bad = parse_timestamps(col)
            reasons.add(bad, f"{f.name} is not an ISO 8601 timestamp")
        out[f.name] = col
    if entity.name == "order_items":
        expected = pc.multiply(
            pc.cast(rows.column("quantity"), pa.float64()), pc.cast(rows.column("unit_price"), pa.float64())
        )
        off = pc.abs(pc.subtract(pc.cast(rows.column("line_total"), pa.float64()), expected))
        reasons.add(pc.greater(off, LINE_TOTAL_TOLERANCE + 1e-6), "line_total differs from quantity x unit_price")

    joined = reasons.joined()
    schema = output_schema(entity)
    arrays = {
        "tenant_id": rows.column("tenant_id"),
        **out,
        "extra": rows.column("extra"),
        "batch_id": rows.column("batch_id"),
        "source_file": rows.column("source_file"),
        "source_line": rows.column("source_line"),
    }
    full = pa.RecordBatch.from_arrays([arrays[name] for name in schema.names], schema=schema)
    if joined is None:
        return Validated(full, REJECT_SCHEMA.empty_table())
    invalid_mask = pc.is_valid(joined)
    valid = full.filter(pc.invert(invalid_mask))
    bad = rows.filter(invalid_mask)
    rejects = pa.table(
        {
            "tenant_id": bad.column("tenant_id"),
            "batch_id": bad.column("batch_id"),
            "table_name": pa.array([entity.name] * bad.num_rows, pa.string()),
            "source_file": bad.column("source_file"),
            "line_number": bad.column("source_line"),
            "raw_line": pa.array([raw_text(r) for r in bad.column("raw_line").to_pylist()], pa.string()),
            "reason": joined.filter(invalid_mask),
        },
        schema=REJECT_SCHEMA,
    )
    return Validated(valid, rejects)


@dataclass
class FileResult:
    """Counts for one file, filled in while its rows stream through `read_file`."""

    file_name: str
    rows_valid: int = 0
    rows_rejected: int = 0
    blocks_on_slow_path: int = 0


def read_file(
    stream: IO[bytes],
    entity: Entity,
    source: Source,
    *,
    duplicates: DuplicateTracker | None = None,
    result: FileResult | None = None,
    block_bytes: int | None = None,
) -> Iterator[Validated]:
    """Parse and validate one file block by block: what an asset hands to the loader (valid) and to quarantine."""
    kwargs = {} if block_bytes is None else {"block_bytes": block_bytes}
    for chunk in parse_ndjson(stream, entity, source, **kwargs):
        checked = validate(chunk.rows, entity)
        rejects = pa.concat_tables([chunk.rejects, checked.rejects]) if chunk.rejects.num_rows else checked.rejects
        if duplicates is not None:
            duplicates.add(checked.valid)
        if result is not None:
            result.rows_valid += checked.valid.num_rows
            result.rows_rejected += rejects.num_rows
            result.blocks_on_slow_path += int(chunk.used_fallback)
        yield Validated(checked.valid, rejects)


def reasons_summary(rejects: pa.Table, limit: int = 20) -> dict[str, int]:
    """Reject counts by reason (each of a row's reasons counted once), most frequent first."""
    if rejects.num_rows == 0:
        return {}
    parts = pc.list_flatten(pc.split_pattern(rejects.column("reason"), "; "))
    counts = pc.value_counts(parts)
    pairs = sorted(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True),
        key=lambda p: (-p[1], p[0]),
    )
    return dict(pairs[:limit])
