"""SFTP reports end to end: a real SSH/SFTP server, the sensors' ticks, the assets' loads into PostgreSQL."""

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ingestion_platform.defs.sftp import sensors
from ingestion_platform.defs.sftp.assets import sftp_report_assets
from ingestion_platform.defs.sftp.checks import coordinates_out_of_range, email_validity, near_duplicate_keys
from ingestion_platform.defs.sftp.discovery import LOADED_FILES_METADATA_KEY, loaded_file_entry
from ingestion_platform.defs.sftp.reports import USERS
from ingestion_platform.defs.sftp.sensors import sftp_report_sensors
from ingestion_platform.resources.sftp import SFTPResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.crm_reports import locations_report, users_report
from ingestion_platform.sandbox.sftp_server import SFTPServerInfo, run_sftp_server

PASSWORD_ENV = "TEST_SFTP_PASSWORD"
PASSWORD = "s3cret"
# A fixed clock: the sensors' lookback window and the day partitions never move under a test at midnight.
TODAY = date(2024, 6, 3)
DAY = TODAY - timedelta(days=1)
# Tests of unreachable tenants ask for them: each tick spends seconds waiting on them.
WITH_UNREACHABLE = pytest.mark.parametrize("env", ["with unreachable tenants"], indirect=True)
HEADER = "user_id,email,company_name,first_name,last_name,created_at,updated_at"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def silent_host() -> Iterator[int]:
    """A host that accepts TCP connections and never says a word: the hardest kind of down for a sensor."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SFTPServerInfo, Path]]:
    base = tmp_path_factory.mktemp("sftp")
    users = {"acme": PASSWORD, "latin": PASSWORD}
    with run_sftp_server(base / "root", users, base / "host_key") as info:
        yield info, base / "root"


@pytest.fixture
def env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sftp_server,
    warehouse: WarehouseResource,
    monkeypatch: pytest.MonkeyPatch,
):
    info, root = sftp_server
    unreachable = getattr(request, "param", None) == "with unreachable tenants"
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.setattr(sensors, "utc_today", lambda: TODAY)
    folder = root / f"acme_{tmp_path.name}"
    folder.mkdir()
    latin_folder = root / f"latin_{tmp_path.name}"
    latin_folder.mkdir()
    common = {"host": info.host, "port": info.port, "password_env": PASSWORD_ENV, "host_keys": [info.host_key_line]}
    registry = {
        "tenants": {
            "acme": {"sftp": {**common, "username": "acme", "remote_dir": f"/{folder.name}"}},
            "latin": {
                "sftp": {**common, "username": "latin", "remote_dir": f"/{latin_folder.name}", "encoding": "latin-1"}
            },
        }
    }
    if unreachable:
        registry["tenants"]["down"] = {"sftp": {**common, "username": "acme", "port": _closed_port()}}
        silent_port = request.getfixturevalue("silent_host")
        registry["tenants"]["silent"] = {"sftp": {**common, "username": "acme", "port": silent_port}}
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump(registry))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tenant", sorted(registry["tenants"]))
    resources = {
        "sftp": SFTPResource(connect_timeout=2.0, banner_timeout=1.0, max_attempts=2),
        "warehouse": warehouse,
        "tenants": TenantsResource(path=str(tenants_file)),
    }

    class Env:
        def __init__(self) -> None:
            self.folder, self.latin_folder, self.warehouse, self.instance = folder, latin_folder, warehouse, instance
            self.tenants_file, self.info, self.resources = tenants_file, info, resources

        def upload(self, name: str, data: bytes, folder: Path | None = None, mtime: int | None = None) -> Path:
            path = (folder or self.folder) / name
            path.write_bytes(data)
            if mtime is not None:
                os.utime(path, (mtime, mtime))
            return path

        def run(self, kind: str, partition_key: str) -> dg.ExecuteInProcessResult:
            asset = next(a for a in sftp_report_assets if a.key.path[-1] == kind)
            return dg.materialize(
                [asset],
                partition_key=partition_key,
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )

        def tick(self, kind: str, cursor: str | None = None) -> dg.SensorResult:
            sensor = next(s for s in sftp_report_sensors if s.name == f"sftp_{kind}_files")
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            result = sensor(context)
            assert isinstance(result, dg.SensorResult)
            return result

    yield Env()
    instance.dispose()


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None
    return error.message


def test_users_report_loads_with_rejects_and_rerun_is_idempotent(env) -> None:
    name = f"users_{DAY:%Y%m%d}.csv"
    env.upload(name, users_report(DAY, seed="acme"))
    result = env.run("users", f"{DAY}|acme")
    assert result.success
    wh = env.warehouse
    loaded = wh.query("SELECT * FROM crm.users WHERE tenant_id = 'acme'")
    rejects = wh.query("SELECT * FROM crm.users_rejects")
    assert len(rejects) == 1 and "is not a timestamp" in rejects["reason"][0]
    assert rejects["raw"][0]["created_at"] == "31/02/2024" and rejects["source_file"][0] == name
    meta = result.asset_materializations_for_node("sftp__users")[0].metadata
    assert meta["rows_read"].value == len(loaded) + 1
    assert meta["rows_rejected"].value == 1 and meta["files"].value == [name]
    assert meta["file_bytes"].value == (env.folder / name).stat().st_size
    assert any("\n" in c for c in loaded["company_name"])  # quoted newlines survived
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"no_duplicate_keys": True, "email_format_share": True}

    before = wh.query("SELECT * FROM crm.users ORDER BY user_id")
    assert env.run("users", f"{DAY}|acme").success
    assert wh.query("SELECT * FROM crm.users ORDER BY user_id").equals(before)
    assert wh.scalar("SELECT count(*) FROM crm.users_rejects") == 1


def test_latin1_bom_crlf_and_quoted_newline_files(env) -> None:
    text = (
        HEADER
        + "\r\n"
        + 'U1,zoe@example.com,"Société, Générale","Zoé",Müller,,\r\nU2,b@example.com,"Two\r\nLines",B,C,,\r\n'
    )
    env.upload(f"users_{DAY:%Y%m%d}.csv", text.encode("latin-1"), folder=env.latin_folder)
    assert env.run("users", f"{DAY}|latin").success
    rows = env.warehouse.query(
        "SELECT user_id, company_name, last_name FROM crm.users WHERE tenant_id = 'latin' ORDER BY 1"
    )
    assert rows.values.tolist() == [["U1", "Société, Générale", "Müller"], ["U2", "Two\r\nLines", "C"]]

    env.upload(f"users_{TODAY:%Y%m%d}.csv", ("\ufeff" + HEADER + "\r\nU3,c@example.com,C,,,,\r\n").encode("utf-8"))
    assert env.run("users", f"{TODAY}|acme").success
    assert env.warehouse.scalar("SELECT user_id FROM crm.users WHERE tenant_id = 'acme'") == "U3"


def test_a_reuploaded_changed_file_is_detected_and_reloaded(env) -> None:
    name = f"locations_{DAY:%Y%m%d}.csv"
    env.upload(name, locations_report(DAY, seed="acme"), mtime=1_700_000_000)
    first = env.tick("locations")
    assert first.run_requests == []  # first sight: could still be growing
    second = env.tick("locations", first.cursor)
    assert [r.partition_key for r in second.run_requests] == [f"{DAY}|acme"]
    assert env.run("locations", f"{DAY}|acme").success
    # The sensor restarts from its stored cursor and does not request the same file again.
    assert env.tick("locations", second.cursor).run_requests == []

    changed = locations_report(DAY, seed="acme").replace(b"store 1,", b"flagship 1,")
    env.upload(name, changed, mtime=1_700_000_500)
    third = env.tick("locations", second.cursor)
    assert third.run_requests == []  # changed: wait for it to settle
    fourth = env.tick("locations", third.cursor)
    assert len(fourth.run_requests) == 1 and fourth.run_requests[0].run_key != second.run_requests[0].run_key
    assert env.run("locations", f"{DAY}|acme").success
    assert env.warehouse.scalar("SELECT count(*) FROM crm.locations WHERE location_name LIKE '%flagship 1'") == 1
    assert coordinates_out_of_range(env.warehouse, "acme") == 0


def test_the_asset_records_what_it_loaded_so_a_fresh_cursor_does_not_request_it(env) -> None:
    name = f"users_{DAY:%Y%m%d}.csv"
    path = env.upload(name, users_report(DAY, seed="acme"), mtime=1_700_000_000)
    result = env.run("users", f"{DAY}|acme")  # as the demo or a backfill loads it: no sensor involved
    assert result.success
    meta = result.asset_materializations_for_node("sftp__users")[0].metadata
    assert meta[LOADED_FILES_METADATA_KEY].value == [loaded_file_entry(name, path.stat().st_size, 1_700_000_000)]

    first = env.tick("users")  # a sensor that never saw the folder
    second = env.tick("users", first.cursor)
    assert first.run_requests == [] and second.run_requests == []
    assert json.loads(second.cursor)["acme"][name] == [path.stat().st_size, 1_700_000_000, True]


def test_a_file_loaded_unchanged_is_not_requested_again_by_a_fresh_cursor(env) -> None:
    name = f"users_{DAY:%Y%m%d}.csv"
    path = env.upload(name, users_report(DAY, seed="acme"), mtime=1_700_000_000)
    size = path.stat().st_size
    # What `sftp/users` records for the file it loaded (the demo's runs, a backfill): name, size and mtime.
    env.instance.report_runless_asset_event(
        dg.AssetMaterialization(
            dg.AssetKey(["sftp", "users"]),
            partition=f"{DAY}|acme",
            metadata={LOADED_FILES_METADATA_KEY: [loaded_file_entry(name, size, 1_700_000_000)]},
        )
    )
    first = env.tick("users")  # a fresh cursor: first sight
    second = env.tick("users", first.cursor)
    assert second.run_requests == []
    assert json.loads(second.cursor)["acme"][name] == [size, 1_700_000_000, True]

    env.upload(name, users_report(DAY, seed="acme") + b"U999,new@example.com,N,,,,\n", mtime=1_700_000_900)
    third = env.tick("users")  # changed since it was loaded: requested again once stable
    fourth = env.tick("users", third.cursor)
    assert [r.tags["sftp/file"] for r in fourth.run_requests] == [name]


@WITH_UNREACHABLE
def test_growing_and_temporary_files_wait_and_a_down_tenant_does_not_block_others(env) -> None:
    growing = env.upload(f"users_{DAY:%Y%m%d}.csv", HEADER.encode() + b"\n", mtime=1_700_000_000)
    env.upload(f"users_{TODAY:%Y%m%d}.csv.part", b"partial")
    env.upload(".users_tmp.csv", b"hidden")
    first = env.tick("users")
    growing.write_bytes(growing.read_bytes() + b"U1,a@example.com,A,,,,\n")
    os.utime(growing, (1_700_000_100, 1_700_000_100))
    second = env.tick("users", first.cursor)
    assert second.run_requests == []
    third = env.tick("users", second.cursor)
    assert [r.tags["sftp/file"] for r in third.run_requests] == [growing.name]
    cursor = json.loads(third.cursor)
    assert set(cursor["acme"]) == {growing.name}  # temporary names never enter the cursor
    assert cursor["down"] == {} and cursor["silent"] == {}  # tenants that could not be listed keep their state


@WITH_UNREACHABLE
def test_a_silent_host_is_reported_and_does_not_hold_back_other_tenants(env) -> None:
    env.upload(f"users_{DAY:%Y%m%d}.csv", users_report(DAY, seed="acme"), mtime=1_700_000_000)
    started = time.monotonic()
    first = env.tick("users")
    second = env.tick("users", first.cursor)
    assert time.monotonic() - started < 30
    assert [r.tags["tenant"] for r in second.run_requests] == ["acme"]
    reason = first.skip_reason.skip_message if first.skip_reason else ""
    assert "'silent'" in reason and "SSH handshake" in reason
    assert "'down'" in reason and "cannot reach the SFTP host" in reason


def test_wrong_host_key_and_wrong_password_fail_clearly_without_retries(env) -> None:
    env.upload(f"users_{DAY:%Y%m%d}.csv", users_report(DAY, seed="acme"))
    registry = yaml.safe_load(env.tenants_file.read_text())
    registry["tenants"]["acme"]["sftp"]["host_keys"] = ["SHA256:" + "A" * 43]
    env.tenants_file.write_text(yaml.safe_dump(registry))
    result = env.run("users", f"{DAY}|acme")
    assert not result.success
    assert "do not pin" in failure_message(result) and env.info.fingerprint in failure_message(result)
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]

    registry["tenants"]["acme"]["sftp"]["host_keys"] = [env.info.host_key_line]
    env.tenants_file.write_text(yaml.safe_dump(registry))
    os.environ[PASSWORD_ENV] = "wrong"
    result = env.run("users", f"{DAY}|acme")
    assert not result.success and "rejected the login of user 'acme'" in failure_message(result)
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]


def test_missing_file_and_missing_columns_fail_naming_the_file(env) -> None:
    result = env.run("users", f"{DAY}|acme")
    assert not result.success and f"users_{DAY:%Y%m%d}.csv" in failure_message(result)
    env.upload(f"users_{DAY:%Y%m%d}.csv", b"user_id,first_name\nU1,A\n")
    result = env.run("users", f"{DAY}|acme")
    assert not result.success and "missing required column(s)" in failure_message(result)


def test_checks_can_fail(env) -> None:
    env.upload(f"users_{DAY:%Y%m%d}.csv", (HEADER + "\nU1,not-an-email,A,,,,\nU2,b@example.com,B,,,,\n").encode())
    result = env.run("users", f"{DAY}|acme")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["email_format_share"].passed
    assert email_validity(env.warehouse, "acme") == (1, 2)
    with env.warehouse.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO crm.users (tenant_id, user_id, source_file, source_line, report_date) "
            "VALUES ('acme', ' u1', 'manual', 1, CURRENT_DATE)"
        )
    assert near_duplicate_keys(env.warehouse, USERS, "acme") == 1
    env.upload(
        f"locations_{DAY:%Y%m%d}.csv",
        b"location_id,location_name,address,city,region,country,postal_code,latitude,longitude\nL1,X,,,,,,95.0,10\n",
    )
    result = env.run("locations", f"{DAY}|acme")
    assert result.success  # non-blocking: the row is kept and the check reports it
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["coordinates_in_range"] is False


def test_parse_failures_and_values_the_loader_refuses_share_one_quarantine(env) -> None:
    name = f"users_{DAY:%Y%m%d}.csv"
    text = HEADER + "\nU1,a@example.com,A,,,,\nU2,b@example.com,Bad\x00Co,,,,\nU3,too,few\n"
    env.upload(name, text.encode())
    result = env.run("users", f"{DAY}|acme")
    assert result.success
    rejects = env.warehouse.query("SELECT * FROM crm.users_rejects ORDER BY line_number")
    assert rejects["line_number"].tolist() == [3, 4]
    assert "NUL byte" in rejects["reason"][0] and rejects["column_name"][0] == "company_name"
    assert rejects["reason"][1] == "expected 7 fields, found 3"
    assert set(rejects["source_file"]) == {name} and set(rejects["tenant_id"]) == {"acme"}
    assert env.warehouse.scalar("SELECT count(*) FROM crm.users") == 1
    meta = result.asset_materializations_for_node("sftp__users")[0].metadata
    assert meta["rows_rejected"].value == 2 and meta["rows_upserted"].value == 1
    assert meta["rows_unchanged"].value == 0
