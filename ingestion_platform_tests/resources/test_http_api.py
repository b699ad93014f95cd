"""The shared HTTP API client against a real local HTTP server that misbehaves on cue."""

import email.utils
import io
import logging
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import stamina

from ingestion_platform.redaction import REDACTED, RedactingFilter, redact, redact_value, register_secret
from ingestion_platform.resources.http_api import (
    ApiClient,
    ApiConnectionError,
    ApiError,
    ApiNotReadyError,
    ApiResponseError,
    vendor_error,
)
from ingestion_platform.retry import backoff_hook, is_transient, parse_retry_after

type Action = Callable[[BaseHTTPRequestHandler], None]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    at: float  # monotonic
    wall: float  # time.time(), to compare with an HTTP date


class ScriptedServer:
    """Answers each path with its scripted actions in turn (the last one repeats) and records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Action]] = {}
        self.seen: list[Seen] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                script.seen.append(Seen(self.command, self.path, dict(self.headers), time.monotonic(), time.time()))
                actions = script.routes[path]
                (actions.pop(0) if len(actions) > 1 else actions[0])(self)

            do_GET = do_POST = handle_any

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hung up on purpose (an aborted download) is not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def on(self, path: str, *actions: Action) -> None:
        self.routes[path] = list(actions)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path.split("?", 1)[0] == path]


def reply(status: int, body: bytes | str = b"", headers: dict[str, str] | None = None) -> Action:
    payload = body.encode() if isinstance(body, str) else body

    def act(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    return act


def stall(seconds: float) -> Action:
    def act(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        reply(200, b'{"late": true}')(handler)

    return act


def drop_midway(body: bytes, cut: int, headers: dict[str, str]) -> Action:
    """Announce the whole body, send `cut` bytes of it, then close the connection."""

    def act(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:cut])
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
        handler.close_connection = True

    return act


def serve_ranges(body: bytes, etag: str) -> Action:
    """A static file server: honours `Range` when `If-Range` still matches, else sends everything."""

    def act(handler: BaseHTTPRequestHandler) -> None:
        wanted = handler.headers.get("Range")
        if wanted and handler.headers.get("If-Range") in (None, etag):
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            part = body[start:]
        else:
            handler.send_response(200)
            part = body
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("ETag", etag)
        handler.send_header("Content-Length", str(len(part)))
        handler.end_headers()
        handler.wfile.write(part)

    return act


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    thread = threading.Thread(target=scripted.server.serve_forever, daemon=True)
    thread.start()
    yield scripted
    scripted.server.shutdown()
    scripted.server.server_close()


@pytest.fixture
def no_sleep() -> Iterator[None]:
    """stamina's test mode: no waiting between attempts, 3 attempts; the policy is otherwise the real one."""
    with stamina.set_testing(True, attempts=3):
        yield


def client_for(server: ScriptedServer, **kwargs: object) -> ApiClient:
    return ApiClient("Acme", server.url, **kwargs)  # type: ignore[arg-type]


SNAPSHOT = random.Random(7).randbytes(3 * 1024 * 1024 + 17)


# --- retries --------------------------------------------------------------------------------------------------------


def test_server_error_then_success_is_retried(server: ScriptedServer, no_sleep: None) -> None:
    server.on("/items", reply(500, '{"message": "internal"}'), reply(503, "busy"), reply(200, '{"ok": true}'))
    with client_for(server) as client:
        assert client.json("GET", "/items", params={"page": 2}) == {"ok": True}
    assert len(server.requests_to("/items")) == 3


def test_post_is_not_repeated_after_a_server_error_unless_idempotent(server: ScriptedServer, no_sleep: None) -> None:
    server.on("/trigger", reply(500, '{"message": "internal"}'), reply(200, '{"snapshot_id": "s_1"}'))
    with client_for(server) as client:
        with pytest.raises(ApiError, match="HTTP 500") as failed:
            client.json("POST", "/trigger", json=[{"url": "https://example.com"}])
        assert len(server.requests_to("/trigger")) == 1  # the crawl may have started: never trigger it twice
        assert is_transient(failed.value)  # the step-level retry still may, once the caller has checked
        server.on("/query", reply(500, "{}"), reply(200, '{"items": []}'))
        assert client.json("POST", "/query", json={"q": "SELECT 1"}, idempotent=True) == {"items": []}
        assert len(server.requests_to("/query")) == 2


