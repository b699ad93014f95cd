"""Batch folder rules: which files belong to which table, completeness, and content-hash idempotency."""

import hashlib
import io
import json

import pytest

from ingestion_platform.defs.commerce.batches import (
    MANIFEST_NAME,
    SUCCESS_MARKER,
    BatchFile,
    HashingReader,
    LoadedFile,
    ManifestError,
    batch_prefix,
    batch_state,
    file_entity,
    parse_landing_key,
    parse_manifest,
    partition_key,
    render_manifest,
    select_new_content,
    sha256_of,
    split_partition_key,
    verify,
)

SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()


@pytest.mark.parametrize(
    ("name", "entity"),
    [
        ("customers_0001.ndjson", "customers"),
        ("products_2024-05-01.ndjson.gz", "products"),
        ("orders_a.ndjson", "orders"),
        ("order_items_0001.ndjson", "order_items"),
        ("orders.ndjson", None),
        ("order_items_1.json", None),
        ("customers_1.ndjson.part", None),
        ("refunds_1.ndjson", None),
        (SUCCESS_MARKER, None),
    ],
)
def test_file_names_map_to_tables(name: str, entity: str | None) -> None:
    assert file_entity(name) == entity


def test_landing_keys_and_partition_keys() -> None:
    assert batch_prefix("acme", "b0001") == "landing/acme/commerce/b0001/"
    assert parse_landing_key("landing/acme/commerce/b0001/orders_1.ndjson") == ("acme", "b0001", "orders_1.ndjson")
    assert parse_landing_key("landing/acme/recsys/items/x.csv") is None
    assert parse_landing_key("landing/acme/commerce/b0001/sub/orders_1.ndjson") is None
    assert split_partition_key(partition_key("acme", "b0001")) == ("acme", "b0001")
    with pytest.raises(ValueError, match="invalid batch id"):
        batch_prefix("acme", "../etc")
    with pytest.raises(ValueError, match="invalid tenant"):
        partition_key("a/b", "b0001")


def test_without_marker_or_manifest_a_batch_waits() -> None:
    state = batch_state({"customers_1.ndjson": 10, "orders_1.ndjson": 20})
    assert not state.complete and "waiting for _SUCCESS or _manifest.json" in state.reason


def test_success_marker_completes_a_batch_with_files_in_foreign_key_order() -> None:
    listing = {
        "order_items_1.ndjson": 5,
        "orders_2.ndjson": 4,
        "orders_1.ndjson.gz": 3,
        "customers_1.ndjson": 1,
        "README.txt": 9,
        SUCCESS_MARKER: 0,
    }
    state = batch_state(listing)
    assert state.complete
    assert [f.name for f in state.files] == [
        "customers_1.ndjson",
        "orders_1.ndjson.gz",
        "orders_2.ndjson",
        "order_items_1.ndjson",
    ]
    assert state.ignored == ("README.txt",)
    assert [f.name for f in state.by_entity()["orders"]] == ["orders_1.ndjson.gz", "orders_2.ndjson"]
    assert state.by_entity()["products"] == []


def manifest(*files: BatchFile) -> bytes:
    return render_manifest("acme", "b0001", files)


def test_manifest_completes_a_batch_only_when_every_file_has_its_size() -> None:
    content = manifest(
        BatchFile("customers_1.ndjson", "customers", 10, SHA_A), BatchFile("orders_1.ndjson", "orders", 20, SHA_B)
    )
    missing = batch_state({"customers_1.ndjson": 10, MANIFEST_NAME: len(content)}, content)
    assert not missing.complete and "orders_1.ndjson missing" in missing.reason
    growing = batch_state({"customers_1.ndjson": 10, "orders_1.ndjson": 7, MANIFEST_NAME: 1}, content)
    assert not growing.complete and "orders_1.ndjson is 7 bytes, manifest says 20" in growing.reason
    ready = batch_state(
        {"customers_1.ndjson": 10, "orders_1.ndjson": 20, "orders_9.ndjson": 1, MANIFEST_NAME: 1},
        content,
        tenant_id="acme",
        batch_id="b0001",
    )
    assert ready.complete
    assert [(f.name, f.sha256) for f in ready.files] == [("customers_1.ndjson", SHA_A), ("orders_1.ndjson", SHA_B)]
    assert ready.ignored == ("orders_9.ndjson",)  # not in the manifest: not part of the batch


