"""BrightData's Datasets API v3 (trigger, progress, snapshot download) over the shared HTTP client.

Each tenant may use its own BrightData account: the key is read from the environment variable the tenant's settings
name, at call time, and registered for redaction before any request is made, so neither our logs, httpx's, nor an
error echoing the key can show it. Retries, `Retry-After` and vendor messages are `ApiClient`'s; this module adds
the endpoints and what their answers mean for a crawl.
"""

import contextlib
import os
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import dagster as dg
import httpx
from pydantic import Field

from ingestion_platform.resources.http_api import ApiClient, ApiError

VENDOR = "BrightData"
SNAPSHOT_CONTENT_TYPE = "application/json; charset=utf-8"
# BrightData's answers to a download that no retry can fix: the snapshot outlived its 16 days, or holds nothing.
PERMANENT_DOWNLOAD_ERRORS = ("expired", "empty", "does not exist", "failed")


class BrightDataKeyMissingError(ValueError):
    """The tenant's settings name an environment variable that is not set in this deployment."""


class SnapshotUnavailableError(Exception):
    """BrightData will never serve this snapshot (expired, empty, failed, unknown): retrying cannot help."""


@dataclass(frozen=True)
class TriggerResult:
    snapshot_id: str | None  # None: BrightData refused with 429 "too many running jobs"; the crawl stays queued
    refusal: str | None = None


@dataclass(frozen=True)
class Progress:
    snapshot_id: str
    status: str  # ready, failed, or a running status (starting, running, collecting, digesting, ...)
    error: str | None = None
    records: int | None = None


@dataclass(frozen=True)
class SnapshotDownload:
    bytes: int
    parts: int
    attempts: int
    resumes: int
    restarts: int
    seconds: float


def api_key(api_key_env: str) -> str:
    key = os.environ.get(api_key_env)
    if not key:
        raise BrightDataKeyMissingError(f"environment variable {api_key_env} (the BrightData API key) is not set")
    return key


class BrightDataClient:
    """One tenant's view of the API. Thread-safe (the progress sensor shares one across its worker threads)."""

    def __init__(self, api: ApiClient, trigger_api: ApiClient, part_size: int) -> None:
        self._api = api
        self._trigger_api = trigger_api
        self._part_size = part_size

    def trigger(self, dataset_id: str, inputs: Sequence[Mapping[str, Any]]) -> TriggerResult:
        """`POST /datasets/v3/trigger`. A 429 that outlasts the (short) retries is an answer, not an error: the
        caller keeps the crawl queued and tries again later rather than failing it or blocking a run on it."""
        try:
            body = self._trigger_api.json(
                "POST",
                "/datasets/v3/trigger",
                params={"dataset_id": dataset_id, "include_errors": "true", "format": "json"},
                json=list(inputs),
            )
        except ApiError as exc:
            if exc.status_code == 429:
                return TriggerResult(None, exc.vendor_message)
            raise
        snapshot_id = body.get("snapshot_id") if isinstance(body, dict) else None
        if not isinstance(snapshot_id, str) or not snapshot_id:
            raise ValueError(f"{VENDOR} trigger answered without a snapshot_id: {body!r}")
        return TriggerResult(snapshot_id)

    def progress(self, snapshot_id: str) -> Progress:
        body = self._api.json("GET", f"/datasets/v3/progress/{snapshot_id}")
        status = str(body.get("status") or "unknown")
        error = body.get("error_message") or body.get("error")
        return Progress(snapshot_id, status, str(error) if error else None, body.get("records"))

    def download(self, snapshot_id: str, target: BinaryIO, workdir: Path) -> SnapshotDownload:
        """Write the snapshot, one JSON array, to `sink`. Each part is streamed to a file under `workdir` first, so a
        dropped connection resumes or restarts there (the sink, an object store upload, cannot rewind), and parts
        are joined into one array without ever holding a part in memory."""
        sink = _Counting(target)
        try:
            parts = self._parts(snapshot_id)
            totals = {"bytes": 0, "attempts": 0, "resumes": 0, "restarts": 0, "seconds": 0.0}
            sink.write(b"[")
            first = True
            for part in range(1, parts + 1):
                path = workdir / f"part-{part}.json"
                params: dict[str, Any] = {"format": "json"}
                if parts > 1:
                    params |= {"batch_size": self._part_size, "part": part}
                with open(path, "w+b") as out:
                    result = self._api.stream_to(
                        "GET", f"/datasets/v3/snapshot/{snapshot_id}", out, params=params, retry_statuses=(202,)
                    )
                for key in ("attempts", "resumes", "restarts", "seconds"):
                    totals[key] += getattr(result, key)
                first = _append_array_items(path, sink, first=first) and first
                path.unlink()
            sink.write(b"\n]\n" if not first else b"]\n")
        except ApiError as exc:
            message = exc.vendor_message.lower()
            if exc.status_code in (400, 404) and any(word in message for word in PERMANENT_DOWNLOAD_ERRORS):
                raise SnapshotUnavailableError(
                    f"{VENDOR} snapshot {snapshot_id} cannot be downloaded: {exc.vendor_message}"
                ) from exc
            raise
        return SnapshotDownload(
            bytes=sink.written,
            parts=parts,
            attempts=int(totals["attempts"]),
            resumes=int(totals["resumes"]),
            restarts=int(totals["restarts"]),
            seconds=float(totals["seconds"]),
        )

    def _parts(self, snapshot_id: str) -> int:
        body = self._api.json(
            "GET",
            f"/datasets/v3/snapshot/{snapshot_id}/parts",
            params={"format": "json", "batch_size": self._part_size},
        )
        parts = body.get("parts") if isinstance(body, dict) else None
        return parts if isinstance(parts, int) and parts >= 1 else 1


