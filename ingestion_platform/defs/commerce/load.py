"""Load one table's files of one batch: object store -> parse -> validate -> loader, in one streaming pass.

Why one loader call per table and batch (not per file): the loader stages every file into one temporary table and
merges once, so "last wins" across the batch's files is the loader's own duplicate rule (files go in name order),
the parked rows of earlier batches are retried once, and the transaction stays one short statement group however
many files there are. Rejects of parsing and validation travel in the same call (as `Reject`s), so a batch's rows
and its quarantine commit together; the batch id is the loader's `source`, which makes a re-run replace, not
duplicate, the batch's rejects.
"""

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, cast

import pyarrow as pa
from psycopg import Connection

from ingestion_platform.defs.commerce.batches import (
    BatchFile,
    HashingReader,
    LoadedFile,
    batch_prefix,
    select_new_content,
    sha256_of,
    verify,
)
from ingestion_platform.defs.commerce.ndjson import ENTITIES, DuplicateTracker, Source
from ingestion_platform.defs.commerce.tables import LOADED_FILES_TABLE, SCHEMA, TABLES
from ingestion_platform.defs.commerce.validate import FileResult, read_file, reasons_summary
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.warehouse import LoadResult, Reject, load


@dataclass
class EntityLoad:
    """What one table's load did: the loader's result and the per-file and per-reason counts around it."""

    table: str
    result: LoadResult
    files: list[FileResult] = field(default_factory=list)
    skipped: list[tuple[str, LoadedFile]] = field(default_factory=list)  # (file, the earlier load of its content)
    bytes_read: int = 0
    duplicates_in_batch: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    pending_for_tenant: int = 0
    oldest_pending_seconds: float | None = None
    seconds: float = 0.0


def loaded_files(conn: Connection, tenant_id: str) -> dict[str, LoadedFile]:
    """sha256 -> the batch and file that first loaded that content for the tenant."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT sha256, batch_id, source_file FROM {SCHEMA}.{LOADED_FILES_TABLE.name} WHERE tenant_id = %s",
            (tenant_id,),
        )
        return {sha: LoadedFile(sha, batch, name) for sha, batch, name in cur.fetchall()}


def pending_stats(conn: Connection, table: str, tenant_id: str) -> tuple[int, float | None]:
    """(rows parked, age in seconds of the oldest) for one table and tenant; the loader's own figures span tenants."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT count(*), extract(epoch FROM now() - min(parked_at)) FROM {SCHEMA}.pending "
            "WHERE table_name = %s AND tenant_id = %s",
            (table, tenant_id),
        )
        count, oldest = cur.fetchone() or (0, None)
    return int(count), None if oldest is None else float(oldest)


def _with_hashes(store: ObjectStoreResource, prefix: str, files: list[BatchFile]) -> list[BatchFile]:
    """`_SUCCESS` batches carry no hashes: read each file once to learn it, so re-sent content is still skipped."""
    out = []
    for f in files:
        if f.sha256 is None:
            with store.open_read(prefix + f.name) as stream:
                sha, size = sha256_of(stream)
            f = BatchFile(f.name, f.entity, size, sha)
        out.append(f)
    return out


def load_entity(
    conn: Connection,
    store: ObjectStoreResource,
    tenant_id: str,
    batch_id: str,
    table: str,
    files: list[BatchFile],
    *,
    block_bytes: int | None = None,
) -> EntityLoad:
    """Load `files` (this table's files of the batch) into `commerce.<table>`; with no files, only retry parked rows.

    Tables must exist (`ensure_commerce_tables`). Raises when a file's bytes differ from its manifest entry; the
    load then leaves the tables unchanged.
    """
    started = time.perf_counter()
    entity, spec = ENTITIES[table], TABLES[table]
    prefix = batch_prefix(tenant_id, batch_id)
    selection = select_new_content(_with_hashes(store, prefix, files), loaded_files(conn, tenant_id), batch_id=batch_id)
    tracker = DuplicateTracker(entity.id_field)
    rejects: list[Reject] = []
    outcome = EntityLoad(table, result=None)  # type: ignore[arg-type]  # set below, once the load returns

    def batches() -> Iterator[pa.RecordBatch]:
        for f in selection.to_load:
            result = FileResult(f.name)
            outcome.files.append(result)
            with store.open_read(prefix + f.name) as stream:
                reader = HashingReader(stream)
                for part in read_file(
                    cast("IO[bytes]", reader),  # read() is all the parser uses
                    entity,
                    Source(tenant_id, batch_id, f.name),
                    duplicates=tracker,
                    result=result,
                    block_bytes=block_bytes,
                ):
                    rejects.extend(_rejects(part.rejects))
                    for reason, n in reasons_summary(part.rejects, limit=1000).items():
                        outcome.reject_reasons[reason] = outcome.reject_reasons.get(reason, 0) + n
                    yield part.valid
            verify(f, reader.hexdigest(), reader.size)
            outcome.bytes_read += reader.size

    outcome.result = load(conn, spec, batches(), mode="merge", source=batch_id, rejects=rejects)
    outcome.skipped = [(f.name, prior) for f, prior in selection.already_loaded]
    outcome.duplicates_in_batch = tracker.duplicates()
    if selection.to_load:
        _record_loaded(conn, tenant_id, batch_id, table, selection.to_load, outcome.files)
    outcome.pending_for_tenant, outcome.oldest_pending_seconds = pending_stats(conn, table, tenant_id)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _rejects(table: pa.Table) -> Iterator[Reject]:
    for row in table.to_pylist():
        raw: Mapping[str, Any] = {
            "raw_line": row["raw_line"],
            "source_file": row["source_file"],
            "batch_id": row["batch_id"],
        }
        yield Reject(row["line_number"], row["reason"], raw, tenant_id=row["tenant_id"])


def _record_loaded(
    conn: Connection, tenant_id: str, batch_id: str, table: str, files: tuple[BatchFile, ...], results: list[FileResult]
) -> None:
    counts = {r.file_name: r for r in results}
    now = datetime.now(UTC)
    rows = pa.table(
        {
            "tenant_id": [tenant_id] * len(files),
            "sha256": [f.sha256 for f in files],
            "table_name": [table] * len(files),
            "batch_id": [batch_id] * len(files),
            "source_file": [f.name for f in files],
            "size_bytes": pa.array([f.size for f in files], pa.int64()),
            "rows_valid": pa.array([counts[f.name].rows_valid for f in files], pa.int64()),
            "rows_rejected": pa.array([counts[f.name].rows_rejected for f in files], pa.int64()),
            "loaded_at": pa.array([now] * len(files), pa.timestamp("us", tz="UTC")),
        }
    )
    load(conn, LOADED_FILES_TABLE, [rows], mode="merge")
