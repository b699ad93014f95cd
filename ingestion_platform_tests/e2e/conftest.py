"""What the end-to-end modules set in motion, all at once, so the daemon works on every source in parallel.

The sensors tick every 30 to 60 seconds and a run costs seconds of process start-up: waiting for each source in turn
would add those up. `landed` drops every file and launches every backfill on first use; each module then waits only
for its own outcome, and the slowest source sets the suite's wall time instead of the sum.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ingestion_platform.defs.commerce.ingest import execute_plan, remote_state
from ingestion_platform.defs.commerce.upload import plan_upload, scan_local
from ingestion_platform.defs.netsuite.assets import netsuite_table_assets
from ingestion_platform.defs.recsys.partitions import landing_prefix
from ingestion_platform.sandbox.commerce_data import GeneratedBatch, generate_commerce
from ingestion_platform.sandbox.crm_reports import users_report
from ingestion_platform.sandbox.recsys_data import GeneratedRecsys, generate_recsys
from ingestion_platform_tests.e2e.stack import UIStack

SENSORS = ("sftp_users_files", "recsys_landing", "commerce_batches", "brightdata_progress", "automation")
GA4_EVENTS = ("purchase", "add_to_cart", "page_view", "view_item", "view_search_results", "no_search_results")
# Each concern gets its own tenant where two would meet in one table, so no test reads another's rows.
BACKFILL_TENANT = "acme"


@dataclass(frozen=True)
class Landed:
    sftp_file: str  # a users report for yesterday, in acme's SFTP folder
    sftp_bytes: bytes
    recsys: GeneratedRecsys  # acme's items and interactions upload, each with its `.done` marker
    recsys_keys: tuple[str, ...]
    commerce: GeneratedBatch  # acme's batch, landed by the `ingest commerce` code path
    crawl_run_id: str  # brightdata_trigger for acme's configured page
    ga4_backfill_id: str  # ga4/* over the stand-in days, acme
    netsuite_backfill_id: str  # netsuite/* initial load over the stand-in days, globex


def ga4_partitions(days: tuple[date, ...], tenant: str) -> list[str]:
    return [f"{day}|{tenant}" for day in days]


@pytest.fixture(scope="session")
def landed(ui_stack: UIStack, tmp_path_factory: pytest.TempPathFactory) -> Landed:
    work: Path = tmp_path_factory.mktemp("landed")
    for sensor in SENSORS:
        assert ui_stack.start_sensor(sensor) == "RUNNING", sensor

    # SFTP: yesterday's users report appears in acme's folder, as the CRM export drops it.
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    name = f"users_{yesterday:%Y%m%d}.csv"
    content = users_report(yesterday, seed="e2e")
    (ui_stack.sandbox.home / "sandbox" / "sftp" / "acme" / "reports" / name).write_bytes(content)

    # recsys: an uploader drops a catalog and interactions, each followed by its `.done` marker.
    store = ui_stack.object_store()
    made = generate_recsys(60, 25, 400, work / "recsys", seed=7)
    keys = []
    for data_type, path in (("items", made.items_path), ("interactions", made.interactions_path)):
        key = f"{landing_prefix('acme', data_type)}{path.name}"
        store.put_file(key, path, content_type="text/csv")
        store.put(f"{key}.done", b"")
        keys.append(key)

    # commerce: one batch, data files in foreign-key order and the manifest last, as `ingest commerce` uploads.
    (batch,) = generate_commerce(["acme"], 30, 10, 40, work / "commerce", seed=11)
    execute_plan(store, plan_upload("acme", scan_local(work / "commerce", "acme"), remote_state(store, "acme")))

    # BrightData: the Launchpad's trigger job for every page configured for acme.
    crawl_run = ui_stack.launch_job(
        "brightdata_trigger", run_config={"ops": {"trigger_crawls": {"config": {"tenant": "acme"}}}}
    )

    # Backfills as launched from an asset's partitions page.
    ga4 = ui_stack.launch_backfill(
        [["ga4", event] for event in GA4_EVENTS], ga4_partitions(ui_stack.days, BACKFILL_TENANT), title="e2e ga4"
    )
    netsuite_keys = [list(a.key.path) for a in netsuite_table_assets]
    netsuite = ui_stack.launch_backfill(
        netsuite_keys, ga4_partitions(ui_stack.days, "globex"), title="e2e netsuite initial load"
    )
    return Landed(
        sftp_file=name,
        sftp_bytes=content,
        recsys=made,
        recsys_keys=tuple(keys),
        commerce=batch,
        crawl_run_id=crawl_run,
        ga4_backfill_id=ga4,
        netsuite_backfill_id=netsuite,
    )
