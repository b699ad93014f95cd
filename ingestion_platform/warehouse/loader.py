"""The one bulk loader: stream Arrow batches through COPY into a staging table, then merge or replace atomically.

Why this shape: COPY is the only PostgreSQL path that reaches hundreds of thousands of rows per second, and a
staging table keeps the target untouched until a single transaction swaps the new rows in, so a failed run leaves
the previous rows intact and a re-run leaves the same rows as one run (idempotency). Batches are written to COPY
as CSV produced by pyarrow's C++ writer, so memory stays bounded by one batch whatever the row count.
"""

import io
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import Connection, sql
from psycopg.errors import UniqueViolation

from ingestion_platform.warehouse.schema import TableSpec, ensure_table

Batch = pa.RecordBatch | pa.Table | pd.DataFrame
Mode = Literal["merge", "replace"]

_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed", batch_size=8192)
_ORDINAL = "_ingest_ordinal"
# MERGE ... RETURNING merge_action() arrived in PostgreSQL 17; older servers get INSERT ... ON CONFLICT.
MERGE_MIN_SERVER_VERSION = 170000


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


def _to_arrow(batch: Batch, spec: TableSpec) -> pa.Table:
    if isinstance(batch, pd.DataFrame):
        frame = batch.copy(deep=False)
        for col in frame.columns:
            if col in spec.column_names and spec.column(col).type == "jsonb" and frame[col].dtype == object:
                frame[col] = frame[col].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v))
        table = pa.Table.from_pandas(frame, preserve_index=False)
    elif isinstance(batch, pa.RecordBatch):
        table = pa.Table.from_batches([batch])
    else:
        table = batch
    unknown = [c for c in table.column_names if c not in spec.column_names]
    if unknown:
        raise ValueError(
            f"{spec.qualified_name}: input has undeclared columns {unknown}; declare them in the TableSpec"
        )
    nested = [f.name for f in table.schema if pa.types.is_nested(f.type)]
    if nested:
        raise ValueError(f"{spec.qualified_name}: columns {nested} are nested; serialise them to JSON text for jsonb")
    return table


@dataclass(frozen=True)
class _Chunk:
    columns: list[str]
    rows: int
    data: bytes


def _encode(batches: Iterable[Batch], spec: TableSpec) -> Iterator[_Chunk]:
    """CSV-encode batches one ahead of the COPY, in a worker thread.

    pyarrow's CSV writer and psycopg's socket writes both release the GIL, so encoding batch k+1 (and pulling it
    from the source, e.g. a BigQuery page) overlaps with sending batch k; memory stays at two encoded batches.
    Every batch is written in the first batch's column order, so one COPY statement carries them all.
    """
    source = iter(batches)
    columns: list[str] = []

    def next_chunk() -> _Chunk | None:
        for batch in source:
            table = _to_arrow(batch, spec)
            if table.num_rows == 0:
                continue
            if not columns:
                columns.extend(table.column_names)
            elif table.column_names != columns:
                if set(table.column_names) != set(columns):
                    raise ValueError(f"{spec.qualified_name}: all batches must have the same columns as the first")
                table = table.select(columns)
            buffer = io.BytesIO()
            pa_csv.write_csv(table, buffer, _CSV_OPTIONS)
            return _Chunk(list(columns), table.num_rows, buffer.getvalue())
        return None

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="loader-encode") as pool:
        pending = pool.submit(next_chunk)
        while (chunk := pending.result()) is not None:
            pending = pool.submit(next_chunk)
            yield chunk


def _slice_predicate(spec: TableSpec, slice_: Mapping[str, Sequence[Any]], alias: str | None = None) -> sql.Composable:
    parts = []
    for col in slice_:
        spec.column(col)
        ident = sql.Identifier(alias, col) if alias else sql.Identifier(col)
        parts.append(sql.SQL("{} = ANY({})").format(ident, sql.Placeholder(col)))
    return sql.SQL(" AND ").join(parts)


def load(
    conn: Connection,
    spec: TableSpec,
    batches: Iterable[Batch],
    *,
    mode: Mode,
    slice_: Mapping[str, Sequence[Any]] | None = None,
) -> LoadResult:
    """Load `batches` into `spec`'s table in one transaction and return what changed.

    merge: upsert on `spec.key` (MERGE, or `INSERT ... ON CONFLICT DO UPDATE` before PostgreSQL 17); rows whose
    values did not change are not rewritten, and duplicate keys within the input keep the last occurrence.
    replace: delete the rows matching `slice_` (column -> allowed values) and insert the staged rows; every staged
    row must fall inside the slice, otherwise a re-run would leave duplicates, so the load is refused.
    """
    started = time.perf_counter()
    if mode == "merge" and not spec.key:
        raise ValueError(f"{spec.qualified_name}: merge needs a declared key")
    if mode == "replace" and not slice_:
        raise ValueError(f"{spec.qualified_name}: replace needs a slice (column -> values) to delete")
    added = ensure_table(conn, spec)
    staging = sql.Identifier(f"_stage_{spec.schema}_{spec.name}"[:63])
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL TIME ZONE 'UTC'")
        cur.execute(
            sql.SQL(
                "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT * FROM {target} WITH NO DATA;"
                "ALTER TABLE {stage} ADD COLUMN {ordinal} bigint GENERATED ALWAYS AS IDENTITY"
            ).format(stage=staging, target=spec.ident(), ordinal=sql.Identifier(_ORDINAL))
        )
        columns: list[str] = []
        rows = copied = 0
        encoded = _encode(batches, spec)
        first = next(encoded, None)
        if first is not None:
            columns = first.columns
            missing = [c.name for c in spec.columns if not c.nullable and c.name not in columns]
            if missing:
                raise ValueError(f"{spec.qualified_name}: input lacks required columns {missing}")
            copy_stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                staging, sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with cur.copy(copy_stmt) as copy:
                for chunk in itertools.chain([first], encoded):
                    copy.write(chunk.data)
                    rows += chunk.rows
                    copied += len(chunk.data)
        if mode == "merge":
            inserted, updated, duplicates = _merge(conn, cur, spec, staging, columns, rows)
            deleted = 0
        else:
            assert slice_ is not None
            inserted, deleted = _replace(cur, spec, staging, columns, slice_)
            updated = duplicates = 0
    return LoadResult(
        table=spec.qualified_name,
        mode=mode,
        rows_staged=rows,
        inserted=inserted,
        updated=updated,
        deleted=deleted,
        duplicates_in_input=duplicates,
        bytes_copied=copied,
        seconds=time.perf_counter() - started,
        added_columns=tuple(added),
    )


