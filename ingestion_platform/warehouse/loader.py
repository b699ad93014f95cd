"""The one bulk loader: stage Arrow batches through COPY, quarantine bad rows, then merge or replace in one short
transaction.

Why this shape:
- COPY is the only PostgreSQL path that reaches hundreds of thousands of rows per second. Batches are encoded in
  binary COPY form by Arrow kernels (`binary_copy.py`), one batch ahead in a worker thread, so memory stays
  bounded by two batches; against pyarrow's CSV writer this halves the client's encoding time and the server's
  staging time (fixed-width values are not rendered and parsed as text). Binary COPY through ADBC
  (`adbc_ingest(..., temporary=True)`) would do the same in C, but over ADBC's own libpq session, where the
  session's temporary stage does not exist, and the least-privilege loading role (TEMP, no CREATE) cannot make a
  regular staging table for it.
- Staging happens in a session temporary table in autocommit mode, outside any transaction on the target: a
  source read slowly (BigQuery pages, an HTTP API paged for an hour) holds no lock and cannot die to an
  idle-in-transaction timeout. Only the final step, which reads nothing from the source, is a transaction:
  un-park pending rows, check foreign keys, move rejects and parked rows, merge or replace, apply deletes. A failed
  or killed load leaves the target exactly as it was, and a re-run leaves the same rows as one run.
- One bad value rejects one row, never the load. Columns whose Arrow type cannot fail against the target are
  staged typed; the others (text for a bigint, JSON text for jsonb, ...) are staged as text and checked in SQL with
  `pg_input_is_valid` / `pg_input_error_info` (PostgreSQL 16 or newer, checked at load). NUL bytes, which COPY
  refuses for the whole load, and jsonb values that cannot be JSON by their first and last characters (the usual
  bad value: truncated, empty, not JSON at all) are found in Arrow before COPY. NOT NULL, the spec's named checks
  and foreign keys are checked against the staged rows too. Every failing row lands in `<schema>.<table>_rejects`
  with the raw row as JSON, the reason, the column, the source and line (or input ordinal) and the load time, in
  the same transaction as the good rows. Parsers pass rows they could not even parse as `Reject`s through the same
  call.
- Clean input, the usual case, pays for none of that checking when the spec declares no checks: the merge is
  tried first with the casts themselves finding values that do not parse, and into an empty target (a first load,
  a backfill into a new table) as one plain INSERT whose primary key finds repeated keys; a large one builds the
  table's indexes after the INSERT where the role owns the table. A failed attempt rolls back and the load takes
  the checked path; the price is one rolled-back statement when the input has bad rows,
  plus one pass over the columns that can fail (jsonb checked first with the cheaper `IS JSON`), which also
  collects the reject rows so moving them needs no second pass.

Public API:

    load(conn, spec, batches, *, mode, slice_=None, source=None, deleted_keys=None, rejects=()) -> LoadResult

- `conn`: an autocommit psycopg connection (`WarehouseResource.raw_connection()` gives one).
- `mode="merge"`: upsert on `spec.key` (MERGE, or `INSERT ... ON CONFLICT` before PostgreSQL 17); unchanged rows
  are not rewritten, duplicate input keys keep the last occurrence, `spec.version` never goes back in time. With
  `slice_` as well, the input is the full content of that slice: key rows of the slice the input lacks are deleted
  (or tombstoned when `spec.tombstone` is declared).
- `mode="replace"`: delete the rows matching `slice_` (column -> allowed values) and insert the good staged rows;
  input rows outside the slice refuse the load.
- `source`: the file or batch name recorded with rejects and parked rows; rejects recorded earlier for the same
  source (and the same tenants) are replaced, so reloading a file does not duplicate its rejects.
- `deleted_keys`: batches of key columns (NetSuite `deletedrecord`): those rows get `spec.tombstone` set to now()
  (or are deleted when no tombstone column is declared).
- `rejects`: `Reject`s built by a parser for rows it could not parse, written beside the loader's own; read only
  after `batches` is exhausted, so a streaming parser can pass the list it fills while being read.
- Parked rows (`ForeignKey(on_missing="park")`) wait in `<schema>.pending` and are retried on every later merge
  into the same table by the same tenant (the tenants of the input rows, the slice and the parse rejects; a load
  that names no tenant, such as `load(conn, spec, [], mode="merge")`, retries every tenant's); they load once
  their parent exists. A parent in the same input as its child (a self-referencing key) is not seen: the child is
  parked or rejected.
"""

import io
import itertools
import json
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import Connection, sql
from psycopg.errors import DataError, LockNotAvailable, UniqueViolation
from psycopg.types.json import Jsonb

from ingestion_platform.warehouse import binary_copy
from ingestion_platform.warehouse.schema import TableSpec, ensure_table, pending_spec

type Batch = pa.RecordBatch | pa.Table | pd.DataFrame
Mode = Literal["merge", "replace"]

_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed", batch_size=8192)
_ORDINAL = "_ingest_ordinal"
_ERROR = "_ingest_error"
_ERROR_COLUMN = "_ingest_column"
_PARK = "_ingest_park"
_PARKED_AT = "_ingest_parked_at"
_SOURCE = "_ingest_source"
_LINE = "_ingest_line"
_META = (_ORDINAL, _ERROR, _ERROR_COLUMN, _PARK, _PARKED_AT, _SOURCE, _LINE)
# MERGE ... RETURNING merge_action() arrived in PostgreSQL 17; older servers get INSERT ... ON CONFLICT.
MERGE_MIN_SERVER_VERSION = 170000
# pg_input_is_valid / pg_input_error_info, which check staged text row by row, arrived in PostgreSQL 16.
MIN_SERVER_VERSION = 160000

WORK_MEM = "256MB"
TEMP_BUFFERS = "256MB"
# Below this many staged rows, a load into an empty table maintains its indexes row by row: dropping and building
# them costs catalog changes and a full index build, which only pays off on large inputs.
REBUILD_INDEXES_MIN_ROWS = 10_000

_INT_RANGES = {"smallint": 16, "integer": 32, "bigint": 64}
# What a jsonb value must look like at its ends (JSON's grammar, after JSON whitespace): a value that does not match
# is certainly not JSON, so it is marked as a reject in Arrow, before COPY. Values that match may still be invalid
# ("{not: json}"): the casts in the merge find those.
_JSON_SHAPE = r'^[ \t\n\r]*(?:\{(?s:.*)\}|\[(?s:.*)\]|"(?s:.*)"|-?[0-9](?s:.*[0-9])?|true|false|null)[ \t\n\r]*$'
# The reason recorded for such a value until the move to `<table>_rejects` asks PostgreSQL for its own message.
_NOT_JSON = "invalid input syntax for type json"


@dataclass(frozen=True)
class Reject:
    """A row a parser could not turn into columns (wrong field count, undecodable line): quarantined as is."""

    line_number: int | None
    reason: str
    raw: Mapping[str, Any]
    column: str | None = None
    tenant_id: str | None = None


@dataclass(frozen=True)
class LoadResult:
    table: str
    mode: Mode
    rows_staged: int
    inserted: int
    updated: int
    deleted: int
    duplicates_in_input: int
    bytes_copied: int
    seconds: float
    added_columns: tuple[str, ...] = ()
    rejected: int = 0
    parked: int = 0
    unparked: int = 0
    pending: int = 0
    oldest_pending_seconds: float | None = None
    tombstoned: int = 0
    transaction_seconds: float = 0.0


