"""The one HTTP client for vendor APIs (BrightData, NetSuite): the shared retry policy, clear errors, no leaked secrets.

Vendor resources compose an `ApiClient` and add only their endpoints; authentication plugs in as an `httpx.Auth`
(an API key header, OAuth 1.0a signing or an OAuth 2.0 token flow), so retries, error messages, streaming and
redaction are written once. What each source would otherwise get wrong in its own way:

- Retries follow `retry.py`: backoff with jitter on connection errors, timeouts and 408/5xx; on 429 (and 503) the
  server's `Retry-After`, bounded by `max_retry_wait`. A POST is retried only where the server cannot have acted on
  it (the connection was never made, 429, 503), unless the caller says the call is idempotent (a SuiteQL query).
- Every other status fails at once with an `ApiError` naming the vendor, method, endpoint path, status and the
  vendor's own message, read from the usual JSON error shapes or the text body.
- `stream_to` writes a download to a sink in chunks, so a snapshot of gigabytes never sits in memory; after a drop
  it continues with a `Range` request where the server allows it, and otherwise starts again from the beginning.
- Secrets given to the client are redacted from its log lines, from httpx's and stamina's, and from its errors,
  which are built from redacted text and never include request headers.
"""

import json as jsonlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Self

import httpx

from ingestion_platform.redaction import install_log_redaction, redact, register_secret
from ingestion_platform.retry import TransientError, parse_retry_after, retry_after, retry_transient

log = logging.getLogger("ingestion_platform.http")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

# Error bodies are read for their message only; a misbehaving server must not make us buffer a large one.
MAX_ERROR_BODY = 64 * 1024
MAX_MESSAGE = 1000

type Params = Mapping[str, Any] | None


class ApiError(httpx.HTTPStatusError):
    """The API answered with an error status. Transient (408, 429, 5xx) or not is decided by `retry.is_transient`."""

    def __init__(
        self, vendor: str, method: str, path: str, response: httpx.Response, vendor_message: str, error_code: str | None
    ) -> None:
        self.vendor = vendor
        self.method = method
        self.path = path
        self.status_code = response.status_code
        self.vendor_message = redact(vendor_message)
        self.error_code = error_code
        code = f" [{error_code}]" if error_code else ""
        message = redact(
            f"{vendor} {method} {path} failed: HTTP {response.status_code} {response.reason_phrase}{code}: "
            f"{vendor_message}"
        )
        super().__init__(message, request=response.request, response=response)
        self.retry_after = retry_after(self)


class ApiNotReadyError(ApiError, TransientError):
    """A status the caller named as "not ready yet" (BrightData's 202 while a snapshot builds) outlasted the retries."""


class ApiConnectionError(ConnectionError):
    """The API could not be reached, or kept dropping the connection or timing out, through every retry."""

    def __init__(self, vendor: str, method: str, path: str, cause: Exception) -> None:
        self.vendor = vendor
        self.method = method
        self.path = path
        detail = str(cause) or type(cause).__name__
        super().__init__(redact(f"{vendor} {method} {path}: {type(cause).__name__}: {detail}"))


class ApiResponseError(Exception):
    """The API answered successfully with something unusable: invalid JSON, or a download we cannot restart."""


@dataclass(frozen=True)
class DownloadResult:
    bytes: int  # the size of the (decoded) content written to the sink
    attempts: int
    resumes: int  # continuations from a byte offset with a Range request
    restarts: int  # downloads started again from the beginning after a drop
    seconds: float
    content_type: str | None


def vendor_error(body: bytes) -> tuple[str, str | None]:
    """The vendor's message and error code from an error body: JSON in the usual shapes, else the text itself.

    Shapes seen: `{"message": ...}`, `{"error": "..."}` or `{"error": {"message": ..., "code": ...}}`,
    `{"detail": ...}`, OAuth's `error_description`, lists of errors, and NetSuite's
    `{"title": ..., "o:errorDetails": [{"detail": ..., "o:errorCode": ...}]}`.
    """
    text = body.decode("utf-8", errors="replace").strip()
    try:
        payload = jsonlib.loads(text)
    except ValueError:
        return (_shorten(text) or "(empty body)"), None
    messages: list[str] = []
    codes: list[str] = []
    _collect(payload, messages, codes)
    unique = list(dict.fromkeys(m.strip() for m in messages if m.strip()))
    message = "; ".join(unique) or _shorten(text)
    return _shorten(message), (codes[0] if codes else None)


_MESSAGE_KEYS = ("message", "error", "error_description", "detail", "details", "errors", "title", "msg", "reason")
_CODE_KEYS = ("o:errorCode", "error_code", "errorCode", "code")


