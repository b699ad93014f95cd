"""A BrightData-compatible Datasets API v3 on localhost, so the crawl flow is tested against the protocol, not a mock.

It follows BrightData's documented shapes (docs.brightdata.com, "Web Scraper API" management endpoints and
"Error codes by endpoint"):

- `POST /datasets/v3/trigger?dataset_id=...&include_errors=true[&limit_per_input=N][&format=json]`, body a JSON
  list of inputs (`url`, `num_of_posts`, `start_date`, `end_date`, ...) -> `{"snapshot_id": "s_..."}`;
  400 `dataset missing` / `No data to trigger` / `{"validation_errors": [...]}`, 404 `dataset does not exist`,
  429 "too many running jobs" with `Retry-After`.
- `GET /datasets/v3/progress/{id}` -> `{"snapshot_id", "dataset_id", "status"}` with status `starting`, `running`,
  `collecting`, `digesting`, then `ready` (with `records`) or `failed` (with `error_message`).
- `GET /datasets/v3/snapshot/{id}?format=json|ndjson|jsonl[&batch_size=N&part=K]` -> 202
  `{"status": "running"|"building", "message": "... try again in 10s"}` until built, then the records, streamed;
  400 `Snapshot is expired` / `Snapshot is empty`, 404 `Snapshot does not exist`.
- `GET /datasets/v3/snapshot/{id}/parts?format=json&batch_size=N` -> `{"parts": n}` (`batch_size` >= 1000, as
  BrightData requires; parts are numbered from 1).
- `Authorization: Bearer <key>` on every call, 401 otherwise.

Errors carry BrightData's message as `{"error": message}`. Records are realistic Facebook-page posts (the fields of
BrightData's "Facebook - Posts by profile URL" dataset: unicode and emoji text, hashtags, attachments, page profile)
with a share of error records (`error`, `error_code`, as `include_errors=true` returns them) and of posts without a
post id. Every record is a pure function of (seed, snapshot id, position), so a snapshot's body is identical on
every download, for any `batch_size`, and never held in memory: 200,000 posts stream in bounded memory. As
BrightData serves a built snapshot from storage, the sandbox renders a snapshot's json body to a temporary file
once (progress says `digesting` until then) and serves downloads and parts as byte ranges of it.

Run it in-process for tests (uvicorn in a background thread, `run_brightdata_api`) or as its own process:

    python -m ingestion_platform.sandbox.brightdata_api --port 8765 --api-key KEY --seed demo
"""

import argparse
import bisect
import contextlib
import functools
import hashlib
import hmac
import itertools
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import tempfile
import threading
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingestion_platform.tenants import BRIGHTDATA_FACEBOOK_POSTS_DATASET