def _staged_type(arrow_type: pa.DataType, target: str) -> str:
    """The staging column type: the target's where no value of `arrow_type` can fail against it, else text."""
    if target == "text":
        return "text"
    if target in _INT_RANGES:
        if pa.types.is_signed_integer(arrow_type):
            return target if arrow_type.bit_width <= _INT_RANGES[target] else "text"
        if pa.types.is_unsigned_integer(arrow_type):
            return target if arrow_type.bit_width < _INT_RANGES[target] else "text"
        return "text"
    if target == "double precision":
        return target if pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type) else "text"
    if target == "numeric":
        return target if pa.types.is_integer(arrow_type) or pa.types.is_decimal(arrow_type) else "text"
    if target == "boolean":
        return target if pa.types.is_boolean(arrow_type) else "text"
    if target == "date":
        return target if pa.types.is_date(arrow_type) else "text"
    if target in ("timestamptz", "timestamp"):
        return target if pa.types.is_timestamp(arrow_type) else "text"
    return "text"  # jsonb, uuid, text[], numeric(p,s): always checked in SQL


def _pg_array_literal(values: list[str | None] | None) -> str | None:
    if values is None:
        return None
    parts = []
    for v in values:
        if v is None:
            parts.append("NULL")
        else:
            parts.append('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


def _as_text(column: pa.ChunkedArray | pa.Array) -> pa.Array | pa.ChunkedArray:
    """A column as the text COPY and pg_input_is_valid read; lists become PostgreSQL array literals."""
    arrow_type = column.type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return column
    if isinstance(arrow_type, pa.BaseExtensionType) and arrow_type.extension_name == "arrow.uuid":
        return pa.array([None if u is None else str(u) for u in column.to_pylist()], pa.string())
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pa.array([_pg_array_literal(v) for v in column.to_pylist()], pa.string())
    if pa.types.is_struct(arrow_type) or pa.types.is_map(arrow_type):
        return pa.array([None if v is None else json.dumps(v, default=str) for v in column.to_pylist()])
    return pc.cast(column, pa.string())


def _frame_to_arrow(frame: pd.DataFrame, spec: TableSpec) -> pa.Table:
    frame = frame.copy(deep=False)
    for col in frame.columns:
        if col not in spec.column_names or frame[col].dtype != object:
            continue
        pg_type = spec.column(col).type
        if pg_type == "jsonb":
            frame[col] = frame[col].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v))
        elif pg_type == "uuid":
            frame[col] = frame[col].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed Python types in an object column (1 beside "x"): keep each value's text and let SQL judge it.
        for col in frame.columns:
            if frame[col].dtype == object and (col not in spec.column_names or spec.column(col).type != "text[]"):
                frame[col] = frame[col].map(
                    lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                )
        return pa.Table.from_pandas(frame, preserve_index=False)


def _to_arrow(batch: Batch, spec: TableSpec) -> pa.Table:
    if isinstance(batch, pd.DataFrame):
        table = _frame_to_arrow(batch, spec)
    elif isinstance(batch, pa.RecordBatch):
        table = pa.Table.from_batches([batch])
    else:
        table = batch
    unknown = [c for c in table.column_names if c not in spec.column_names]
    if unknown:
        raise ValueError(
            f"{spec.qualified_name}: input has undeclared columns {unknown}; declare them in the TableSpec"
        )
    nested = [
        f.name
        for f in table.schema
        if pa.types.is_nested(f.type) and spec.column(f.name).type not in ("text[]", "jsonb")
    ]
    if nested:
        raise ValueError(f"{spec.qualified_name}: columns {nested} are nested; serialise them to JSON text for jsonb")
    return table


@dataclass(frozen=True)
class _Plan:
    """Staging columns (input order) and their staging types, fixed by the first batch."""

    columns: list[str]
    staged: dict[str, str]
    arrow_types: dict[str, pa.DataType]


@dataclass(frozen=True)
class _Chunk:
    rows: int
    marked: int
    tenants: frozenset[str | None]
    data: memoryview


def _mark(error: Any, error_column: Any, failing: Any, reason: str, name: str) -> tuple[Any, Any]:
    first = pc.and_(failing, pc.is_null(error))
    return pc.if_else(first, pa.scalar(reason), error), pc.if_else(first, pa.scalar(name), error_column)


def _prepare(table: pa.Table, plan: _Plan, spec: TableSpec) -> pa.Table:
    """Order and type a batch like the first one; mark rows with NUL bytes (COPY refuses them), NULLs in NOT NULL
    columns and jsonb values that cannot be JSON as rejects here, where Arrow's null counts, a memchr and one
    regular expression make it nearly free (the merge then needs no pass to find them)."""
    if table.column_names != plan.columns:
        if set(table.column_names) != set(plan.columns):
            raise ValueError(f"{spec.qualified_name}: all batches must have the same columns as the first")
        table = table.select(plan.columns)
    arrays: list[Any] = []
    error = pa.nulls(table.num_rows, pa.string())
    error_column = pa.nulls(table.num_rows, pa.string())
    for name in plan.columns:
        column = table.column(name)
        if plan.staged[name] == "text":
            column = _as_text(column)
        elif column.type != plan.arrow_types[name]:
            column = pc.cast(column, plan.arrow_types[name])
        if not spec.column(name).nullable and column.null_count:
            reason = f'null value in column "{name}" violates not-null constraint'
            error, error_column = _mark(error, error_column, pc.is_null(column), reason, name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            has_nul = pc.fill_null(pc.match_substring(column, "\x00"), False)
            if pc.any(has_nul).as_py():
                column = pc.replace_substring(column, "\x00", "\ufffd")
                reason = "value contains a NUL byte (shown as U+FFFD)"
                error, error_column = _mark(error, error_column, has_nul, reason, name)
        if spec.column(name).type == "jsonb" and column.null_count < len(column):
            not_json = pc.invert(pc.fill_null(pc.match_substring_regex(column, _JSON_SHAPE), True))
            if pc.any(not_json).as_py():
                error, error_column = _mark(error, error_column, not_json, _NOT_JSON, name)
        arrays.append(column)
    return pa.Table.from_arrays([*arrays, error, error_column], names=[*plan.columns, _ERROR, _ERROR_COLUMN])


def _encode(first: pa.Table, rest: Iterator[Batch], plan: _Plan, spec: TableSpec) -> Iterator[_Chunk]:
    """Encode batches for binary COPY one ahead of the COPY, in a worker thread.

    Arrow's kernels and psycopg's socket writes both release the GIL, so encoding batch k+1 (and pulling it from
    the source, e.g. a BigQuery page) overlaps with sending batch k; memory stays at two encoded batches. The
    encoded bytes go to COPY as a view of Arrow's buffer, never copied again.
    """
    pending_tables: Iterator[pa.Table] = itertools.chain([first], (_to_arrow(b, spec) for b in rest))
    staged = [*(plan.staged[c] for c in plan.columns), "text", "text", "bigint"]  # _ERROR, _ERROR_COLUMN, _ORDINAL
    # Input ordinals (1-based) are numbered here rather than by an identity column: a million nextval() calls cost
    # the server about half a second, numpy's arange nothing.
    first_ordinal = 1

    def next_chunk() -> _Chunk | None:
        nonlocal first_ordinal
        for table in pending_tables:
            if table.num_rows == 0:
                continue
            prepared = _prepare(table, plan, spec)
            ordinal = pa.array(np.arange(first_ordinal, first_ordinal + table.num_rows, dtype=np.int64))
            prepared = prepared.append_column(_ORDINAL, ordinal)
            first_ordinal += table.num_rows
            encoded = binary_copy.encode_rows(prepared, staged)
            marked = table.num_rows - prepared.column(_ERROR).null_count
            tenants = (
                frozenset(pc.unique(pc.cast(table.column("tenant_id"), pa.string())).to_pylist())
                if "tenant_id" in plan.columns
                else frozenset()
            )
            return _Chunk(table.num_rows, marked, tenants, memoryview(encoded))
        return None

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="loader-encode") as pool:
        pending = pool.submit(next_chunk)
        while (chunk := pending.result()) is not None:
            pending = pool.submit(next_chunk)
            yield chunk


