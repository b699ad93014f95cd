"""`ingestion-platform generate commerce` and `ingest commerce`: dry run, dependency order, skip and resume."""

from pathlib import Path

import pytest

from ingestion_platform.cli import main
from ingestion_platform.defs.commerce.batches import batch_state
from ingestion_platform.defs.commerce.ingest import execute_plan, remote_state
from ingestion_platform.defs.commerce.upload import plan_upload, scan_local
from ingestion_platform.resources.object_store import ObjectStoreResource


@pytest.fixture
def env_store(store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ObjectStoreResource:
    """The store the CLI reaches through the same variables as the code location."""
    monkeypatch.setenv("INGESTION_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OBJECT_STORE_URL", store.url or "")
    if store.aws_endpoint_url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", store.aws_endpoint_url)
    return store


def landed(store: ObjectStoreResource, tenant: str, batch: str) -> dict[str, int]:
    prefix = f"landing/{tenant}/commerce/{batch}/"
    return {o.key[len(prefix) :]: o.size for o in store.list(prefix)}


def test_generate_then_dry_run_plans_without_uploading_then_ingest_lands_in_order_then_skips(
    env_store: ObjectStoreResource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data"
    argv = ["generate", "commerce", "--tenants", "acme", "--customers", "20", "--products", "5", "--orders", "30"]
    assert main([*argv, "--out", str(out), "--orphans"]) == 0
    assert "acme/b0001" in capsys.readouterr().out
    assert main(["ingest", "commerce", str(out), "--tenant", "acme", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "upload  landing/acme/commerce/b0001/customers_0001.ndjson" in plan
    assert "sensor will pick up batch b0002" in plan
    assert plan.index("customers_0001") < plan.index("orders_0001") < plan.index("order_items_0001")
    assert plan.index("b0001/order_items_0001") < plan.index("b0001/_manifest.json")
    assert env_store.list("landing/") == []  # a dry run uploads nothing

    assert main(["ingest", "commerce", str(out), "--tenant", "acme"]) == 0
    captured = capsys.readouterr()
    assert "MiB" in captured.err  # the progress bar
    listing = landed(env_store, "acme", "b0001")
    manifest = env_store.get("landing/acme/commerce/b0001/_manifest.json")
    assert batch_state(listing, manifest, tenant_id="acme", batch_id="b0001").complete

    assert main(["ingest", "commerce", str(out), "--tenant", "acme"]) == 0
    again = capsys.readouterr().out
    assert "uploaded 0 object(s)" in again and "already landed with the same content" in again


def test_an_interrupted_large_upload_resumes_at_the_first_missing_part(
    store: ObjectStoreResource, tmp_path: Path
) -> None:
    folder = tmp_path / "acme" / "b0001"
    folder.mkdir(parents=True)
    big = b"".join(b'{"customer_id":"%036d","name":"n","email":"a@b.co"}\n' % i for i in range(20_000))
    (folder / "customers_0001.ndjson").write_bytes(big)
    plan = plan_upload("acme", scan_local(tmp_path, "acme"), remote_state(store, "acme"))
    sent: list[int] = []

    def cut_after_three_parts(n: int) -> None:
        sent.append(n)
        if len(sent) == 3:
            raise KeyboardInterrupt  # the user's Ctrl-C in the middle of the file

    with pytest.raises(KeyboardInterrupt):
        execute_plan(store, plan, part_bytes=100_000, progress=cut_after_three_parts)
    assert landed(store, "acme", "b0001") == {}  # nothing half-landed for the sensor to see

    plan = plan_upload("acme", scan_local(tmp_path, "acme"), remote_state(store, "acme"))
    report = execute_plan(store, plan, part_bytes=100_000)
    assert report.parts_resumed == 3
    assert report.bytes_sent == len(big) - 300_000 + len(plan.steps[-1].content or b"")
    assert store.get("landing/acme/commerce/b0001/customers_0001.ndjson") == big
    assert store.list("uploads/acme/commerce/b0001/customers_0001.ndjson.") == []  # parts cleaned up
