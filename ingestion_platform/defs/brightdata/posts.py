"""A raw BrightData snapshot (a JSON array of records) becomes `social.posts` rows and rejected records.

The snapshot is read once, as a stream: a 200,000-post snapshot (hundreds of MB) is never held in memory, not even
once. msgspec cuts the array into windows of whole elements (a syntax-only scan proves each cut). Each window is
then decoded in ONE msgspec call into structs of only the fields that become columns, typed as almost every record
has them (ids and text as strings, counts as non-negative integers), and turned into Arrow columns by Arrow's
kernels (coalescing the fallback fields, reading the timestamps): no per-record Python beyond a few list
comprehensions. A window holding anything else (a count as text, an id as a number, a zone-less timestamp, a NUL
escape) goes record by record through the Python checks instead, which accept or reject each record with its
reason, so both paths give the same rows; error records and records without a post id are rejected by those same
checks on either path. Measured on the 200,000-post bench snapshot (371 MB), alternating in one process on a
shared 2-core machine: about 4 s of CPU either way, the window path 5% ahead. Both are bound by what they share:
msgspec's syntax scan to cut windows, one Python string per field and record, and Arrow copying those strings;
going lower needs a reader that never builds Python objects (DuckDB's read_json took 0.9 s of CPU for the file).
pyarrow's JSON reader was not an option: it reads newline-delimited JSON only, fails a whole block on one value of
an unexpected type, and cannot hand back the attachments as JSON text. Whatever msgspec does not take (NDJSON, a
body that is not an array, an unpaired surrogate escape, a truncated or malformed body) is read by the standard
library's scanner, which names the problem.

What BrightData returns and how each case is handled: error records (`error`, `error_code`, present because
triggers ask for `include_errors=true`) and records without a post id are rejected with the reason; counts given
as numeric strings load as numbers; a count, date or attachment list that does not parse rejects its record, never
the snapshot; text keeps its unicode and emoji as posted.
"""

import codecs
import json
import re
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Annotated, Any, Protocol

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingestion_platform.defs.brightdata.tables import POSTS
from ingestion_platform.warehouse import Reject

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_AFTER_VALUE = frozenset(" \t\n\r,]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_TIMESTAMP = pa.timestamp("us", tz="UTC")

POSTS_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("post_id", pa.string()),
        ("snapshot_id", pa.string()),
        ("platform", pa.string()),
        ("competitor", pa.string()),
        ("brand", pa.string()),
        ("category", pa.string()),
        ("url", pa.string()),
        ("author_id", pa.string()),
        ("author_name", pa.string()),
        ("author_url", pa.string()),
        ("text", pa.string()),
        ("posted_at", _TIMESTAMP),
        ("likes", pa.int64()),
        ("comments", pa.int64()),
        ("shares", pa.int64()),
        ("video_views", pa.int64()),
        ("post_type", pa.string()),
        ("is_sponsored", pa.bool_()),
        ("media", pa.string()),
        ("media_count", pa.int32()),
        ("hashtags", pa.string()),
        ("crawled_at", _TIMESTAMP),
    ]
)
REJECTS_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("snapshot_id", pa.string()),
        ("ordinal", pa.int64()),
        ("reason", pa.string()),
        ("error_code", pa.string()),
        ("raw", pa.string()),
    ]
)
if POSTS_SCHEMA.names != POSTS.column_names:
    raise RuntimeError("the Arrow schema of posts must list the declared table's columns in order")

# The crawl's labels and the partition's ids: the same on every row of a snapshot.
_CONSTANT_COLUMNS = ("tenant_id", "snapshot_id", "platform", "competitor", "brand", "category")
_RECORD_COLUMNS = tuple(n for n in POSTS_SCHEMA.names if n not in _CONSTANT_COLUMNS)