DEFAULT_API_KEY = "sandbox-brightdata-key"
RUNNING_STATUSES = ("starting", "running", "collecting", "digesting")
TOO_MANY_JOBS = (
    "You have too many running jobs for this dataset. Please wait until some of them finish or consider combining "
    "multiple inputs into a single request. Running jobs: 100>=100"
)
_STREAM_CHUNK_BYTES = 256 * 1024
_FILE_CHUNK_BYTES = 1 << 20
_ERROR_CODES = (
    ("dead_page", "Page does not exist or is no longer available"),
    ("login_required", "The content is only available to logged-in users"),
    ("crawl_failed", "Crawl failed after 3 attempts: net::ERR_TUNNEL_CONNECTION_FAILED"),
    ("private_content", "Content is private or restricted by the page owner"),
)
_TEXTS = (
    "Mẹ ơi, bé nhà mình đã thử {brand} chưa? 🍼✨ Dinh dưỡng vàng cho bé yêu phát triển toàn diện! #{tag} #dinhduong",
    "🎉 MINIGAME THÁNG {month} 🎉\nBình luận tên bé + chia sẻ bài viết để nhận quà từ {brand} 🎁🎁\n#{tag} #minigame",
    "Chuyên gia dinh dưỡng chia sẻ: 3 bí quyết giúp bé ăn ngon, ngủ sâu 😴💤\n👉 Xem thêm tại link bio #{tag}",
    "Cảm ơn 1.000.000 ba mẹ đã tin yêu {brand} ❤️🙏 Cùng nhau nuôi dưỡng thế hệ tương lai khỏe mạnh 💪 #{tag}",
    'Ưu đãi "siêu khủng" -30% chỉ hôm nay 🔥🔥 Số lượng có hạn, nhanh tay ba mẹ nhé! 🛒 #{tag} #sale',
    "Bé {name} (3 tuổi) cao thêm 5cm sau 6 tháng 📏👏 Câu chuyện của mẹ Hương ở Đà Nẵng 🌊 #{tag}",
    "Family time 👨\u200d👩\u200d👧\u200d👦 cuối tuần cùng {brand} — vui khỏe mỗi ngày! 🌞 #{tag} #family",
    "新品上市 🆕 {brand} 配方升级\uff0c更适合亚洲宝宝 🇻🇳🇨🇳 #{tag}",
    "Q&A: Sữa {brand} có phù hợp với bé dị ứng đạm bò không? 🤔\n\tTrả lời: hỏi ý kiến bác sĩ nhi khoa. #{tag}",
    "Livestream 20h tối nay 📺 với bác sĩ Lan \\ giải đáp mọi thắc mắc về dinh dưỡng 👩\u200d⚕️ #{tag} #livestream",
)
_NAMES = ("Bơ", "Na", "Sóc", "Bin", "Mít", "Gạo", "Su", "Tôm")
_PAGE_CATEGORIES = ("Baby goods/children's goods", "Food & beverage company", "Health/beauty", "Brand")
_REACTIONS = ("Like", "Love", "Haha", "Wow", "Care")
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyz"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrightDataSandboxConfig:
    """How a sandbox server behaves; fixed for the server's life (faults that tests arm later are `faults`).

    A snapshot is `ready` once it has been polled `ready_after_polls` times AND `ready_after_seconds` have passed
    since the trigger; until then progress walks through BrightData's running statuses. The first
    `building_responses` downloads of a ready snapshot answer 202 "building". `too_many_jobs` triggers are refused
    with 429 and `Retry-After: retry_after_seconds` before triggers succeed. `failure` makes every snapshot end
    `failed` with that message; an input whose url contains `/dead-page` yields only an error record.
    """

    api_key: str = DEFAULT_API_KEY
    seed: str = "sandbox"
    datasets: frozenset[str] = frozenset({BRIGHTDATA_FACEBOOK_POSTS_DATASET})
    ready_after_polls: int = 2
    ready_after_seconds: float = 0.0
    building_responses: int = 1
    too_many_jobs: int = 0
    retry_after_seconds: int = 1
    failure: str | None = None
    posts_per_snapshot: int | None = None  # overrides the inputs' num_of_posts: benches ask for 200,000
    error_rate: float = 0.02
    missing_id_rate: float = 0.01
    expire_after_seconds: float | None = None  # BrightData keeps snapshots for 16 days
    min_batch_size: int = 1000
    # A snapshot's json body is rendered to a file once (BrightData serves built snapshots from storage; rendering
    # while sending capped the sandbox at ~90 MB/s, below what the platform ingests). Up to this many records it
    # is rendered while the trigger is answered (milliseconds), larger ones in a background thread while progress
    # still says `digesting`; a download asked for before that is rendered while it is sent, as before.
    render_inline_records: int = 10_000
    reference_time: datetime = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # posts are dated before it


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    status: int
    authorization: str | None


@dataclass(frozen=True)
class Download:
    snapshot_id: str
    part: int | None
    bytes_sent: int
    completed: bool


@dataclass
class BrightDataFaults:
    """Faults a test arms between calls: a connection that really dies mid-download, not a mocked one."""

    drop_after_bytes: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def drop_next_download_after(self, nbytes: int) -> None:
        """Abort the next snapshot download (whole or one part) once it has sent `nbytes`; later ones complete."""
        with self._lock:
            self.drop_after_bytes = nbytes

    def take_drop(self) -> int | None:
        with self._lock:
            nbytes, self.drop_after_bytes = self.drop_after_bytes, None
            return nbytes


@dataclass
class _Snapshot:
    id: str
    dataset_id: str
    inputs: list[dict[str, Any]]
    counts: list[int]  # records per input, in input order
    include_errors: bool
    created: float
    polls: int = 0
    downloads_refused: int = 0
    expired: bool = False
    body: "_RenderedBody | None" = None  # set once the JSON body is rendered to a file

    @property
    def total(self) -> int:
        return sum(self.counts)


class _InjectedDrop(Exception):
    """Raised inside a streaming body to make uvicorn abort the connection, as a network failure would."""