def test_post_is_repeated_after_429(server: ScriptedServer, no_sleep: None) -> None:
    server.on("/trigger", reply(429, '{"error": "too many running jobs"}'), reply(200, '{"snapshot_id": "s_1"}'))
    with client_for(server) as client:
        assert client.json("POST", "/trigger", json={}) == {"snapshot_id": "s_1"}
    assert len(server.requests_to("/trigger")) == 2


def test_429_waits_as_retry_after_says_in_seconds(server: ScriptedServer) -> None:
    server.on("/progress", reply(429, '{"error": "slow down"}', {"Retry-After": "1"}), reply(200, '{"n": 1}'))
    with client_for(server) as client:
        assert client.json("GET", "/progress") == {"n": 1}
    first, second = server.requests_to("/progress")
    assert second.at - first.at >= 0.95


def test_429_waits_as_retry_after_says_as_an_http_date(server: ScriptedServer) -> None:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    date = email.utils.format_datetime(when, usegmt=True)
    server.on("/progress", reply(429, "", {"Retry-After": date}), reply(200, '{"n": 2}'))
    with client_for(server) as client:
        assert client.json("GET", "/progress") == {"n": 2}
    first, second = server.requests_to("/progress")
    # Tried again once that date had come, not before: it was more than a second away when computed, so the wait
    # was real, whatever a loaded machine's scheduling added before the first request.
    assert first.wall < when.timestamp() <= second.wall + 0.05


def test_retry_after_is_bounded_by_the_max_wait(server: ScriptedServer) -> None:
    server.on("/progress", reply(429, "", {"Retry-After": "3600"}), reply(200, '{"n": 3}'))
    with client_for(server, max_retry_wait=0.2) as client:
        assert client.json("GET", "/progress") == {"n": 3}
    first, second = server.requests_to("/progress")
    assert 0.15 <= second.at - first.at < 60


def test_retry_after_parsing_and_the_bound() -> None:
    now = datetime(2026, 11, 23, 18, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Mon, 23 Nov 2026 18:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Mon, 23 Nov 2026 17:00:00 GMT", now=now) == 0.0  # already past: go now
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    request = httpx.Request("GET", "http://x/y")
    limited = httpx.HTTPStatusError("429", request=request, response=httpx.Response(429, headers={"Retry-After": "90"}))
    assert backoff_hook(max_retry_after=10)(limited) == 10
    assert backoff_hook(max_retry_after=100)(limited) == 90
    unavailable = httpx.HTTPStatusError("503", request=request, response=httpx.Response(503))
    assert backoff_hook(max_retry_after=10)(unavailable) is True  # no Retry-After: exponential backoff
    not_found = httpx.HTTPStatusError("404", request=request, response=httpx.Response(404))
    assert backoff_hook(max_retry_after=10)(not_found) is False


def test_timeouts_are_retried_then_reported_naming_the_endpoint(server: ScriptedServer, no_sleep: None) -> None:
    server.on("/slow", stall(1.5), reply(200, '{"fast": true}'))
    with client_for(server, timeout=0.5) as client:
        assert client.json("GET", "/slow") == {"fast": True}
        assert len(server.requests_to("/slow")) == 2
        server.on("/stuck", stall(1.5))
        with pytest.raises(ApiConnectionError, match=r"Acme GET /stuck: ReadTimeout") as failed:
            client.json("GET", "/stuck")
    assert len(server.requests_to("/stuck")) == 3
    assert is_transient(failed.value)


def test_unreachable_server_is_a_transient_connection_error(no_sleep: None) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ApiClient("Acme", f"http://127.0.0.1:{port}") as client, pytest.raises(ApiConnectionError) as failed:
        client.request("GET", "/ping")
    assert "Acme GET /ping: ConnectError" in str(failed.value) and is_transient(failed.value)


# --- permanent errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "message", "code"),
    [
        (400, '{"error": "Snapshot is expired"}', "Snapshot is expired", None),
        (401, "Invalid API key", "Invalid API key", None),
        (403, '{"message": "Dataset not in your plan", "code": "forbidden_dataset"}', "Dataset not in your plan", None),
        (
            400,
            '{"type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1", "title": "Bad Request", '
            '"status": 400, "o:errorDetails": [{"detail": "Invalid search query. Unknown identifier lastmod.", '
            '"o:errorQueryParam": "q", "o:errorCode": "INVALID_PARAMETER"}]}',
            "Invalid search query. Unknown identifier lastmod.",
            "INVALID_PARAMETER",
        ),
        (404, '{"detail": "No snapshot s_404"}', "No snapshot s_404", None),
    ],
)
def test_client_errors_fail_at_once_naming_vendor_endpoint_and_message(
    server: ScriptedServer, no_sleep: None, status: int, body: str, message: str, code: str | None
) -> None:
    server.on("/datasets/v3/snapshot/s_1", reply(status, body))
    with client_for(server) as client, pytest.raises(ApiError) as failed:
        client.request("GET", "/datasets/v3/snapshot/s_1", params={"format": "json"})
    assert len(server.requests_to("/datasets/v3/snapshot/s_1")) == 1
    error = failed.value
    assert not is_transient(error) and error.status_code == status and error.vendor_message == message
    assert str(error).startswith(f"Acme GET /datasets/v3/snapshot/s_1 failed: HTTP {status} ")
    assert message in str(error) and "format=json" not in str(error)
    if code is not None:
        assert error.error_code == code and f"[{code}]" in str(error)