class _Record(msgspec.Struct):
    """The fields of a BrightData record that become columns; msgspec skips all others without building them.

    Every field is `Any` on purpose: BrightData's types vary (ids as numbers or text, counts as text), and a value
    of the wrong type must reject its record with a reason, which the Python checks below do.
    """

    post_id: Any = None
    error: Any = None
    error_code: Any = None
    url: Any = None
    profile_id: Any = None
    page_id: Any = None
    user_id: Any = None
    page_name: Any = None
    user_username_raw: Any = None
    user_url: Any = None
    page_url: Any = None
    content: Any = None
    text: Any = None
    post_text: Any = None
    date_posted: Any = None
    likes: Any = None
    num_likes: Any = None
    num_likes_type: Any = None
    num_comments: Any = None
    num_shares: Any = None
    video_view_count: Any = None
    post_type: Any = None
    is_sponsored: Any = None
    attachments: Any = None
    hashtags: Any = None
    timestamp: Any = None


_Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class _Likes(msgspec.Struct, gc=False):
    num: _Count | None = None


class _FastRecord(msgspec.Struct, gc=False):
    """`_Record`'s fields in the shape almost every BrightData record has, for decoding a whole window at once.

    A value of another type (a count as text, an id as a number, a negative count) fails the window's decode and
    sends the window to the record-by-record path, which accepts or rejects it with its reason.
    """

    post_id: str | None = None
    error: Any = None
    error_code: Any = None
    url: str | None = None
    profile_id: str | None = None
    page_id: str | None = None
    user_id: str | None = None
    page_name: str | None = None
    user_username_raw: str | None = None
    user_url: str | None = None
    page_url: str | None = None
    content: str | None = None
    text: str | None = None
    post_text: str | None = None
    date_posted: str | None = None
    likes: _Count | None = None
    num_likes: _Count | None = None
    num_likes_type: _Likes | None = None
    num_comments: _Count | None = None
    num_shares: _Count | None = None
    video_view_count: _Count | None = None
    post_type: str | None = None
    is_sponsored: bool | None = None
    attachments: list[msgspec.Raw] | None = None
    hashtags: list[str] | None = None
    timestamp: str | None = None


_FAST_LIST = msgspec.json.Decoder(list[_FastRecord])
_F = {name: i for i, name in enumerate(_FastRecord.__struct_fields__)}
_F_POST_ID, _F_ERROR, _F_ERROR_CODE = _F["post_id"], _F["error"], _F["error_code"]
_NO_TEXT = pa.scalar(None, pa.string())
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_ONE = msgspec.json.Decoder(_Record)
_CUT_ATTEMPTS = 32


class SnapshotFormatError(ValueError):
    """The snapshot is not a JSON array of records (or is cut short): nothing in it can be trusted to be complete."""


@dataclass(frozen=True)
class CrawlLabels:
    """Who and what the crawl was for; BrightData does not know these, the crawl's metadata row does."""

    tenant_id: str
    snapshot_id: str
    platform: str
    competitor: str
    brand: str
    category: str


@dataclass
class ParseStats:
    records: int = 0
    posts: int = 0
    rejected: int = 0
    error_records: int = 0
    missing_post_id: int = 0
    media: int = 0
    bytes_read: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # spent parsing (reading the stream included), not waiting for the consumer


