"""A raw BrightData snapshot (a JSON array of records) becomes `social.posts` rows and rejected records.

The snapshot is read once, as a stream: a 200,000-post snapshot (hundreds of MB) is never held in memory, not even
once. msgspec cuts the array into windows of whole elements (a syntax-only scan proves each cut) and decodes each
record into a struct of only the fields that become columns, skipping page profiles and the rest in C. Measured on
a 50,000-post sandbox snapshot (88 MB): decoding took 0.39 s of CPU against 0.80 s for the standard library's
scanner (ijson's C backend was no faster than the standard library), and the whole parse to Arrow 1.1 s against
1.75 s. pyarrow's JSON reader was not an option: it reads newline-delimited JSON only, and cannot hand back the
attachments as JSON text. Whatever msgspec does not take (NDJSON, a body that is not an array, an unpaired surrogate
escape, a truncated or malformed body) is read by the standard library's scanner, which names the problem.

What BrightData returns and how each case is handled: error records (`error`, `error_code`, present because
triggers ask for `include_errors=true`) and records without a post id are rejected with the reason; counts given
as numeric strings load as numbers; a count, date or attachment list that does not parse rejects its record, never
the snapshot; text keeps its unicode and emoji as posted.
"""

import codecs
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Protocol

import msgspec
import pyarrow as pa

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


def _cut(buf: bytes) -> tuple[int, list[msgspec.Raw]] | None:
    """Split off the longest run of whole array elements at the front of `buf`: (index of the comma after it, them).

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
        try:
            return brace + 1, _RAW_LIST.decode(b"[" + buf[: brace + 1] + b"]")
        except msgspec.DecodeError:
            continue
    return None


def _elements(stream: Readable, chunk_size: int) -> Iterator[tuple[int, msgspec.Raw | None, Any]]:
    """(ordinal, raw element, None) for a snapshot's array elements, or (ordinal, None, value) from the fallback.

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
            yield ordinal, None, value
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
                try:
                    elements = _RAW_LIST.decode(b"[" + inner + b"]") if inner.strip() else []
                except msgspec.DecodeError:
                    pass
                else:
                    _check_utf8(inner, offset)
                    for raw in elements:
                        yield ordinal, raw, None
                        ordinal += 1
                    return
            break
        found = _cut(buf)
        if found is None:
            if len(buf) > 8 * chunk_size:
                break
            continue
        comma, elements = found
        _check_utf8(buf[:comma], offset)
        for raw in elements:
            yield ordinal, raw, None
            ordinal += 1
        buf = buf[comma + 1 :]
        offset += comma + 1
    for index, value in iter_json_array(_Prefixed(b"[" + buf, stream), chunk_size=chunk_size):
        yield ordinal + index, None, value


def _check_utf8(window: bytes, offset: int) -> None:
    """msgspec skips unknown fields without decoding them, so the window's UTF-8 is checked here, once."""
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
        rows: list[tuple[Any, ...]] = []
        ordinals: list[int] = []
        clock = time.perf_counter()
        for ordinal, raw, value in _elements(self._stream, self._chunk_size):
            self.stats.records += 1
            try:
                record = _to_record(raw, value)
                rows.append(post_values(record, may_hold_nul=raw is None or b"\\u0000" in bytes(raw)))
            except _RejectedRecord as rejected:
                self._reject(ordinal, value if raw is None else raw, rejected)
                continue
            ordinals.append(ordinal)
            if len(rows) >= self._batch_size:
                batch = self._batch(rows, ordinals)
                rows, ordinals = [], []
                self.stats.seconds += time.perf_counter() - clock
                yield batch
                clock = time.perf_counter()
        if rows:
            batch = self._batch(rows, ordinals)
            self.stats.seconds += time.perf_counter() - clock
            yield batch
        else:
            self.stats.seconds += time.perf_counter() - clock

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
