"""What the end-to-end modules set in motion, all at once, so the daemon works on every source in parallel.

The sensors tick every 30 to 60 seconds and a run costs seconds of process start-up: waiting for each source in turn
would add those up. `landed` drops every file and launches every backfill on first use; each module then waits only
for its own outcome, and the slowest source sets the suite's wall time instead of the sum.
"""

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ingestion_platform.defs.commerce.ingest import execute_plan, remote_state
from ingestion_platform.defs.commerce.upload import plan_upload, scan_local
from ingestion_platform.defs.netsuite.assets import netsuite_table_assets
from ingestion_platform.defs.recsys.parse import DataType
from ingestion_platform.defs.recsys.partitions import landing_prefix
from ingestion_platform.sandbox.commerce_data import GeneratedBatch, generate_commerce
from ingestion_platform.sandbox.crm_reports import users_report
from ingestion_platform.sandbox.recsys_data import GeneratedRecsys, generate_recsys
from ingestion_platform_tests.e2e.stack import UIStack

SFTP_SENSOR = "sftp_users_files"
SFTP_MTIME = 1_700_000_000
SENSORS = (SFTP_SENSOR, "recsys_landing", "commerce_batches", "brightdata_progress", "automation")
GA4_EVENTS = ("purchase", "add_to_cart", "page_view", "view_item", "view_search_results", "no_search_results")
# Each concern gets its own tenant where two would meet in one table, so no test reads another's rows.
BACKFILL_TENANT = "acme"


@dataclass(frozen=True)
class Landed:
    sftp_file: str  # a users report for yesterday, in acme's SFTP folder
    sftp_bytes: bytes
    sftp_loaded: str  # in globex's folder: a report loaded by a UI launch before the sensor saw it
    sftp_new: str  # in globex's folder beside it: one only the sensor should request
    ga4_run_id: str  # ga4_events for one day of acme, launched as the UI's partition launch does
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
    # Off while globex's files are set up (below), so it first sees them after one is loaded.
    assert ui_stack.stop_sensor(SFTP_SENSOR) == "STOPPED"

    # SFTP: yesterday's users report appears in acme's folder, as the CRM export drops it.
    sftp_root = ui_stack.sandbox.home / "sandbox" / "sftp"
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    name = f"users_{yesterday:%Y%m%d}.csv"
    content = users_report(yesterday, seed="e2e")
    (sftp_root / "acme" / "reports" / name).write_bytes(content)
    # globex: two reports; an operator loads the first from the UI before the sensor looks.
    before = yesterday - timedelta(days=1)
    globex_files = {day: sftp_root / "globex" / "reports" / f"users_{day:%Y%m%d}.csv" for day in (yesterday, before)}
    for day, path in globex_files.items():
        path.write_bytes(users_report(day, seed="e2e-globex"))
        os.utime(path, (SFTP_MTIME, SFTP_MTIME))
    loaded_run = ui_stack.materialize([["sftp", "users"]], partition=f"{yesterday}|globex")

    # GA4: one day of acme, as the UI launches a partition (its backfill below loads the same day again).
    ga4_run = ui_stack.launch_job(
        "ga4_events",
        tags={
            "dagster/partition": f"{ui_stack.days[0]}|acme",
            "dagster/partition/date": str(ui_stack.days[0]),
            "dagster/partition/tenant": "acme",
        },
    )

    # recsys: an uploader drops a catalog and interactions, each followed by its `.done` marker.
    store = ui_stack.object_store()
    made = generate_recsys(60, 25, 400, work / "recsys", seed=7)
    keys = []
    uploads: tuple[tuple[DataType, Path], ...] = (("items", made.items_path), ("interactions", made.interactions_path))
    for data_type, path in uploads:
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
    assert ui_stack.wait_for_run(loaded_run) == "SUCCESS", ui_stack.run_errors(loaded_run)
    assert ui_stack.start_sensor(SFTP_SENSOR) == "RUNNING"
    return Landed(
        sftp_file=name,
        sftp_bytes=content,
        sftp_loaded=globex_files[yesterday].name,
        sftp_new=globex_files[before].name,
        ga4_run_id=ga4_run,
        recsys=made,
        recsys_keys=tuple(keys),
        commerce=batch,
        crawl_run_id=crawl_run,
        ga4_backfill_id=ga4,
        netsuite_backfill_id=netsuite,
    )