class _Stage:
    """SQL fragments over one staging table."""

    def __init__(self, spec: TableSpec, plan: _Plan) -> None:
        self.spec = spec
        self.plan = plan
        self.ident = sql.Identifier(f"_stage_{uuid.uuid4().hex[:12]}_{spec.name}"[:63])
        # Rows staged, rows marked as rejects so far (so clean loads skip the rejects statements), tenants seen.
        self.rows = 0
        self.marked = 0
        self.tenants: set[str | None] = set()
        # Rows `_validate` marked are also copied, as reject rows, into this small table while being marked, so
        # moving them to `<table>_rejects` reads them there instead of scanning the whole stage again.
        self.reject_set = sql.Identifier(f"_rejects_{uuid.uuid4().hex[:12]}")
        self.in_reject_set = 0
        self.exactly_validated = False

    def raw(self, column: str, alias: str = "s") -> sql.Composable:
        return sql.Identifier(alias, column)

    def typed(self, column: str, alias: str = "s") -> sql.Composable:
        """The staged value in the target's type (only valid for rows that passed the checks)."""
        target = self.spec.column(column).type
        if column not in self.plan.staged:
            return sql.SQL("NULL::{}").format(sql.SQL(target))
        if self.plan.staged[column] == target:
            return self.raw(column, alias)
        return sql.SQL("{}::{}").format(self.raw(column, alias), sql.SQL(target))

    def guarded(self, column: str, alias: str = "s") -> sql.Composable:
        """The typed value, or NULL where the text does not parse: safe on rejected rows too."""
        if self.plan.staged.get(column, self.spec.column(column).type) == self.spec.column(column).type:
            return self.typed(column, alias)
        return sql.SQL("CASE WHEN pg_input_is_valid({raw}, {t}) THEN {typed} END").format(
            raw=self.raw(column, alias), t=sql.Literal(self.spec.column(column).type), typed=self.typed(column, alias)
        )

    def good(self, alias: str = "s") -> sql.Composable:
        return sql.SQL("{} IS NULL AND {} IS NULL").format(sql.Identifier(alias, _ERROR), sql.Identifier(alias, _PARK))

    def typed_rows(self) -> sql.Composed:
        """The good rows as the target's types: what merge and replace read."""
        # OFFSET 0 keeps the planner from pushing conditions on the casts below the filter on good rows.
        return sql.SQL("(SELECT {} FROM {} s WHERE {} OFFSET 0)").format(
            sql.SQL(", ").join(sql.SQL("{} AS {}").format(self.typed(c), sql.Identifier(c)) for c in self.plan.columns),
            self.ident,
            self.good(),
        )

    @property
    def meta_array(self) -> sql.Composable:
        return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(map(sql.Literal, _META)))


def _raise_temp_buffers(cur: Any) -> None:
    """Give the session room to keep a large stage in memory, if it has not used temporary tables yet.

    The stage is a temporary table, held in the session's own buffers (`temp_buffers`, 8 MB by default): a larger
    stage is written out to the kernel while it is copied and read back by every later pass (validation, rejects,
    the merge). Measured on 1M GA4-like rows (a 230 MB stage): 5.15 s of server CPU for the load with 256 MB
    against 6.20 s with the default. The buffers are allocated only as the stage grows, so small loads cost
    nothing more. PostgreSQL refuses the setting once the session has touched a temporary table; it then stays,
    like this setting itself, for the (pooled) session's life.
    """
    cur.execute("SELECT pg_my_temp_schema() = 0")
    if cur.fetchone()[0]:
        cur.execute(sql.SQL("SET temp_buffers = {}").format(sql.Literal(TEMP_BUFFERS)))


def _plan_for(table: pa.Table, spec: TableSpec) -> _Plan:
    staged = {f.name: _staged_type(f.type, spec.column(f.name).type) for f in table.schema}
    # numeric has no binary encoder here (its send form is base-10000 digit groups): staged as its exact text.
    staged = {name: t if t in binary_copy.ENCODED_TYPES else "text" for name, t in staged.items()}
    return _Plan(list(table.column_names), staged, {f.name: f.type for f in table.schema})


def _empty_plan(spec: TableSpec) -> _Plan:
    """No input rows: a stage shaped like the target, which parked rows can still be moved through."""
    return _Plan(spec.column_names, {c.name: c.type for c in spec.columns}, {})


def _create_stage(cur: Any, stage: _Stage) -> None:
    """The stage, with the columns every pass filters on first: finding the marked rows among a million then reads
    only the start of each row, not past every variable-width value before them."""
    cols = [
        sql.SQL("{} text").format(sql.Identifier(_ERROR)),
        sql.SQL("{} text").format(sql.Identifier(_PARK)),
        sql.SQL("{} bigint").format(sql.Identifier(_ORDINAL)),
        sql.SQL("{} text").format(sql.Identifier(_ERROR_COLUMN)),
        sql.SQL("{} timestamptz").format(sql.Identifier(_PARKED_AT)),
        sql.SQL("{} text").format(sql.Identifier(_SOURCE)),
        sql.SQL("{} bigint").format(sql.Identifier(_LINE)),
    ] + [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(stage.plan.staged[c])) for c in stage.plan.columns]
    cur.execute(sql.SQL("CREATE TEMP TABLE {} ({})").format(stage.ident, sql.SQL(", ").join(cols)))


