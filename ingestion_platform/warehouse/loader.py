"""The one bulk loader: stream Arrow batches through COPY into a staging table, then merge or replace atomically.

Why this shape: COPY is the only PostgreSQL path that reaches hundreds of thousands of rows per second, and a
staging table keeps the target untouched until a single transaction swaps the new rows in, so a failed run leaves
the previous rows intact and a re-run leaves the same rows as one run (idempotency). Batches are written to COPY
as CSV produced by pyarrow's C++ writer, so memory stays bounded by one batch whatever the row count.
"""

import io
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import Connection, sql
from psycopg.errors import CardinalityViolation

from ingestion_platform.warehouse.schema import TableSpec, ensure_table

Batch = pa.RecordBatch | pa.Table | pd.DataFrame
Mode = Literal["merge", "replace"]

_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed", batch_size=8192)
_ORDINAL = "_ingest_ordinal"


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

    def as_metadata(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rows_staged": self.rows_staged,
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "duplicates_in_input": self.duplicates_in_input,
            "bytes_copied": self.bytes_copied,
            "load_seconds": round(self.seconds, 3),
        }


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

    merge: upsert on `spec.key` (`INSERT ... ON CONFLICT DO UPDATE`); rows whose values did not change are not
    rewritten, and duplicate keys within the input keep the last occurrence. replace: delete the rows matching
    `slice_` (column -> allowed values) and insert the staged rows; every staged row must fall inside the slice,
    otherwise a re-run would leave duplicates, so the load is refused.
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
        columns: list[str] | None = None
        rows = copied = 0
        for batch in batches:
            table = _to_arrow(batch, spec)
            if table.num_rows == 0:
                continue
            if columns is None:
                columns = table.column_names
                missing = [c.name for c in spec.columns if not c.nullable and c.name not in columns]
                if missing:
                    raise ValueError(f"{spec.qualified_name}: input lacks required columns {missing}")
            elif table.column_names != columns:
                table = table.select(columns) if set(table.column_names) == set(columns) else None
                if table is None:
                    raise ValueError(f"{spec.qualified_name}: all batches must have the same columns as the first")
            buffer = io.BytesIO()
            pa_csv.write_csv(table, buffer, _CSV_OPTIONS)
            copy_stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                staging, sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with cur.copy(copy_stmt) as copy:
                copy.write(buffer.getbuffer())
            rows += table.num_rows
            copied += buffer.tell()
        columns = columns or []
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
    key = sql.SQL(", ").join(map(sql.Identifier, spec.key))
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    non_key = [c for c in columns if c not in spec.key]
    if non_key:
        newer = sql.SQL("")
        if spec.version in columns:
            newer = sql.SQL(" AND {old} <= EXCLUDED.{col}").format(
                old=sql.Identifier(spec.name, spec.version), col=sql.Identifier(spec.version)
            )
        action = sql.SQL("DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new}){newer}").format(
            sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in non_key),
            old=sql.SQL(", ").join(sql.Identifier(spec.name, c) for c in non_key),
            new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in non_key),
            newer=newer,
        )
    else:
        action = sql.SQL("DO NOTHING")
    upsert = sql.SQL(
        "WITH written AS (INSERT INTO {target} AS {alias} ({cols}) SELECT {cols} FROM {stage} "
        "ON CONFLICT ({key}) {action} RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
    ).format(target=spec.ident(), alias=sql.Identifier(spec.name), cols=cols, stage=staging, key=key, action=action)
    duplicates = 0
    try:
        # Most inputs have unique keys, so the upsert is tried first inside a savepoint; only when PostgreSQL
        # refuses to update one row twice do we pay for deduplicating the staged rows (last occurrence wins,
        # as a sequence of single-row upserts would leave it).
        with conn.transaction():
            cur.execute(upsert)
    except CardinalityViolation:
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
        duplicates = cur.rowcount
        cur.execute(upsert)
    inserted, updated = cur.fetchone()
    return inserted, updated, duplicates


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
    cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(spec.ident(), _slice_predicate(spec, slice_)), params)
    deleted = cur.rowcount
    inserted = 0
    if columns:
        cols = sql.SQL(", ").join(map(sql.Identifier, columns))
        cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(spec.ident(), cols, cols, staging))
        inserted = cur.rowcount
    return inserted, deleted
