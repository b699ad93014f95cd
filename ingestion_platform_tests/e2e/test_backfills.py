"""Backfills launched over GraphQL as the partitions page launches them: GA4 days for a tenant, a NetSuite initial load.

Both sources' assets declare `BackfillPolicy.single_run()`: a range of days is one run (one query per event type or
table over the range), not a run per day.
"""

from datetime import datetime, time, timedelta

import pytest

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.stack import EVENTS_PER_DAY
from ingestion_platform_tests.defs.ga4.test_assets import expected_counts
from ingestion_platform_tests.e2e.conftest import BACKFILL_TENANT, GA4_EVENTS, Landed
from ingestion_platform_tests.e2e.stack import UIStack

pytestmark = pytest.mark.timeout(900)  # the sensors tick every 30 to 60 s; a loaded CI machine runs slowly


def test_a_ga4_backfill_of_several_days_loads_every_event_type(ui_stack: UIStack, landed: Landed) -> None:
    backfill = ui_stack.wait_for_backfill(landed.ga4_backfill_id, timeout=600)
    assert backfill["status"] == "COMPLETED_SUCCESS", (
        backfill,
        *(ui_stack.run_errors(r["runId"]) for r in backfill["runs"]),
    )
    assert backfill["numPartitions"] == len(ui_stack.days)
    assert len(backfill["runs"]) == 1, "a single-run backfill policy: the days are one run"
    warehouse = WarehouseResource(url=ui_stack.warehouse_url)
    for day in ui_stack.days:
        expected = expected_counts(day, seed=BACKFILL_TENANT, n_events=EVENTS_PER_DAY)
        for event in GA4_EVENTS:
            loaded = warehouse.scalar(
                f"SELECT count(*) FROM ga4.{event} WHERE tenant_id = :t AND event_date = :d",
                {"t": BACKFILL_TENANT, "d": day},
            )
            assert loaded == expected[event], (day, event)


def test_a_netsuite_initial_load_backfill_is_one_run_and_loads_the_source(ui_stack: UIStack, landed: Landed) -> None:
    backfill = ui_stack.wait_for_backfill(landed.netsuite_backfill_id, timeout=600)
    assert backfill["status"] == "COMPLETED_SUCCESS", (
        backfill,
        *(ui_stack.run_errors(r["runId"]) for r in backfill["runs"]),
    )
    assert len(backfill["runs"]) == 1
    (run,) = backfill["runs"]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/asset_partition_range_start"] == f"{ui_stack.days[0]}|globex"
    assert tags["dagster/asset_partition_range_end"] == f"{ui_stack.days[-1]}|globex"

    account = ui_stack.sandbox.netsuite["globex"]
    start = datetime.combine(ui_stack.days[0], time.min)
    end = datetime.combine(ui_stack.days[-1] + timedelta(days=1), time.min)
    warehouse = WarehouseResource(url=ui_stack.warehouse_url)
    loaded = set(
        warehouse.query("SELECT id FROM netsuite.customer WHERE tenant_id = 'globex' AND deleted_at IS NULL")["id"]
        .astype(int)
        .tolist()
    )
    in_days = {
        r[0]
        for r in account.ground_truth(
            "SELECT id FROM customer WHERE lastmodifieddate >= ? AND lastmodifieddate < ?", [start, end]
        )
    }
    # The window reaches the tenant's lag back into the day before the first; never past the last day.
    with_lag = {
        r[0]
        for r in account.ground_truth(
            "SELECT id FROM customer WHERE lastmodifieddate >= ? AND lastmodifieddate < ?",
            [start - timedelta(days=1), end],
        )
    }
    assert in_days and in_days <= loaded <= with_lag