_WHITESPACE = b" \t\r\n"


def _append_array_items(path: Path, sink: "_Counting", *, first: bool) -> bool:
    """Copy the elements of the JSON array in `path` (without its brackets) to `sink`, after a comma unless this is
    the first non-empty part. Returns whether the part was empty. The elements are not parsed here: `posts` does
    that, and names any problem with its position."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = _skip(f, 0, size, forward=True)
        end = _skip(f, size, 0, forward=False)
        f.seek(start)
        opening, inner_start = f.read(1), start + 1
        f.seek(end - 1)
        closing, inner_end = f.read(1), end - 1
        if opening != b"[" or closing != b"]" or inner_end < inner_start:
            f.seek(start)
            raise ValueError(f"{VENDOR} snapshot part is not a JSON array: begins {f.read(80)!r}")
        inner_start = _skip(f, inner_start, inner_end, forward=True)
        inner_end = _skip(f, inner_end, inner_start, forward=False)
        if inner_end <= inner_start:
            return True
        sink.write(b"\n" if first else b",\n")
        f.seek(inner_start)
        remaining = inner_end - inner_start
        while remaining:
            chunk = f.read(min(remaining, 1 << 20))
            sink.write(chunk)
            remaining -= len(chunk)
        return False


def _skip(f: BinaryIO, position: int, limit: int, *, forward: bool) -> int:
    """The first offset from `position` towards `limit` not preceded (backward) or held (forward) by whitespace."""
    while position != limit:
        f.seek(position if forward else position - 1)
        if f.read(1) not in _WHITESPACE:
            break
        position += 1 if forward else -1
    return position


class _Counting:
    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.written = 0

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self.written += len(data)
        return len(data)


class BrightDataResource(dg.ConfigurableResource):
    """BrightData's API endpoint and how hard to lean on it; keys come per tenant (`Tenant.brightdata()`)."""

    api_url: str = Field(default="https://api.brightdata.com", description="BRIGHTDATA_API_URL")
    part_size: int = Field(default=100_000, description="records per downloaded part (BrightData's batch_size)")
    trigger_attempts: int = Field(
        default=2, description="tries of a trigger refused with 429 before the crawl is left queued for later"
    )
    progress_workers: int = Field(default=8, description="progress calls in flight at once in the sensor")
    timeout_seconds: float = Field(default=60.0, description="connect/read timeout of one request")
    crawl_timeout_minutes: float = Field(
        default=60.0, description="a crawl still running this long after its trigger is marked timed out"
    )
    stale_download_days: float = Field(
        default=3.0, description="a ready snapshot not downloaded after this many days fails a warning check"
    )

    @contextlib.contextmanager
    def client(self, api_key_env: str) -> Iterator[BrightDataClient]:
        key = api_key(api_key_env)
        auth = _Bearer(key)
        common: dict[str, Any] = {"auth": auth, "secrets": [key], "timeout": self.timeout_seconds}
        with (
            ApiClient(VENDOR, self.api_url, **common) as api,
            ApiClient(VENDOR, self.api_url, attempts=self.trigger_attempts, max_retry_wait=30, **common) as trig,
        ):
            yield BrightDataClient(api, trig, self.part_size)


class _Bearer(httpx.Auth):
    """The key as a bearer token; kept out of `repr` so a traceback printing locals cannot show it."""

    def __init__(self, key: str) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "_Bearer(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {self._key}"
        yield request
