"""`brightdata/raw_snapshot` and `brightdata/posts`, one partition per BrightData snapshot.

The raw snapshot is the source of truth (the replaced service's GCS object, at the same path): downloads stream
through a local part file into the object store, and `posts` parses that object, never the API, so posts can be
rebuilt from storage after a parser fix without asking BrightData again (it keeps snapshots only 16 days).
"""

import itertools
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd

from ingestion_platform import crawl_state
from ingestion_platform.defs.brightdata import crawls
from ingestion_platform.defs.brightdata.crawls import Crawl
from ingestion_platform.defs.brightdata.posts import parse_snapshot
from ingestion_platform.defs.brightdata.tables import POSTS, POSTS_REJECTS, RAW_DATA_CRAWL_SNAPSHOTS
from ingestion_platform.metadata import definition_metadata, load_metadata, preview_md
from ingestion_platform.resources.brightdata import (
    SNAPSHOT_CONTENT_TYPE,
    BrightDataResource,
    SnapshotUnavailableError,
)
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.retry import STEP_RETRY, per_tenant
from ingestion_platform.warehouse import LoadResult

SNAPSHOT_PARTITIONS = dg.DynamicPartitionsDefinition(name="snapshot")
RAW_SNAPSHOT_KEY = dg.AssetKey(["brightdata", "raw_snapshot"])
POSTS_KEY = dg.AssetKey(["brightdata", "posts"])


def raw_snapshot_key(snapshot_id: str, day: datetime) -> str:
    """The replaced service's layout. The day is the crawl's trigger day, not the download's, so re-materializing
    a snapshot on another day rewrites the same object instead of leaving a second copy."""
    return f"raw_snapshots/{day:%Y}/{day:%m}/{day:%d}/snapshot_{snapshot_id}.json"


def _crawl(warehouse: WarehouseResource, snapshot_id: str) -> Crawl:
    crawl = crawls.for_snapshot(warehouse, snapshot_id)
    if crawl is None:
        raise dg.Failure(
            f"snapshot {snapshot_id} belongs to no crawl in social.crawl_metadata; trigger crawls with the "
            "brightdata_trigger job so each snapshot knows its tenant and labels",
            allow_retries=False,
        )
    return crawl


def _snapshot_row(crawl: Crawl, key: str, status: str, nbytes: int, posts: int | None, media: int | None) -> dict:
    return {
        "tenant_id": crawl.tenant_id,
        "snapshot_id": crawl.snapshot_id,
        "crawl_id": crawl.crawl_id,
        "file_path": key,
        "platform": crawl.platform,
        "competitor": crawl.competitor,
        "brand": crawl.brand,
        "category": crawl.category,
        "ingestion_timestamp": datetime.now(UTC),
        "status": status,
        "post_count": posts,
        "media_count": media,
        "bytes": nbytes,
    }


def _load_snapshot_row(warehouse: WarehouseResource, row: dict) -> None:
    frame = pd.DataFrame([row], columns=RAW_DATA_CRAWL_SNAPSHOTS.column_names).astype(
        {"post_count": "Int64", "media_count": "Int64"}
    )
    warehouse.load(RAW_DATA_CRAWL_SNAPSHOTS, [frame], mode="merge")