class _RejectedRecord(ValueError):
    def __init__(self, reason: str, kind: str, error_code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # a short, countable category: error_record, missing_post_id, bad_value, not_an_object
        self.error_code = error_code


class Readable(Protocol):
    """What the snapshot parsers read from: a binary stream (a file, an object store stream, a wrapper of one)."""

    def read(self, size: int, /) -> bytes: ...


class _CountingReader:
    """Counts the bytes handed to the parser, for metadata, without buffering anything itself."""

    def __init__(self, stream: IO[bytes], stats: ParseStats) -> None:
        self._stream = stream
        self._stats = stats

    def read(self, size: int) -> bytes:
        data = self._stream.read(size)
        self._stats.bytes_read += len(data)
        return data


def iter_json_array(
    stream: Readable, *, chunk_size: int = 1 << 20, max_record_chars: int = 64 << 20
) -> Iterator[tuple[int, Any]]:
    """Yield (ordinal, value) for each element of the top-level JSON array in a binary stream, in one pass.

    Memory holds one chunk plus the element being cut, whatever the array's length. Newline-delimited JSON
    (`format=ndjson`) is read too, since BrightData serves both. A value that would have to grow past
    `max_record_chars` to parse is reported as malformed rather than read until memory runs out.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    scan = json.JSONDecoder().raw_decode
    buf, pos, eof, consumed = "", 0, False, 0
    mode = "start"  # start -> value -> separator -> ... -> done; "lines" for NDJSON
    ordinal = 0

    def fill() -> None:
        nonlocal buf, pos, eof, consumed
        data = stream.read(chunk_size)
        eof = not data
        try:
            text = decoder.decode(data, final=eof)
        except UnicodeDecodeError as exc:
            raise SnapshotFormatError(f"snapshot is not UTF-8 near character {consumed + len(buf)}: {exc}") from exc
        consumed += pos
        buf = buf[pos:] + text
        pos = 0

    def where() -> str:
        return f"character {consumed + pos} (record {ordinal})"

    while True:
        pos = _WHITESPACE.match(buf, pos).end()  # type: ignore[union-attr]
        if pos >= len(buf):
            if eof:
                break
            fill()
            continue
        char = buf[pos]
        if mode == "start":
            if char == "[":
                mode, pos = "first", pos + 1
            elif char == "{":
                mode = "lines"
            else:
                raise SnapshotFormatError(
                    f"snapshot is not a JSON array of records: starts with {buf[pos : pos + 40]!r}"
                )
            continue
        if mode == "separator":
            if char == ",":
                mode, pos = "value", pos + 1
            elif char == "]":
                mode, pos = "done", pos + 1
            else:
                raise SnapshotFormatError(f"expected ',' or ']' at {where()}, found {buf[pos : pos + 40]!r}")
            continue
        if mode == "done":
            raise SnapshotFormatError(f"unexpected data after the array at {where()}: {buf[pos : pos + 40]!r}")
        if mode == "first" and char == "]":
            mode, pos = "done", pos + 1
            continue
        try:
            value, end = scan(buf, pos)
        except json.JSONDecodeError as exc:
            if eof:
                raise SnapshotFormatError(f"malformed or truncated JSON at {where()}: {exc.msg}") from exc
            if len(buf) - pos > max_record_chars:
                raise SnapshotFormatError(
                    f"record at {where()} is malformed or larger than {max_record_chars}"
                ) from exc
            fill()
            continue
        if not eof and type(value) in (int, float) and (end >= len(buf) or buf[end] not in _AFTER_VALUE):
            # A number cut by the window ("12" of "12.5e3") parses as a shorter number: read on, then cut again.
            if len(buf) - pos > max_record_chars:
                raise SnapshotFormatError(f"number at {where()} is malformed or longer than {max_record_chars}")
            fill()
            continue
        yield ordinal, value
        ordinal += 1
        pos = end
        if mode != "lines":
            mode = "separator"
    if mode not in {"done", "lines", "start"}:
        raise SnapshotFormatError(f"snapshot ends inside the array after {ordinal} records: the download is truncated")


class _Prefixed:
    """A stream with bytes already read put back in front, for handing a stream over to the other reader."""

    def __init__(self, head: bytes, stream: Readable) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int) -> bytes:
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._stream.read(size)


def _cut(buf: bytes) -> tuple[int, bytes, list[msgspec.Raw]] | None:
    """Split off the longest run of whole array elements at the front of `buf`: (index of the comma after it, the
    run as a JSON array, its elements).

    A `},` may be inside a string or a nested object, so each candidate, from the end, is proven by msgspec
    scanning `[...]` up to it as valid JSON (a syntax-only scan, about 1 GB/s); JSON's grammar makes a valid
    prefix end exactly at a top-level element.
    """
    end = len(buf)
    for _ in range(_CUT_ATTEMPTS):
        brace = buf.rfind(b"},", 0, end)
        if brace < 0:
            return None
        end = brace
        array = b"[" + buf[: brace + 1] + b"]"
        try:
            return brace + 1, array, _RAW_LIST.decode(array)
        except msgspec.DecodeError:
            continue
    return None


@dataclass(frozen=True)
class _Window:
    """Consecutive array elements: `raws` with `array` (the same elements as one JSON array, for one typed decode)
    from the fast path, or decoded `values` from the standard library's reader."""

    ordinal: int  # of the first element
    raws: list[msgspec.Raw] | None = None
    array: bytes = b""
    values: list[Any] | None = None


def _windows(stream: Readable, chunk_size: int) -> Iterator[_Window]:
    """A snapshot's array elements in windows of whole elements, in order.

    The fast path cuts windows of whole elements with msgspec and hands out each element's raw bytes. Anything it
    does not take (NDJSON, a body that is not an array, one record larger than several chunks, an unpaired
    surrogate escape msgspec refuses, a truncated or malformed body) goes to `iter_json_array`, which reads the
    rest of the stream with the standard library and names the error precisely.
    """
    head = stream.read(chunk_size)
    body = head[3:] if head.startswith(codecs.BOM_UTF8) else head
    body = body.lstrip(b" \t\r\n")
    if not body.startswith(b"["):
        for ordinal, value in iter_json_array(_Prefixed(head, stream), chunk_size=chunk_size):
            yield _Window(ordinal, values=[value])
        return
    buf, ordinal, eof = body[1:], 0, not head
    offset = len(head) - len(buf)  # bytes of the stream before buf, for error messages
    while True:
        if not eof:
            data = stream.read(chunk_size)
            eof = not data
            buf += data
        if eof:
            tail = buf.rstrip(b" \t\r\n")
            if tail.endswith(b"]"):
                inner = tail[:-1]
                array = b"[" + inner + b"]"
                try:
                    elements = _RAW_LIST.decode(array) if inner.strip() else []
                except msgspec.DecodeError:
                    pass
                else:
                    _check_utf8(inner, offset)
                    if elements:
                        yield _Window(ordinal, elements, array)
                    return
            break
        found = _cut(buf)
        if found is None:
            if len(buf) > 8 * chunk_size:
                break
            continue
        comma, array, elements = found
        _check_utf8(buf[:comma], offset)
        yield _Window(ordinal, elements, array)
        ordinal += len(elements)
        buf = buf[comma + 1 :]
        offset += comma + 1
    for index, value in iter_json_array(_Prefixed(b"[" + buf, stream), chunk_size=chunk_size):
        yield _Window(ordinal + index, values=[value])


def _check_utf8(window: bytes, offset: int) -> None:
    """msgspec skips unknown fields without decoding them, so the window's UTF-8 is checked here, once: by Arrow's
    vectorised validation (about 20x faster than decoding it), and by Python only to name the bad byte."""
    offsets = pa.py_buffer(struct.pack("<2q", 0, len(window)))
    try:
        pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(window)]).cast(pa.large_string())
        return
    except pa.ArrowInvalid:
        pass
    try:
        window.decode()
    except UnicodeDecodeError as exc:
        raise SnapshotFormatError(f"snapshot is not UTF-8 at byte {offset + exc.start}: {exc.reason}") from exc


