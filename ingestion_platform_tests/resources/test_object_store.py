"""The object store against local files, a moto S3 server and gcp-storage-emulator: every operation on all three."""

import gzip
import io
import json
import os
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from ingestion_platform.defs.resources import build_resources
from ingestion_platform.resources.object_store import (
    DEFAULT_CONTENT_TYPE,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreResource,
    StoreLocation,
    UnsafeKeyError,
    check_key,
    check_prefix,
    parse_store_url,
)

JSON_UTF8 = "application/json; charset=utf-8"


class Interrupted(Exception):
    pass


def test_put_get_round_trip_with_unicode_and_content_type(object_store: ObjectStoreResource) -> None:
    key = "raw_snapshots/2024/03/01/snapshot_é.json"
    body = json.dumps([{"text": "Ünïcödé 🎉 — 你好"}], ensure_ascii=False).encode()
    written = object_store.put(key, body, content_type=JSON_UTF8)
    assert written.key == key
    assert written.size == len(body)
    assert written.content_type == JSON_UTF8
    assert object_store.get(key) == body
    head = object_store.head(key)
    assert (head.size, head.content_type) == (len(body), JSON_UTF8)
    assert abs(head.mtime - datetime.now(UTC)) < timedelta(minutes=5)


def test_compressed_names_read_back_byte_for_byte(object_store: ObjectStoreResource) -> None:
    """Arrow decompresses by extension unless told not to: a `.gz` object must come back as uploaded (its hash is
    the upload's identity, and the parsers detect gzip themselves), whether put whole or streamed."""
    body = gzip.compress(b'{"id": 1}\n' * 1000)
    object_store.put("landing/acme/commerce/b1/orders_1.ndjson.gz", body)
    with object_store.open_write("landing/acme/recsys/items/items.csv.gz") as out:
        out.write(body)
    for key in ("landing/acme/commerce/b1/orders_1.ndjson.gz", "landing/acme/recsys/items/items.csv.gz"):
        assert object_store.get(key) == body
        with object_store.open_read(key) as stream:
            assert stream.read() == body
        assert object_store.head(key).size == len(body)


def test_default_content_type_and_overwrite(object_store: ObjectStoreResource) -> None:
    object_store.put("a.bin", b"first", content_type="text/plain")
    object_store.put("a.bin", b"second")
    assert object_store.get("a.bin") == b"second"
    assert object_store.head("a.bin").content_type == DEFAULT_CONTENT_TYPE


def test_list_prefix_with_size_and_mtime(object_store: ObjectStoreResource) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)
    object_store.put("landing/acme/recsys/items/b.csv", b"xy")
    object_store.put("landing/acme/recsys/items/a.csv", b"x")
    object_store.put("landing/acme/recsys/interactions/i.csv", b"xyz")
    object_store.put("landing/other/recsys/items/c.csv", b"z")

    items = object_store.list("landing/acme/recsys/items/")
    assert [(o.key, o.size) for o in items] == [
        ("landing/acme/recsys/items/a.csv", 1),
        ("landing/acme/recsys/items/b.csv", 2),
    ]
    assert all(before < o.mtime < datetime.now(UTC) + timedelta(minutes=5) for o in items)
    assert [o.key for o in object_store.list("landing/acme")] == [
        "landing/acme/recsys/interactions/i.csv",
        "landing/acme/recsys/items/a.csv",
        "landing/acme/recsys/items/b.csv",
    ]
    assert len(object_store.list()) == 4
    # A folder prefix never matches a sibling that merely starts with the same letters.
    object_store.put("landing/acme2/x.csv", b"q")
    assert len(object_store.list("landing/acme")) == 3
    assert object_store.list("landing/nobody") == []


def test_delete_exists_and_missing_objects(object_store: ObjectStoreResource) -> None:
    object_store.put("x/y.txt", b"1", content_type="text/plain")
    assert object_store.exists("x/y.txt")
    assert object_store.delete("x/y.txt") is True
    assert not object_store.exists("x/y.txt")
    assert object_store.delete("x/y.txt") is False
    assert object_store.list("x") == []
    with pytest.raises(ObjectNotFoundError):
        object_store.get("x/y.txt")
    with pytest.raises(ObjectNotFoundError):
        object_store.head("x/y.txt")
    with pytest.raises(ObjectNotFoundError), object_store.open_read("x/y.txt"):
        pass


def test_streaming_write_and_read_of_a_multipart_sized_object(object_store: ObjectStoreResource) -> None:
    chunk = os.urandom(1024 * 1024)
    chunks = 20  # above S3's 5 MiB part size and GCS's resumable chunk: several parts on the wire
    with object_store.open_write("big/object.bin", content_type="application/x-ndjson") as out:
        for i in range(chunks):
            out.write(bytes([i]) + chunk[1:])
    info = object_store.head("big/object.bin")
    assert (info.size, info.content_type) == (chunks * len(chunk), "application/x-ndjson")
    with object_store.open_read("big/object.bin") as stream:
        for i in range(chunks):
            block = stream.read(len(chunk))
            assert block[0] == i and block[1:] == chunk[1:]
        assert stream.read(1) == b""


def test_text_streaming_through_io_wrappers(object_store: ObjectStoreResource) -> None:
    lines = [json.dumps({"id": i, "name": f"naïve {i} ✓"}, ensure_ascii=False) for i in range(1000)]
    with object_store.open_write("landing/t/commerce/b1/customers_1.ndjson") as out:
        text = io.TextIOWrapper(out, encoding="utf-8")  # type: ignore[arg-type]
        text.writelines(line + "\n" for line in lines)
        text.flush()
        text.detach()
    with object_store.open_read("landing/t/commerce/b1/customers_1.ndjson") as stream:
        assert [line.rstrip("\n") for line in io.TextIOWrapper(stream, encoding="utf-8")] == lines  # type: ignore[arg-type]


