"""Parsing a raw BrightData snapshot into `social.posts` rows and rejected records (pure: no Dagster, no server)."""

import io
import json
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingestion_platform.defs.brightdata.posts import (
    POSTS_SCHEMA,
    CrawlLabels,
    SnapshotFormatError,
    iter_json_array,
    parse_snapshot,
)
from ingestion_platform.defs.brightdata.tables import POSTS
from ingestion_platform.sandbox.brightdata_api import BrightDataSandboxConfig, snapshot_records

LABELS = CrawlLabels(
    tenant_id="acme",
    snapshot_id="s_m4x7enmven8djfqak",
    platform="facebook",
    competitor="nutifood",
    brand="growplus-nutifood",
    category="sua-bot-tre-em",
)
PAGE = "https://www.facebook.com/GrowPLUScuaNutiFood/"
EMOJI_TEXT = 'Mẹ ơi 🍼✨ bé nhà mình 👨\u200d👩\u200d👧 thích lắm! 新品 "quoted" back\\slash\nnew line #GrowPlus'


def post(post_id: Any = "921545786297504", **fields: Any) -> dict[str, Any]:
    record = {
        "url": f"https://www.facebook.com/gagadaily/posts/{post_id}",
        "post_id": post_id,
        "user_url": "https://www.facebook.com/gagadaily",
        "user_username_raw": "Lady Gaga Daily",
        "content": "Lady Gaga and her man rooting for the 49ers 🏈 #SuperBowl",
        "date_posted": "2024-02-12T02:56:03.000Z",
        "hashtags": ["superbowl"],
        "num_comments": 1056,
        "num_shares": 280,
        "num_likes_type": {"type": "Like", "num": 7374},
        "page_name": "Lady Gaga Daily",
        "profile_id": "100053262734893",
        "attachments": [
            {"id": "921545756297507", "type": "Photo", "url": "https://scontent.xx/1.jpg", "video_url": None}
        ],
        "likes": 7374,
        "post_type": "Post",
        "is_sponsored": False,
        "timestamp": "2024-10-01T14:24:33.657Z",
        "input": {"url": "https://www.facebook.com/gagadaily/", "num_of_posts": 5},
    }
    record.update(fields)
    return record


