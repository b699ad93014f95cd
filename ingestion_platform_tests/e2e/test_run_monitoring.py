"""A run whose process is killed midway is marked failed, retried once by the daemon, and the retry leaves no
duplicate rows.

Who notices the dead process: with the DefaultRunLauncher (docker/dagster.yaml), Dagster's run monitoring cannot ask
about a run worker's health (`DefaultRunLauncher.supports_check_run_worker_health` is False: only the k8s, ECS and
Docker launchers implement `check_run_worker_health`), so for a STARTED run the monitoring daemon enforces only
`dagster/max_runtime`. The run worker is a child of the code server, and the code server's own cleanup thread
(`_check_for_orphaned_runs`, every 0.5 s) sees it exit and reports the run FAILURE with the signal that ended it.
`run_retries` (max_retries 1, not on step failures) then launches the retry: a crash is exactly what it is for.
The shipped `poll_interval_seconds: 60` is left as it is; nothing here waits on it.
"""

import os
import re
import signal
from pathlib import Path

import pytest

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.stack import EVENTS_PER_DAY
from ingestion_platform_tests.defs.ga4.test_assets import expected_counts
from ingestion_platform_tests.e2e.conftest import GA4_EVENTS
from ingestion_platform_tests.e2e.stack import UIStack

pytestmark = pytest.mark.timeout(900)  # the sensors tick every 30 to 60 s; a loaded CI machine runs slowly
TENANT = "globex"
STARTED = re.compile(r"Started process for run \(pid: (\d+)\)")


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
        chain.append(pid)
    return chain


def test_a_killed_run_is_marked_failed_and_its_retry_loads_no_duplicates(ui_stack: UIStack) -> None:
    day = ui_stack.days[-1]
    # As the UI launches one partition: the code location's default executor, a process per event type.
    run_id = ui_stack.launch_job(
        "ga4_events",
        tags={
            "dagster/partition": f"{day}|{TENANT}",
            "dagster/partition/date": str(day),
            "dagster/partition/tenant": TENANT,
        },
    )

    def worker_pid_once_loading() -> int | None:
        """The run worker's pid, once at least one event type is loaded: midway, with rows already written."""
        messages = ui_stack.run_messages(run_id)
        pids = [int(m.group(1)) for e in messages if (m := STARTED.search(e["message"]))]
        materialized = any(e["__typename"] == "MaterializationEvent" for e in messages)
        return pids[0] if pids and materialized else None

    pid = ui_stack.wait_until(worker_pid_once_loading, 600, "the run to load its first event type", interval=0.3)
    assert ui_stack.run(run_id)["status"] == "STARTED", "the run finished before it could be killed midway"
    # Only a process this stack started: a descendant of its code server.
    assert ui_stack.processes["code_server"].pid in _ancestors(pid)
    os.kill(pid, signal.SIGKILL)

    assert ui_stack.wait_for_run(run_id, timeout=120) == "FAILURE"
    messages = [e["message"] for e in ui_stack.run_messages(run_id)]
    assert any("was terminated by signal 9 (SIGKILL)" in m for m in messages), messages[-10:]

    (retry,) = ui_stack.wait_for_runs({"dagster/parent_run_id": run_id}, timeout=600)
    assert retry["tags"]["dagster/retry_number"] == "1"
    assert retry["status"] == "SUCCESS", ui_stack.run_errors(retry["runId"])

    warehouse = WarehouseResource(url=ui_stack.warehouse_url)
    expected = expected_counts(day, seed=TENANT, n_events=EVENTS_PER_DAY)
    for event in GA4_EVENTS:
        loaded = warehouse.scalar(
            f"SELECT count(*) FROM ga4.{event} WHERE tenant_id = :t AND event_date = :d", {"t": TENANT, "d": day}
        )
        assert loaded == expected[event], event
