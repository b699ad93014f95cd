"""The social.* table specs against the real warehouse: parsed posts and rejects load through the one loader."""

import io
import json

from ingestion_platform.defs.brightdata.posts import CrawlLabels, parse_snapshot
from ingestion_platform.defs.brightdata.tables import POSTS, POSTS_REJECTS, TABLES
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.brightdata_api import BrightDataSandboxConfig, snapshot_records
from ingestion_platform.warehouse import ensure_table

LABELS = CrawlLabels("acme", "s_tables0000000000", "facebook", "nutifood", "growplus-nutifood", "sua-bot-tre-em")
SOURCE = "raw_snapshots/2026/11/20/snapshot_s_tables0000000000.json"
INPUTS = [{"url": "https://www.facebook.com/GrowPLUScuaNutiFood/", "num_of_posts": 400}]


def snapshot(snapshot_id: str, extra: list[dict] | None = None) -> bytes:
    config = BrightDataSandboxConfig(error_rate=0.05, missing_id_rate=0.03)
    texts = list(snapshot_records(config, snapshot_id, INPUTS, [400]))
    texts += [json.dumps(r, ensure_ascii=False) for r in extra or []]
    return ("[\n" + ",\n".join(texts) + "\n]").encode()


def test_every_table_is_created_as_declared(warehouse: WarehouseResource) -> None:
    with warehouse.raw_connection() as conn:
        for spec in TABLES:
            assert ensure_table(conn, spec) == []
    names = warehouse.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'social' ORDER BY 1"
    )["table_name"].tolist()
    assert names == sorted([spec.name for spec in TABLES] + [f"{spec.name}_rejects" for spec in TABLES])
    assert POSTS_REJECTS.name == "posts_rejects"


def test_posts_and_rejects_load_and_reload_idempotently(warehouse: WarehouseResource) -> None:
    emoji = {
        "post_id": "999",
        "url": "https://www.facebook.com/x/posts/999",
        "content": "Bé yêu 🍼👨\u200d👩\u200d👧 “quoted” back\\slash",
        "attachments": [{"id": "1", "type": "Photo", "url": "https://scontent.xx/é.jpg", "video_url": None}],
        "hashtags": ["béyêu"],
        "date_posted": "2026-11-01T08:00:00.000Z",
        "timestamp": "2026-11-20T12:05:00.000Z",
    }
    data = snapshot(LABELS.snapshot_id, [emoji])
    loads = []
    for _ in range(2):  # re-materializing the partition: same rows, nothing new
        parser = parse_snapshot(io.BytesIO(data), LABELS, batch_size=100)
        posts = warehouse.load(POSTS, parser.posts(), mode="merge", source=SOURCE, rejects=parser.quarantine())
        rejects = warehouse.scalar("SELECT count(*) FROM social.posts_rejects")
        loads.append((posts, rejects, parser.stats))
    (first, first_rejects, stats), (second, second_rejects, _) = loads
    assert first.inserted == stats.posts > 300 and first.rejected == first_rejects == stats.rejected > 0
    assert (second.inserted, second.updated) == (0, 0) and second_rejects == stats.rejected

    count = warehouse.scalar("SELECT count(*) FROM social.posts WHERE tenant_id = 'acme'")
    assert count == stats.posts
    row = warehouse.query(
        "SELECT text, media, hashtags, media_count, posted_at, competitor FROM social.posts WHERE post_id = '999'"
    ).iloc[0]
    assert row["text"] == emoji["content"]
    assert row["media"] == emoji["attachments"] and row["hashtags"] == ["béyêu"] and row["media_count"] == 1
    assert row["posted_at"].isoformat() == "2026-11-01T08:00:00+00:00" and row["competitor"] == "nutifood"
    media_total = warehouse.scalar("SELECT sum(jsonb_array_length(media)) FROM social.posts")
    assert media_total == stats.media
    reasons = warehouse.query(
        "SELECT raw->>'error_code' AS error_code, count(*) AS n FROM social.posts_rejects "
        "WHERE source_file = :source AND tenant_id = 'acme' GROUP BY 1 ORDER BY 1 NULLS LAST",
        {"source": SOURCE},
    )
    assert reasons["n"].sum() == stats.rejected
    assert reasons["error_code"].iloc[-1] is None  # the posts without a post id
    raw_error = warehouse.scalar("SELECT raw->>'error_code' FROM social.posts_rejects WHERE raw ? 'error_code' LIMIT 1")
    assert raw_error in {"dead_page", "login_required", "crawl_failed", "private_content"}
