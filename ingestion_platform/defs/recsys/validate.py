"""Validate a parsed upload with a Great Expectations 1.x suite per data type and split accepted from rejected rows.

GX decides every row-level verdict: each expectation runs once over the whole upload with `result_format`
COMPLETE, and its `unexpected_index_list` maps back to the rows it failed. What GX would do one Python call per row
(parsing ISO-8601 timestamps and numbers) happens before, vectorised in pyarrow, into typed columns (a timestamp that
is missing or does not parse is null) and helper columns holding the text that failed to parse (`rating_unparseable`
must be null); the preparation only converts values, the expectations say whether a row passes. Text reaches GX as
pandas categoricals, which keeps one million rows to about a second of GX time.

The same result feeds the Dagster asset (Parquet for accepted and rejected rows, metadata, asset checks) and the
`ingestion-platform validate interactions|items FILE` command, so the command prints exactly what a load would do.
"""

import argparse
import functools
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ingestion_platform.defs.recsys.parse import (
    OPTIONAL,
    REQUIRED,
    ROW_NUMBER,
    DataType,
    ParsedUpload,
    UploadError,
    parse_upload,
)

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

INTERACTION_TYPES = ("view", "click", "purchase", "like", "add_to_cart")
DEDUP_KEY = ("user_id", "item_id", "interaction_type", "timestamp")
REASONS = "failed_expectations"
# A time of day followed by a zone designator: "Z" or an offset such as +02:00, -0500, +01.
_ZONED = r"(?i)\d:\d\d(:\d\d([.,]\d+)?)?\s*(z|[+-]\d\d(:?\d\d)?)$"