def _validate(cur: Any, stage: _Stage, *, exact: bool = True) -> None:
    """Mark rows whose text does not parse as the target's type, then rows failing the declared checks.

    One pass over the stage, only over the columns that can fail (staged as text for a non-text target); the rows
    it marks are written to `stage.reject_set` by the same statement. `exact=False` is the cheap first try after a
    failed unchecked attempt: a jsonb column is checked with `IS JSON`, a lexer pass at about a fifth of the cost
    of building each jsonb value, and finds every value that is not JSON at all (the usual bad value). The few
    that are JSON but not jsonb (a `\\u0000` escape, a number beyond numeric) make the next attempt fail again, and
    the exact check (`pg_input_is_valid`) runs then.
    """
    spec, plan = stage.spec, stage.plan
    conditions: list[tuple[sql.Composable, sql.Composable, str]] = []
    inexact = False
    for name in plan.columns:
        col = spec.column(name)
        ident = stage.raw(name)
        if plan.staged[name] != col.type:
            if col.type == "jsonb" and not exact:
                inexact = True
                fails = sql.SQL("{c} IS NOT NULL AND NOT ({c} IS JSON)").format(c=ident)
            else:
                fails = sql.SQL("{c} IS NOT NULL AND NOT pg_input_is_valid({c}, {t})").format(
                    c=ident, t=sql.Literal(col.type)
                )
            reason = sql.SQL("(pg_input_error_info({}, {})).message").format(ident, sql.Literal(col.type))
            conditions.append((fails, reason, name))
    if conditions:
        if not stage.in_reject_set:
            cur.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (tenant_id text, source_file text, line_number bigint, "
                    "column_name text, reason text, raw jsonb)"
                ).format(stage.reject_set)
            )
        cur.execute(
            sql.SQL(
                "WITH marked AS (UPDATE {stage} s SET {err} = CASE {reasons} END, {errcol} = CASE {cols} END "
                "WHERE {err} IS NULL AND ({any}) RETURNING {tenant}, s.{src}, {line}, s.{errcol}, s.{err}, "
                "to_jsonb(s) - {meta}) INSERT INTO {reject_set} SELECT * FROM marked"
            ).format(
                stage=stage.ident,
                err=sql.Identifier(_ERROR),
                errcol=sql.Identifier(_ERROR_COLUMN),
                reasons=sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(c, r) for c, r, _ in conditions),
                cols=sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(c, sql.Literal(n)) for c, _, n in conditions),
                any=sql.SQL(" OR ").join(sql.SQL("({})").format(c) for c, _, _ in conditions),
                tenant=_tenant_expr(stage),
                src=sql.Identifier(_SOURCE),
                line=_line_expr(stage),
                meta=stage.meta_array,
                reject_set=stage.reject_set,
            )
        )
        stage.marked += cur.rowcount
        stage.in_reject_set += cur.rowcount
    stage.exactly_validated = not inexact
    if not stage.exactly_validated:
        return  # declared checks read typed values: they wait for the exact pass (specs with checks start there)
    if spec.checks:
        typed = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(stage.typed(c.name), sql.Identifier(c.name)) for c in spec.columns
        )
        failing = [
            (sql.SQL("({}) IS FALSE").format(sql.SQL(expr)), sql.Literal(f"check {name} failed: {expr}"))  # type: ignore[arg-type]
            for name, expr in spec.checks.items()
        ]
        cur.execute(
            sql.SQL(
                "UPDATE {stage} s SET {err} = b.reason FROM (SELECT {ord}, CASE {reasons} END AS reason "
                "FROM (SELECT s.{ord}, {typed} FROM {stage} s WHERE s.{err} IS NULL OFFSET 0) t WHERE {any}) b "
                "WHERE s.{ord} = b.{ord}"
            ).format(
                stage=stage.ident,
                err=sql.Identifier(_ERROR),
                ord=sql.Identifier(_ORDINAL),
                typed=typed,
                reasons=sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(c, r) for c, r in failing),
                any=sql.SQL(" OR ").join(c for c, _ in failing),
            )
        )
        stage.marked += cur.rowcount


def _has_duplicate_keys(cur: Any, stage: _Stage) -> bool:
    cur.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} s WHERE {} GROUP BY {} HAVING count(*) > 1)").format(
            stage.ident, stage.good(), sql.SQL(", ").join(stage.typed(k) for k in stage.spec.key)
        )
    )
    return bool(cur.fetchone()[0])


def _drop_duplicate_keys(cur: Any, stage: _Stage) -> int:
    """Keep the last occurrence (highest ordinal) of each key among the good rows; parked rows come first."""
    spec = stage.spec
    keys = [stage.typed(k) for k in spec.key]
    key = sql.SQL(", ").join(keys)
    if not _has_duplicate_keys(cur, stage):
        return 0
    cur.execute(
        sql.SQL(
            "DELETE FROM {stage} d USING (SELECT {key_as}, max({ord}) AS keep FROM {stage} s WHERE {good} "
            "GROUP BY {key} HAVING count(*) > 1) k WHERE {match} AND d.{ord} <> k.keep AND {d_good}"
        ).format(
            stage=stage.ident,
            key_as=sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(e, sql.Identifier(f"k{i}")) for i, e in enumerate(keys)
            ),
            key=key,
            ord=sql.Identifier(_ORDINAL),
            good=stage.good(),
            match=sql.SQL(" AND ").join(
                sql.SQL("{} = k.{}").format(stage.typed(k, "d"), sql.Identifier(f"k{i}"))
                for i, k in enumerate(spec.key)
            ),
            d_good=stage.good("d"),
        )
    )
    return cur.rowcount


def _join_columns(stage: _Stage) -> sql.Composable:
    """The columns plans join or filter on: statistics on the rest would cost time and change no plan."""
    spec = stage.spec
    wanted = [*spec.key, *(c for fk in spec.foreign_keys for c in fk.columns), _ERROR]
    present = [c for c in dict.fromkeys(wanted) if c in stage.plan.columns or c == _ERROR]
    return sql.SQL(", ").join(map(sql.Identifier, present))


def _slice_predicate(spec: TableSpec, slice_: Mapping[str, Sequence[Any]], alias: str | None = None) -> sql.Composable:
    parts = []
    for col in slice_:
        spec.column(col)
        ident = sql.Identifier(alias, col) if alias else sql.Identifier(col)
        parts.append(sql.SQL("{} = ANY({})").format(ident, sql.Placeholder(col)))
    return sql.SQL(" AND ").join(parts)


def _copy(cur: Any, stage: _Stage, chunks: Iterator[_Chunk]) -> tuple[int, int]:
    rows = copied = 0
    copy_stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        stage.ident, sql.SQL(", ").join(map(sql.Identifier, [*stage.plan.columns, _ERROR, _ERROR_COLUMN, _ORDINAL]))
    )
    with cur.copy(copy_stmt) as copy:
        copy.write(binary_copy.SIGNATURE)
        for chunk in chunks:
            copy.write(chunk.data)
            stage.marked += chunk.marked
            stage.tenants |= chunk.tenants
            rows += chunk.rows
            copied += chunk.data.nbytes
            chunk.data.release()
        copy.write(binary_copy.TRAILER)
    stage.rows = rows
    return rows, copied


def _stage_deletes(cur: Any, spec: TableSpec, deleted_keys: Iterable[Batch]) -> sql.Identifier | None:
    """COPY the deleted keys into their own temporary table (typed as the target's key: a bad key fails the load)."""
    ident = sql.Identifier(f"_deleted_{uuid.uuid4().hex[:12]}")
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {} ({})").format(
            ident,
            sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(spec.column(k).type)) for k in spec.key
            ),
        )
    )
    copy_stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        ident, sql.SQL(", ").join(map(sql.Identifier, spec.key))
    )
    with cur.copy(copy_stmt) as copy:
        for batch in deleted_keys:
            table = _to_arrow(batch, spec)
            missing = [k for k in spec.key if k not in table.column_names]
            if missing:
                raise ValueError(f"{spec.qualified_name}: deleted keys lack key columns {missing}")
            buffer = io.BytesIO()
            pa_csv.write_csv(table.select(list(spec.key)), buffer, _CSV_OPTIONS)
            copy.write(buffer.getbuffer())
    return ident