class _QuietInjectedDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _InjectedDrop))


def _page_slug(url: str) -> str:
    parts = [p for p in urlsplit(url).path.split("/") if p]
    return parts[0] if parts else urlsplit(url).netloc


def _digits(rng: random.Random, n: int) -> str:
    low = 10 ** (n - 1)
    return str(low + rng.getrandbits(60) % (9 * low))


@functools.lru_cache(maxsize=256)
def _snapshot_seed(seed: str, snapshot_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{snapshot_id}".encode()).digest()[:8]) << 32


@functools.lru_cache(maxsize=1024)
def _hashtags(template: int, tag: str) -> list[str] | None:
    words = _TEXTS[template].format(brand="", tag=tag, month=1, name="").split()
    return [w[1:].lower() for w in words if w.startswith("#")] or None


@dataclass(frozen=True)
class _Page:
    """What every post of one page repeats, rendered to JSON once per snapshot and input."""

    slug: str
    name: str
    profile_id: str
    static_json: str  # `"key":value,...` for the page fields, without braces


def _page(seed: str, url: str, include_profile_data: bool) -> _Page:
    slug = _page_slug(url)
    rng = random.Random(f"{seed}|page|{slug}")
    name = f"{slug.replace('-', ' ').replace('_', ' ')} Việt Nam"
    profile_id = "1000" + _digits(rng, 11)
    page_url = f"https://www.facebook.com/{slug}"
    logo = f"https://scontent.xx.fbcdn.net/v/t39.30808-1/{_digits(rng, 9)}_n.jpg?_nc_cat=1{rng.randrange(10, 99)}"
    fields: dict[str, Any] = {
        "user_url": page_url,
        "user_username_raw": name,
        "page_name": name,
        "page_url": page_url,
        "profile_id": profile_id,
        "profile_handle": slug,
    }
    if include_profile_data:
        fields |= {
            "page_intro": f"Trang chính thức của {name} 🇻🇳 — Dinh dưỡng cho mọi gia đình",
            "page_category": rng.choice(_PAGE_CATEGORIES),
            "page_logo": logo,
            "avatar_image_url": logo,
            "page_external_website": f"{slug.lower()}.vn",
            "page_followers": rng.randrange(10_000, 5_000_000),
            "page_is_verified": rng.random() < 0.7,
        }
    return _Page(slug, name, profile_id, _ENCODER.encode(fields)[1:-1])


def _attachments(rng: random.Random, post_id: str) -> list[dict[str, Any]]:
    media = []
    for _ in range((0, 1, 1, 1, 2, 3)[int(rng.random() * 6)]):
        media_id = _digits(rng, 15)
        is_video = rng.random() < 0.2
        media.append(
            {
                "id": media_id,
                "type": "Video" if is_video else "Photo",
                "url": f"https://scontent.xx.fbcdn.net/v/t39.30808-6/{media_id}_{post_id}_n.jpg?_nc_cat=10{media_id[-1]}",
                "attachment_url": f"https://www.facebook.com/photo.php?fbid={media_id}",
                "video_url": f"https://video.xx.fbcdn.net/v/t42.1790-2/{media_id}_n.mp4" if is_video else None,
            }
        )
    return media


_MASK = (1 << 64) - 1
_TEMPLATES_PER_PAGE = 256
_SLOTS = {"@@PID@@": "%(pid)s", "@@TOKEN@@": "%(token)s", "@@DATE@@": "%(date)s"}
_NUMBER_SLOTS = {'"@@LIKES@@"': "%(likes)d", '"@@COMMENTS@@"': "%(comments)d", '"@@SHARES@@"': "%(shares)d"}


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of the record's position, cheap enough per record."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _post_fields(
    rng: random.Random, page: _Page, input_: Mapping[str, Any], stamp: str, post_id: str, token: str, date: str
) -> dict[str, Any]:
    tag = page.slug.lower().replace("-", "")
    template = int(rng.random() * len(_TEXTS))
    name = _NAMES[int(rng.random() * len(_NAMES))]
    content = _TEXTS[template].format(brand=page.name, tag=tag, month=1 + int(rng.random() * 12), name=name)
    attachments = _attachments(rng, post_id)
    likes = int(rng.paretovariate(1.2) * 40)
    return {
        "url": f"https://www.facebook.com/{page.slug}/posts/pfbid0{token}",
        "post_id": post_id,
        "content": content,
        "date_posted": date,
        "hashtags": _hashtags(template, tag),
        "num_comments": int(likes * rng.random() * 0.3),
        "num_shares": int(likes * rng.random() * 0.1),
        "num_likes_type": {"type": _REACTIONS[int(rng.random() * len(_REACTIONS))], "num": likes},
        "likes": likes,
        "attachments": attachments,
        "post_image": attachments[0]["url"] if attachments else None,
        "post_type": "Reel" if rng.random() < 0.25 else "Post",
        "is_sponsored": rng.random() < 0.05,
        "shortcode": post_id,
        "video_view_count": 100 + int(rng.random() * 500_000) if any(a["video_url"] for a in attachments) else None,
        "timestamp": stamp,
        "input": input_,
    }