def test_manifest_is_a_documented_json_format() -> None:
    content = manifest(
        BatchFile("orders_1.ndjson", "orders", 20, SHA_B), BatchFile("customers_1.ndjson", "customers", 1, SHA_A)
    )
    document = json.loads(content)
    assert document == {
        "format": "commerce-batch-manifest/1",
        "tenant_id": "acme",
        "batch_id": "b0001",
        "files": [
            {"name": "customers_1.ndjson", "size": 1, "sha256": SHA_A},
            {"name": "orders_1.ndjson", "size": 20, "sha256": SHA_B},
        ],
    }
    assert parse_manifest(content).files[1] == BatchFile("orders_1.ndjson", "orders", 20, SHA_B)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not JSON"),
        (b'{"files": []}', "format"),
        (
            json.dumps(
                {"format": "commerce-batch-manifest/1", "files": [{"name": "x.csv", "size": 1, "sha256": SHA_A}]}
            ),
            "not <table>",
        ),
        (
            json.dumps(
                {
                    "format": "commerce-batch-manifest/1",
                    "files": [{"name": "orders_1.ndjson", "size": -1, "sha256": SHA_A}],
                }
            ),
            "size",
        ),
        (
            json.dumps(
                {
                    "format": "commerce-batch-manifest/1",
                    "files": [{"name": "orders_1.ndjson", "size": 1, "sha256": "abc"}],
                }
            ),
            "sha256",
        ),
    ],
)
def test_a_broken_manifest_is_reported_and_the_batch_waits(content: bytes | str, message: str) -> None:
    data = content.encode() if isinstance(content, str) else content
    with pytest.raises(ManifestError, match=message):
        parse_manifest(data)
    state = batch_state({MANIFEST_NAME: len(data), "orders_1.ndjson": 1}, data)
    assert not state.complete and state.error is not None and message in state.error


def test_a_manifest_naming_another_batch_is_refused() -> None:
    content = manifest(BatchFile("orders_1.ndjson", "orders", 1, SHA_A))
    state = batch_state({MANIFEST_NAME: 1, "orders_1.ndjson": 1}, content, tenant_id="acme", batch_id="b0002")
    assert not state.complete and state.error and "names batch 'b0001'" in state.error


def test_hashing_reader_verifies_the_bytes_the_parser_read() -> None:
    reader = HashingReader(io.BytesIO(b"a"))
    assert reader.read() == b"a" and reader.read() == b""
    good = BatchFile("orders_1.ndjson", "orders", 1, SHA_A)
    verify(good, reader.hexdigest(), reader.size)
    with pytest.raises(ValueError, match="manifest says 1 bytes"):
        verify(BatchFile("orders_1.ndjson", "orders", 1, SHA_B), reader.hexdigest(), reader.size)
    assert sha256_of(io.BytesIO(b"a"), chunk_bytes=1) == (SHA_A, 1)


def test_same_content_in_a_new_batch_is_recognised_by_hash() -> None:
    files = [
        BatchFile("customers_1.ndjson", "customers", 1, SHA_A),
        BatchFile("orders_1.ndjson", "orders", 1, SHA_B),
        BatchFile("products_1.ndjson", "products", 1, None),
    ]
    loaded = {SHA_A: LoadedFile(SHA_A, "b0001", "customers_0001.ndjson")}
    selection = select_new_content(files, loaded, batch_id="b0002")
    assert [f.name for f in selection.to_load] == ["products_1.ndjson", "orders_1.ndjson"]
    assert [(f.name, prior.batch_id) for f, prior in selection.already_loaded] == [("customers_1.ndjson", "b0001")]
    # Re-running the batch that loaded it loads it again (idempotent upsert, may follow a failed attempt).
    again = select_new_content(files, loaded, batch_id="b0001")
    assert len(again.to_load) == 3 and again.already_loaded == ()