def test_interrupted_write_leaves_nothing(object_store: ObjectStoreResource) -> None:
    with pytest.raises(Interrupted), object_store.open_write("half/done.json", content_type=JSON_UTF8) as out:
        out.write(b"x" * (6 * 1024 * 1024))  # past one S3 part, so the upload is already under way
        raise Interrupted
    assert not object_store.exists("half/done.json")
    assert object_store.list("half") == []
    assert object_store.list() == []


def test_interrupted_overwrite_keeps_the_previous_object(object_store: ObjectStoreResource) -> None:
    object_store.put("doc.json", b'{"v": 1}', content_type=JSON_UTF8)
    with pytest.raises(Interrupted), object_store.open_write("doc.json", content_type="text/plain") as out:
        out.write(b'{"v": 2, "trunc')
        raise Interrupted
    assert object_store.get("doc.json") == b'{"v": 1}'
    assert object_store.head("doc.json").content_type == JSON_UTF8
    assert [o.key for o in object_store.list()] == ["doc.json"]


def test_put_file_from_path_and_file_object(object_store: ObjectStoreResource, tmp_path: os.PathLike[str]) -> None:
    source = os.path.join(tmp_path, "upload.csv")
    with open(source, "wb") as f:
        f.write(b"user_id,item_id\n" * 50_000)
    info = object_store.put_file("landing/acme/recsys/interactions/u.csv", source, content_type="text/csv")
    assert (info.size, info.content_type) == (os.path.getsize(source), "text/csv")
    with open(source, "rb") as f:
        object_store.put_file("copy.csv", f)
        f.seek(0)
        assert object_store.get("copy.csv") == f.read()


@pytest.mark.parametrize(
    "key",
    ["../escape.json", "a/../../escape", "/etc/passwd", "a/./b", "a\\b", "nul\x00", "", "folder/", ".hidden", "a/.tmp"],
)
def test_keys_that_escape_or_collide_are_refused(object_store: ObjectStoreResource, key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        object_store.put(key, b"x")
    with pytest.raises(UnsafeKeyError):
        object_store.get(key)
    with pytest.raises(UnsafeKeyError):
        object_store.delete(key)


def test_listing_prefixes_cannot_escape(object_store: ObjectStoreResource) -> None:
    for prefix in ["..", "a/../..", "/"]:
        with pytest.raises(UnsafeKeyError):
            object_store.list(prefix)


def test_parquet_through_the_arrow_filesystem(object_store: ObjectStoreResource) -> None:
    table = pa.table({"user_id": ["u1", "u2"], "rating": [4.5, None]})
    with object_store.open_write("acme/raw/interactions/2024-03-01/up1.parquet") as out:
        pq.write_table(table, out)
    object_store.put("acme/raw/interactions/2024-03-02/up2.parquet", _parquet_bytes(table))
    dataset = pads.dataset(
        object_store.folder_path("acme/raw/interactions"), filesystem=object_store.filesystem, format="parquet"
    )
    assert dataset.to_table().num_rows == 4
    single = pq.read_table(
        object_store.path("acme/raw/interactions/2024-03-01/up1.parquet"), filesystem=object_store.filesystem
    )
    assert single.equals(table)


def test_uri_and_local_path(object_store: ObjectStoreResource) -> None:
    object_store.put("a/b.txt", b"hello")
    location = object_store.location
    assert object_store.uri("a/b.txt") == f"{location.url}/a/b.txt"
    local = object_store.local_path("a/b.txt")
    if location.scheme == "file":
        assert local is not None and local.read_bytes() == b"hello"
    else:
        assert local is None


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


# Pure parts: URL parsing and key rules, no store needed.


def test_parse_store_url() -> None:
    assert parse_store_url("file:///data/objects/") == StoreLocation("file", "/data/objects")
    assert parse_store_url("s3://bucket") == StoreLocation("s3", "bucket")
    assert parse_store_url("s3://bucket/some/prefix/") == StoreLocation("s3", "bucket/some/prefix")
    assert parse_store_url("gs://bucket/p").url == "gs://bucket/p"
    for bad in ["ftp://host/x", "s3:///prefix", "file://relative/path", "gs://b/../x", "s3://b/p?x=1", "/plain"]:
        with pytest.raises(ObjectStoreError):
            parse_store_url(bad)


def test_default_store_is_under_ingestion_home(tmp_path: os.PathLike[str]) -> None:
    store = ObjectStoreResource(home=str(tmp_path))
    assert store.location == StoreLocation("file", os.path.join(tmp_path, "objects"))


def test_check_key_normalises_and_check_prefix_allows_the_root() -> None:
    assert check_key("a//b/c.json") == "a/b/c.json"
    assert check_prefix("") == ""
    assert check_prefix("landing/acme//recsys/") == "landing/acme/recsys"


def test_deployment_binding_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.setenv("INGESTION_HOME", str(tmp_path))
    monkeypatch.delenv("OBJECT_STORE_URL", raising=False)
    local = build_resources()["object_store"].process_config_and_initialize()
    assert isinstance(local, ObjectStoreResource)
    assert local.location == StoreLocation("file", os.path.join(tmp_path, "objects"))
    monkeypatch.setenv("OBJECT_STORE_URL", "gs://bucket/prefix")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023")
    remote = build_resources()["object_store"].process_config_and_initialize()
    assert isinstance(remote, ObjectStoreResource)
    assert (remote.location, remote.storage_emulator_host) == (
        StoreLocation("gs", "bucket/prefix"),
        "http://127.0.0.1:9023",
    )
