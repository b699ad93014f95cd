"""Carry out an upload plan (`upload.py`) against the object store: the transfer half of `ingest commerce`.

Resumable in two ways, both built on the store's atomic writes (an object is either complete or absent):
- A file already landed with the same content is skipped. The store keeps no hashes, so after each data file lands
  a small record `uploads/{tenant}/commerce/{batch}/{name}.sha256` ("<sha256> <size>") is written beside the
  landing zone; a landed manifest also vouches for its files. The plan compares local hashes with these.
- A large file goes up in parts of `part_bytes` under `uploads/.../{name}.{sha256[:16]}.parts/`, each part one
  atomic object; an interrupted upload resumes at the first part missing, since every present part is whole. The
  parts are then streamed into the landing key (one atomic write: the sensor never sees a partial file) and
  removed. The price is that assembling reads the parts back through this client (pyarrow.fs has no server-side
  multipart copy); against a local store that is a disk copy, against S3 one download of what was uploaded.
"""

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from ingestion_platform.defs.commerce.batches import LANDING_ROOT, MANIFEST_NAME, parse_landing_key, parse_manifest
from ingestion_platform.defs.commerce.upload import PlannedUpload, RemoteObject, UploadPlan
from ingestion_platform.resources.object_store import ObjectStoreResource

UPLOADS_ROOT = "uploads"
DEFAULT_PART_BYTES = 64 << 20
Progress = Callable[[int], None]  # called with the bytes just sent


@dataclass
class IngestReport:
    uploaded: int = 0
    skipped: int = 0
    bytes_sent: int = 0
    parts_resumed: int = 0  # parts found already uploaded by an interrupted run


def _record_key(landing_key: str) -> str:
    return landing_key.replace(f"{LANDING_ROOT}/", f"{UPLOADS_ROOT}/", 1) + ".sha256"


def _parts_prefix(step: PlannedUpload) -> str:
    return step.key.replace(f"{LANDING_ROOT}/", f"{UPLOADS_ROOT}/", 1) + f".{step.sha256[:16]}.parts/"


def remote_state(store: ObjectStoreResource, tenant_id: str) -> dict[str, RemoteObject]:
    """What the tenant's landing zone holds, with each object's sha256 where a record or a manifest gives it."""
    prefix = f"{LANDING_ROOT}/{tenant_id}/commerce/"
    objects = {o.key: o.size for o in store.list(prefix)}
    hashes: dict[str, str] = {}
    for key in objects:
        parsed = parse_landing_key(key)
        if parsed is not None and parsed[2] == MANIFEST_NAME:
            folder = key.removesuffix(MANIFEST_NAME)
            try:
                for f in parse_manifest(store.get(key)).files:
                    hashes[folder + f.name] = f.sha256 or ""
            except ValueError:
                continue  # a broken manifest vouches for nothing; the plan replaces it
    for record in store.list(f"{UPLOADS_ROOT}/{tenant_id}/commerce/"):
        if record.key.endswith(".sha256") and ".parts/" not in record.key:
            sha, _, size = store.get(record.key).decode().partition(" ")
            landing = record.key.replace(f"{UPLOADS_ROOT}/", f"{LANDING_ROOT}/", 1).removesuffix(".sha256")
            if objects.get(landing) == int(size or -1):
                hashes[landing] = sha
    return {key: RemoteObject(size, hashes.get(key)) for key, size in objects.items()}


def _send_parts(
    store: ObjectStoreResource, step: PlannedUpload, part_bytes: int, progress: Progress, report: IngestReport
) -> None:
    assert step.source is not None
    prefix = _parts_prefix(step)
    present = {o.key: o.size for o in store.list(prefix)}
    n_parts = max(1, -(-step.size // part_bytes))
    with step.source.open("rb") as handle:
        for i in range(n_parts):
            key = f"{prefix}{i:05d}"
            expected = min(part_bytes, step.size - i * part_bytes)
            if present.get(key) == expected:
                handle.seek(expected, io.SEEK_CUR)
                report.parts_resumed += 1
                progress(expected)
                continue
            data = handle.read(expected)
            store.put(key, data)
            report.bytes_sent += len(data)
            progress(len(data))
    with store.open_write(step.key) as out:
        for i in range(n_parts):
            with store.open_read(f"{prefix}{i:05d}") as part:
                while chunk := part.read(8 << 20):
                    out.write(chunk)
    for i in range(n_parts):
        store.delete(f"{prefix}{i:05d}")


def execute_plan(
    store: ObjectStoreResource,
    plan: UploadPlan,
    *,
    part_bytes: int = DEFAULT_PART_BYTES,
    progress: Progress | None = None,
) -> IngestReport:
    """Upload every step that is not a skip, in plan order (data files in foreign-key order, manifests last)."""
    report = IngestReport()
    tick = progress or (lambda n: None)
    for step in plan.steps:
        if step.action == "skip":
            report.skipped += 1
            continue
        if step.content is not None:
            store.put(step.key, step.content, content_type="application/json")
            report.bytes_sent += len(step.content)
            tick(len(step.content))
        else:
            _send_parts(store, step, part_bytes, tick, report)
        store.put(_record_key(step.key), f"{step.sha256} {step.size}".encode())
        report.uploaded += 1
    return report


class StderrProgress:
    """A one-line progress bar on stderr (no library: a carriage return is all it takes)."""

    def __init__(self, total: int, stream: IO[str] | None = None, width: int = 30) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.width = width

    def __call__(self, n: int) -> None:
        self.done += n
        filled = min(self.width, self.done * self.width // self.total)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done / 2**20:,.1f} / {self.total / 2**20:,.1f} MiB"
        )
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