def test_vendor_error_shapes() -> None:
    assert vendor_error(b'{"error": {"message": "quota exceeded", "code": 42}}') == ("quota exceeded", "42")
    assert vendor_error(b'{"error": "invalid_client", "error_description": "bad assertion"}') == (
        "invalid_client; bad assertion",
        None,
    )
    assert vendor_error(b'{"errors": [{"message": "a"}, {"message": "b"}]}') == ("a; b", None)
    assert vendor_error(b"") == ("(empty body)", None)
    assert vendor_error(b"<html>Bad gateway</html>") == ("<html>Bad gateway</html>", None)
    assert vendor_error(b'{"unexpected": 1}') == ('{"unexpected": 1}', None)
    long_text = vendor_error(b"x" * 5000)[0]
    assert len(long_text) < 1100 and long_text.endswith("...")


def test_invalid_json_is_a_clear_error(server: ScriptedServer) -> None:
    server.on("/items", reply(200, "<html>maintenance</html>"))
    with client_for(server) as client, pytest.raises(ApiResponseError, match=r"Acme GET /items: response is not JSON"):
        client.json("GET", "/items")


def test_not_ready_status_is_retried_and_then_reported(server: ScriptedServer, no_sleep: None) -> None:
    building = reply(202, '{"status": "building"}', {"Retry-After": "0"})
    server.on("/snapshot/s_2", building, building, reply(200, '[{"id": 1}]'))
    with client_for(server) as client:
        sink = io.BytesIO()
        result = client.stream_to("GET", "/snapshot/s_2", sink, retry_statuses={202})
        assert sink.getvalue() == b'[{"id": 1}]' and result.attempts == 3
        server.on("/snapshot/s_3", building)
        with pytest.raises(ApiNotReadyError, match="HTTP 202") as failed:
            client.request("GET", "/snapshot/s_3", retry_statuses={202})
    assert is_transient(failed.value) and failed.value.retry_after == 0.0


# --- streaming downloads --------------------------------------------------------------------------------------------


class ChunkRecorder(io.BytesIO):
    """A sink that remembers its largest single write, to show the body never arrives in one piece."""

    largest_write = 0
    writes = 0

    def write(self, data: object) -> int:
        self.writes += 1
        self.largest_write = max(self.largest_write, len(data))  # type: ignore[arg-type]
        return super().write(data)  # type: ignore[arg-type]


