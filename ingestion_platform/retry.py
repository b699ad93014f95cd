"""The one retry policy for transient failures of external calls (HTTP APIs, BigQuery, SFTP, the warehouse).

Two layers share one classification (`is_transient`): retries inside a step cover seconds-long blips without
re-running the whole step; `STEP_RETRY`, Dagster's op retry, covers outages of minutes. Everything else
(authentication, not-found, bad input, our own bugs) fails at once through `per_tenant`, so an operator sees the
message now instead of after three backoffs.
"""

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
import httpx
import paramiko
import psycopg
import stamina
from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as auth_exceptions

_TRANSIENT_GOOGLE = (
    google_exceptions.InternalServerError,
    google_exceptions.BadGateway,
    google_exceptions.ServiceUnavailable,
    google_exceptions.GatewayTimeout,
    google_exceptions.TooManyRequests,
)


def is_transient(exc: Exception) -> bool:
    if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException):
        return False
    transient_types = (
        *_TRANSIENT_GOOGLE,
        ConnectionError,
        TimeoutError,
        httpx.TransportError,
        auth_exceptions.TransportError,  # a network blip while refreshing a token, not bad credentials
        psycopg.OperationalError,  # the warehouse connection dropped or the server restarted
    )
    if isinstance(exc, transient_types):
        return True
    # paramiko reports a dropped SSH connection as SSHException ("Server connection dropped") or EOFError.
    if isinstance(exc, paramiko.SSHException | EOFError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in {408, 429, 500, 502, 503, 504}
    if isinstance(exc, google_exceptions.Forbidden):
        # BigQuery reports quota exhaustion (rateLimitExceeded) as 403; real permission errors are not retried.
        return any(err.get("reason") in {"rateLimitExceeded", "quotaExceeded"} for err in exc.errors or [])
    return False


def retry_transient[T](fn: Callable[..., T], *, attempts: int = 5, timeout: float | None = 120.0) -> Callable[..., T]:
    """Wrap `fn` with exponential backoff and jitter on transient errors only.

    `timeout=None` bounds by attempts alone, for calls that make progress between attempts (resumed downloads).
    """
    decorator: Any = stamina.retry(on=is_transient, attempts=attempts, timeout=timeout, wait_initial=0.5, wait_max=20)
    return decorator(fn)


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
