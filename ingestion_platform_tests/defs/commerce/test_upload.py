"""The ingest command's plan: dependency order, marker last, skipping what already landed with the same hash."""

import hashlib
from pathlib import Path

import pytest

from ingestion_platform.defs.commerce.batches import MANIFEST_NAME, batch_state, parse_manifest
from ingestion_platform.defs.commerce.upload import RemoteObject, plan_upload, render_plan, scan_local


def write(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


@pytest.fixture
def local(tmp_path: Path) -> Path:
    write(
        tmp_path / "acme" / "b0001",
        {
            "order_items_1.ndjson": b"items\n",
            "orders_1.ndjson": b"orders\n",
            "customers_1.ndjson": b"customers\n",
            "products_1.ndjson.gz": b"products\n",
            "notes.txt": b"ignored",
        },
    )
    write(tmp_path / "acme" / "b0002", {"customers_1.ndjson": b"late customers\n"})
    write(tmp_path / "acme" / "empty", {"notes.txt": b"no data files"})
    return tmp_path


def test_plan_uploads_in_foreign_key_order_with_the_manifest_last(local: Path) -> None:
    plan = plan_upload("acme", scan_local(local, "acme"), {})
    keys = [s.key.removeprefix("landing/acme/commerce/") for s in plan.steps]
    assert keys == [
        "b0001/customers_1.ndjson",
        "b0001/products_1.ndjson.gz",
        "b0001/orders_1.ndjson",
        "b0001/order_items_1.ndjson",
        f"b0001/{MANIFEST_NAME}",
        "b0002/customers_1.ndjson",
        f"b0002/{MANIFEST_NAME}",
    ]
    assert all(s.action == "upload" for s in plan.steps)
    assert plan.new_batches == ("b0001", "b0002") and plan.landed_batches == ()
    rendered = plan.steps[4]
    assert rendered.source is None and rendered.content is not None
    manifest = parse_manifest(rendered.content)
    assert {f.name: f.sha256 for f in manifest.files}["orders_1.ndjson"] == hashlib.sha256(b"orders\n").hexdigest()
    # What the sensor will see once the plan has run: a complete batch with every file.
    listing = {s.name: s.size for s in plan.steps if s.batch_id == "b0001"}
    state = batch_state(listing, rendered.content, tenant_id="acme", batch_id="b0001")
    assert state.complete and len(state.files) == 4


def test_a_rerun_skips_what_landed_with_the_same_hash_and_resumes_the_rest(local: Path) -> None:
    first = plan_upload("acme", scan_local(local, "acme"), {})
    # An interrupted run: the first three objects of b0001 landed, one of them with different content.
    remote = {s.key: RemoteObject(s.size, s.sha256) for s in first.steps[:3]}
    remote[first.steps[2].key] = RemoteObject(first.steps[2].size, "0" * 64)
    plan = plan_upload("acme", scan_local(local, "acme"), remote)
    assert [s.action for s in plan.steps[:5]] == ["skip", "skip", "replace", "upload", "upload"]
    assert plan.bytes_to_upload == sum(s.size for s in plan.steps[2:])
    # Everything landed: nothing to do, and the dry run says so.
    done = {s.key: RemoteObject(s.size, s.sha256) for s in first.steps}
    finished = plan_upload("acme", scan_local(local, "acme"), done)
    assert finished.uploads == () and finished.new_batches == () and finished.landed_batches == ("b0001", "b0002")
    assert "already landed" in render_plan(finished)


def test_a_remote_object_without_a_recorded_hash_is_uploaded_again(local: Path) -> None:
    first = plan_upload("acme", scan_local(local, "acme"), {})
    remote = {first.steps[0].key: RemoteObject(first.steps[0].size, None)}
    assert plan_upload("acme", scan_local(local, "acme"), remote).steps[0].action == "replace"


def test_dry_run_text_names_every_object_and_what_the_sensor_will_pick_up(local: Path) -> None:
    text = render_plan(plan_upload("acme", scan_local(local, "acme"), {}))
    assert "upload  landing/acme/commerce/b0001/customers_1.ndjson" in text
    assert "sensor will pick up batch b0001" in text and "sensor will pick up batch b0002" in text
    assert text.index("b0001/order_items_1.ndjson") < text.index(f"b0001/{MANIFEST_NAME}")


def test_a_local_manifest_that_disagrees_with_its_files_is_refused(local: Path) -> None:
    plan = plan_upload("acme", scan_local(local, "acme"), {})
    folder = local / "acme" / "b0002"
    manifest = next(s.content for s in plan.steps if s.batch_id == "b0002" and s.name == MANIFEST_NAME)
    assert manifest is not None
    (folder / MANIFEST_NAME).write_bytes(manifest)
    assert plan_upload("acme", scan_local(local, "acme"), {}).steps[-1].source == folder / MANIFEST_NAME
    (folder / "customers_1.ndjson").write_bytes(b"changed after the manifest was written\n")
    with pytest.raises(ValueError, match="does not match the files beside it"):
        plan_upload("acme", scan_local(local, "acme"), {})


def test_batch_folders_directly_under_dir_are_found_too(local: Path) -> None:
    assert [b.batch_id for b in scan_local(local / "acme", "acme")] == ["b0001", "b0002"]
    with pytest.raises(FileNotFoundError):
        scan_local(local / "missing", "acme")