def load(
    conn: Connection,
    spec: TableSpec,
    batches: Iterable[Batch],
    *,
    mode: Mode,
    slice_: Mapping[str, Sequence[Any]] | None = None,
    source: str | None = None,
    deleted_keys: Iterable[Batch] | None = None,
    rejects: Iterable[Reject] = (),
) -> LoadResult:
    """Stage `batches`, quarantine bad rows, then change the target in one short transaction (see the module doc)."""
    started = time.perf_counter()
    if mode == "merge" and not spec.key:
        raise ValueError(f"{spec.qualified_name}: merge needs a declared key")
    if mode == "replace" and not slice_:
        raise ValueError(f"{spec.qualified_name}: replace needs a slice (column -> values) to delete")
    if deleted_keys is not None and not spec.key:
        raise ValueError(f"{spec.qualified_name}: deletes need a declared key")
    if not conn.autocommit:
        raise ValueError("load needs an autocommit connection: staging must run outside any transaction")
    if conn.info.server_version < MIN_SERVER_VERSION:
        raise RuntimeError(
            f"the loader needs PostgreSQL 16 or newer (pg_input_is_valid); server is {conn.info.server_version}"
        )
    added = ensure_table(conn, spec)
    source_iter = iter(batches)
    first: pa.Table | None = None
    for batch in source_iter:
        table = _to_arrow(batch, spec)
        if table.num_rows:
            first = table
            break
    plan = _plan_for(first, spec) if first is not None else _empty_plan(spec)
    if first is not None:
        missing = [c.name for c in spec.columns if not c.nullable and c.name not in plan.columns]
        if missing:
            raise ValueError(f"{spec.qualified_name}: input lacks required columns {missing}")
        if mode == "merge":
            missing_key = [k for k in spec.key if k not in plan.columns]
            if missing_key:
                raise ValueError(f"{spec.qualified_name}: input lacks key columns {missing_key}")
        if slice_:
            outside_cols = [c for c in slice_ if c not in plan.columns]
            if outside_cols:
                raise ValueError(f"{spec.qualified_name}: input lacks the slice columns {outside_cols}")
    stage = _Stage(spec, plan)
    deleted_ident: sql.Identifier | None = None
    with conn.cursor() as cur:
        try:
            cur.execute("SET TIME ZONE 'UTC'")
            # Duplicate detection and the merge's join hash the whole stage; the default 4 MB spills to disk.
            cur.execute(sql.SQL("SET work_mem = {}").format(sql.Literal(WORK_MEM)))
            _raise_temp_buffers(cur)
            _create_stage(cur, stage)
            rows = copied = 0
            if first is not None:
                rows, copied = _copy(cur, stage, _encode(first, source_iter, plan, spec))
            if deleted_keys is not None:
                deleted_ident = _stage_deletes(cur, spec, deleted_keys)
            parse_rejects = list(rejects)  # read after the batches: a streaming parser fills it as it goes
            outcome: dict[str, Any] | None = None
            duplicates = 0
            transaction_started = time.perf_counter()
            unchecked = _unchecked_upsert(cur, stage, mode) if rows else None
            if unchecked is not None:
                args = (slice_, source, deleted_ident, parse_rejects)
                attempt = _apply_unchecked(conn, cur, stage, unchecked, *args)
                # Mark the bad values and try again: they are the only thing that failed. The cheap check first;
                # if a value it cannot see still fails, the exact one.
                for exact in (False, True):
                    if attempt != "bad values" or stage.exactly_validated:
                        break
                    _validate(cur, stage, exact=exact)
                    attempt = _apply_unchecked(conn, cur, stage, unchecked, *args)
                outcome = attempt if isinstance(attempt, dict) else None
            if outcome is None:
                if not stage.exactly_validated:
                    _validate(cur, stage)
                # Temporary tables are never auto-analyzed; without statistics the planner cannot choose between a
                # hash join and index probes into a large target, nor hash the duplicate-key check.
                cur.execute(sql.SQL("ANALYZE {} ({})").format(stage.ident, _join_columns(stage)))
                duplicates = _drop_duplicate_keys(cur, stage) if mode == "merge" else 0
                transaction_started = time.perf_counter()
                with conn.transaction():
                    outcome = _apply(conn, cur, stage, mode, slice_, source, deleted_ident, parse_rejects)
            transaction_seconds = time.perf_counter() - transaction_started
        finally:
            if not conn.closed and conn.info.transaction_status == 0:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(stage.ident, stage.reject_set))
                if deleted_ident is not None:
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(deleted_ident))
                cur.execute("RESET TIME ZONE; RESET work_mem")
    return LoadResult(
        table=spec.qualified_name,
        mode=mode,
        rows_staged=rows,
        inserted=outcome["inserted"],
        updated=outcome["updated"],
        deleted=outcome["deleted"],
        duplicates_in_input=duplicates + outcome["duplicates"],
        bytes_copied=copied,
        seconds=time.perf_counter() - started,
        added_columns=tuple(added),
        rejected=outcome["rejected"],
        parked=outcome["parked"],
        unparked=outcome["unparked"],
        pending=outcome["pending"],
        oldest_pending_seconds=outcome["oldest_pending_seconds"],
        tombstoned=outcome["tombstoned"],
        transaction_seconds=transaction_seconds,
    )


Unchecked = Literal["insert", "merge"]


def _unchecked_upsert(cur: Any, stage: _Stage, mode: Mode) -> Unchecked | None:
    """How a merge can be tried before any of the staged rows' values are checked, if it can.

    Checking staged text costs a full pass per load (`pg_input_is_valid` parses every value, and the merge
    parses it again to cast it), and finding repeated keys costs another; clean input, the usual case, needs
    neither. So the merge is first tried as is, in its transaction: a value that does not parse makes a cast fail
    (SQLSTATE class 22) and the attempt rolls back, costing at most one rolled-back statement. Into an empty
    target the upsert is a plain INSERT (no join, no RETURNING) whose primary key detects repeated keys
    (UniqueViolation); into a stored table the keys are checked for repeats first, which needs keys staged in
    their own type (text keys could spell one key two ways, "1" and "01"). Declared checks are evaluated on
    staged rows before the transaction, on values already checked: such specs take the checked path.
    """
    spec = stage.spec
    if mode != "merge" or spec.checks:
        return None
    if spec.foreign_keys:  # their checks join the stage with the parents: the planner needs statistics
        cur.execute(sql.SQL("ANALYZE {} ({})").format(stage.ident, _join_columns(stage)))
    cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(spec.ident()))
    if cur.fetchone()[0]:
        return "insert"
    if any(stage.plan.staged[k] != spec.column(k).type for k in spec.key):
        return None
    if not spec.foreign_keys:
        cur.execute(sql.SQL("ANALYZE {} ({})").format(stage.ident, _join_columns(stage)))
    return None if _has_duplicate_keys(cur, stage) else "merge"


def _apply_unchecked(
    conn: Connection,
    cur: Any,
    stage: _Stage,
    unchecked: Unchecked,
    slice_: Mapping[str, Sequence[Any]] | None,
    source: str | None,
    deleted_ident: sql.Identifier | None,
    parse_rejects: list[Reject],
) -> dict[str, Any] | Literal["bad values", "repeated keys"]:
    """`_apply` before the values are checked; on failure nothing changed, and the reason is returned."""
    marked = stage.marked
    try:
        with conn.transaction():
            return _apply(conn, cur, stage, "merge", slice_, source, deleted_ident, parse_rejects, unchecked=unchecked)
    except DataError:
        reason: Literal["bad values", "repeated keys"] = "bad values"
    except UniqueViolation:
        # Repeated keys in the input, or a concurrent load that inserted one of them first.
        reason = "repeated keys"
    # The transaction rolled back, and with it the stage's marks from foreign key checks.
    stage.marked = marked
    return reason


