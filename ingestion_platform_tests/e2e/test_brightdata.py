"""A crawl triggered from the Launchpad is followed by the progress sensor to its download, then to posts."""

import pytest

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform_tests.e2e.conftest import Landed
from ingestion_platform_tests.e2e.stack import UIStack

pytestmark = pytest.mark.timeout(900)  # the sensors tick every 30 to 60 s; a loaded CI machine runs slowly


def test_a_triggered_crawl_ends_as_a_raw_snapshot_and_posts(ui_stack: UIStack, landed: Landed) -> None:
    assert ui_stack.wait_for_run(landed.crawl_run_id) == "SUCCESS", ui_stack.run_errors(landed.crawl_run_id)
    warehouse = WarehouseResource(url=ui_stack.warehouse_url)
    crawls = warehouse.query("SELECT crawl_id, snapshot_id, status FROM social.crawl_metadata WHERE tenant_id = 'acme'")
    assert len(crawls) == 1 and crawls["snapshot_id"][0], crawls
    crawl_id, snapshot_id = crawls["crawl_id"][0], crawls["snapshot_id"][0]

    # The sensor polls every 30 s; the sandbox reports the snapshot ready on the second poll.
    (download,) = ui_stack.wait_for_runs(
        {"dagster/sensor_name": "brightdata_progress", "brightdata/crawl_id": crawl_id}, timeout=600
    )
    assert download["status"] == "SUCCESS", ui_stack.run_errors(download["runId"])
    assert download["tags"]["dagster/partition"] == snapshot_id
    raw = list(ui_stack.object_store_root.glob(f"raw_snapshots/*/*/*/snapshot_{snapshot_id}.json"))
    assert len(raw) == 1 and raw[0].stat().st_size > 0
    status = warehouse.scalar("SELECT status FROM social.crawl_metadata WHERE crawl_id = :c", {"c": crawl_id})
    assert status in ("downloaded", "loaded")

    # brightdata/posts follows by declarative automation, on the same snapshot partition.
    ui_stack.wait_until(
        lambda: ui_stack.runs(
            {"dagster/from_automation_condition": "true", "dagster/partition": snapshot_id}, statuses=["SUCCESS"]
        ),
        600,
        f"brightdata/posts for snapshot {snapshot_id}",
    )
    posts = warehouse.scalar(
        "SELECT count(*) FROM social.posts WHERE tenant_id = 'acme' AND snapshot_id = :s", {"s": snapshot_id}
    )
    assert posts > 0
    status = warehouse.scalar("SELECT status FROM social.crawl_metadata WHERE crawl_id = :c", {"c": crawl_id})
    assert status == "loaded"
