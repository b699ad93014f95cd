"""NetSuite SuiteTalk REST for one tenant's account: SuiteQL and the metadata catalog over the shared API client.

The resource holds only deployment-wide knobs (timeouts, retries, page size); the account, the auth method and the
names of the env vars holding its secrets come from the tenant's `netsuite:` settings, so one deployment serves
accounts that use TBA and accounts that use OAuth 2.0 side by side. Secrets are read from the environment when a
client is opened and registered for redaction before the first request, so no log line, retry message or error
can carry them.

Retries: every SuiteQL POST is a read, so it is repeated on any transient failure (connection errors, 408, 5xx,
429 with its Retry-After). NetSuite's concurrency limit is shared with every other integration of the account and
is reported as 429 `CONCURRENCY_LIMIT_EXCEEDED`, or by RESTlet/SOAP-style codes on other statuses: both wait and
retry. Anything else fails at once with NetSuite's `o:errorCode` and message.
"""

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg
import httpx
from pydantic import Field

from ingestion_platform.redaction import install_log_redaction, redact
from ingestion_platform.resources.http_api import ApiClient, ApiError
from ingestion_platform.resources.netsuite_auth import NetSuiteM2M, NetSuiteTBA
from ingestion_platform.retry import TransientError, is_transient, retry_transient
from ingestion_platform.tenants import NetSuiteSettings

SUITEQL_PATH = "/services/rest/query/v1/suiteql"
CATALOG_PATH = "/services/rest/record/v1/metadata-catalog"
MAX_PAGE_SIZE = 1000
# NetSuite ends a SuiteTalk REST request after 15 minutes; waiting longer only hides a dead request.
REQUEST_TIMEOUT_S = 900.0
# REST answers the account's concurrency limit with 429 CONCURRENCY_LIMIT_EXCEEDED; RESTlets and SOAP (which share
# the limit) and some proxies report it by these codes on other statuses.
# oauthlib logs the normalized OAuth parameters (consumer key, token id) and the signature base string at DEBUG.
OAUTH_LOGGERS = ("oauthlib.oauth1.rfc5849", "oauthlib.oauth1.rfc5849.signature")
CONCURRENCY_CODES = frozenset(
    {"CONCURRENCY_LIMIT_EXCEEDED", "SSS_REQUEST_LIMIT_EXCEEDED", "WS_REQUEST_BLOCKED", "WS_CONCUR_SESSION_DISALLWD"}
)


class NetSuiteRequestError(Exception):
    """NetSuite refused a request: the message carries each `o:errorCode` and its detail, redacted."""

    def __init__(self, status: int, path: str, details: list[tuple[str, str]], title: str = "") -> None:
        self.status = status
        self.codes = tuple(code for code, _ in details)
        text = "; ".join(f"{code}: {detail}" for code, detail in details) or title or "no error details"
        super().__init__(redact(f"NetSuite {path} failed with HTTP {status}: {text}"))


class NetSuiteConcurrencyError(TransientError):
    """The account's concurrency limit: retried with backoff (or the server's Retry-After)."""


def _error_details(response: httpx.Response) -> tuple[list[tuple[str, str]], str]:
    try:
        body = json.loads(response.content[:65536] or b"null")
    except ValueError:
        return [], response.text[:300]
    if not isinstance(body, dict):
        return [], str(body)[:300]
    details = [
        (str(d.get("o:errorCode", "UNKNOWN")), str(d.get("detail", "")))
        for d in body.get("o:errorDetails") or []
        if isinstance(d, dict)
    ]
    return details, str(body.get("title", ""))