def _collect(payload: Any, messages: list[str], codes: list[str]) -> None:
    if isinstance(payload, str):
        messages.append(payload)
    elif isinstance(payload, list):
        for item in payload:
            _collect(item, messages, codes)
    elif isinstance(payload, Mapping):
        codes.extend(str(payload[key]) for key in _CODE_KEYS if isinstance(payload.get(key), str | int))
        if isinstance(payload.get("o:errorDetails"), list):
            # NetSuite: the title ("Bad Request") says nothing the status does not; the details say what failed.
            _collect(payload["o:errorDetails"], messages, codes)
            return
        for key in _MESSAGE_KEYS:
            if key in payload and payload[key] not in (None, "", [], {}):
                _collect(payload[key], messages, codes)


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


class ApiClient:
    """An httpx client for one vendor's API under the shared retry policy. Thread-safe; close it (or use `with`).

    `path` arguments are relative to `base_url` and name the endpoint in errors and logs; the query string never
    appears there. `secrets` are redacted everywhere this client writes text, and from httpx's own log lines.
    """

    def __init__(
        self,
        vendor: str,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str | None] = (),
        timeout: float | httpx.Timeout = 30.0,
        max_retry_wait: float = 60.0,
        attempts: int = 5,
        retry_timeout: float | None = 300.0,
        chunk_size: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        register_secret(*secrets)
        install_log_redaction([*("httpx", "httpcore", "stamina"), log])
        self.vendor = vendor
        self.max_retry_wait = max_retry_wait
        self.attempts = attempts
        self.retry_timeout = retry_timeout
        self.chunk_size = chunk_size
        self._client = httpx.Client(
            base_url=base_url,
            auth=auth,
            headers={"User-Agent": "ingestion-platform", **(headers or {})},
            timeout=timeout,
            follow_redirects=True,
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_statuses: Collection[int] = (),
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send one request and return its (fully read) 2xx response; raise `ApiError` or `ApiConnectionError`.

        `retry_statuses`: success statuses that mean "not ready, ask again shortly" for this call (BrightData's 202),
        retried like a 503 and raised as `ApiNotReadyError` when they outlast the retries. `idempotent`: whether a
        repeat is harmless; defaults to the method's HTTP semantics (POST and PATCH are not).
        """
        method = method.upper()

        def attempt() -> httpx.Response:
            started = time.monotonic()
            response = self._client.request(
                method, path, params=params, json=json, data=data, content=content, headers=headers
            )
            self._log(method, path, response, started)
            self._raise_for_status(method, path, response, retry_statuses)
            return response

        return self._retrying(method, path, attempt, idempotent=idempotent, timeout=self.retry_timeout)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """`request` and decode its JSON body; an undecodable body is an `ApiResponseError` naming the endpoint."""
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            snippet = _shorten(response.text[:200])
            raise ApiResponseError(
                redact(f"{self.vendor} {method.upper()} {_endpoint(path)}: response is not JSON ({exc}): {snippet!r}")
            ) from None

    def stream_to(
        self,
        method: str,
        path: str,
        sink: BinaryIO,
        *,
        params: Params = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_statuses: Collection[int] = (),
        idempotent: bool | None = None,
    ) -> DownloadResult:
        """Stream a response body into `sink` (a file, or anything with `write`) in `chunk_size` pieces.

        `chunk_size=None` (the default) writes the pieces as they come off the socket: httpx re-slicing them into
        larger chunks cost more than the download itself (a 370 MB body from localhost: 2.0 s in 1 MiB chunks,
        0.9 s as received), and a file sink buffers its writes anyway.

        After a dropped connection or a timeout the download continues where it stopped when the server announced
        `Accept-Ranges: bytes` on an unencoded body (with `If-Range` on its ETag or Last-Modified, so a changed
        entity comes back whole); otherwise, or when the server answers the range with the whole entity, it starts
        again, which needs a seekable sink (a non-seekable one then fails with `ApiResponseError`). The content
        written begins at the sink's position on entry.
        """
        method = method.upper()
        started = time.monotonic()
        origin = sink.tell() if sink.seekable() else None
        progress = _Download()

        def attempt() -> None:
            progress.attempts += 1
            resuming = progress.written > 0 and progress.resumable
            request_headers = dict(headers or {})
            if resuming:
                request_headers["Range"] = f"bytes={progress.written}-"
                if progress.validator:
                    request_headers["If-Range"] = progress.validator
            request_started = time.monotonic()
            with self._client.stream(method, path, params=params, json=json, headers=request_headers) as response:
                self._log(method, path, response, request_started)
                self._raise_for_status(method, path, response, retry_statuses)
                if resuming and response.status_code == 206:
                    if not progress.continues(response):
                        progress.resumable = False
                        raise TransientError(
                            f"{self.vendor} {method} {_endpoint(path)}: the server answered another byte range "
                            f"({response.headers.get('Content-Range')}) than asked; starting again"
                        )
                    progress.resumes += 1
                else:
                    if progress.written:
                        self._rewind(method, path, sink, origin)
                        progress.restarts += 1
                    progress.start(response)
                for chunk in response.iter_bytes(self.chunk_size):
                    sink.write(chunk)
                    progress.written += len(chunk)

        self._retrying(method, path, attempt, idempotent=idempotent, timeout=None)
        return DownloadResult(
            bytes=progress.written,
            attempts=progress.attempts,
            resumes=progress.resumes,
            restarts=progress.restarts,
            seconds=time.monotonic() - started,
            content_type=progress.content_type,
        )

    def _retrying[T](
        self, method: str, path: str, fn: Callable[[], T], *, idempotent: bool | None, timeout: float | None
    ) -> T:
        repeatable = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        call = retry_transient(
            fn,
            attempts=self.attempts,
            timeout=timeout,
            max_retry_after=self.max_retry_wait,
            only_if=None if repeatable else _surely_not_processed,
        )
        try:
            return call()
        except httpx.TransportError as exc:
            # Raised afresh from redacted text: httpx's own message may carry the URL with its query string.
            raise ApiConnectionError(self.vendor, method, _endpoint(path), exc) from None

    def _raise_for_status(
        self, method: str, path: str, response: httpx.Response, retry_statuses: Collection[int]
    ) -> None:
        status = response.status_code
        if response.is_success and status not in retry_statuses:
            return
        body = _read_bounded(response)
        message, code = vendor_error(body)
        error_type = ApiNotReadyError if status in retry_statuses else ApiError
        error = error_type(self.vendor, method, _endpoint(path), response, message, code)
        if status in retry_statuses:
            error.retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise error

    def _rewind(self, method: str, path: str, sink: BinaryIO, origin: int | None) -> None:
        if origin is None:
            raise ApiResponseError(
                f"{self.vendor} {method} {_endpoint(path)}: the download dropped and the server cannot resume it, "
                "and the sink cannot be rewound to start again; pass a seekable sink (a file)"
            )
        sink.seek(origin)
        sink.truncate()

    def _log(self, method: str, path: str, response: httpx.Response, started: float) -> None:
        log.info(
            "%s %s %s -> %s in %.0f ms",
            self.vendor,
            method,
            _endpoint(path),
            response.status_code,
            (time.monotonic() - started) * 1000,
        )


class _Download:
    """What a streamed download has written so far and whether the server lets it continue from there."""

    def __init__(self) -> None:
        self.written = 0
        self.attempts = 0
        self.resumes = 0
        self.restarts = 0
        self.resumable = False
        self.validator: str | None = None
        self.total: int | None = None
        self.content_type: str | None = None

    def start(self, response: httpx.Response) -> None:
        headers = response.headers
        self.written = 0
        self.content_type = headers.get("Content-Type")
        etag = headers.get("ETag")
        self.validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")
        length = headers.get("Content-Length")
        self.total = int(length) if length and length.isdigit() else None
        encoded = headers.get("Content-Encoding", "identity").lower() not in {"", "identity"}
        # Byte offsets count the body as sent; once decoded (gzip) they no longer match what the sink holds.
        self.resumable = headers.get("Accept-Ranges", "").lower() == "bytes" and not encoded

    def continues(self, response: httpx.Response) -> bool:
        """Whether a 206 answer is exactly the rest of the entity we were receiving."""
        unit, _, spec = response.headers.get("Content-Range", "").partition(" ")
        span, _, total = spec.partition("/")
        first, _, _last = span.partition("-")
        if unit != "bytes" or not first.isdigit() or int(first) != self.written:
            return False
        return self.total is None or total == str(self.total)


def _surely_not_processed(exc: Exception) -> bool:
    """Errors after which a non-idempotent request can be sent again: it never reached the server, or was refused."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return isinstance(exc, ApiError) and exc.status_code in {429, 503}


def _read_bounded(response: httpx.Response) -> bytes:
    """The start of an error body: all of it when already read, else at most MAX_ERROR_BODY bytes of the stream."""
    if response.is_stream_consumed:
        return response.content[:MAX_ERROR_BODY]
    body = bytearray()
    for chunk in response.iter_bytes():
        body.extend(chunk)
        if len(body) >= MAX_ERROR_BODY:
            break
    return bytes(body[:MAX_ERROR_BODY])


def _endpoint(path: str) -> str:
    return redact(path.split("?", 1)[0])
