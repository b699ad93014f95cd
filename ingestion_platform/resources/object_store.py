"""One object store for every source: local files, S3 or GCS, chosen by OBJECT_STORE_URL, through `pyarrow.fs`.

Why pyarrow.fs: it is the only candidate that gives one code path over the three schemes AND works against both
local emulators the tests start. obstore (faster, Rust) speaks GCS's XML API for listing, HEAD and multipart uploads,
which gcp-storage-emulator does not implement (501); boto3 + google-cloud-storage would be two code paths.
(google-cloud-storage reads one thing Arrow cannot give without downloading: a GCS object's content type.) pyarrow
is already a dependency, is C++ with multipart uploads on background threads, and its filesystems are what
pyarrow.parquet and pyarrow.dataset (and DuckDB through Arrow) read and write, so Parquet needs no second client.

Guarantees the callers rely on:
- Keys are relative to the URL's prefix and can never leave it (no `..`, no absolute keys, no backslash or NUL).
- A write is never seen half done: data goes to a hidden temporary key beside the target and is moved into place
  only after the writer's block succeeded (a rename for files; a server-side copy for S3 and rewrite for GCS,
  both atomic for readers). Arrow completes an S3/GCS upload even when the writer raised, so the temporary key is
  what keeps a failed write invisible; it is deleted on failure.
- Basenames starting with "." are the store's own (temporary writes, local content types) and are refused as keys;
  pyarrow.dataset skips them too, so a Parquet dataset never picks up a write in progress.
- Credentials come from each cloud's own chain (AWS SDK chain, Google ADC); endpoints from AWS_ENDPOINT_URL and
  STORAGE_EMULATOR_HOST, with anonymous GCS access against an emulator.
"""

import functools
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import dagster as dg
import pyarrow as pa
import pyarrow.fs as pafs
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs
from pydantic import Field

from ingestion_platform.paths import DEFAULT_HOME

DEFAULT_CONTENT_TYPE = "application/octet-stream"
_CONTENT_TYPE_SUFFIX = ".content-type"
_COPY_CHUNK = 8 * 2**20


class ObjectStoreError(Exception):
    """The object store could not be configured or used; the message names the store."""


class UnsafeKeyError(ObjectStoreError, ValueError):
    """A key could escape the store's prefix or collides with the store's own hidden names."""


class ObjectNotFoundError(ObjectStoreError, FileNotFoundError):
    """No object at the key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's prefix, "/"-separated
    size: int
    mtime: datetime  # timezone-aware UTC
    content_type: str | None = None  # filled by head() and writes; listings leave it None (one request per object)


@dataclass(frozen=True)
class StoreLocation:
    """Where a store URL points: `root` is the filesystem path of the prefix (`/abs/dir` or `bucket/prefix`)."""

    scheme: str  # "file", "s3" or "gs"
    root: str

    @property
    def url(self) -> str:
        return f"file://{self.root}" if self.scheme == "file" else f"{self.scheme}://{self.root}"


def parse_store_url(url: str) -> StoreLocation:
    """Parse `file:///abs/path`, `s3://bucket/prefix` or `gs://bucket/prefix` into a scheme and a root path."""
    parts = urlsplit(url.strip())
    if parts.query or parts.fragment:
        raise ObjectStoreError(f"object store URL {url!r}: query strings and fragments are not supported")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ObjectStoreError(f"object store URL {url!r}: expected file:///absolute/path")
        path = posixpath.normpath(unquote(parts.path))
        if not posixpath.isabs(path):
            raise ObjectStoreError(f"object store URL {url!r}: the path must be absolute")
        return StoreLocation("file", path)
    if parts.scheme in ("s3", "gs"):
        if not parts.netloc:
            raise ObjectStoreError(f"object store URL {url!r}: missing bucket name")
        prefix = unquote(parts.path).strip("/")
        if prefix and ".." in prefix.split("/"):
            raise ObjectStoreError(f"object store URL {url!r}: '..' in the prefix")
        return StoreLocation(parts.scheme, f"{parts.netloc}/{prefix}" if prefix else parts.netloc)
    raise ObjectStoreError(f"object store URL {url!r}: expected file:///path, s3://bucket/prefix or gs://bucket/prefix")


def _components(text: str, what: str) -> list[str]:
    if "\x00" in text or "\\" in text:
        raise UnsafeKeyError(f"unsafe object {what} {text!r}: NUL or backslash")
    if text.startswith("/"):
        raise UnsafeKeyError(f"unsafe object {what} {text!r}: keys are relative to the store's prefix")
    parts = [p for p in text.split("/") if p]
    if any(p in {".", ".."} for p in parts):
        raise UnsafeKeyError(f"unsafe object {what} {text!r}: '.' or '..' component")
    return parts


def check_key(key: str) -> str:
    """Return `key` normalised ("a//b" -> "a/b") if it names an object inside the store's prefix; raise otherwise."""
    parts = _components(key, "key")
    if not parts or key.endswith("/"):
        raise UnsafeKeyError(f"unsafe object key {key!r}: names a folder, not an object")
    if parts[-1].startswith("."):
        raise UnsafeKeyError(f"object key {key!r}: names starting with '.' are reserved for the store's own files")
    return "/".join(parts)