ACCEPTED_SCHEMA: dict[str, pa.Schema] = {
    "interactions": pa.schema(
        [
            ("user_id", pa.string()),
            ("item_id", pa.string()),
            ("interaction_type", pa.string()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("rating", pa.float64()),
        ]
    ),
    "items": pa.schema(
        [
            ("item_id", pa.string()),
            ("title", pa.string()),
            ("category", pa.string()),
            ("price", pa.float64()),
            ("brand", pa.string()),
            ("description", pa.string()),
        ]
    ),
}


# Rows per row group of the accepted Parquet files. DuckDB scans a file's row groups in parallel, one per thread, and
# pyarrow's default (1Mi rows) makes a 1M-row upload one group read by one thread; this is DuckDB's own group size.
ACCEPTED_ROW_GROUP_ROWS = 122_880


def rejected_schema(data_type: DataType) -> pa.Schema:
    """Rejected rows keep the text as uploaded, where they were, and why: a malformed record has only `raw`."""
    text = [(c, pa.string()) for c in REQUIRED[data_type] + OPTIONAL[data_type]]
    return pa.schema([*text, (ROW_NUMBER, pa.int64()), ("raw", pa.large_string()), (REASONS, pa.string())])


@dataclass(frozen=True)
class ExpectationOutcome:
    name: str  # stable id, used as the asset check name
    expectation: str  # the GX expectation type
    column: str
    description: str  # the reason written on a rejected row
    success: bool
    unexpected_count: int
    unexpected_percent: float


@dataclass(frozen=True)
class ValidationResult:
    data_type: DataType
    rows_total: int
    accepted: pa.Table
    rejected: pa.Table
    expectations: tuple[ExpectationOutcome, ...]
    duplicates_dropped: int
    malformed_rows: int
    unknown_columns: tuple[str, ...]
    # Set when the file as a whole is unusable (not parseable, missing required columns): nothing loads, and the
    # blocking asset check fails.
    blocking_error: str | None = None
    blocking_code: str | None = None
    format: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.blocking_error is None

    @property
    def rows_accepted(self) -> int:
        return self.accepted.num_rows

    @property
    def rows_rejected(self) -> int:
        return self.rejected.num_rows

    def summary(self) -> list[dict[str, Any]]:
        """Per expectation, for asset metadata: what was checked and how many rows failed it."""
        return [
            {
                "expectation": o.name,
                "gx_type": o.expectation,
                "column": o.column,
                "success": o.success,
                "unexpected_count": o.unexpected_count,
                "unexpected_percent": round(o.unexpected_percent, 4),
            }
            for o in self.expectations
        ]


@dataclass(frozen=True)
class _Expectation:
    name: str
    kind: str
    column: str
    description: str
    kwargs: dict[str, Any]


def _suite_spec(data_type: DataType) -> tuple[_Expectation, ...]:
    if data_type == "interactions":
        return (
            _Expectation("user_id_not_null", "ExpectColumnValuesToNotBeNull", "user_id", "user_id is missing", {}),
            _Expectation("item_id_not_null", "ExpectColumnValuesToNotBeNull", "item_id", "item_id is missing", {}),
            _Expectation(
                "interaction_type_not_null",
                "ExpectColumnValuesToNotBeNull",
                "interaction_type",
                "interaction_type is missing",
                {},
            ),
            _Expectation(
                "interaction_type_in_set",
                "ExpectColumnValuesToBeInSet",
                "interaction_type",
                f"interaction_type is not one of {', '.join(INTERACTION_TYPES)}",
                {"value_set": list(INTERACTION_TYPES)},
            ),
            _Expectation(
                "timestamp_iso8601",
                "ExpectColumnValuesToNotBeNull",
                "timestamp",
                "timestamp is missing or not an ISO-8601 date-time",
                {},
            ),
            _Expectation(
                "rating_numeric", "ExpectColumnValuesToBeNull", "rating_unparseable", "rating is not a number", {}
            ),
            _Expectation(
                "rating_between_1_and_5",
                "ExpectColumnValuesToBeBetween",
                "rating",
                "rating is outside [1.0, 5.0]",
                {"min_value": 1.0, "max_value": 5.0},
            ),
        )
    return (
        _Expectation("item_id_not_null", "ExpectColumnValuesToNotBeNull", "item_id", "item_id is missing", {}),
        _Expectation("item_id_unique", "ExpectColumnValuesToBeUnique", "item_id", "item_id appears more than once", {}),
        _Expectation("title_not_null", "ExpectColumnValuesToNotBeNull", "title", "title is missing", {}),
        _Expectation("price_numeric", "ExpectColumnValuesToBeNull", "price_unparseable", "price is not a number", {}),
        _Expectation(
            "price_not_negative", "ExpectColumnValuesToBeBetween", "price", "price is negative", {"min_value": 0.0}
        ),
    )


def expectation_names(data_type: DataType) -> tuple[str, ...]:
    """The suite's expectation ids, known without importing GX, so asset check specs can be declared at load time."""
    return tuple(spec.name for spec in _suite_spec(data_type))


@functools.cache
def _gx(data_type: DataType) -> tuple["BatchDefinition", "ExpectationSuite"]:
    """One ephemeral GX context per process: building it and the suite costs more than validating a small file."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(f"recsys_{data_type}")
    batch_definition = source.add_dataframe_asset(f"{data_type}_upload").add_batch_definition_whole_dataframe(
        "whole_upload"
    )
    suite = gx.ExpectationSuite(name=f"recsys_{data_type}")
    for spec in _suite_spec(data_type):
        suite.add_expectation(getattr(gxe, spec.kind)(column=spec.column, meta={"name": spec.name}, **spec.kwargs))
    return batch_definition, context.suites.add(suite)


def _text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Blank and whitespace-only text counts as missing, whatever format it came from."""
    trimmed = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _timestamps(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO-8601 to UTC; a time without a zone is read as UTC. Arrow's cast is the fast path for files where every
    value carries its zone; otherwise pandas' ISO-8601 parser runs separately on zoned and zone-less values (mixed
    in one call, pandas applies the first offset it sees to the zone-less ones) and leaves unparseable ones null."""
    try:
        return text.cast(pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = text.to_pandas()
    zoned = pc.fill_null(pc.match_substring_regex(text, _ZONED), False).to_numpy(zero_copy_only=False)
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    parsed[zoned] = pd.to_datetime(values[zoned], format="ISO8601", utc=True, errors="coerce")
    parsed[~zoned] = pd.to_datetime(values[~zoned], format="ISO8601", errors="coerce").dt.tz_localize("UTC")
    return pa.chunked_array([pa.array(parsed, pa.timestamp("us", tz="UTC"))])


def _numbers(text: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return text.cast(pa.float64())
    except pa.ArrowInvalid:
        return pa.chunked_array([pa.array(pd.to_numeric(text.to_pandas(), errors="coerce"), pa.float64())])


def _unparsed(text: pa.ChunkedArray, values: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.if_else(pc.and_(pc.is_valid(text), pc.is_null(values)), text, pa.scalar(None, pa.string()))


def _typed(table: pa.Table, data_type: DataType) -> tuple[pa.Table, pa.Table]:
    """The accepted-schema table (cleaned text, typed values) and the helper columns holding text that failed to
    parse, which the suite expects to be null."""
    text = {c: _text(table.column(c)) for c in REQUIRED[data_type] + OPTIONAL[data_type]}
    if data_type == "interactions":
        text["timestamp"] = _timestamps(text["timestamp"])
        numeric = "rating"
    else:
        numeric = "price"
    raw_number = text[numeric]
    text[numeric] = _numbers(raw_number)
    typed = pa.table(text).select(ACCEPTED_SCHEMA[data_type].names).cast(ACCEPTED_SCHEMA[data_type])
    helpers = pa.table({f"{numeric}_unparseable": _unparsed(raw_number, typed.column(numeric))})
    return typed, helpers


def _frame(typed: pa.Table, helpers: pa.Table) -> pd.DataFrame:
    """The frame GX validates. Text becomes pandas categoricals: GX fingerprints every batch with
    `hash_pandas_object` and its set and null metrics factorize the column, both far cheaper on codes."""
    columns: dict[str, pa.ChunkedArray] = {}
    for table in (typed, helpers):
        for name in table.column_names:
            column = table.column(name)
            columns[name] = pc.dictionary_encode(column) if pa.types.is_string(column.type) else column
    return pa.table(columns).to_pandas()


def _config(result: "ExpectationValidationResult") -> "ExpectationConfiguration":
    """The expectation a result belongs to; GX leaves it unset only on results it did not get from a suite."""
    if result.expectation_config is None:
        raise RuntimeError(f"GX returned a result without its expectation: {result}")
    return result.expectation_config


def validate_upload(parsed: ParsedUpload) -> ValidationResult:
    """Run the data type's suite once over the whole upload; rows failing any expectation are rejected with all
    the reasons they failed, the rest are typed and (for interactions) deduplicated."""
    data_type = parsed.data_type
    timings: dict[str, float] = {}
    started = time.perf_counter()
    typed, helpers = _typed(parsed.table, data_type)
    frame = _frame(typed, helpers)
    timings["prepare"] = time.perf_counter() - started

    started = time.perf_counter()
    batch_definition, suite = _gx(data_type)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    gx_result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    timings["great_expectations"] = time.perf_counter() - started

    started = time.perf_counter()
    specs = {spec.name: spec for spec in _suite_spec(data_type)}
    n = len(frame)
    failed_bits = np.zeros(n, dtype=np.int64)
    outcomes: list[ExpectationOutcome] = []
    by_name = {_config(r).meta["name"]: r for r in gx_result.results}
    for bit, (name, spec) in enumerate(specs.items()):
        result = by_name[name]
        if result.exception_info.get("raised_exception"):
            raise RuntimeError(f"GX expectation {name} raised: {result.exception_info.get('exception_message')}")
        index = np.asarray(result.result.get("unexpected_index_list") or [], dtype=np.int64)
        count = int(result.result.get("unexpected_count") or 0)
        if len(index) != count:
            raise RuntimeError(f"GX expectation {name}: {count} unexpected rows but {len(index)} indexes returned")
        failed_bits[index] |= 1 << bit
        outcomes.append(
            ExpectationOutcome(
                name=name,
                expectation=_config(result).type,
                column=spec.column,
                description=spec.description,
                success=bool(result.success),
                unexpected_count=count,
                unexpected_percent=float(result.result.get("unexpected_percent") or 0.0),
            )
        )
    bad = failed_bits != 0
    rejected = _rejected(parsed, bad, failed_bits[bad], list(specs.values()))
    accepted, duplicates = _accepted(typed, frame, ~bad, data_type)
    timings["split"] = time.perf_counter() - started
    return ValidationResult(
        data_type=data_type,
        rows_total=parsed.rows,
        accepted=accepted,
        rejected=rejected,
        expectations=tuple(outcomes),
        duplicates_dropped=duplicates,
        malformed_rows=parsed.malformed.num_rows,
        unknown_columns=parsed.unknown_columns,
        format=parsed.format,
        seconds=timings,
    )


def _rejected(parsed: ParsedUpload, bad: np.ndarray, bits: np.ndarray, specs: list[_Expectation]) -> pa.Table:
    """Reasons are joined per distinct combination of failures, not per row: a file has few combinations."""
    schema = rejected_schema(parsed.data_type)
    combos, inverse = np.unique(bits, return_inverse=True)
    labels = ["; ".join(s.description for i, s in enumerate(specs) if int(combo) >> i & 1) for combo in combos]
    failed = parsed.table.filter(pa.array(bad))
    reasons = pa.DictionaryArray.from_arrays(pa.array(inverse, pa.int32()), pa.array(labels, pa.string()))
    gx_rejects = failed.append_column("raw", pa.nulls(failed.num_rows, pa.large_string())).append_column(
        REASONS, reasons.cast(pa.string())
    )
    malformed = parsed.malformed.rename_columns(["row_number", "raw", REASONS])
    for column in schema.names:
        if column not in malformed.column_names:
            malformed = malformed.append_column(column, pa.nulls(malformed.num_rows, pa.string()))
    return pa.concat_tables([gx_rejects.select(schema.names).cast(schema), malformed.select(schema.names).cast(schema)])


def _accepted(typed: pa.Table, frame: pd.DataFrame, good: np.ndarray, data_type: DataType) -> tuple[pa.Table, int]:
    if data_type == "interactions":
        duplicated = frame.loc[good].duplicated(subset=list(DEDUP_KEY), keep="first").to_numpy()
        keep = good.copy()
        keep[np.flatnonzero(good)[duplicated]] = False
        return typed.filter(pa.array(keep)), int(duplicated.sum())
    return typed.filter(pa.array(good)), 0


def blocked(data_type: DataType, error: UploadError, rows_total: int = 0) -> ValidationResult:
    """The result for a file that cannot be used at all: no rows accepted or rejected, one blocking reason."""
    empty = rejected_schema(data_type).empty_table()
    return ValidationResult(
        data_type=data_type,
        rows_total=rows_total,
        accepted=ACCEPTED_SCHEMA[data_type].empty_table(),
        rejected=empty,
        expectations=(),
        duplicates_dropped=0,
        malformed_rows=0,
        unknown_columns=(),
        blocking_error=str(error),
        blocking_code=error.code,
    )


def validate_file(
    source: bytes | BinaryIO | str | os.PathLike[str], data_type: DataType, *, name: str | None = None
) -> ValidationResult:
    """Parse and validate; a file that cannot be read at all becomes a blocking result instead of an exception."""
    started = time.perf_counter()
    try:
        parsed = parse_upload(source, data_type, name=name)
    except UploadError as exc:
        return blocked(data_type, exc)
    parse_seconds = time.perf_counter() - started
    result = validate_upload(parsed)
    result.seconds["parse"] = parse_seconds
    return result


def validation_report(result: ValidationResult, *, name: str = "upload", max_examples: int = 10) -> str:
    """The text the validate command prints: verdict, counts, per-expectation table and a few rejected rows."""
    lines = [f"{name}: {result.data_type}" + (f" ({result.format})" if result.format else "")]
    if not result.usable:
        lines.append(f"UNUSABLE ({result.blocking_code}): {result.blocking_error}")
        lines.append("nothing would be loaded")
        return "\n".join(lines)
    verdict = "OK" if result.rows_rejected == 0 else "REJECTED ROWS"
    lines.append(
        f"{verdict}: {result.rows_total} rows read, {result.rows_accepted} accepted, {result.rows_rejected} rejected"
        + (f", {result.duplicates_dropped} duplicates dropped" if result.duplicates_dropped else "")
    )
    if result.malformed_rows:
        lines.append(f"{result.malformed_rows} malformed record(s) could not be split into columns")
    if result.unknown_columns:
        lines.append(f"ignored unknown column(s): {', '.join(result.unknown_columns)}")
    lines.append("")
    lines.append(f"{'expectation':<28}{'column':<24}{'result':<8}{'failed rows':>12}")
    for o in result.expectations:
        lines.append(f"{o.name:<28}{o.column:<24}{'pass' if o.success else 'FAIL':<8}{o.unexpected_count:>12}")
    if result.rows_rejected:
        lines.append("")
        lines.append(f"first {min(max_examples, result.rows_rejected)} rejected row(s):")
        for row in result.rejected.slice(0, max_examples).to_pylist():
            number = row[ROW_NUMBER]
            where = f"row {number}" if number is not None else "row ?"
            values = (
                row["raw"]
                if row["raw"] is not None
                else ",".join("" if row[c] is None else str(row[c]) for c in REQUIRED[result.data_type])
            )
            lines.append(f"  {where}: {row[REASONS]}  [{values}]")
    return "\n".join(lines)


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_type", choices=["interactions", "items"])
    parser.add_argument("file", help="CSV, JSON array or NDJSON, optionally gzip")
    parser.set_defaults(fn=validate_command)


def validate_command(args: argparse.Namespace) -> int:
    """Exit 0 when every row would load, 1 when rows would be rejected, 2 when the file is unusable."""
    if not os.path.isfile(args.file):
        print(f"{args.file}: no such file", file=sys.stderr)
        return 2
    result = validate_file(args.file, args.data_type)
    print(validation_report(result, name=args.file))
    if not result.usable:
        return 2
    return 1 if result.rows_rejected else 0