def test_dropped_download_resumes_with_a_range_request(server: ScriptedServer, no_sleep: None) -> None:
    cut = 1024 * 1024 + 123
    headers = {"Accept-Ranges": "bytes", "ETag": '"v1"', "Content-Type": "application/json"}
    server.on("/snapshot/big", drop_midway(SNAPSHOT, cut, headers), serve_ranges(SNAPSHOT, '"v1"'))
    sink = ChunkRecorder()
    with client_for(server, chunk_size=64 * 1024) as client:
        result = client.stream_to("GET", "/snapshot/big", sink)
    assert sink.getvalue() == SNAPSHOT
    assert (result.bytes, result.attempts, result.resumes, result.restarts) == (len(SNAPSHOT), 2, 1, 0)
    assert result.content_type == "application/json"
    retried = server.requests_to("/snapshot/big")[1]
    # Only whole chunks reach the sink, so the continuation starts at the last chunk boundary before the cut.
    assert retried.headers["Range"] == f"bytes={cut // (64 * 1024) * 64 * 1024}-"
    assert retried.headers["If-Range"] == '"v1"'
    assert sink.largest_write <= 64 * 1024 and sink.writes >= len(SNAPSHOT) // (64 * 1024)


def test_dropped_download_restarts_when_the_server_cannot_resume(server: ScriptedServer, no_sleep: None) -> None:
    server.on("/export", drop_midway(SNAPSHOT, 500_000, {}), reply(200, SNAPSHOT))
    sink = io.BytesIO(b"header kept:")
    sink.seek(0, io.SEEK_END)
    with client_for(server, chunk_size=64 * 1024) as client:
        result = client.stream_to("GET", "/export", sink)
    assert sink.getvalue() == b"header kept:" + SNAPSHOT  # the partial copy was cut back to where we began
    assert (result.attempts, result.resumes, result.restarts) == (2, 0, 1)
    assert "Range" not in server.requests_to("/export")[1].headers


def test_changed_entity_restarts_instead_of_splicing(server: ScriptedServer, no_sleep: None) -> None:
    changed = SNAPSHOT[::-1]
    headers = {"Accept-Ranges": "bytes", "ETag": '"v1"'}
    server.on("/snapshot/moving", drop_midway(SNAPSHOT, 700_000, headers), serve_ranges(changed, '"v2"'))
    sink = io.BytesIO()
    with client_for(server, chunk_size=64 * 1024) as client:
        result = client.stream_to("GET", "/snapshot/moving", sink)
    assert sink.getvalue() == changed and (result.resumes, result.restarts) == (0, 1)


