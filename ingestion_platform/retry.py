"""The one retry policy for transient failures of external calls (HTTP APIs, BigQuery, SFTP, the warehouse).

Two layers share one classification (`is_transient`): retries inside a step cover seconds-long blips without
re-running the whole step; `STEP_RETRY`, Dagster's op retry, covers outages of minutes. Everything else
(authentication, not-found, bad input, exhausted resources, our own bugs) fails at once through `per_tenant`, so an
operator sees the message now instead of after three backoffs.
"""

import email.utils
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import httpx
import paramiko
import psycopg
import sqlalchemy.exc
import stamina
from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as auth_exceptions
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

from ingestion_platform.redaction import redact

log = logging.getLogger("ingestion_platform.retry")

_TRANSIENT_GOOGLE = (
    google_exceptions.InternalServerError,
    google_exceptions.BadGateway,
    google_exceptions.ServiceUnavailable,
    google_exceptions.GatewayTimeout,
    google_exceptions.TooManyRequests,
)

TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# PostgreSQL errors that a later attempt can succeed at: class 08 (connection exception) and these. Authentication
# (28), permissions (42501), exhausted resources (53: disk full, temp_file_limit, out of memory), statement timeouts
# and cancels (57014), data and constraint errors (22, 23) and everything else fail the same way every time.
_TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure: the transaction lost a race under SERIALIZABLE / REPEATABLE READ
        "40P01",  # deadlock_detected: the other transaction went ahead; ours can now
        "55P03",  # lock_not_available: a lock_timeout behind another writer, which finishes
        "57P01",  # admin_shutdown: pg_terminate_backend, a restart or a failover
        "57P02",  # crash_shutdown: another backend crashed and the server reset
        "57P03",  # cannot_connect_now: starting up, shutting down or in recovery
        "57P05",  # idle_session_timeout: the session was closed while idle; a new one works
        "53300",  # too_many_connections: the one class-53 error that clears when other clients disconnect
    }
)

# libpq reports errors raised while a connection is being established as text only, without a SQLSTATE (psycopg's
# `sqlstate` is None): the server's rejection follows "FATAL:". These are the rejections that clear by themselves.
_TRANSIENT_STARTUP_REJECTIONS = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "too many clients already",
    "remaining connection slots are reserved",
    "terminating connection due to administrator command",
)
# libpq's own refusals to authenticate (no password given, unsupported method): as permanent as a wrong password.
_CLIENT_AUTH_FAILURES = ("fe_sendauth", "authentication", "password")


class TransientError(Exception):
    """Raise to say "try again shortly" where no library error says it (an API answering 202 "still building").

    `retry_after` (seconds) asks the policy for a specific wait instead of its backoff.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        # SQLAlchemy wraps the driver's error; a disconnect it detected invalidates the pooled connection, so a
        # retry gets a fresh one.
        return exc.connection_invalidated or (isinstance(exc.orig, Exception) and is_transient(exc.orig))
    if isinstance(exc, psycopg.Error):
        return _postgres_error_is_transient(exc)
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return True  # every pooled connection was busy: others finish
    if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException):
        return False
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return False  # a bad URL or a request httpx refuses to send: ours to fix
    transient_types = (
        *_TRANSIENT_GOOGLE,
        ConnectionError,
        TimeoutError,
        httpx.TransportError,
        auth_exceptions.TransportError,  # a network blip while refreshing a token, not bad credentials
    )
    if isinstance(exc, transient_types):
        return True
    # paramiko reports a dropped SSH connection as SSHException ("Server connection dropped") or EOFError.
    if isinstance(exc, paramiko.SSHException | EOFError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in TRANSIENT_HTTP_STATUSES
    if isinstance(exc, google_exceptions.Forbidden):
        # BigQuery reports quota exhaustion (rateLimitExceeded) as 403; real permission errors are not retried.
        return any(err.get("reason") in {"rateLimitExceeded", "quotaExceeded"} for err in exc.errors or [])
    return False


def _postgres_error_is_transient(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    if state is None:
        # No SQLSTATE: the connection could not be established or was lost (refused, timed out, reset), or the
        # server rejected it during start-up, which libpq reports as text.
        if not isinstance(exc, psycopg.OperationalError):
            return False  # InterfaceError, ProgrammingError: our misuse of the driver
        text = str(exc).lower()
        if any(marker in text for marker in _TRANSIENT_STARTUP_REJECTIONS):
            return True
        return "fatal:" not in text and not any(marker in text for marker in _CLIENT_AUTH_FAILURES)
    if state.startswith("08") or state in _TRANSIENT_SQLSTATES:
        return True
    # Concurrent `CREATE ... IF NOT EXISTS` of one object: the loser hits the system catalog's unique index instead
    # of seeing the object (for example pg_namespace_nspname_index for a schema). Again, it sees the object.
    return state == "23505" and exc.diag.schema_name == "pg_catalog"


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (`Retry-After` as delta-seconds or HTTP-date), or None if it did not."""
    if isinstance(exc, TransientError):
        return exc.retry_after
    if not isinstance(exc, httpx.HTTPStatusError) or exc.response.status_code not in {429, 503}:
        return None
    return parse_retry_after(exc.response.headers.get("Retry-After"))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unparseable: fall back to our own backoff
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_hook(max_retry_after: float) -> Callable[[Exception], bool | float]:
    """stamina's `on=` hook: False for permanent errors, the server's `Retry-After` (at most `max_retry_after`
    seconds) when it gave one, else True for exponential backoff with jitter."""

    def hook(exc: Exception) -> bool | float:
        if not is_transient(exc):
            return False
        wait = retry_after(exc)
        return True if wait is None else min(wait, max_retry_after)

    return hook