@functools.lru_cache(maxsize=64)
def _post_templates(seed: str, page: _Page, input_json: str, stamp: str) -> tuple[str, ...]:
    """Rendered posts of a page with %-slots for what differs per record (ids, date, counts).

    Rendering a record from a template is one C-level `%` instead of building and encoding a dict, which is what
    lets the sandbox serve the 200,000-post bench snapshot faster than the platform can ingest it.
    """
    input_ = json.loads(input_json)
    templates = []
    for k in range(_TEMPLATES_PER_PAGE):
        rng = random.Random(f"{seed}|template|{page.slug}|{k}")
        fields = _post_fields(rng, page, input_, stamp, "@@PID@@", "@@TOKEN@@", "@@DATE@@")
        fields["likes"] = fields["num_likes_type"]["num"] = "@@LIKES@@"
        fields["num_comments"], fields["num_shares"] = "@@COMMENTS@@", "@@SHARES@@"
        text = _ENCODER.encode(fields).replace("%", "%%")
        for slot, spec in (*_NUMBER_SLOTS.items(), *_SLOTS.items()):
            text = text.replace(slot, spec)
        templates.append(f"{text[:-1]},{page.static_json.replace('%', '%%')}}}")
    return tuple(templates)


def render_record(
    config: BrightDataSandboxConfig, snapshot_id: str, index: int, page: _Page, input_: Mapping[str, Any]
) -> tuple[str, bool]:
    """(JSON text, is an error record) of record `index` of a snapshot: a pure function of its arguments.

    Everything about a record derives from a hash of (seed, snapshot, position), which is what lets any part of
    any batch size be rendered on its own.
    """
    h = _mix(_snapshot_seed(config.seed, snapshot_id) + index)
    reference = config.reference_time.timestamp()
    stamp = _stamp(reference + 300)
    dead = "/dead-page" in str(input_.get("url", ""))
    if dead or (h & 0xFFFFF) < config.error_rate * 0x100000:
        code, message = _ERROR_CODES[0] if dead else _ERROR_CODES[(h >> 20) % len(_ERROR_CODES)]
        return _ENCODER.encode({"timestamp": stamp, "input": input_, "error": message, "error_code": code}), True
    post_id = str(100_000_000_000_000 + h % 900_000_000_000_000)
    token = format(_mix(h), "016x") + format(h, "016x")
    date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(reference - 1 - (h >> 8) % (90 * 86400)))
    if ((h >> 24) & 0xFFFFF) < config.missing_id_rate * 0x100000:
        # BrightData omits the id of some shared and story posts; the parser must reject these, not invent keys.
        fields = _post_fields(random.Random(h), page, input_, stamp, post_id, token, date)
        if h & (1 << 63):
            del fields["post_id"]
        else:
            fields["post_id"] = None
        text = _ENCODER.encode(fields)
        return f"{text[:-1]},{page.static_json}}}", False
    templates = _post_templates(config.seed, page, _ENCODER.encode(input_), stamp)
    likes = int(40 * (1 - ((h >> 32) & 0xFFFF) / 65536) ** (-1 / 1.2))
    values = {
        "pid": post_id,
        "token": token,
        "date": date,
        "likes": likes,
        "comments": likes * ((h >> 48) & 0xFF) * 3 // 2560,
        "shares": likes * ((h >> 56) & 0xFF) // 2560,
    }
    return templates[(h >> 40) % _TEMPLATES_PER_PAGE] % values, False


@functools.lru_cache(maxsize=16)
def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