def parse(data: bytes, **kwargs: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    parser = parse_snapshot(io.BytesIO(data), LABELS, **kwargs)
    batches = list(parser.posts())
    for batch in batches:
        assert batch.schema == POSTS_SCHEMA
    rows = pa.Table.from_batches(batches, schema=POSTS_SCHEMA).to_pylist()
    return rows, parser.rejects().to_pylist(), parser.stats


def dumps(records: list[Any]) -> bytes:
    return json.dumps(records, ensure_ascii=False, indent=2).encode()


def test_a_post_becomes_one_row_with_the_crawls_labels() -> None:
    rows, rejects, stats = parse(dumps([post(content=EMOJI_TEXT)]))
    assert rejects == []
    assert rows == [
        {
            "tenant_id": "acme",
            "post_id": "921545786297504",
            "snapshot_id": "s_m4x7enmven8djfqak",
            "platform": "facebook",
            "competitor": "nutifood",
            "brand": "growplus-nutifood",
            "category": "sua-bot-tre-em",
            "url": "https://www.facebook.com/gagadaily/posts/921545786297504",
            "author_id": "100053262734893",
            "author_name": "Lady Gaga Daily",
            "author_url": "https://www.facebook.com/gagadaily",
            "text": EMOJI_TEXT,
            "posted_at": datetime(2024, 2, 12, 2, 56, 3, tzinfo=UTC),
            "likes": 7374,
            "comments": 1056,
            "shares": 280,
            "video_views": None,
            "post_type": "Post",
            "is_sponsored": False,
            "media": '[{"id":"921545756297507","type":"Photo","url":"https://scontent.xx/1.jpg","video_url":null}]',
            "media_count": 1,
            "hashtags": '["superbowl"]',
            "crawled_at": datetime(2024, 10, 1, 14, 24, 33, 657000, tzinfo=UTC),
        }
    ]
    assert (stats.records, stats.posts, stats.rejected, stats.media) == (1, 1, 0, 1)
    assert POSTS_SCHEMA.names == POSTS.column_names


def test_error_records_and_posts_without_id_are_rejected_with_reasons() -> None:
    error = {
        "timestamp": "2024-10-01T14:24:33.657Z",
        "input": {"url": "https://www.facebook.com/closed-page/"},
        "error": "Page does not exist or is no longer available",
        "error_code": "dead_page",
    }
    no_key = post()
    del no_key["post_id"]
    records = [post("1"), error, no_key, post(None), post("  "), post("2"), [1, 2], "text"]
    rows, rejects, stats = parse(dumps(records))
    assert [r["post_id"] for r in rows] == ["1", "2"]
    assert [(r["ordinal"], r["reason"], r["error_code"]) for r in rejects] == [
        (1, "BrightData error record (dead_page): Page does not exist or is no longer available", "dead_page"),
        (2, "record has no post_id", None),
        (3, "record has no post_id", None),
        (4, "record has no post_id", None),
        (6, "record is not a JSON object but list", None),
        (7, "record is not a JSON object but str", None),
    ]
    assert json.loads(rejects[0]["raw"]) == error
    assert json.loads(rejects[1]["raw"]) == no_key
    assert all(r["tenant_id"] == "acme" and r["snapshot_id"] == LABELS.snapshot_id for r in rejects)
    assert (stats.records, stats.posts, stats.rejected, stats.error_records, stats.missing_post_id) == (8, 2, 6, 1, 3)
    assert stats.reasons == {"error_record": 1, "missing_post_id": 3, "not_an_object": 2}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"num_comments": "many"}, "num_comments 'many' is not a count"),
        ({"num_shares": -3}, "num_shares -3 is negative"),
        ({"likes": True}, "likes True is not a count"),
        ({"date_posted": "yesterday"}, "date_posted 'yesterday' is not an ISO 8601 timestamp"),
        ({"attachments": "photo.jpg"}, "attachments is not a list but str"),
        ({"hashtags": "superbowl"}, "hashtags 'superbowl' is not a list of strings"),
        ({"content": "nul \x00 byte"}, "text contains a NUL character"),
        ({"content": "broken emoji \ud83d here"}, "text is not valid unicode"),
        ({"post_id": {"id": 1}}, "post_id {'id': 1} is not a string or integer"),
    ],
)
def test_a_bad_value_rejects_its_record_not_the_snapshot(fields: dict[str, Any], reason: str) -> None:
    data = json.dumps([post("1"), {**post("2"), **fields}, post("3")]).encode()  # ASCII escapes, as "\ud83d" arrives
    rows, rejects, stats = parse(data)
    assert [r["post_id"] for r in rows] == ["1", "3"]
    assert len(rejects) == 1 and rejects[0]["ordinal"] == 1 and reason in rejects[0]["reason"]
    assert "\x00" not in rejects[0]["raw"] and rejects[0]["raw"].encode()  # storable in jsonb
    assert stats.rejected == 1 and stats.posts == 2


def test_lenient_where_brightdata_varies() -> None:
    variants = [
        post("10", likes=None, num_comments="1,204", num_shares=12.0),  # likes from num_likes_type, counts as text
        post(11, attachments=None, hashtags=None, page_name=None, date_posted="2024-02-12T02:56:03"),
        post("12", content="", video_view_count=5000, is_sponsored="yes"),
    ]
    rows, rejects, _ = parse(dumps(variants))
    assert rejects == []
    first, second, third = rows
    assert (first["likes"], first["comments"], first["shares"]) == (7374, 1204, 12)
    assert second["post_id"] == "11" and second["media"] == "[]" and second["media_count"] == 0
    assert second["hashtags"] is None and second["author_name"] == "Lady Gaga Daily"  # user_username_raw
    assert second["posted_at"] == datetime(2024, 2, 12, 2, 56, 3, tzinfo=UTC)  # no offset: UTC, as BrightData means
    assert third["text"] is None and third["video_views"] == 5000 and third["is_sponsored"] is None