def _apply(
    conn: Connection,
    cur: Any,
    stage: _Stage,
    mode: Mode,
    slice_: Mapping[str, Sequence[Any]] | None,
    source: str | None,
    deleted_ident: sql.Identifier | None,
    parse_rejects: list[Reject],
    *,
    unchecked: Unchecked | None = None,
) -> dict[str, Any]:
    """The one short transaction: everything that reads or writes the target and its side tables.

    `unchecked`: the staged values were not checked (see `_unchecked_upsert`), and "insert" makes the merge a
    plain INSERT; a value that does not parse raises DataError, a repeated key UniqueViolation, and the caller's
    transaction rolls back.
    """
    spec = stage.spec
    out: dict[str, Any] = dict.fromkeys(("inserted", "updated", "deleted", "duplicates", "tombstoned"), 0)
    out |= {"unparked": 0, "parked": 0, "pending": 0, "oldest_pending_seconds": None}
    pending = sql.Identifier(spec.schema, pending_spec(spec.schema).name)
    scope = _pending_scope(stage, slice_, parse_rejects)
    if spec.parks and mode == "merge":  # a replace refuses rows outside its slice, which parked rows may be
        out["unparked"] = _unpark(cur, stage, pending, scope)
        if out["unparked"]:
            out["duplicates"] = _drop_duplicate_keys(cur, stage)
    _check_foreign_keys(cur, stage)
    out["rejected"] = _move_rejects(cur, stage, source, slice_, parse_rejects)
    if spec.parks:
        out["parked"], out["pending"], out["oldest_pending_seconds"] = _park(cur, stage, pending, source, scope)
    if mode == "merge" and unchecked == "insert":
        out["inserted"] = _insert_good_rows(conn, cur, stage)
        if slice_:
            deleted, tombstoned = _remove_absent(cur, stage, slice_)
            out["deleted"] += deleted
            out["tombstoned"] += tombstoned
    elif mode == "merge":
        out["inserted"], out["updated"] = _merge(conn, cur, stage)
        if slice_:
            deleted, tombstoned = _remove_absent(cur, stage, slice_)
            out["deleted"] += deleted
            out["tombstoned"] += tombstoned
    else:
        assert slice_ is not None
        out["inserted"], out["deleted"] = _replace(cur, stage, slice_)
    if deleted_ident is not None:
        deleted, tombstoned = _apply_deletes(cur, spec, deleted_ident)
        out["deleted"] += deleted
        out["tombstoned"] += tombstoned
    return out


def _pending_scope(
    stage: _Stage, slice_: Mapping[str, Sequence[Any]] | None, parse_rejects: list[Reject]
) -> tuple[sql.Composable, tuple[Any, ...]]:
    """The parked rows this load may retry and count: its table's, and of a tenant-keyed table only the tenants
    the load brings (input rows, the slice, parse rejects), so one tenant's load never pays for, locks or loads
    another tenant's parked rows. A load that names no tenant at all (no rows, no slice) retries every tenant's:
    that is the explicit "retry what is parked" call."""
    if "tenant_id" not in stage.spec.column_names:
        return sql.SQL("table_name = %s"), (stage.spec.name,)
    tenants = stage.tenants | {r.tenant_id for r in parse_rejects}
    tenants |= {str(t) for t in (slice_ or {}).get("tenant_id", [])}
    if not tenants:
        return sql.SQL("table_name = %s"), (stage.spec.name,)
    return (
        sql.SQL("table_name = %s AND (tenant_id = ANY(%s) OR (tenant_id IS NULL AND %s))"),
        (stage.spec.name, sorted(t for t in tenants if t is not None), None in tenants),
    )