class _State:
    def __init__(self, config: BrightDataSandboxConfig) -> None:
        self.config = config
        self.faults = BrightDataFaults()
        self.snapshots: dict[str, _Snapshot] = {}
        self.requests: list[RecordedRequest] = []
        self.downloads: list[Download] = []
        self.triggers = 0
        self.lock = threading.Lock()
        self.workdir = tempfile.mkdtemp(prefix="brightdata-sandbox-")
        self.closed = False

    def close(self) -> None:
        self.closed = True
        shutil.rmtree(self.workdir, ignore_errors=True)

    def new_snapshot_id(self) -> str:
        digest = hashlib.sha256(f"{self.config.seed}|snapshot|{len(self.snapshots)}".encode()).digest()
        number = int.from_bytes(digest[:16])
        chars = []
        for _ in range(17):
            number, rem = divmod(number, 36)
            chars.append(_ALNUM[rem])
        return "s_" + "".join(chars)

    def status(self, snap: _Snapshot) -> str:
        config = self.config
        done = snap.polls >= config.ready_after_polls and time.monotonic() - snap.created >= config.ready_after_seconds
        if not done:
            return RUNNING_STATUSES[min(snap.polls, len(RUNNING_STATUSES) - 1)]
        return "failed" if config.failure else "ready"


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def _state(request: Request) -> _State:
    state: _State = request.app.state.sandbox
    return state


def _non_negative_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


