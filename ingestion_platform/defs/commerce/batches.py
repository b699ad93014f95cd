"""The rules of a commerce batch folder `landing/{tenant}/commerce/{batch_id}/`, as pure functions.

A batch is loaded only when complete, because a half-uploaded order_items file would load a truncated batch and the
rest would then look like a new batch. Complete means either a `_SUCCESS` marker (the Hadoop/Spark convention, for
producers that cannot hash) or a `_manifest.json` listing every file with its size and sha256; with a manifest the
sensor can tell "still uploading" from "ready" by sizes alone, and the load verifies every byte by hash. Hashes also
make batches idempotent across names: the same file content arriving again in a new batch is recognised and skipped,
so an old export re-sent later can never overwrite newer rows.
"""

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO

from ingestion_platform.defs.commerce.ndjson import ENTITIES

LANDING_ROOT = "landing"
SUCCESS_MARKER = "_SUCCESS"
MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = "commerce-batch-manifest/1"
ENTITY_ORDER: tuple[str, ...] = tuple(ENTITIES)  # customers, products, orders, order_items: foreign-key order
FILE_PATTERN = re.compile(r"^(customers|products|orders|order_items)_[A-Za-z0-9._-]*\.ndjson(\.gz)?$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
PARTITION_SEPARATOR = "/"


class ManifestError(ValueError):
    """The manifest cannot be trusted (not JSON, wrong format, bad entries); the batch waits for a fixed one."""


def check_name(kind: str, value: str) -> str:
    if not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise ValueError(f"invalid {kind} {value!r}: use letters, digits, '.', '_' or '-' (max 128)")
    return value


def batch_prefix(tenant_id: str, batch_id: str) -> str:
    """Object-store prefix of a batch, ending with '/'."""
    return f"{LANDING_ROOT}/{check_name('tenant', tenant_id)}/commerce/{check_name('batch id', batch_id)}/"


def tenant_prefix(tenant_id: str) -> str:
    return f"{LANDING_ROOT}/{check_name('tenant', tenant_id)}/commerce/"


def parse_landing_key(key: str) -> tuple[str, str, str] | None:
    """(tenant, batch_id, file name) of an object key under the landing zone, or None for any other key."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != LANDING_ROOT or parts[2] != "commerce":
        return None
    _, tenant, _, batch_id, name = parts
    if not (NAME_PATTERN.fullmatch(tenant) and NAME_PATTERN.fullmatch(batch_id) and name):
        return None
    return tenant, batch_id, name


def partition_key(tenant_id: str, batch_id: str) -> str:
    """The `commerce_batch` dynamic partition key: tenant and batch, since batch ids are only unique per tenant."""
    return f"{check_name('tenant', tenant_id)}{PARTITION_SEPARATOR}{check_name('batch id', batch_id)}"


def split_partition_key(key: str) -> tuple[str, str]:
    tenant_id, sep, batch_id = key.partition(PARTITION_SEPARATOR)
    if not sep:
        raise ValueError(f"commerce batch partition {key!r} is not '<tenant>/<batch_id>'")
    return check_name("tenant", tenant_id), check_name("batch id", batch_id)


def file_entity(name: str) -> str | None:
    """Which table a file name feeds (customers, products, orders, order_items), or None if it is not a data file."""
    match = FILE_PATTERN.fullmatch(name)
    return match.group(1) if match else None


@dataclass(frozen=True)
class BatchFile:
    name: str
    entity: str
    size: int
    sha256: str | None = None  # known from the manifest; None for `_SUCCESS` batches until hashed on read


@dataclass(frozen=True)
class Manifest:
    tenant_id: str | None
    batch_id: str | None
    files: tuple[BatchFile, ...]


def sorted_files(files: Iterable[BatchFile]) -> list[BatchFile]:
    """Load order: parents before children, then by name, so "last wins" among files means the last name."""
    return sorted(files, key=lambda f: (ENTITY_ORDER.index(f.entity), f.name))


def render_manifest(tenant_id: str, batch_id: str, files: Iterable[BatchFile]) -> bytes:
    """The manifest a producer writes last, after every file it lists has been uploaded."""
    entries = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in sorted_files(files)]
    if any(e["sha256"] is None for e in entries):
        raise ValueError("every manifest entry needs its sha256")
    document = {"format": MANIFEST_FORMAT, "tenant_id": tenant_id, "batch_id": batch_id, "files": entries}
    return (json.dumps(document, indent=2) + "\n").encode()


def parse_manifest(data: bytes) -> Manifest:
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{MANIFEST_NAME} is not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f'{MANIFEST_NAME} must be an object with "format": {MANIFEST_FORMAT!r}')
    entries = document.get("files")
    if not isinstance(entries, list):
        raise ManifestError(f'{MANIFEST_NAME}: "files" must be a list')
    files: list[BatchFile] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ManifestError(f"{MANIFEST_NAME}: files[{i}] must be an object")
        name, size, sha = entry.get("name"), entry.get("size"), entry.get("sha256")
        entity = file_entity(name) if isinstance(name, str) else None
        if not isinstance(name, str) or entity is None:
            raise ManifestError(f"{MANIFEST_NAME}: files[{i}] name {name!r} is not <table>_*.ndjson[.gz]")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{MANIFEST_NAME}: files[{i}] ({name}) size must be a non-negative integer")
        if not isinstance(sha, str) or not SHA256_PATTERN.fullmatch(sha.lower()):
            raise ManifestError(f"{MANIFEST_NAME}: files[{i}] ({name}) sha256 must be 64 hex digits")
        files.append(BatchFile(name, entity, size, sha.lower()))
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ManifestError(f"{MANIFEST_NAME}: a file is listed twice")
    tenant_id, batch_id = document.get("tenant_id"), document.get("batch_id")
    return Manifest(
        tenant_id if isinstance(tenant_id, str) else None,
        batch_id if isinstance(batch_id, str) else None,
        tuple(sorted_files(files)),
    )


@dataclass(frozen=True)
class BatchState:
    """What the sensor decides about one batch folder from a listing (file name -> size)."""

    complete: bool
    reason: str
    files: tuple[BatchFile, ...] = ()
    ignored: tuple[str, ...] = ()  # objects in the folder that are neither data files nor markers
    error: str | None = None  # a broken manifest: reported, and the batch waits for a corrected one

    def by_entity(self) -> dict[str, list[BatchFile]]:
        grouped: dict[str, list[BatchFile]] = {name: [] for name in ENTITY_ORDER}
        for f in self.files:
            grouped[f.entity].append(f)
        return grouped


def batch_state(
    listing: Mapping[str, int],
    manifest: bytes | None = None,
    *,
    tenant_id: str | None = None,
    batch_id: str | None = None,
) -> BatchState:
    """Decide whether a batch folder is ready to load.

    `listing` maps the folder's object names to sizes; `manifest` is the content of `_manifest.json` when the
    listing holds one (the caller reads it). A manifest wins over `_SUCCESS`: it also says what "complete" means.
    """
    data_files = {name: size for name, size in listing.items() if file_entity(name) is not None}
    ignored = tuple(sorted(n for n in listing if n not in data_files and n not in (SUCCESS_MARKER, MANIFEST_NAME)))
    if MANIFEST_NAME in listing:
        if manifest is None:
            raise ValueError(f"the listing holds {MANIFEST_NAME}: pass its content")
        try:
            parsed = parse_manifest(manifest)
        except ManifestError as exc:
            return BatchState(False, str(exc), ignored=ignored, error=str(exc))
        for kind, expected, declared in (("tenant", tenant_id, parsed.tenant_id), ("batch", batch_id, parsed.batch_id)):
            if expected is not None and declared is not None and declared != expected:
                error = f"{MANIFEST_NAME} names {kind} {declared!r} but sits in the folder of {kind} {expected!r}"
                return BatchState(False, error, ignored=ignored, error=error)
        waiting = []
        for f in parsed.files:
            if f.name not in listing:
                waiting.append(f"{f.name} missing")
            elif listing[f.name] != f.size:
                waiting.append(f"{f.name} is {listing[f.name]} bytes, manifest says {f.size}")
        unlisted = tuple(sorted(set(data_files) - {f.name for f in parsed.files}))
        if waiting:
            return BatchState(False, "waiting for files: " + "; ".join(waiting), parsed.files, ignored + unlisted)
        return BatchState(
            True, f"manifest lists {len(parsed.files)} file(s), all present", parsed.files, ignored + unlisted
        )
    if SUCCESS_MARKER in listing:
        files = tuple(sorted_files(BatchFile(n, e, s) for n, s in data_files.items() if (e := file_entity(n))))
        return BatchState(True, f"{SUCCESS_MARKER} present, {len(files)} file(s)", files, ignored)
    return BatchState(False, f"waiting for {SUCCESS_MARKER} or {MANIFEST_NAME}", ignored=ignored)


class HashingReader:
    """A read-through stream that hashes and counts what the parser reads, so a load verifies in the same pass."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def sha256_of(stream: IO[bytes], chunk_bytes: int = 1 << 20) -> tuple[str, int]:
    """(sha256 hex, size) of a stream read to its end."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(chunk_bytes):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def verify(file: BatchFile, sha256: str, size: int) -> None:
    """Raise when the bytes read differ from what the manifest promised (corrupted or replaced in transit)."""
    if file.size != size or (file.sha256 is not None and file.sha256 != sha256):
        raise ValueError(
            f"{file.name}: read {size} bytes with sha256 {sha256}, manifest says {file.size} bytes, {file.sha256}"
        )


@dataclass(frozen=True)
class LoadedFile:
    """A file content already loaded for this tenant (from the warehouse's record of loaded files)."""

    sha256: str
    batch_id: str
    name: str


@dataclass(frozen=True)
class LoadSelection:
    to_load: tuple[BatchFile, ...]
    already_loaded: tuple[tuple[BatchFile, LoadedFile], ...] = field(default=())


def select_new_content(files: Iterable[BatchFile], loaded: Mapping[str, LoadedFile], *, batch_id: str) -> LoadSelection:
    """Split a batch's files into those to load and those whose content (sha256) was loaded by another batch.

    A file loaded by this same batch is loaded again (a re-run is an idempotent upsert and may follow a failed
    attempt); a file with the same content as one from another batch is skipped, and reported with that batch.
    Files without a known hash are always loaded.
    """
    to_load, skipped = [], []
    for f in sorted_files(files):
        prior = loaded.get(f.sha256) if f.sha256 else None
        if prior is not None and prior.batch_id != batch_id:
            skipped.append((f, prior))
        else:
            to_load.append(f)
    return LoadSelection(tuple(to_load), tuple(skipped))