def _unpark(cur: Any, stage: _Stage, pending: sql.Identifier, scope: tuple[sql.Composable, tuple[Any, ...]]) -> int:
    """Move the parked rows in `scope` back into the stage, before the new rows (lower ordinals: new rows win)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, stage.plan.columns))
    where, params = scope
    cur.execute(
        sql.SQL(
            "WITH moved AS (DELETE FROM {pending} WHERE {where} RETURNING raw, parked_at, source_file, "
            "line_number) INSERT INTO {stage} ({cols}, {ord}, {parked_at}, {source}, {line}) "
            "SELECT {r_cols}, -row_number() OVER (), m.parked_at, m.source_file, m.line_number "
            "FROM moved m, jsonb_populate_record(NULL::{stage}, m.raw) r"
        ).format(
            pending=pending,
            where=where,
            stage=stage.ident,
            cols=cols,
            ord=sql.Identifier(_ORDINAL),
            parked_at=sql.Identifier(_PARKED_AT),
            source=sql.Identifier(_SOURCE),
            line=sql.Identifier(_LINE),
            r_cols=sql.SQL(", ").join(sql.Identifier("r", c) for c in stage.plan.columns),
        ),
        params,
    )
    return cur.rowcount


def _check_foreign_keys(cur: Any, stage: _Stage) -> None:
    """Mark good rows whose parent is missing: rejected, or parked where the foreign key says so.

    Runs inside the transaction, so a parent committed a moment ago counts; the constraint itself still guards
    against a parent deleted between this check and the insert (the load fails and is retried).
    """
    for fk in stage.spec.foreign_keys:
        if not all(c in stage.plan.columns for c in fk.columns):
            continue
        name = fk.constraint_name(stage.spec.name)
        action = (
            sql.SQL("{} = {}").format(sql.Identifier(_PARK), sql.Literal(name))
            if fk.on_missing == "park"
            else sql.SQL("{} = {}, {} = {}").format(
                sql.Identifier(_ERROR),
                sql.Literal(f"foreign key {name}: no {fk.references} row with this {', '.join(fk.ref_columns)}"),
                sql.Identifier(_ERROR_COLUMN),
                sql.Literal(fk.columns[-1]),
            )
        )
        cur.execute(
            sql.SQL(
                "UPDATE {stage} s SET {action} WHERE {good} AND {not_null} "
                "AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {match})"
            ).format(
                stage=stage.ident,
                action=action,
                good=stage.good(),
                not_null=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(stage.raw(c)) for c in fk.columns),
                parent=sql.Identifier(*fk.parent),
                match=sql.SQL(" AND ").join(
                    sql.SQL("p.{} = {}").format(sql.Identifier(r), stage.typed(c))
                    for c, r in zip(fk.columns, fk.ref_columns, strict=True)
                ),
            )
        )
        if fk.on_missing == "reject":
            stage.marked += cur.rowcount


def _tenant_expr(stage: _Stage) -> sql.Composable:
    return sql.SQL("s.tenant_id::text") if "tenant_id" in stage.plan.columns else sql.SQL("NULL::text")


def _line_expr(stage: _Stage) -> sql.Composable:
    line = stage.spec.line_column
    by_column = stage.guarded(line) if line and line in stage.plan.columns else sql.SQL("NULL")
    return sql.SQL("coalesce(s.{}, ({})::bigint, s.{})").format(
        sql.Identifier(_LINE), by_column, sql.Identifier(_ORDINAL)
    )


def _reason_expr(stage: _Stage) -> sql.Composable:
    """A staged row's reject reason: for jsonb values marked in Arrow as not JSON, PostgreSQL's own message."""
    err, errcol = sql.Identifier("s", _ERROR), sql.Identifier("s", _ERROR_COLUMN)
    jsonb = [c for c in stage.plan.columns if stage.spec.column(c).type == "jsonb"]
    if not jsonb:
        return err
    return sql.SQL("coalesce(CASE WHEN {err} = {placeholder} THEN CASE {errcol} {whens} END END, {err})").format(
        err=err,
        placeholder=sql.Literal(_NOT_JSON),
        errcol=errcol,
        whens=sql.SQL(" ").join(
            sql.SQL("WHEN {} THEN (pg_input_error_info({}, 'jsonb')).message").format(sql.Literal(c), stage.raw(c))
            for c in jsonb
        ),
    )


def _move_rejects(
    cur: Any,
    stage: _Stage,
    source: str | None,
    slice_: Mapping[str, Sequence[Any]] | None,
    parse_rejects: list[Reject],
) -> int:
    rejects = stage.spec.rejects.ident()
    if source is not None:
        # A reload of the same source replaces the rejects an earlier load of it recorded, per tenant.
        if "tenant_id" in stage.spec.column_names:
            tenants = stage.tenants | {r.tenant_id for r in parse_rejects}
            tenants |= {str(t) for t in (slice_ or {}).get("tenant_id", [])}
            cur.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE source_file = %s AND (tenant_id = ANY(%s) OR (tenant_id IS NULL AND %s))"
                ).format(rejects),
                (source, [t for t in tenants if t is not None], None in tenants),
            )
        else:
            cur.execute(sql.SQL("DELETE FROM {} WHERE source_file = %s").format(rejects), (source,))
    moved = 0
    if stage.marked == stage.in_reject_set and stage.in_reject_set:
        # Every marked row was marked by `_validate`, which kept a copy: no scan of the stage.
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (tenant_id, source_file, line_number, column_name, reason, raw, loaded_at) "
                "SELECT tenant_id, coalesce(source_file, %s), line_number, column_name, reason, raw, now() FROM {}"
            ).format(rejects, stage.reject_set),
            (source,),
        )
        moved = cur.rowcount
    elif stage.marked:  # a clean load skips the scan for rejects
        cur.execute(
            sql.SQL(
                "INSERT INTO {rejects} (tenant_id, source_file, line_number, column_name, reason, raw, loaded_at) "
                "SELECT {tenant}, coalesce(s.{src}, %s), {line}, s.{errcol}, {reason}, to_jsonb(s) - {meta}, now() "
                "FROM {stage} s WHERE s.{err} IS NOT NULL"
            ).format(
                rejects=rejects,
                tenant=_tenant_expr(stage),
                src=sql.Identifier(_SOURCE),
                line=_line_expr(stage),
                errcol=sql.Identifier(_ERROR_COLUMN),
                reason=_reason_expr(stage),
                err=sql.Identifier(_ERROR),
                meta=stage.meta_array,
                stage=stage.ident,
            ),
            (source,),
        )
        moved = cur.rowcount
    if parse_rejects:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (tenant_id, source_file, line_number, column_name, reason, raw, loaded_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, now())"
            ).format(rejects),
            [(r.tenant_id, source, r.line_number, r.column, r.reason, Jsonb(dict(r.raw))) for r in parse_rejects],
        )
    return moved + len(parse_rejects)


def _park(
    cur: Any,
    stage: _Stage,
    pending: sql.Identifier,
    source: str | None,
    scope: tuple[sql.Composable, tuple[Any, ...]],
) -> tuple[int, int, float | None]:
    """Park the rows marked for it; return (parked now, pending in `scope`, age of the oldest in `scope`)."""
    fks = {fk.constraint_name(stage.spec.name): fk for fk in stage.spec.foreign_keys}
    parked = 0
    for name, fk in fks.items():
        if fk.on_missing != "park":
            continue
        cur.execute(
            sql.SQL(
                "INSERT INTO {pending} (table_name, tenant_id, foreign_key, parent, source_file, line_number, raw, "
                "parked_at) SELECT %s, {tenant}, %s, jsonb_build_object({parent}), coalesce(s.{src}, %s), {line}, "
                "to_jsonb(s) - {meta}, coalesce(s.{parked_at}, now()) FROM {stage} s "
                "WHERE s.{park} = %s AND s.{err} IS NULL"
            ).format(
                pending=pending,
                tenant=_tenant_expr(stage),
                parent=sql.SQL(", ").join(
                    sql.SQL("{}, {}").format(sql.Literal(r), stage.raw(c))
                    for c, r in zip(fk.columns, fk.ref_columns, strict=True)
                ),
                src=sql.Identifier(_SOURCE),
                line=_line_expr(stage),
                meta=stage.meta_array,
                parked_at=sql.Identifier(_PARKED_AT),
                stage=stage.ident,
                park=sql.Identifier(_PARK),
                err=sql.Identifier(_ERROR),
            ),
            (stage.spec.name, name, source, name),
        )
        parked += cur.rowcount
    where, params = scope
    cur.execute(
        sql.SQL("SELECT count(*), extract(epoch FROM now() - min(parked_at)) FROM {} WHERE {}").format(pending, where),
        params,
    )
    total, oldest = cur.fetchone()
    return parked, int(total), None if oldest is None else float(oldest)


def _merge(conn: Connection, cur: Any, stage: _Stage) -> tuple[int, int]:
    cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} s WHERE {})").format(stage.ident, stage.good()))
    if not cur.fetchone()[0]:
        return 0, 0
    statements = _merge_statements(stage, with_merge=conn.info.server_version >= MERGE_MIN_SERVER_VERSION)
    return _first_that_works(conn, cur, statements)


def _insert_good_rows(conn: Connection, cur: Any, stage: _Stage) -> int:
    """The good rows into the target with one INSERT: no join, no RETURNING; a repeated key raises UniqueViolation.

    A large load into a table that is still empty builds the table's indexes after the INSERT instead of
    maintaining them row by row, where the loading role may (see `_indexes_to_rebuild`): measured on 1M GA4-like
    rows, inserting with the primary key cost 4.8-5.5 s of server CPU, inserting without it and then adding it
    3.0-3.5 s. A repeated key then fails the index build with the same UniqueViolation.
    """
    rebuild = _indexes_to_rebuild(conn, cur, stage.spec) if stage.rows >= REBUILD_INDEXES_MIN_ROWS else []
    for drop, _ in rebuild:
        cur.execute(drop)
    cols = sql.SQL(", ").join(map(sql.Identifier, stage.plan.columns))
    cur.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} s").format(stage.spec.ident(), cols, cols, stage.typed_rows())
    )
    inserted = int(cur.rowcount)
    for _, create in rebuild:
        cur.execute(create)
    return inserted


def _indexes_to_rebuild(conn: Connection, cur: Any, spec: TableSpec) -> list[tuple[sql.Composable, sql.Composable]]:
    """(drop, create) statements for the target's indexes, if they can be built after the insert, else none.

    Only where the loading role owns the table (the least-privilege role does not: it maintains them), no foreign
    key of another table depends on them, and, under an ACCESS EXCLUSIVE lock taken without waiting (a reader or
    a concurrent load holding any lock on the table keeps the ordinary path), the table is still empty. Each index
    is recreated from the catalog's own definition, constraints under their names, so the table ends exactly as
    declared; all of it inside the load's transaction, which a failure rolls back whole.
    """
    cur.execute(
        sql.SQL(
            "SELECT pg_has_role(c.relowner, 'USAGE') AND NOT EXISTS (SELECT 1 FROM pg_constraint f "
            "WHERE f.confrelid = c.oid AND f.contype = 'f') FROM pg_class c WHERE c.oid = {}::regclass"
        ).format(sql.Literal(spec.qualified_name))
    )
    if not cur.fetchone()[0]:
        return []
    try:
        with conn.transaction():
            cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE NOWAIT").format(spec.ident()))
    except LockNotAvailable:
        return []
    cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(spec.ident()))
    if cur.fetchone()[0]:
        return []
    cur.execute(
        sql.SQL(
            "SELECT ic.relname, pg_get_indexdef(i.indexrelid), con.conname, pg_get_constraintdef(con.oid) "
            "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid LEFT JOIN pg_constraint con "
            "ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid WHERE i.indrelid = {}::regclass "
            "ORDER BY con.conname IS NULL"
        ).format(sql.Literal(spec.qualified_name))
    )
    statements: list[tuple[sql.Composable, sql.Composable]] = []
    for index, index_def, constraint, constraint_def in cur.fetchall():
        if constraint is None:
            drop = sql.SQL("DROP INDEX {}").format(sql.Identifier(spec.schema, index))
            statements.append((drop, sql.SQL(index_def)))
        else:
            name = sql.Identifier(constraint)
            drop = sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(spec.ident(), name)
            create = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(spec.ident(), name, sql.SQL(constraint_def))
            statements.append((drop, create))
    return statements


def _first_that_works(conn: Connection, cur: Any, statements: list[sql.Composed]) -> tuple[int, int]:
    """Run the preferred upsert in a savepoint; a concurrent insert of the same key (UniqueViolation, which MERGE
    does not guard against) falls back to the next statement, ON CONFLICT, which does."""
    for statement in statements[:-1]:
        try:
            with conn.transaction():
                cur.execute(statement)
                return cur.fetchone()
        except UniqueViolation:
            continue
    with conn.transaction():
        cur.execute(statements[-1])
        return cur.fetchone()


def _merge_statements(stage: _Stage, *, with_merge: bool) -> list[sql.Composed]:
    """The upsert as (inserted, updated) counting statements: MERGE first where the server has RETURNING for it.

    MERGE (PostgreSQL 17+) writes fewer WAL records than INSERT ... ON CONFLICT and skips unchanged rows without
    locking them; rows whose values did not change, or whose version is older than the stored one, are not
    rewritten by either statement.
    """
    spec, columns = stage.spec, stage.plan.columns
    key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    non_key = [c for c in columns if c not in spec.key]
    target = sql.Identifier(spec.name)
    source = stage.typed_rows()

    def new(column: str, incoming: str) -> sql.Composable:
        return sql.SQL("{}.{}").format(sql.SQL(incoming), sql.Identifier(column))

    def update(incoming: str) -> tuple[sql.Composable, sql.Composable]:
        """(SET list, condition) for rows that changed; `incoming` names the new row (EXCLUDED, or the source s)."""
        changed = sql.SQL("({}) IS DISTINCT FROM ({})").format(
            sql.SQL(", ").join(sql.Identifier(spec.name, c) for c in non_key),
            sql.SQL(", ").join(new(c, incoming) for c in non_key),
        )
        if spec.version in columns:
            stored = sql.Identifier(spec.name, spec.version)
            changed = sql.SQL("{} AND ({} IS NULL OR {} <= {})").format(
                changed, stored, stored, new(spec.version, incoming)
            )
        sets = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), new(c, incoming)) for c in non_key)
        return sets, changed

    on_conflict = sql.SQL(
        "WITH written AS (INSERT INTO {target} AS {alias} ({cols}) SELECT {cols} FROM {source} s "
        "ON CONFLICT ({key}) {action} RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
    ).format(
        target=spec.ident(),
        alias=target,
        cols=cols,
        source=source,
        key=key,
        action=sql.SQL("DO UPDATE SET {} WHERE {}").format(*update("EXCLUDED")) if non_key else sql.SQL("DO NOTHING"),
    )
    if not with_merge:
        return [on_conflict]
    when_matched: sql.Composable = sql.SQL("")
    if non_key:
        sets, changed = update("s")
        when_matched = sql.SQL("WHEN MATCHED AND {} THEN UPDATE SET {} ").format(changed, sets)
    merge = sql.SQL(
        "WITH written AS (MERGE INTO {target} AS {alias} USING {source} AS s ON ({on}) {when_matched}"
        "WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values}) RETURNING merge_action() AS action) "
        "SELECT count(*) FILTER (WHERE action = 'INSERT'), count(*) FILTER (WHERE action = 'UPDATE') FROM written"
    ).format(
        target=spec.ident(),
        alias=target,
        source=source,
        on=sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(spec.name, k), sql.Identifier("s", k)) for k in spec.key
        ),
        when_matched=when_matched,
        cols=cols,
        values=sql.SQL(", ").join(sql.Identifier("s", c) for c in columns),
    )
    return [merge, on_conflict]


def _remove_absent(cur: Any, stage: _Stage, slice_: Mapping[str, Sequence[Any]]) -> tuple[int, int]:
    """Full refresh of a slice: key rows of the slice that no staged row (good, rejected or parked) still has."""
    spec = stage.spec
    params = {col: list(values) for col, values in slice_.items()}
    present = sql.SQL("NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
        stage.ident,
        sql.SQL(" AND ").join(sql.SQL("t.{} = {}").format(sql.Identifier(k), stage.guarded(k)) for k in spec.key),
    )
    where = sql.SQL("{} AND {}").format(_slice_predicate(spec, slice_, "t"), present)
    if spec.tombstone:
        cur.execute(
            sql.SQL("UPDATE {} t SET {tomb} = now() WHERE t.{tomb} IS NULL AND {}").format(
                spec.ident(), where, tomb=sql.Identifier(spec.tombstone)
            ),
            params,
        )
        return 0, cur.rowcount
    cur.execute(sql.SQL("DELETE FROM {} t WHERE {}").format(spec.ident(), where), params)
    return cur.rowcount, 0


def _apply_deletes(cur: Any, spec: TableSpec, deleted: sql.Identifier) -> tuple[int, int]:
    match = sql.SQL(" AND ").join(sql.SQL("t.{k} = d.{k}").format(k=sql.Identifier(k)) for k in spec.key)
    if spec.tombstone:
        cur.execute(
            sql.SQL("UPDATE {} t SET {tomb} = now() FROM {} d WHERE {} AND t.{tomb} IS NULL").format(
                spec.ident(), deleted, match, tomb=sql.Identifier(spec.tombstone)
            )
        )
        return 0, cur.rowcount
    cur.execute(sql.SQL("DELETE FROM {} t USING {} d WHERE {}").format(spec.ident(), deleted, match))
    return cur.rowcount, 0


def _replace(cur: Any, stage: _Stage, slice_: Mapping[str, Sequence[Any]]) -> tuple[int, int]:
    spec = stage.spec
    params = {col: list(values) for col, values in slice_.items()}
    cur.execute(
        sql.SQL("SELECT count(*) FROM {} s WHERE ({}) IS NOT TRUE").format(
            stage.typed_rows(), _slice_predicate(spec, slice_, "s")
        ),
        params,
    )
    outside = cur.fetchone()[0]
    if outside:
        raise ValueError(
            f"{spec.qualified_name}: {outside} input rows fall outside the slice being replaced "
            f"({', '.join(f'{k} in {v}' for k, v in params.items())})"
        )
    # Two loads replacing overlapping slices at once (a backfill beside the schedule) would each delete only the
    # rows committed before they started and both insert: serialize replacements per table, for the short
    # delete-and-insert only (staging already happened in parallel).
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"replace:{spec.qualified_name}",))
    cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(spec.ident(), _slice_predicate(spec, slice_)), params)
    deleted = cur.rowcount
    cols = sql.SQL(", ").join(map(sql.Identifier, stage.plan.columns))
    cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} s").format(spec.ident(), cols, cols, stage.typed_rows()))
    return cur.rowcount, deleted