def _merge(
    conn: Connection, cur: Any, spec: TableSpec, staging: sql.Identifier, columns: list[str], rows: int
) -> tuple[int, int, int]:
    if rows == 0:
        return 0, 0, 0
    missing_key = [k for k in spec.key if k not in columns]
    if missing_key:
        raise ValueError(f"{spec.qualified_name}: input lacks key columns {missing_key}")
    # Temporary tables are never auto-analyzed; without statistics the planner cannot choose between a hash join
    # and index probes into a large target.
    cur.execute(sql.SQL("ANALYZE {}").format(staging))
    # MERGE only notices a key given twice when both rows would change the target, so duplicates are removed up
    # front (last occurrence wins, as single-row upserts in order would) whatever statement runs.
    duplicates = _drop_duplicate_keys(cur, spec, staging)
    statements = _merge_statements(
        spec, staging, columns, with_merge=conn.info.server_version >= MERGE_MIN_SERVER_VERSION
    )
    return (*_first_that_works(conn, cur, statements), duplicates)


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


def _merge_statements(
    spec: TableSpec, staging: sql.Identifier, columns: list[str], *, with_merge: bool
) -> list[sql.Composed]:
    """The upsert as (inserted, updated) counting statements: MERGE first where the server has RETURNING for it.

    MERGE (PostgreSQL 17+) writes fewer WAL records than INSERT ... ON CONFLICT and skips unchanged rows without
    locking them; rows whose values did not change, or whose version is older than the stored one, are not
    rewritten by either statement.
    """
    key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    non_key = [c for c in columns if c not in spec.key]
    target = sql.Identifier(spec.name)

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
        "WITH written AS (INSERT INTO {target} AS {alias} ({cols}) SELECT {cols} FROM {stage} "
        "ON CONFLICT ({key}) {action} RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
    ).format(
        target=spec.ident(),
        alias=target,
        cols=cols,
        stage=staging,
        key=key,
        action=sql.SQL("DO UPDATE SET {} WHERE {}").format(*update("EXCLUDED")) if non_key else sql.SQL("DO NOTHING"),
    )
    if not with_merge:
        return [on_conflict]
    when_matched = sql.SQL("")
    if non_key:
        sets, changed = update("s")
        when_matched = sql.SQL("WHEN MATCHED AND {} THEN UPDATE SET {} ").format(changed, sets)
    merge = sql.SQL(
        "WITH written AS (MERGE INTO {target} AS {alias} USING {stage} AS s ON ({on}) {when_matched}"
        "WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values}) RETURNING merge_action() AS action) "
        "SELECT count(*) FILTER (WHERE action = 'INSERT'), count(*) FILTER (WHERE action = 'UPDATE') FROM written"
    ).format(
        target=spec.ident(),
        alias=target,
        stage=staging,
        on=sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(spec.name, k), sql.Identifier("s", k)) for k in spec.key
        ),
        when_matched=when_matched,
        cols=cols,
        values=sql.SQL(", ").join(sql.Identifier("s", c) for c in columns),
    )
    return [merge, on_conflict]


def _drop_duplicate_keys(cur: Any, spec: TableSpec, staging: sql.Identifier) -> int:
    key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
    cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} GROUP BY {} HAVING count(*) > 1)").format(staging, key))
    if not cur.fetchone()[0]:
        return 0
    cur.execute(
        sql.SQL(
            "DELETE FROM {stage} s USING (SELECT {key}, max({ord}) AS keep FROM {stage} GROUP BY {key} "
            "HAVING count(*) > 1) d WHERE ({s_key}) = ({d_key}) AND s.{ord} <> d.keep"
        ).format(
            stage=staging,
            key=key,
            ord=sql.Identifier(_ORDINAL),
            s_key=sql.SQL(", ").join(sql.Identifier("s", k) for k in spec.key),
            d_key=sql.SQL(", ").join(sql.Identifier("d", k) for k in spec.key),
        )
    )
    return cur.rowcount


def _replace(
    cur: Any, spec: TableSpec, staging: sql.Identifier, columns: list[str], slice_: Mapping[str, Sequence[Any]]
) -> tuple[int, int]:
    params = {col: list(values) for col, values in slice_.items()}
    if columns:
        outside_cols = [c for c in slice_ if c not in columns]
        if outside_cols:
            raise ValueError(f"{spec.qualified_name}: input lacks the slice columns {outside_cols}")
        cur.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE ({}) IS NOT TRUE").format(staging, _slice_predicate(spec, slice_)),
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
    inserted = 0
    if columns:
        cols = sql.SQL(", ").join(map(sql.Identifier, columns))
        cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(spec.ident(), cols, cols, staging))
        inserted = cur.rowcount
    return inserted, deleted