def check_prefix(prefix: str) -> str:
    """A folder inside the store's prefix, normalised without slashes at its ends ("" is the whole store)."""
    return "/".join(_components(prefix, "prefix"))


def _hidden_sibling(path: str, suffix: str) -> str:
    """A hidden name beside `path` (same folder, so a rename stays on one filesystem): `dir/.name<suffix>`."""
    folder, _, name = path.rpartition("/")
    return f"{folder}/.{name}{suffix}"


@functools.cache
def _filesystem(scheme: str, bucket: str, aws_endpoint_url: str | None, emulator_host: str | None) -> pafs.FileSystem:
    """One client per process and configuration: Arrow's S3/GCS clients hold connection pools and threads."""
    if scheme == "file":
        return pafs.LocalFileSystem()
    if scheme == "s3":
        retry = pafs.AwsStandardS3RetryStrategy(max_attempts=5)
        if aws_endpoint_url:
            return pafs.S3FileSystem(endpoint_override=aws_endpoint_url, retry_strategy=retry)
        # Arrow does not follow S3's redirect to a bucket's region; ask once instead of failing on a foreign region.
        return pafs.S3FileSystem(region=pafs.resolve_s3_region(bucket), retry_strategy=retry)
    retry_limit = timedelta(seconds=60)
    if emulator_host:
        parts = urlsplit(emulator_host if "://" in emulator_host else f"http://{emulator_host}")
        return pafs.GcsFileSystem(
            anonymous=True, scheme=parts.scheme, endpoint_override=parts.netloc, retry_time_limit=retry_limit
        )
    return pafs.GcsFileSystem(retry_time_limit=retry_limit)


@functools.cache
def _gcs_client(emulator_host: str | None) -> gcs.Client:
    if emulator_host:
        endpoint = emulator_host if "://" in emulator_host else f"http://{emulator_host}"
        return gcs.Client(
            project="emulator", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
        )
    return gcs.Client()