@pytest.mark.parametrize("chunk_size", [1, 7, 4096, 1 << 20])
def test_chunk_boundaries_never_change_the_result(chunk_size: int) -> None:
    """Multi-byte characters, numbers and records split across reads parse exactly as when read whole."""
    records = [post(str(i), content=f"{EMOJI_TEXT} {i}", likes=10**i) for i in range(12)] + [12345, 6.5, None, True]
    stream = io.BytesIO(b"\xef\xbb\xbf" + dumps(records))  # with a UTF-8 BOM
    assert [value for _, value in iter_json_array(stream, chunk_size=chunk_size)] == records


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"[]", []),
        (b"  [ ]  \n", []),
        (b"[1,2]", [1, 2]),
        (b'{"a": 1}\n{"a": 2}\n\n{"a": 3}\n', [{"a": 1}, {"a": 2}, {"a": 3}]),  # format=ndjson
        (b"", []),
    ],
)
def test_arrays_and_ndjson(data: bytes, expected: list[Any]) -> None:
    assert [v for _, v in iter_json_array(io.BytesIO(data), chunk_size=3)] == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'[{"post_id": "1"}, {"post_id": "2"', "malformed or truncated JSON"),
        (b'[{"post_id": "1"},', "truncated"),
        (b'[{"post_id": "1"}', "the download is truncated"),
        (b'[{"a": 1} {"a": 2}]', "expected ',' or ']'"),
        (b'[{"a": 1}] [', "unexpected data after the array"),
        (b'"a string"', "not a JSON array of records"),
        (b'[{"a": "\xff"}]', "not UTF-8"),
        (b"<html>502 Bad Gateway</html>", "not a JSON array of records"),
    ],
)
def test_a_broken_snapshot_fails_clearly(data: bytes, message: str) -> None:
    with pytest.raises(SnapshotFormatError, match=message):
        list(parse_snapshot(io.BytesIO(data), LABELS).posts())


def test_sandbox_snapshot_counts_match_what_brightdata_sent() -> None:
    config = BrightDataSandboxConfig(error_rate=0.05, missing_id_rate=0.03)
    inputs = [{"url": PAGE, "num_of_posts": 600}, {"url": "https://www.facebook.com/DielacAlpha/", "num_of_posts": 400}]
    texts = list(snapshot_records(config, "s_counts", inputs, [600, 400]))
    records = [json.loads(t) for t in texts]
    data = ("[\n" + ",\n".join(texts) + "\n]").encode()
    rows, rejects, stats = parse(data, batch_size=128)

    errors = sum("error" in r for r in records)
    missing = sum("error" not in r and not r.get("post_id") for r in records)
    assert errors > 0 and missing > 0
    assert (stats.records, stats.error_records, stats.missing_post_id) == (1000, errors, missing)
    assert len(rows) == stats.posts == 1000 - errors - missing and len(rejects) == errors + missing
    assert stats.media == sum(len(r["attachments"]) for r in records if "error" not in r and r.get("post_id"))
    assert stats.bytes_read == len(data)
    by_id = {r["post_id"]: r for r in records if "error" not in r and r.get("post_id")}
    for row in rows:
        source = by_id[row["post_id"]]
        assert row["text"] == source["content"] and row["likes"] == source["likes"]
        assert json.loads(row["media"]) == source["attachments"]
        assert row["author_name"] == source["page_name"]
    assert {r["author_url"] for r in rows} == {
        "https://www.facebook.com/GrowPLUScuaNutiFood",
        "https://www.facebook.com/DielacAlpha",
    }