async def _trigger(request: Request) -> Response:
    state = _state(request)
    config = state.config
    dataset_id = request.query_params.get("dataset_id")
    if not dataset_id:
        return _error(400, "dataset missing")
    if dataset_id not in config.datasets:
        return _error(404, "dataset does not exist")
    try:
        limit = _non_negative_int(request.query_params.get("limit_per_input"), "limit_per_input")
    except ValueError as exc:
        return JSONResponse({"validation_errors": [str(exc)]}, status_code=400)
    try:
        inputs = json.loads(await request.body() or b"null")
    except ValueError:
        return JSONResponse({"validation_errors": ["body is not valid JSON"]}, status_code=400)
    if isinstance(inputs, dict) and isinstance(inputs.get("input"), list):
        inputs = inputs["input"]  # the documented alternative body shape {"input": [...]}
    if not isinstance(inputs, list) or not inputs:
        return _error(400, "No data to trigger")
    problems = []
    for i, item in enumerate(inputs):
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item["url"].startswith("http"):
            problems.append(
                {"index": i, "line": json.dumps(item, ensure_ascii=False), "errors": [["url", "Required field"]]}
            )
            continue
        posts = item.get("num_of_posts", 10)
        if isinstance(posts, bool) or not isinstance(posts, int) or posts < 0:
            problems.append({"index": i, "line": json.dumps(item), "errors": [["num_of_posts", "Invalid integer"]]})
    if problems:
        return JSONResponse({"validation_errors": problems}, status_code=400)
    with state.lock:
        state.triggers += 1
        if state.triggers <= config.too_many_jobs:
            return _error(429, TOO_MANY_JOBS, {"Retry-After": str(config.retry_after_seconds)})
        counts = [
            min(item.get("num_of_posts", 10), limit) if limit is not None else item.get("num_of_posts", 10)
            for item in inputs
        ]
        if config.posts_per_snapshot is not None:
            n = config.posts_per_snapshot
            counts = [n // len(inputs) + (1 if i < n % len(inputs) else 0) for i in range(len(inputs))]
        snapshot = _Snapshot(
            id=state.new_snapshot_id(),
            dataset_id=dataset_id,
            inputs=inputs,
            counts=counts,
            include_errors=request.query_params.get("include_errors", "").lower() == "true",
            created=time.monotonic(),
        )
        state.snapshots[snapshot.id] = snapshot
    if snapshot.total <= config.render_inline_records:
        _render(state, snapshot)
    else:
        threading.Thread(
            target=_render_in_background, args=(state, snapshot), name=f"render-{snapshot.id}", daemon=True
        ).start()
    return JSONResponse({"snapshot_id": snapshot.id})


def _find(state: _State, snapshot_id: str) -> _Snapshot | None:
    with state.lock:
        return state.snapshots.get(snapshot_id)


async def _progress(request: Request) -> Response:
    state = _state(request)
    snap = _find(state, request.path_params["snapshot_id"])
    if snap is None:
        return _error(404, "Snapshot does not exist")
    with state.lock:
        status = state.status(snap)
        snap.polls += 1
        if status == "ready" and snap.body is None:
            status = "digesting"  # still rendering: BrightData too says ready only once a snapshot can be served
    body: dict[str, Any] = {"snapshot_id": snap.id, "dataset_id": snap.dataset_id, "status": status}
    if status == "ready":
        body["records"] = snap.total
    elif status == "failed":
        body["error_message"] = state.config.failure
    return JSONResponse(body)


def snapshot_records(
    config: BrightDataSandboxConfig,
    snapshot_id: str,
    inputs: Sequence[Mapping[str, Any]],
    counts: Sequence[int],
    *,
    include_errors: bool = True,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[str]:
    """The JSON text of records [start, stop) of a snapshot of `counts[i]` records per input, in order.

    Error records are dropped unless `include_errors`, as BrightData does. Tests use this to write realistic
    snapshot files without a server; the server uses it to stream any part of any snapshot.
    """
    bounds = list(itertools.accumulate(counts))
    stop = bounds[-1] if stop is None and bounds else (stop or 0)
    pages: dict[int, _Page] = {}
    for index in range(start, stop):
        which = bisect.bisect_right(bounds, index)
        item = inputs[which]
        page = pages.get(which)
        if page is None:
            page = pages[which] = _page(config.seed, item["url"], bool(item.get("include_profile_data", True)))
        text, is_error = render_record(config, snapshot_id, index, page, item)
        if include_errors or not is_error:
            yield text


@dataclass(frozen=True)
class _RenderedBody:
    """A snapshot's `format=json` body rendered once to a file, the way BrightData serves a built snapshot from
    storage: each record is followed by `,\\n`, and `offsets[i]` is where record i starts (an error record left out
    without `include_errors` takes no bytes), so any part is a byte range between the array's brackets."""

    path: str
    offsets: array

    def part(self, start: int, stop: int) -> Iterator[bytes]:
        """The body of records [start, stop) exactly as `_body` renders it, read in large chunks."""
        first, last = self.offsets[start], self.offsets[stop]
        if last == first:
            yield b"[\n\n]\n"
            return
        yield b"[\n"
        remaining = last - first - 2  # without the last record's ",\n"
        with open(self.path, "rb") as f:
            f.seek(first)
            while remaining > 0:
                chunk = f.read(min(remaining, _FILE_CHUNK_BYTES))
                if not chunk:
                    raise RuntimeError(f"{self.path} is shorter than its offsets say")
                remaining -= len(chunk)
                yield chunk
        yield b"\n]\n"


def _render(state: _State, snap: _Snapshot) -> None:
    """Render the snapshot's json body to a file; progress says `ready` only once this is done."""
    path = os.path.join(state.workdir, f"{snap.id}.json")
    offsets = array("q", [0])
    position = 0
    pending: list[bytes] = []
    size = 0
    bounds = list(itertools.accumulate(snap.counts))
    pages: dict[int, _Page] = {}
    with open(path, "wb") as out:
        for index in range(snap.total):
            which = bisect.bisect_right(bounds, index)
            item = snap.inputs[which]
            page = pages.get(which)
            if page is None:
                page = pages[which] = _page(
                    state.config.seed, item["url"], bool(item.get("include_profile_data", True))
                )
            text, is_error = render_record(state.config, snap.id, index, page, item)
            if snap.include_errors or not is_error:
                data = f"{text},\n".encode()
                pending.append(data)
                size += len(data)
            offsets.append(position + size)
            if size >= _STREAM_CHUNK_BYTES:
                out.write(b"".join(pending))
                position += size
                pending, size = [], 0
        out.write(b"".join(pending))
    with state.lock:
        snap.body = _RenderedBody(path, offsets)


def _render_in_background(state: _State, snap: _Snapshot) -> None:
    try:
        _render(state, snap)
    except OSError:
        if not state.closed:  # a server stopping mid-render has removed the folder: nothing to report
            logger.exception("rendering snapshot %s failed; it is served while rendered instead", snap.id)


def _record_texts(state: _State, snap: _Snapshot, start: int, stop: int) -> Iterator[str]:
    return snapshot_records(
        state.config, snap.id, snap.inputs, snap.counts, include_errors=snap.include_errors, start=start, stop=stop
    )


def _body(texts: Iterable[str], fmt: str) -> Iterator[bytes]:
    """The response body in chunks of about 256 KiB: one record in memory at a time, never the snapshot."""
    first, separator, last = ("[\n", ",\n", "\n]\n") if fmt == "json" else ("", "\n", "")
    pending: list[str] = [first]
    size = 0
    for i, text in enumerate(texts):
        if i:
            pending.append(separator)
        pending.append(text)
        size += len(text)
        if size >= _STREAM_CHUNK_BYTES // 2:  # characters, not bytes: UTF-8 text is at most ~2x for this data
            yield "".join(pending).encode()
            pending, size = [], 0
    pending.append(last)
    yield "".join(pending).encode()


def _metered(state: _State, snap: _Snapshot, part: int | None, chunks: Iterable[bytes]) -> Iterator[bytes]:
    drop_after = state.faults.take_drop()
    sent = 0
    completed = False
    try:
        for chunk in chunks:
            if drop_after is not None and sent + len(chunk) > drop_after:
                head = chunk[: max(drop_after - sent, 0)]
                if head:
                    sent += len(head)
                    yield head
                raise _InjectedDrop(f"sandbox dropped the download of {snap.id} after {sent} bytes")
            sent += len(chunk)
            yield chunk
        completed = True
    finally:
        with state.lock:
            state.downloads.append(Download(snap.id, part, sent, completed))


def _ready_or_refusal(state: _State, snap: _Snapshot) -> Response | None:
    with state.lock:
        status = state.status(snap)
        if status == "failed":
            return _error(400, f"Snapshot failed: {state.config.failure}")
        if status != "ready":
            return JSONResponse(
                {"status": status, "message": "Snapshot is not ready yet, try again in 10s"}, status_code=202
            )
        if snap.expired or (
            state.config.expire_after_seconds is not None
            and time.monotonic() - snap.created > state.config.expire_after_seconds
        ):
            return _error(400, "Snapshot is expired")
        if snap.downloads_refused < state.config.building_responses:
            snap.downloads_refused += 1
            return JSONResponse({"status": "building", "message": "Snapshot is building, try again in 10s"}, 202)
    return None


def _batching(request: Request, state: _State) -> tuple[str, int | None]:
    fmt = request.query_params.get("format", "json")
    if fmt not in {"json", "ndjson", "jsonl"}:
        raise ValueError(f"format must be one of json, ndjson, jsonl in the sandbox, got {fmt!r}")
    batch_size = _non_negative_int(request.query_params.get("batch_size"), "batch_size")
    if batch_size is not None and batch_size < state.config.min_batch_size:
        raise ValueError(f"batch_size must be >= {state.config.min_batch_size}")
    return fmt, batch_size


async def _snapshot(request: Request) -> Response:
    state = _state(request)
    snap = _find(state, request.path_params["snapshot_id"])
    if snap is None:
        return _error(404, "Snapshot does not exist")
    try:
        fmt, batch_size = _batching(request, state)
        part = _non_negative_int(request.query_params.get("part"), "part")
    except ValueError as exc:
        return JSONResponse({"validation_errors": [str(exc)]}, status_code=400)
    refusal = _ready_or_refusal(state, snap)
    if refusal is not None:
        return refusal
    rendered = snap.body
    if snap.total == 0 or (
        not snap.include_errors
        and (
            rendered.offsets[-1] == 0
            if rendered is not None
            else not any(True for _ in _record_texts(state, snap, 0, snap.total))
        )
    ):
        return _error(400, "Snapshot is empty")
    start, stop = 0, snap.total
    if part is not None:
        if batch_size is None:
            return JSONResponse({"validation_errors": ["part requires batch_size"]}, status_code=400)
        parts = math.ceil(snap.total / batch_size)
        if not 1 <= part <= parts:
            return JSONResponse({"validation_errors": [f"part must be between 1 and {parts}"]}, status_code=400)
        start, stop = (part - 1) * batch_size, min(part * batch_size, snap.total)
    media_type = "application/json" if fmt == "json" else "application/x-ndjson"
    if fmt == "json" and rendered is not None:
        body = rendered.part(start, stop)
    else:  # requested before its rendering finished, or as ndjson: rendered while it is sent
        body = _body(_record_texts(state, snap, start, stop), fmt)
    chunks = _metered(state, snap, part, body)
    return StreamingResponse(chunks, media_type=f"{media_type}; charset=utf-8")


async def _parts(request: Request) -> Response:
    state = _state(request)
    snap = _find(state, request.path_params["snapshot_id"])
    if snap is None:
        return _error(404, "Snapshot does not exist")
    try:
        _, batch_size = _batching(request, state)
    except ValueError as exc:
        return JSONResponse({"validation_errors": [str(exc)]}, status_code=400)
    with state.lock:
        if state.status(snap) != "ready":
            return _error(400, "Snapshot is not ready")
    return JSONResponse({"parts": math.ceil(snap.total / batch_size) if batch_size else 1})


class _AuthAndLog:
    """Bearer-key check and a request log in front of every route, the way the real API gates every call."""

    def __init__(self, app: ASGIApp, state: _State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorization = headers.get("authorization")
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            scheme, _, key = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.encode(), self.state.config.api_key.encode()):
                await _error(401, "Unauthorized: invalid or missing API key")(scope, receive, recording_send)
            else:
                await self.app(scope, receive, recording_send)
        finally:
            with self.state.lock:
                self.state.requests.append(
                    RecordedRequest(
                        scope["method"], scope["path"], scope["query_string"].decode(), status, authorization
                    )
                )


def build_app(config: BrightDataSandboxConfig) -> tuple[ASGIApp, _State]:
    state = _State(config)
    app = Starlette(
        routes=[
            Route("/datasets/v3/trigger", _trigger, methods=["POST"]),
            Route("/datasets/v3/progress/{snapshot_id}", _progress, methods=["GET"]),
            Route("/datasets/v3/snapshot/{snapshot_id}/parts", _parts, methods=["GET"]),
            Route("/datasets/v3/snapshot/{snapshot_id}", _snapshot, methods=["GET"]),
        ]
    )
    app.state.sandbox = state
    return _AuthAndLog(app, state), state


@dataclass
class BrightDataSandbox:
    """A running sandbox API: where it is, its key, and what it saw (requests, downloads) for tests to assert on."""

    url: str
    config: BrightDataSandboxConfig
    faults: BrightDataFaults
    _state: _State = field(repr=False)

    @property
    def api_key(self) -> str:
        return self.config.api_key

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def downloads(self) -> list[Download]:
        with self._state.lock:
            return list(self._state.downloads)

    @property
    def snapshot_ids(self) -> list[str]:
        with self._state.lock:
            return list(self._state.snapshots)

    def expire(self, snapshot_id: str) -> None:
        """Age a snapshot past BrightData's retention, as 16 days would."""
        with self._state.lock:
            self._state.snapshots[snapshot_id].expired = True

    def records(self, snapshot_id: str) -> Iterator[dict[str, Any]]:
        """The records a full download of the snapshot returns, decoded: the expected side of a test."""
        snap = self._state.snapshots[snapshot_id]
        for text in _record_texts(self._state, snap, 0, snap.total):
            yield json.loads(text)


@contextlib.contextmanager
def run_brightdata_api(
    config: BrightDataSandboxConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[BrightDataSandbox]:
    """Serve the sandbox API from a background thread until the block exits; port 0 picks a free port."""
    config = config or BrightDataSandboxConfig()
    app, state = build_app(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5)
    )
    quiet = _QuietInjectedDrops()
    error_logger = logging.getLogger("uvicorn.error")
    error_logger.addFilter(quiet)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sandbox-brightdata", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the BrightData sandbox API did not start")
            time.sleep(0.01)
        bound_port = sock.getsockname()[1]
        yield BrightDataSandbox(url=f"http://{host}:{bound_port}", config=config, faults=state.faults, _state=state)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        error_logger.removeFilter(quiet)
        state.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a BrightData-compatible Datasets API v3 on localhost.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--seed", default="sandbox")
    parser.add_argument("--ready-after-seconds", type=float, default=2.0)
    parser.add_argument("--posts-per-snapshot", type=int, default=None)
    parser.add_argument(
        "--building-responses", type=int, default=1, help="202 building answers before a snapshot is served"
    )
    args = parser.parse_args(argv)
    config = BrightDataSandboxConfig(
        api_key=args.api_key,
        seed=args.seed,
        ready_after_seconds=args.ready_after_seconds,
        posts_per_snapshot=args.posts_per_snapshot,
        building_responses=args.building_responses,
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with run_brightdata_api(config, host=args.host, port=args.port) as sandbox:
        print(f"listening {sandbox.url}", flush=True)  # scripts (the bench, `dev`) read the URL from this line
        stop.wait()


if __name__ == "__main__":
    main()
