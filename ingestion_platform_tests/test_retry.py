"""The shared retry policy retries transient errors only, with backoff."""

import httpx
import pytest
import stamina
from google.api_core import exceptions as google_exceptions

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