class ObjectStoreResource(dg.ConfigurableResource):
    """The platform's object store (raw snapshots, landing zones, Parquet). Keys are relative to the URL's prefix.

    `url` unset means local files under `home`/objects, so a laptop needs nothing configured.
    """

    url: str | None = Field(
        default=None, description="OBJECT_STORE_URL: file:///path, s3://bucket/prefix or gs://bucket/prefix"
    )
    home: str = Field(default=DEFAULT_HOME, description="INGESTION_HOME; the default store is its objects/ folder")
    aws_endpoint_url: str | None = Field(
        default=None, description="AWS_ENDPOINT_URL: an S3-compatible endpoint (MinIO, moto) instead of AWS"
    )
    storage_emulator_host: str | None = Field(
        default=None, description="STORAGE_EMULATOR_HOST: a GCS emulator, reached with anonymous credentials"
    )
    read_buffer_size: int = Field(
        default=16 * 2**20,
        description="bytes fetched per request by streaming reads: S3/GCS serve each read as one ranged GET, so "
        "small reads by a parser must not become small requests",
    )

    @property
    def location(self) -> StoreLocation:
        if self.url:
            return parse_store_url(self.url)
        return StoreLocation("file", str(Path(self.home).expanduser().resolve() / "objects"))

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The Arrow filesystem behind the store, for pyarrow.parquet / pyarrow.dataset with `path(key)`."""
        loc = self.location
        return _filesystem(loc.scheme, loc.root.split("/", 1)[0], self.aws_endpoint_url, self.storage_emulator_host)

    def path(self, key: str) -> str:
        """The object's path within `filesystem` (`/abs/dir/key` or `bucket/prefix/key`)."""
        return f"{self.location.root.rstrip('/')}/{check_key(key)}"

    def folder_path(self, prefix: str = "") -> str:
        """A folder's path within `filesystem`, e.g. for `pyarrow.dataset.dataset(..., filesystem=...)`."""
        prefix = check_prefix(prefix)
        root = self.location.root.rstrip("/")
        return f"{root}/{prefix}" if prefix else root

    def uri(self, key: str) -> str:
        """The object's URL (`s3://bucket/prefix/key`, `file:///...`), for metadata and log lines."""
        loc = self.location
        return f"{loc.url.rstrip('/')}/{check_key(key)}"

    def local_path(self, key: str) -> Path | None:
        """The object's file when the store is local (DuckDB reads it directly); None for S3/GCS."""
        return Path(self.path(key)) if self.location.scheme == "file" else None

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Store `data` at `key` atomically, replacing any object there."""
        with self.open_write(key, content_type=content_type) as out:
            out.write(data)
        return self.head(key)

    def put_file(self, key: str, source: str | Path | BinaryIO, *, content_type: str | None = None) -> ObjectInfo:
        """Stream a local file (a path or an open binary file) to `key`, in bounded memory, atomically."""
        with self.open_write(key, content_type=content_type) as out:
            if isinstance(source, str | Path):
                with open(source, "rb") as f:
                    _copy(f, out)
            else:
                _copy(source, out)
        return self.head(key)

    def get(self, key: str) -> bytes:
        """The whole object in memory: for small objects; stream large ones with `open_read`."""
        with self.open_read(key) as stream:
            return stream.read()

    @contextmanager
    def open_read(self, key: str) -> Iterator[pa.NativeFile]:
        """A buffered binary stream over the object (file-like: read, readinto, iteration via io.TextIOWrapper).

        Read it to the end: on GCS, Arrow drains the rest of the download when the stream closes (and against
        gcp-storage-emulator closing a large object unread stalls), so peek at a header with a ranged read through
        `filesystem.open_input_file` instead of opening a stream and abandoning it.

        The bytes are the object's as stored: Arrow would otherwise decompress by file extension, so `x.ndjson.gz`
        would read as plain text, its hash would not be the uploaded file's, and a truncated gzip would fail the
        whole read instead of reaching the parser that keeps every complete line.
        """
        path = self.path(key)
        try:
            stream = self.filesystem.open_input_stream(path, compression=None, buffer_size=self.read_buffer_size)
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no object {self.uri(key)}") from None
        with stream:
            yield stream

    @contextmanager
    def open_write(self, key: str, *, content_type: str | None = None) -> Iterator[pa.NativeFile]:
        """A binary stream to `key` that becomes the object only when the block ends without an exception.

        Memory stays bounded whatever the size: S3 and GCS receive the data as it is written (multipart or
        resumable upload of a hidden temporary key), local files are written to a hidden temporary file.
        """
        key = check_key(key)
        fs = self.filesystem
        target = self.path(key)
        temp = _hidden_sibling(target, f".tmp-{uuid.uuid4().hex}")
        content_type = content_type or DEFAULT_CONTENT_TYPE
        local = self.location.scheme == "file"
        if local:
            fs.create_dir(posixpath.dirname(target), recursive=True)
        try:
            with fs.open_output_stream(temp, compression=None, metadata={"Content-Type": content_type}) as out:
                yield out
            if local:
                self._write_local_content_type(target, content_type)
            fs.move(temp, target)
        except BaseException:
            _delete_quietly(fs, temp)
            raise

    def head(self, key: str) -> ObjectInfo:
        """Size, modification time and content type of the object; ObjectNotFoundError if there is none."""
        key = check_key(key)
        fs = self.filesystem
        info = fs.get_file_info(self.path(key))
        if info.type != pafs.FileType.File:
            raise ObjectNotFoundError(f"no object {self.uri(key)}")
        loc = self.location
        content_type: str | None
        if loc.scheme == "file":
            content_type = self._read_local_content_type(self.path(key))
        elif loc.scheme == "s3":
            # Arrow opens an S3 object with a HEAD request and reads with ranged GETs: no data moves here.
            with fs.open_input_stream(self.path(key), compression=None) as f:
                raw = f.metadata().get("Content-Type")
            content_type = raw.decode() if raw is not None else None
        else:
            # Arrow's GCS stream starts the download and drains it on close, so a 2 GB object would be read to
            # learn its content type; the object's metadata comes from the JSON API instead.
            bucket, _, path = self.path(key).partition("/")
            blob = _gcs_client(self.storage_emulator_host).bucket(bucket).get_blob(path)
            if blob is None:
                raise ObjectNotFoundError(f"no object {self.uri(key)}")
            content_type = blob.content_type
        return ObjectInfo(key=key, size=info.size or 0, mtime=_utc(info.mtime), content_type=content_type)

    def exists(self, key: str) -> bool:
        return self.filesystem.get_file_info(self.path(key)).type == pafs.FileType.File

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under folder `prefix` (recursively), by key, with size and mtime; writes in progress and the
        store's own hidden files are left out. A missing folder is an empty list."""
        folder = self.folder_path(prefix)
        root = self.location.root.rstrip("/")
        selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        objects = []
        for info in self.filesystem.get_file_info(selector):
            if info.type != pafs.FileType.File or info.base_name.startswith("."):
                continue
            key = info.path[len(root) + 1 :]
            objects.append(ObjectInfo(key=key, size=info.size or 0, mtime=_utc(info.mtime)))
        return sorted(objects, key=lambda o: o.key)

    def delete(self, key: str) -> bool:
        """Remove the object; False if there was none (deleting is idempotent)."""
        key = check_key(key)
        fs = self.filesystem
        try:
            fs.delete_file(self.path(key))
        except FileNotFoundError:
            return False
        if self.location.scheme == "file":
            _delete_quietly(fs, _hidden_sibling(self.path(key), _CONTENT_TYPE_SUFFIX))
        return True

    def _write_local_content_type(self, path: str, content_type: str) -> None:
        """Files have no content type, so a hidden sibling keeps it; written before the data is moved into place."""
        fs = self.filesystem
        sidecar = _hidden_sibling(path, _CONTENT_TYPE_SUFFIX)
        temp = f"{sidecar}.tmp-{uuid.uuid4().hex}"
        with fs.open_output_stream(temp, compression=None) as out:
            out.write(content_type.encode())
        fs.move(temp, sidecar)

    def _read_local_content_type(self, path: str) -> str:
        sidecar = _hidden_sibling(path, _CONTENT_TYPE_SUFFIX)
        try:
            with self.filesystem.open_input_stream(sidecar, compression=None) as f:
                return f.read().decode()
        except FileNotFoundError:
            return DEFAULT_CONTENT_TYPE  # put there by another tool


def _copy(source: BinaryIO, out: pa.NativeFile) -> None:
    while chunk := source.read(_COPY_CHUNK):
        out.write(chunk)


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    with suppress(FileNotFoundError):
        fs.delete_file(path)


def _utc(mtime: datetime | None) -> datetime:
    if mtime is None:
        return datetime.fromtimestamp(0, UTC)
    return mtime.replace(tzinfo=UTC) if mtime.tzinfo is None else mtime.astimezone(UTC)