def _to_record(raw: msgspec.Raw | None, value: Any) -> _Record:
    try:
        return _ONE.decode(raw) if raw is not None else msgspec.convert(value, _Record)
    except msgspec.ValidationError:
        kind = type(json.loads(bytes(raw)) if raw is not None else value).__name__
        raise _RejectedRecord(f"record is not a JSON object but {kind}", "not_an_object") from None


def _count(record: "_Record", *names: str) -> int | None:
    for name in names:
        value = getattr(record, name)
        if value is None:
            continue
        if isinstance(value, dict):  # num_likes_type: {"type": "Like", "num": 7374}
            value = value.get("num")
            if value is None:
                continue
        if isinstance(value, bool):
            raise _RejectedRecord(f"{name} {value!r} is not a count", "bad_value")
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and value.strip().replace(",", "").isdigit():
            number = int(value.strip().replace(",", ""))
        else:
            raise _RejectedRecord(f"{name} {value!r} is not a count", "bad_value")
        if number < 0:
            raise _RejectedRecord(f"{name} {value!r} is negative", "bad_value")
        return number
    return None


def _timestamp(record: "_Record", name: str) -> datetime | None:
    value = getattr(record, name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _RejectedRecord(f"{name} {value!r} is not an ISO 8601 timestamp", "bad_value")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _RejectedRecord(f"{name} {value!r} is not an ISO 8601 timestamp", "bad_value") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _text(record: "_Record", *names: str) -> str | None:
    for name in names:
        value = getattr(record, name)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _RejectedRecord(f"{name} {value!r} is not text", "bad_value")
        return str(value)
    return None


def post_values(record: "_Record", *, may_hold_nul: bool = True) -> tuple[Any, ...]:
    """One record's post columns in `_RECORD_COLUMNS` order; raises _RejectedRecord with the reason.

    `may_hold_nul=False` skips the per-field NUL check when the raw JSON was seen to hold no `\\u0000`.
    """
    if record.error is not None or record.error_code is not None:
        code = record.error_code
        message = record.error or "no message"
        raise _RejectedRecord(f"BrightData error record ({code}): {message}", "error_record", code and str(code))
    post_id = record.post_id
    if isinstance(post_id, str):
        post_id = post_id.strip()
    if post_id is None or post_id == "":
        raise _RejectedRecord("record has no post_id", "missing_post_id")
    if isinstance(post_id, bool) or not isinstance(post_id, (str, int)):
        raise _RejectedRecord(f"post_id {post_id!r} is not a string or integer", "bad_value")
    attachments = record.attachments
    if attachments is None:
        attachments = []
    if not isinstance(attachments, list):
        raise _RejectedRecord(f"attachments is not a list but {type(attachments).__name__}", "bad_value")
    hashtags = record.hashtags
    if hashtags is not None and not (isinstance(hashtags, list) and all(isinstance(h, str) for h in hashtags)):
        raise _RejectedRecord(f"hashtags {hashtags!r} is not a list of strings", "bad_value")
    sponsored = record.is_sponsored
    try:
        media = msgspec.json.encode(attachments).decode()
        tags = None if hashtags is None else msgspec.json.encode(hashtags).decode()
    except UnicodeEncodeError:
        raise _RejectedRecord(
            "attachments or hashtags are not valid unicode (an unpaired surrogate)", "bad_value"
        ) from None
    values = (
        str(post_id),
        _text(record, "url"),
        _text(record, "profile_id", "page_id", "user_id"),
        _text(record, "page_name", "user_username_raw"),
        _text(record, "user_url", "page_url"),
        _text(record, "content", "text", "post_text"),
        _timestamp(record, "date_posted"),
        _count(record, "likes", "num_likes", "num_likes_type"),
        _count(record, "num_comments"),
        _count(record, "num_shares"),
        _count(record, "video_view_count"),
        _text(record, "post_type"),
        sponsored if isinstance(sponsored, bool) else None,
        media,
        len(attachments),
        tags,
        _timestamp(record, "timestamp"),
    )
    if may_hold_nul:
        # PostgreSQL text and jsonb cannot hold U+0000; saying so here keeps one bad post from failing the load.
        for name, value in zip(_RECORD_COLUMNS, values, strict=True):
            if isinstance(value, str) and ("\x00" in value or "\\u0000" in value):
                raise _RejectedRecord(f"{name} contains a NUL character, which PostgreSQL cannot store", "bad_value")
    return values


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _storable(text: str) -> str:
    """Text PostgreSQL accepts: no NUL, no unpaired surrogate (each becomes U+FFFD)."""
    text = text.replace("\x00", "\ufffd")
    return text if _encodable(text) else _SURROGATE.sub("\ufffd", text)


def _sanitise(value: Any) -> Any:
    if isinstance(value, str):
        return _storable(value)
    if isinstance(value, list):
        return [_sanitise(v) for v in value]
    if isinstance(value, dict):
        return {_storable(str(k)): _sanitise(v) for k, v in value.items()}
    return value


def _raw_json(record: Any) -> str:
    """The rejected record as jsonb text; only a record holding NUL or a broken surrogate is cleaned first."""
    if isinstance(record, msgspec.Raw):
        text = bytes(record).decode()  # msgspec has checked it is UTF-8 JSON
        if "\\u0000" not in text:
            return text
        record = json.loads(text)
    raw = _ENCODER.encode(record)
    if "\\u0000" in raw or not _encodable(raw):
        raw = _ENCODER.encode(_sanitise(record))
    return raw


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One batch of several (the loader's per-batch work is fixed-cost; windows are a few hundred records)."""
    return batches[0] if len(batches) == 1 else pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _present(column: list[str | None]) -> pa.Array:
    """Text as `_text` reads it: an empty string is no value."""
    array = pa.array(column, pa.string())
    return pc.if_else(pc.equal(array, ""), _NO_TEXT, array)


def _first(*columns: list[str | None]) -> pa.Array:
    return pc.coalesce(*map(_present, columns))


def _counts(column: list[int | None]) -> pa.Array:
    return pa.array(column, pa.int64())


def _times(column: list[str | None]) -> pa.Array:
    """ISO 8601 with a zone, read by Arrow; raises ArrowInvalid for anything else (no zone, not a date)."""
    return pc.cast(_present(column), _TIMESTAMP)


def _fast_arrays(columns: list[list[Any]]) -> dict[str, pa.Array]:
    """The record columns of a window decoded as `_FastRecord`s, by `post_values`' rules, with Arrow's kernels."""

    def c(name: str) -> list[Any]:
        return columns[_F[name]]

    attachments = c("attachments")
    likes_type = [None if v is None else v.num for v in c("num_likes_type")]
    media = [b"[]" if a is None else msgspec.json.format(b"[" + b",".join(a) + b"]", indent=-1) for a in attachments]
    tags = [None if h is None else msgspec.json.encode(h) for h in c("hashtags")]
    return {
        "post_id": pa.array(c("post_id"), pa.string()),
        "url": _present(c("url")),
        "author_id": _first(c("profile_id"), c("page_id"), c("user_id")),
        "author_name": _first(c("page_name"), c("user_username_raw")),
        "author_url": _first(c("user_url"), c("page_url")),
        "text": _first(c("content"), c("text"), c("post_text")),
        "posted_at": _times(c("date_posted")),
        "likes": pc.coalesce(_counts(c("likes")), _counts(c("num_likes")), _counts(likes_type)),
        "comments": _counts(c("num_comments")),
        "shares": _counts(c("num_shares")),
        "video_views": _counts(c("video_view_count")),
        "post_type": _present(c("post_type")),
        "is_sponsored": pa.array(c("is_sponsored"), pa.bool_()),
        "media": pa.array(media, pa.binary()).cast(pa.string()),
        "media_count": pa.array([0 if a is None else len(a) for a in attachments], pa.int32()),
        "hashtags": pa.array(tags, pa.binary()).cast(pa.string()),
        "crawled_at": _times(c("timestamp")),
    }


class SnapshotParser:
    """Parses one snapshot in one pass: `posts()` yields Arrow batches, rejected records gather in `rejects()`.

    Rejected records (typically a few percent: error records and posts without an id) are kept in memory with their
    raw JSON until the posts are consumed, so they can be loaded in the same run; the posts never are.
    """

    def __init__(
        self, stream: IO[bytes], labels: CrawlLabels, *, batch_size: int = 5_000, chunk_size: int = 1 << 20
    ) -> None:
        self.labels = labels
        self._chunk_size = chunk_size
        self.stats = ParseStats()
        self._stream = _CountingReader(stream, self.stats)
        self._batch_size = batch_size
        self._rejects: dict[str, list[Any]] = {name: [] for name in REJECTS_SCHEMA.names}
        self._consumed = False

    def posts(self) -> Iterator[pa.RecordBatch]:
        if self._consumed:
            raise RuntimeError("a snapshot stream can be parsed once; open the object again to parse it again")
        self._consumed = True
        pending: list[pa.RecordBatch] = []
        size = 0
        clock = time.perf_counter()
        for window in _windows(self._stream, self._chunk_size):
            self.stats.records += len(window.raws if window.raws is not None else window.values or ())
            batch = self._fast(window) if window.raws is not None else None
            if batch is None:
                batch = self._slow(window)
            if batch is not None and batch.num_rows:
                pending.append(batch)
                size += batch.num_rows
            if size >= self._batch_size:
                batch = _concat(pending)
                pending, size = [], 0
                self.stats.seconds += time.perf_counter() - clock
                yield batch
                clock = time.perf_counter()
        self.stats.seconds += time.perf_counter() - clock
        if pending:
            yield _concat(pending)

    def _slow(self, window: _Window) -> pa.RecordBatch | None:
        """Record by record, in Python: every check, every reason, every leniency (counts as text, ids as numbers)."""
        rows: list[tuple[Any, ...]] = []
        ordinals: list[int] = []
        items: list[Any] = window.raws if window.raws is not None else window.values or []
        for index, item in enumerate(items):
            ordinal = window.ordinal + index
            raw, value = (item, None) if window.raws is not None else (None, item)
            try:
                record = _to_record(raw, value)
                rows.append(post_values(record, may_hold_nul=raw is None or b"\\u0000" in bytes(raw)))
            except _RejectedRecord as rejected:
                self._reject(ordinal, value if raw is None else raw, rejected)
                continue
            ordinals.append(ordinal)
        return self._batch(rows, ordinals) if rows else None

    def _fast(self, window: _Window) -> pa.RecordBatch | None:
        """The whole window in one typed msgspec decode and Arrow's vectorised kernels, or None for `_slow`.

        Only the common shape takes this path (ids and text as strings, counts as non-negative integers,
        timestamps with a zone, lists where lists belong, no NUL escape); one value outside it sends the window to
        `_slow`, so both paths give the same rows and reasons. Error records and records without a clean post id
        are rejected by `_slow`'s per-record code here too; if one of them turns out to be a post after all (an id
        with spaces around it), the window goes to `_slow` to keep the snapshot's row order.
        """
        raws = window.raws
        assert raws is not None
        if b"\\u0000" in window.array:
            return None
        try:
            records = _FAST_LIST.decode(window.array)
        except msgspec.DecodeError:  # ValidationError included: a value outside the common shape
            return None
        if not records:
            return None
        # One list per field, not one tuple per record: fewer objects for the cyclic GC to track and scan.
        columns = [[getattr(r, name) for r in records] for name in _FastRecord.__struct_fields__]
        ids, errors, codes = columns[_F_POST_ID], columns[_F_ERROR], columns[_F_ERROR_CODE]
        odd = [
            i
            for i, (post_id, error, code) in enumerate(zip(ids, errors, codes, strict=True))
            if error is not None or code is not None or not post_id or post_id != post_id.strip()
        ]
        rejected: list[tuple[int, _RejectedRecord]] = []
        for i in odd:
            try:
                post_values(_to_record(raws[i], None), may_hold_nul=False)
            except _RejectedRecord as exc:
                rejected.append((i, exc))
            else:
                return None
        try:
            arrays = _fast_arrays(columns)
        except pa.ArrowInvalid:  # a timestamp Arrow cannot read without a zone: Python's reading decides
            return None
        for i, reason in rejected:
            self._reject(window.ordinal + i, raws[i], reason)
        n = len(records)
        for name in _CONSTANT_COLUMNS:
            arrays[name] = pa.repeat(pa.scalar(getattr(self.labels, name), POSTS_SCHEMA.field(name).type), n)
        batch = pa.RecordBatch.from_arrays([arrays[f.name] for f in POSTS_SCHEMA], schema=POSTS_SCHEMA)
        if odd:
            keep = pa.array(np.isin(np.arange(n), odd, invert=True))
            batch = batch.filter(keep)
        self.stats.posts += batch.num_rows
        self.stats.media += pc.sum(batch.column("media_count")).as_py() or 0
        return batch

    def _reject(self, ordinal: int, record: Any, rejected: _RejectedRecord) -> None:
        stats = self.stats
        stats.rejected += 1
        stats.reasons[rejected.kind] = stats.reasons.get(rejected.kind, 0) + 1
        if rejected.kind == "error_record":
            stats.error_records += 1
        elif rejected.kind == "missing_post_id":
            stats.missing_post_id += 1
        for name, value in (
            ("tenant_id", self.labels.tenant_id),
            ("snapshot_id", self.labels.snapshot_id),
            ("ordinal", ordinal),
            ("reason", _storable(rejected.reason)),
            ("error_code", None if rejected.error_code is None else _storable(rejected.error_code)),
            ("raw", _raw_json(record)),
        ):
            self._rejects[name].append(value)

    def _batch(self, rows: list[tuple[Any, ...]], ordinals: list[int]) -> pa.RecordBatch:
        columns: dict[str, list[Any]] = dict(zip(_RECORD_COLUMNS, map(list, zip(*rows, strict=True)), strict=True))
        columns["_ordinal"] = ordinals
        try:
            return self._arrow(columns)
        except (UnicodeEncodeError, pa.ArrowException):
            # Rare: a string with an unpaired surrogate (a broken emoji escape such as "\ud83d") cannot be UTF-8.
            # Only then are rows checked one by one; the bad ones are rejected and the batch is built again.
            return self._arrow(self._reject_unencodable(columns))

    def _reject_unencodable(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        text_columns = [f.name for f in POSTS_SCHEMA if f.name in columns and pa.types.is_string(f.type)]
        keep = []
        for i in range(len(columns["post_id"])):
            bad = next((c for c in text_columns if columns[c][i] is not None and not _encodable(columns[c][i])), None)
            if bad is None:
                keep.append(i)
                continue
            row = {name: values[i] for name, values in columns.items() if name in text_columns}
            reason = f"{bad} is not valid unicode (an unpaired surrogate, e.g. a broken emoji escape)"
            self._reject(columns["_ordinal"][i], row, _RejectedRecord(reason, "bad_value"))
        return {name: [values[i] for i in keep] for name, values in columns.items()}

    def _arrow(self, columns: dict[str, list[Any]]) -> pa.RecordBatch:
        n = len(columns["post_id"])
        arrays = []
        for f in POSTS_SCHEMA:
            if f.name in columns:
                arrays.append(pa.array(columns[f.name], type=f.type))
            else:
                arrays.append(pa.repeat(pa.scalar(getattr(self.labels, f.name), f.type), n))
        self.stats.posts += n
        self.stats.media += sum(columns["media_count"])
        return pa.RecordBatch.from_arrays(arrays, schema=POSTS_SCHEMA)

    def rejects(self) -> pa.Table:
        """The rejected records, ready for `social.posts_rejects`; complete once `posts()` is exhausted."""
        if not self._consumed:
            raise RuntimeError("consume posts() before reading the rejects")
        return pa.Table.from_pydict(self._rejects, schema=REJECTS_SCHEMA)

    def quarantine(self) -> Iterator[Reject]:
        """The rejected records as the loader's `Reject`s, for `load(..., rejects=parser.quarantine())`: lazy, so
        the loader reads them only after it has drained `posts()`."""
        columns = self.rejects().to_pydict()
        for ordinal, reason, raw in zip(columns["ordinal"], columns["reason"], columns["raw"], strict=True):
            yield Reject(line_number=ordinal, reason=reason, raw=json.loads(raw), tenant_id=self.labels.tenant_id)


def parse_snapshot(
    stream: IO[bytes], labels: CrawlLabels, *, batch_size: int = 5_000, chunk_size: int = 1 << 20
) -> SnapshotParser:
    """Start parsing a raw snapshot opened for binary reading (a file, an object store stream, a response body).

    Memory is about one batch of rows plus a few times `chunk_size` (decoded text with emoji takes 4 bytes a
    character), whatever the snapshot's size.
    """
    return SnapshotParser(stream, labels, batch_size=batch_size, chunk_size=chunk_size)
