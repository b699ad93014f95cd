"""A run launched over GraphQL as the UI launches a partition, and what the daemon does after it by itself.

The run uses the code location's default executor (the forkserver, a process per step), queued by the webserver and
dequeued by the daemon under the instance's run limit; the automation sensor then refreshes `ga4/availability`.
"""

from datetime import date

import dagster as dg
import pytest

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.stack import EVENTS_PER_DAY
from ingestion_platform_tests.defs.ga4.test_assets import expected_counts
from ingestion_platform_tests.e2e.conftest import Landed
from ingestion_platform_tests.e2e.stack import UIStack

AVAILABILITY = dg.AssetKey(["ga4", "availability"])

pytestmark = pytest.mark.timeout(900)  # the sensors tick every 30 to 60 s; a loaded CI machine runs slowly


def test_a_run_launched_over_graphql_loads_ga4_events(ui_stack: UIStack, landed: Landed) -> None:
    assert ui_stack.wait_for_run(landed.ga4_run_id) == "SUCCESS", ui_stack.run_errors(landed.ga4_run_id)
    day: date = ui_stack.days[0]
    warehouse = WarehouseResource(url=ui_stack.warehouse_url)
    params = {"d": day}
    views = warehouse.scalar("SELECT count(*) FROM ga4.page_view WHERE tenant_id = 'acme' AND event_date = :d", params)
    assert views > 0
    # Loaded again by the backfill of the same days: the slice is replaced, never appended to.
    ui_stack.wait_for_backfill(landed.ga4_backfill_id)
    assert views == expected_counts(day, seed="acme", n_events=EVENTS_PER_DAY)["page_view"]
    provenance = "SELECT count(DISTINCT provenance) FROM ga4.purchase WHERE tenant_id = 'acme' AND event_date = :d"
    assert warehouse.scalar(provenance, params) == 1  # the daily export table only, never intraday rows


def test_the_daemon_refreshes_availability_by_automation_after_ga4_runs(ui_stack: UIStack, landed: Landed) -> None:
    ui_stack.wait_for_run(landed.ga4_run_id)
    backfill = ui_stack.wait_for_backfill(landed.ga4_backfill_id)
    ga4_ended = max(ui_stack.run(r)["endTime"] for r in [landed.ga4_run_id, *(b["runId"] for b in backfill["runs"])])
    with ui_stack.instance() as instance:
        # The automation sensor ticks every 30 s; its run then starts in its own process.
        def refreshed() -> dg.EventLogEntry | None:
            """A materialization by a run that started after the loads ended, so it counted all of them."""
            event = instance.get_latest_materialization_event(AVAILABILITY)
            if event is None or event.timestamp <= ga4_ended:
                return None
            record = instance.get_run_record_by_id(event.run_id)
            return event if record and record.start_time and record.start_time > ga4_ended else None

        event = ui_stack.wait_until(refreshed, 600, "ga4/availability materialized after the GA4 runs", interval=2)
        run = instance.get_run_by_id(event.run_id)
        assert run is not None
        assert run.tags.get("dagster/sensor_name") == "automation"
        assert run.tags.get("dagster/from_automation_condition") == "true"
    warehouse = WarehouseResource(url=ui_stack.warehouse_url)
    days = warehouse.scalar(
        "SELECT days_loaded FROM ga4.availability WHERE tenant_id = 'acme' AND event_name = 'page_view'"
    )
    assert days == len(ui_stack.days)