class NetSuiteClient:
    """One account's SuiteTalk REST session: a SuiteQL page, a count, a metadata-catalog schema."""

    def __init__(self, api: ApiClient, *, attempts: int, retry_timeout: float | None, max_retry_wait: float) -> None:
        self._api = api
        self._attempts = attempts
        self._retry_timeout = retry_timeout
        self._max_retry_wait = max_retry_wait
        self.requests = 0
        self.concurrency_waits = 0

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        def once() -> Any:
            self.requests += 1
            try:
                return self._api.json(method, path, idempotent=True, **kwargs)
            except ApiError as exc:
                details, title = _error_details(exc.response)
                if exc.status_code == 429 or any(code in CONCURRENCY_CODES for code, _ in details):
                    self.concurrency_waits += 1
                    raise NetSuiteConcurrencyError(
                        redact(f"NetSuite concurrency limit ({', '.join(c for c, _ in details) or exc.status_code})"),
                        retry_after=exc.retry_after,
                    ) from None
                if is_transient(exc):
                    raise
                raise NetSuiteRequestError(exc.status_code, path, details, title) from None

        call = retry_transient(
            once, attempts=self._attempts, timeout=self._retry_timeout, max_retry_after=self._max_retry_wait
        )
        return call()

    def suiteql(self, query: str, limit: int = MAX_PAGE_SIZE, offset: int = 0) -> Any:
        """One page of a SuiteQL query: the response body (`items`, `hasMore`, `totalResults`, ...)."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"SuiteQL pages hold 1 to {MAX_PAGE_SIZE} rows, not {limit}")
        return self._call(
            "POST",
            SUITEQL_PATH,
            params={"limit": limit, "offset": offset},
            json={"q": query},
            headers={"Prefer": "transient"},
        )

    def metadata_catalog(self, record: str) -> Mapping[str, Any] | None:
        """The record's JSON schema from the metadata catalog, or None when NetSuite has no such record type
        (SuiteQL tables such as `transactionline` are not all REST record types)."""
        try:
            body = self._call("GET", f"{CATALOG_PATH}/{record}", headers={"Accept": "application/schema+json"})
        except NetSuiteRequestError as exc:
            if exc.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None


class NetSuiteResource(dg.ConfigurableResource):
    """SuiteTalk REST for the tenant's NetSuite account, authenticated as its `netsuite:` settings say."""

    timeout_s: float = Field(default=REQUEST_TIMEOUT_S, description="seconds a request may take (NetSuite: 15 min)")
    attempts: int = Field(default=8, description="tries per request on transient errors and the concurrency limit")
    retry_timeout_s: float = Field(default=1800.0, description="give up retrying one request after this long")
    max_retry_wait_s: float = Field(default=60.0, description="cap on a server-requested Retry-After wait")
    page_size: int = Field(default=MAX_PAGE_SIZE, description="rows per SuiteQL page (at most 1,000)")
    lag_minutes: int = Field(
        default=15,
        description="how far a window reaches back before its first day: rows stamped just before midnight may "
        "commit (become visible) after the previous day's extraction ran",
    )

    @contextmanager
    def client(self, settings: NetSuiteSettings) -> Iterator[NetSuiteClient]:
        auth, secrets = self._auth(settings)
        install_log_redaction(OAUTH_LOGGERS)
        timeout = httpx.Timeout(self.timeout_s, connect=30.0)
        # The shared client makes one attempt: retries are ours, so the concurrency codes NetSuite sends on
        # statuses other than 429 get the same backoff as a 429.
        with ApiClient(
            "NetSuite", settings.rest_base_url, auth=auth, secrets=secrets, timeout=timeout, attempts=1
        ) as api:
            yield NetSuiteClient(
                api, attempts=self.attempts, retry_timeout=self.retry_timeout_s, max_retry_wait=self.max_retry_wait_s
            )

    def _auth(self, settings: NetSuiteSettings) -> tuple[httpx.Auth, list[str]]:
        if settings.auth == "tba":
            consumer_key, consumer_secret, token_id, token_secret = (
                _secret(settings, name)
                for name in ("consumer_key_env", "consumer_secret_env", "token_id_env", "token_secret_env")
            )
            tba = NetSuiteTBA(settings.account_id, consumer_key, consumer_secret, token_id, token_secret)
            return tba, [consumer_key, consumer_secret, token_id, token_secret]
        client_id, certificate_id, private_key = (
            _secret(settings, name) for name in ("client_id_env", "certificate_id_env", "private_key_env")
        )
        m2m = NetSuiteM2M(
            settings.account_id,
            client_id,
            certificate_id,
            private_key,
            token_url=settings.rest_base_url + "/services/rest/auth/oauth2/v1/token",
            algorithm=settings.jwt_algorithm,
        )
        # A PEM is also logged line by line if ever printed: redact each base64 line, not only the whole.
        return m2m, [private_key, *(line for line in private_key.splitlines() if not line.startswith("-----"))]


def _secret(settings: NetSuiteSettings, setting: str) -> str:
    env = getattr(settings, setting)
    value = dg.EnvVar(str(env)).get_value()
    if not value:
        raise dg.Failure(
            f"NetSuite account {settings.account_id}: environment variable {env} (the tenant's {setting}) is unset",
            allow_retries=False,
        )
    return value