def retry_transient[T](
    fn: Callable[..., T],
    *,
    attempts: int = 5,
    timeout: float | None = 120.0,
    max_retry_after: float = 60.0,
    only_if: Callable[[Exception], bool] | None = None,
) -> Callable[..., T]:
    """Wrap `fn` with exponential backoff and jitter on transient errors only, honouring `Retry-After`.

    `timeout=None` bounds by attempts alone, for calls that make progress between attempts (resumed downloads).
    `only_if` narrows the transient errors further, for calls that must not run twice (a POST that the server may
    have carried out before the connection dropped).
    """
    hook = backoff_hook(max_retry_after)
    on = hook if only_if is None else (lambda exc: only_if(exc) and hook(exc))
    decorator: Any = stamina.retry(on=on, attempts=attempts, timeout=timeout, wait_initial=0.5, wait_max=20)
    return decorator(fn)


def _log_retry(details: RetryDetails) -> None:
    cause = details.caused_by
    log.warning(
        "retry %d of %s in %.1f s after %s",
        details.retry_num,
        details.name,
        details.wait_for,
        redact(f"{type(cause).__name__}: {cause}"),
    )


# stamina's default hook prints through structlog straight to stdout, past logging's filters and handlers, with the
# reprs of the call's arguments; this one logs through `logging`, redacted, and names no arguments.
set_on_retry_hooks([_log_retry])

STEP_RETRY = dg.RetryPolicy(max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL)


def per_tenant[T](work: Mapping[str, T], load: Callable[[str, T], None], log: Any) -> None:
    """Run `load` for each tenant of a run, so one tenant's failure neither hides nor stops the others'.

    A backfill run may hold several tenants (Dagster groups a range by its smaller dimension). The run still fails
    if any tenant failed, naming each; it is retried by `STEP_RETRY` only if some failure was transient, and the
    retry reloads every tenant, which the loads' idempotency makes safe.
    """
    failures: dict[str, Exception] = {}
    for tenant_id, item in work.items():
        try:
            load(tenant_id, item)
        except Exception as exc:
            classified = _classified(tenant_id, exc)
            if len(work) == 1:
                if classified is exc:
                    raise
                raise classified from exc
            failures[tenant_id] = classified
            log.error(f"tenant {tenant_id!r} failed: {failures[tenant_id]}")
    if failures:
        retry = any(not isinstance(e, dg.Failure) or e.allow_retries for e in failures.values())
        raise dg.Failure(
            f"{len(failures)} of {len(work)} tenants failed: " + "; ".join(str(e) for e in failures.values()),
            allow_retries=retry,
        )


def _classified(tenant_id: str, exc: Exception) -> Exception:
    if isinstance(exc, dg.Failure) or is_transient(exc):
        return exc
    return dg.Failure(f"tenant {tenant_id!r}: {type(exc).__name__}: {exc}", allow_retries=False)
