"""The warehouse tables of the BrightData source, in schema `social` (the replaced service's BigQuery dataset).

`crawl_metadata` is the crawl's life (triggered, queued, ready, failed, timed out, downloaded) so the replaced
service's crawl-triggered / completed / failed events become rows an operator can query. `raw_data_crawl_snapshots`
records where each raw snapshot landed in the object store. `posts` holds one row per post, upserted by
(tenant_id, post_id): a post crawled again with newer counts replaces the older row, never the reverse.
"""

from ingestion_platform.warehouse import Column, TableSpec, rejects_spec

SCHEMA = "social"

# Crawl statuses written to social.crawl_metadata.status; `queued` is a trigger BrightData refused with 429.
CRAWL_STATUSES = ("queued", "triggered", "ready", "downloaded", "loaded", "failed", "timed_out")

CRAWL_METADATA = TableSpec(
    schema=SCHEMA,
    name="crawl_metadata",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column(
            "crawl_id",
            "text",
            nullable=False,
            description="our id for the crawl (a UUID), known before BrightData answers",
        ),
        Column("snapshot_id", "text", description="BrightData's snapshot id; NULL while the trigger is queued"),
        Column("dataset_id", "text", nullable=False),
        Column("platform", "text", nullable=False),
        Column("competitor", "text", nullable=False),
        Column("brand", "text", nullable=False),
        Column("category", "text", nullable=False),
        Column("url", "text", nullable=False),
        Column("params", "jsonb", description="the trigger's inputs and options as sent to BrightData"),
        Column("status", "text", nullable=False, description=f"one of {', '.join(CRAWL_STATUSES)}"),
        Column("stage", "text", description="where a failure happened: trigger, progress, download, parse, load"),
        Column("error", "text", description="BrightData's error message or the root error of the failed step"),
        Column("triggered_at", "timestamptz", nullable=False),
        Column("completed_at", "timestamptz"),
        Column("updated_at", "timestamptz", nullable=False),
    ),
    key=("tenant_id", "crawl_id"),
    indexes=(("snapshot_id",), ("status",)),
)

RAW_DATA_CRAWL_SNAPSHOTS = TableSpec(
    schema=SCHEMA,
    name="raw_data_crawl_snapshots",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("snapshot_id", "text", nullable=False),
        Column("crawl_id", "text"),
        Column(
            "file_path", "text", nullable=False, description="object key: raw_snapshots/yyyy/mm/dd/snapshot_{id}.json"
        ),
        Column("platform", "text"),
        Column("competitor", "text"),
        Column("brand", "text"),
        Column("category", "text"),
        Column("ingestion_timestamp", "timestamptz", nullable=False),
        Column("status", "text", nullable=False),
        Column("post_count", "bigint", description="records in the snapshot that are posts (not error records)"),
        Column("media_count", "bigint", description="attachments across those posts"),
        Column("bytes", "bigint", nullable=False),
    ),
    key=("tenant_id", "snapshot_id"),
    indexes=(("crawl_id",),),
)

POSTS = TableSpec(
    schema=SCHEMA,
    name="posts",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("post_id", "text", nullable=False, description="BrightData's post_id (Facebook's numeric post id)"),
        Column("snapshot_id", "text", nullable=False, description="the snapshot that last wrote this row"),
        Column("platform", "text", nullable=False),
        Column("competitor", "text", nullable=False),
        Column("brand", "text", nullable=False),
        Column("category", "text", nullable=False),
        Column("url", "text"),
        Column("author_id", "text", description="profile_id of the page or user that posted"),
        Column("author_name", "text", description="page_name, else user_username_raw"),
        Column("author_url", "text", description="user_url, else page_url"),
        Column("text", "text", description="the post's content, unicode and emoji as posted"),
        Column("posted_at", "timestamptz", description="date_posted"),
        Column("likes", "bigint"),
        Column("comments", "bigint"),
        Column("shares", "bigint"),
        Column("video_views", "bigint"),
        Column("post_type", "text"),
        Column("is_sponsored", "boolean"),
        Column("media", "jsonb", description="attachments as BrightData returned them (id, type, url, video_url)"),
        Column("media_count", "integer", nullable=False),
        Column("hashtags", "jsonb", description="JSON array of hashtags without '#'"),
        Column("crawled_at", "timestamptz", description="BrightData's record timestamp"),
    ),
    key=("tenant_id", "post_id"),
    indexes=(("tenant_id", "snapshot_id"), ("tenant_id", "competitor", "posted_at")),
    version="crawled_at",
)

# Records that could not become posts (BrightData's own error records, records without a post id) and rows the
# loader refuses share the loader's quarantine table `social.posts_rejects`: reason, raw record, source file (the
# raw snapshot's object key) and ordinal in the snapshot. One mechanism for every source (issue 6).
POSTS_REJECTS = rejects_spec(SCHEMA, POSTS.name)

# The declared tables; the loader creates each one's `<name>_rejects` quarantine beside it.
TABLES = (CRAWL_METADATA, RAW_DATA_CRAWL_SNAPSHOTS, POSTS)