def test_download_into_an_unseekable_sink_that_cannot_resume_fails_clearly(
    server: ScriptedServer, no_sleep: None
) -> None:
    class Pipe(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            return len(data)  # type: ignore[arg-type]

    server.on("/export", drop_midway(SNAPSHOT, 500_000, {}), reply(200, SNAPSHOT))
    with client_for(server, chunk_size=64 * 1024) as client, pytest.raises(ApiResponseError, match="seekable sink"):
        client.stream_to("GET", "/export", Pipe())  # type: ignore[arg-type]


def test_download_error_status_names_the_endpoint(server: ScriptedServer, no_sleep: None) -> None:
    server.on("/snapshot/gone", reply(400, '{"error": "Snapshot is empty"}'))
    with client_for(server) as client, pytest.raises(ApiError, match="GET /snapshot/gone failed: HTTP 400") as failed:
        client.stream_to("GET", "/snapshot/gone", io.BytesIO())
    assert failed.value.vendor_message == "Snapshot is empty" and len(server.requests_to("/snapshot/gone")) == 1


# --- secrets --------------------------------------------------------------------------------------------------------

API_KEY = "sk-live-7f3a9c1e5b2d4086"


class BearerKey(httpx.Auth):
    def __init__(self, key: str) -> None:
        self.key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {self.key}"
        yield request


def test_api_key_never_reaches_logs_or_errors(
    server: ScriptedServer, no_sleep: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = f'{{"error": "API key {API_KEY} is not valid for dataset gd_1"}}'
    server.on("/datasets/v3/trigger", reply(401, echo))
    server.on("/flaky", reply(503, f"upstream rejected token={API_KEY}"))
    texts: list[str] = []
    with ApiClient("BrightData", server.url, auth=BearerKey(API_KEY), secrets=[API_KEY]) as client:
        for path, params in (("/datasets/v3/trigger", {"token": API_KEY}), ("/flaky", {"api_key": API_KEY})):
            with pytest.raises(ApiError) as failed:
                client.request("GET", path, params=params)
            texts += [str(failed.value), repr(failed.value), "".join(traceback.format_exception(failed.value))]
    assert server.requests_to("/datasets/v3/trigger")[0].headers["Authorization"] == f"Bearer {API_KEY}"
    assert "API key [REDACTED] is not valid for dataset gd_1" in texts[0]  # the vendor's message survives
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ApiClient("BrightData", f"http://127.0.0.1:{port}", secrets=[API_KEY]) as client:
        with pytest.raises(ApiConnectionError) as unreachable:
            client.request("GET", "/datasets/v3/progress/s_1", params={"key": API_KEY})
        texts.append("".join(traceback.format_exception(unreachable.value)))
    assert len(server.requests_to("/flaky")) == 3 and caplog.records  # retries happened and were logged
    captured = caplog.text + "\n".join(r.getMessage() + repr(vars(r)) for r in caplog.records)
    assert API_KEY not in captured and f"token={REDACTED}" in captured  # httpx logged the URL, redacted
    for text in texts:
        assert API_KEY not in text, text


def test_redaction_utility() -> None:
    register_secret("hunter2-password", None, "", "short")
    assert redact("login with hunter2-password") == f"login with {REDACTED}"
    assert redact("short stays, it is too short to be a secret") == "short stays, it is too short to be a secret"
    assert redact("url?p=hunter2%2Dpassword") == "url?p=hunter2%2Dpassword"  # '-' is not encoded by quote
    register_secret("p@ss/word+1")
    assert redact("GET /x?pw=p%40ss%2Fword%2B1") == f"GET /x?pw={REDACTED}"
    metadata = {"request": {"url": "https://x?key=hunter2-password", "tries": 2}, "notes": ["hunter2-password"]}
    assert redact_value(metadata) == {"request": {"url": f"https://x?key={REDACTED}", "tries": 2}, "notes": [REDACTED]}
    record = logging.LogRecord("any", logging.ERROR, __file__, 1, "failed with %s", ("hunter2-password",), None)
    record.__dict__["detail"] = "token hunter2-password"  # as `extra={"detail": ...}` sets it
    assert RedactingFilter().filter(record) and record.getMessage() == f"failed with {REDACTED}"
    assert record.__dict__["detail"] == f"token {REDACTED}"


def test_api_key_never_reaches_the_dagster_event_log(server: ScriptedServer, no_sleep: None) -> None:
    """A step that fails on the vendor's 401 records the error (and its causes) in the event log without the key."""
    import dagster as dg

    key = "bd-key-0c8e51f2a7d94b63"
    server.on("/datasets/v3/trigger", reply(401, f'{{"error": "invalid token {key}"}}'))

    @dg.asset
    def crawl(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        with ApiClient("BrightData", server.url, auth=BearerKey(key), secrets=[key]) as client:
            try:
                client.request("POST", "/datasets/v3/trigger", params={"api_key": key}, json=[{"url": "https://x"}])
            except ApiError as exc:
                context.log.error(str(exc))
                raise
        return dg.MaterializeResult()

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([crawl], instance=instance, raise_on_error=False)
        assert not result.success
        events = "\n".join(dg.serialize_value(record) for record in instance.all_logs(result.run_id))
    assert "BrightData POST /datasets/v3/trigger failed: HTTP 401" in events and f"token {REDACTED}" in events
    assert key not in events