@dg.asset(
    key=RAW_SNAPSHOT_KEY,
    description=(
        "A BrightData snapshot as BrightData returned it, UTF-8 JSON at "
        "`raw_snapshots/{yyyy}/{mm}/{dd}/snapshot_{id}.json` in the object store, recorded in "
        "`social.raw_data_crawl_snapshots`. Requested by the `brightdata_progress` sensor when a crawl is ready."
    ),
    group_name="brightdata",
    partitions_def=SNAPSHOT_PARTITIONS,
    retry_policy=STEP_RETRY,
    pool="brightdata",
    kinds={"brightdata", "json"},
    owners=["team:data-platform"],
    tags={"source": "brightdata"},
    metadata=definition_metadata(RAW_DATA_CRAWL_SNAPSHOTS),
)
def raw_snapshot(
    context: dg.AssetExecutionContext,
    brightdata: BrightDataResource,
    object_store: ObjectStoreResource,
    warehouse: WarehouseResource,
    tenants: TenantsResource,
) -> dg.MaterializeResult:
    started = time.perf_counter()
    snapshot_id = context.partition_key
    crawl = _crawl(warehouse, snapshot_id)
    key = raw_snapshot_key(snapshot_id, crawl.triggered_at)
    metadata: dict[str, dg.RawMetadataValue] = {}

    def download(tenant_id: str, crawl: Crawl) -> None:
        settings = tenants.registry().get(tenant_id).brightdata()
        try:
            with (
                tempfile.TemporaryDirectory(prefix="brightdata-") as workdir,
                brightdata.client(settings.api_key_env) as client,
                object_store.open_write(key, content_type=SNAPSHOT_CONTENT_TYPE) as out,
            ):
                result = client.download(snapshot_id, out, Path(workdir))
        except SnapshotUnavailableError as exc:
            crawl_state.mark_snapshot_failed(warehouse.engine, snapshot_id, stage="download", error=str(exc))
            raise dg.Failure(str(exc), allow_retries=False) from exc
        info = object_store.head(key)
        _load_snapshot_row(warehouse, _snapshot_row(crawl, key, "downloaded", info.size, None, None))
        crawl_state.set_status(warehouse.engine, tenant_id=tenant_id, crawl_id=crawl.crawl_id, status="downloaded")
        context.log.info(
            f"{tenant_id}: snapshot {snapshot_id}: {info.size} bytes in {result.parts} part(s), "
            f"{result.attempts} request(s), {result.resumes} resumed, {result.restarts} restarted -> {key}"
        )
        metadata.update(
            {
                "tenant": tenant_id,
                "crawl_id": crawl.crawl_id,
                "path": key,
                "uri": object_store.uri(key),
                "content_type": info.content_type,
                "bytes": dg.MetadataValue.int(info.size),
                "parts": dg.MetadataValue.int(result.parts),
                "http_attempts": dg.MetadataValue.int(result.attempts),
                "resumed_downloads": dg.MetadataValue.int(result.resumes),
                "restarted_downloads": dg.MetadataValue.int(result.restarts),
                "download_seconds": dg.MetadataValue.float(round(result.seconds, 3)),
            }
        )

    per_tenant({crawl.tenant_id: crawl}, download, context.log)
    metadata["duration_seconds"] = dg.MetadataValue.float(round(time.perf_counter() - started, 3))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=POSTS_KEY,
    deps=[RAW_SNAPSHOT_KEY],
    description=(
        "One row per post in `social.posts`, upserted by (tenant_id, post_id) from the raw snapshot; BrightData's "
        f"error records, records without a post id and values the table refuses go to `{POSTS_REJECTS.qualified_name}`"
        " with the reason. Runs by declarative automation as soon as a raw snapshot lands."
    ),
    group_name="brightdata",
    partitions_def=SNAPSHOT_PARTITIONS,
    retry_policy=STEP_RETRY,
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"json", "postgres"},
    owners=["team:data-platform"],
    tags={"source": "brightdata"},
    metadata=definition_metadata(POSTS),
)
def posts(
    context: dg.AssetExecutionContext, object_store: ObjectStoreResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    started = time.perf_counter()
    snapshot_id = context.partition_key
    crawl = _crawl(warehouse, snapshot_id)
    key = raw_snapshot_key(snapshot_id, crawl.triggered_at)
    metadata: dict[str, dg.RawMetadataValue] = {}

    def load(tenant_id: str, crawl: Crawl) -> None:
        results: list[LoadResult] = []
        with object_store.open_read(key) as stream:
            parser = parse_snapshot(stream, crawl.labels())
            batches = iter(parser.posts())
            first = next(batches, None)
            preview = [] if first is None else first.slice(0, 5).select(["post_id", "author_name", "text"]).to_pylist()
            pending = itertools.chain([first] if first is not None else [], batches)
            # One load per snapshot, whatever its size (the merge's work is linear in its rows, issue 6): the posts
            # and, read once they are parsed, the records parsing rejected, under the object's key (a reload
            # replaces them), in one short transaction.
            results.append(warehouse.load(POSTS, pending, mode="merge", source=key, rejects=parser.quarantine()))
        rejects = parser.rejects()
        stats = parser.stats
        _load_snapshot_row(warehouse, _snapshot_row(crawl, key, "parsed", stats.bytes_read, stats.posts, stats.media))
        crawl_state.set_status(
            warehouse.engine,
            tenant_id=tenant_id,
            crawl_id=crawl.crawl_id,
            status="loaded",
            completed_at=crawl.completed_at or datetime.now(UTC),
        )
        context.log.info(
            f"{tenant_id}: snapshot {snapshot_id}: {stats.records} records, {stats.posts} posts "
            f"({sum(r.inserted for r in results)} new, {sum(r.updated for r in results)} updated), "
            f"{stats.rejected} rejected {stats.reasons}"
        )
        metadata.update(load_metadata(results))
        metadata.update(
            {
                "tenant": tenant_id,
                "path": key,
                "records": dg.MetadataValue.int(stats.records),
                "posts": dg.MetadataValue.int(stats.posts),
                "media": dg.MetadataValue.int(stats.media),
                "rows_rejected": dg.MetadataValue.int(sum(r.rejected for r in results)),
                "rows_rejected_by_loader": dg.MetadataValue.int(sum(r.rejected for r in results) - stats.rejected),
                "load_transactions": dg.MetadataValue.int(len(results)),
                "reject_reasons": dg.MetadataValue.json(stats.reasons),
                "bytes_read": dg.MetadataValue.int(stats.bytes_read),
                "parse_seconds": dg.MetadataValue.float(round(stats.seconds, 3)),
                "preview": preview_md(preview),
                "rejects_preview": preview_md(
                    rejects.slice(0, 5).select(["ordinal", "reason", "error_code"]).to_pylist()
                ),
            }
        )

    per_tenant({crawl.tenant_id: crawl}, load, context.log)
    metadata["duration_seconds"] = dg.MetadataValue.float(round(time.perf_counter() - started, 3))
    return dg.MaterializeResult(metadata=metadata)
