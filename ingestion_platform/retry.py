"""The one retry policy for transient failures of external calls (HTTP APIs, BigQuery, SFTP, the warehouse).

Retries inside a step cover seconds-long blips without re-running the whole step; Dagster's op RetryPolicy
covers longer outages. Authentication and not-found errors are never transient, so they fail at once.
"""

from collections.abc import Callable
from typing import Any

import httpx
import paramiko
import stamina
from google.api_core import exceptions as google_exceptions

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
    if isinstance(exc, (*_TRANSIENT_GOOGLE, ConnectionError, TimeoutError, httpx.TransportError)):
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