def _layouts() -> dict[str, bytes]:
    config = BrightDataSandboxConfig(error_rate=0.05, missing_id_rate=0.03)
    records = [json.loads(t) for t in snapshot_records(config, "s_layout", [{"url": PAGE}], [300])]
    middle = next(i for i in range(150, 300) if records[i].get("post_id"))
    records[middle]["content"] = "broken emoji BROKEN in the middle"  # an unpaired surrogate escape, written below
    compact = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records]
    layouts = {
        "one record a line": "[\n" + ",\n".join(compact) + "\n]",
        "indented": json.dumps(records, ensure_ascii=False, indent=2),
        "one line": "[" + ",".join(compact) + "]",
        "ndjson": "\n".join(compact),  # read by the standard library's scanner only: the reference
    }
    # msgspec refuses "\ud83d" alone; the standard library's reader takes over from there.
    return {name: text.replace("BROKEN", "\\ud83d").encode() for name, text in layouts.items()}


@pytest.mark.parametrize("layout", ["one record a line", "indented", "one line"])
@pytest.mark.parametrize("chunk_size", [997, 64 * 1024])
def test_every_layout_and_window_size_parses_alike(layout: str, chunk_size: int) -> None:
    layouts = _layouts()
    expected = parse(layouts["ndjson"], batch_size=64)
    rows, rejects, stats = parse(layouts[layout], batch_size=64, chunk_size=chunk_size)
    assert rows == expected[0] and len(rows) > 250
    assert [(r["ordinal"], r["reason"]) for r in rejects] == [(r["ordinal"], r["reason"]) for r in expected[1]]
    assert [json.loads(r["raw"]) for r in rejects] == [json.loads(r["raw"]) for r in expected[1]]
    assert any("not valid unicode" in r["reason"] for r in rejects)
    assert stats.records == 300 and stats.bytes_read == len(layouts[layout])


def _write_snapshot(path: Path, posts: int) -> int:
    with path.open("w", encoding="utf-8") as out:
        out.write("[\n")
        for i, text in enumerate(snapshot_records(BrightDataSandboxConfig(), "s_big", [{"url": PAGE}], [posts])):
            out.write(",\n" if i else "")
            out.write(text)
        out.write("\n]\n")
    return path.stat().st_size


def _parse_measuring_peak(path: Path) -> tuple[int, int, int]:
    """(rows, bytes read, peak traced allocation) for one parse of the file."""
    with path.open("rb") as stream:
        parser = parse_snapshot(stream, LABELS, batch_size=500, chunk_size=256 * 1024)
        tracemalloc.start()
        try:
            rows = 0
            for batch in parser.posts():
                rows += batch.num_rows  # a loader would COPY the batch and let it go
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        with pytest.raises(RuntimeError, match="parsed once"):
            next(parser.posts())
    assert rows == parser.stats.posts
    return rows, parser.stats.bytes_read, peak


def test_parsing_streams_a_snapshot_once_in_memory_flat_in_its_size(tmp_path: Path) -> None:
    """2,000 and 8,000 posts (~3.5 and ~14 MB): each read exactly once, with the same peak allocation."""
    small_size = _write_snapshot(tmp_path / "small.json", 2_000)
    large_size = _write_snapshot(tmp_path / "large.json", 8_000)
    small_rows, small_read, small_peak = _parse_measuring_peak(tmp_path / "small.json")
    large_rows, large_read, large_peak = _parse_measuring_peak(tmp_path / "large.json")
    assert (small_read, large_read) == (small_size, large_size)
    assert small_rows > 1_900 and large_rows > 7_600
    assert large_size > 12_000_000
    assert large_peak < small_peak * 1.3, f"peak {small_peak / 1e6:.1f} MB -> {large_peak / 1e6:.1f} MB at 4x the posts"
    assert large_peak < large_size / 2
