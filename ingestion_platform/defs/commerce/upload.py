"""What `ingestion-platform ingest commerce DIR --tenant T` uploads, in which order, and what the sensor then sees.

Pure planning, separate from the transfer, so `--dry-run` prints exactly what a real run would do. The order is the
point: within a batch the data files go first in foreign-key order and the completeness marker (`_manifest.json`)
last, so the sensor never sees a batch before all of it is there; a file already in the landing zone with the same
sha256 is skipped, which makes an interrupted ingest resumable by running it again.
"""

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ingestion_platform.defs.commerce.batches import (
    MANIFEST_NAME,
    SUCCESS_MARKER,
    BatchFile,
    batch_prefix,
    check_name,
    file_entity,
    parse_manifest,
    render_manifest,
    sorted_files,
)

Action = Literal["upload", "skip", "replace"]


@dataclass(frozen=True)
class LocalBatch:
    batch_id: str
    path: Path
    files: tuple[BatchFile, ...]  # with sha256, in load order


@dataclass(frozen=True)
class RemoteObject:
    """An object already in the landing zone: its size, and its sha256 when the store recorded one."""

    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class PlannedUpload:
    batch_id: str
    name: str
    key: str  # object key in the store
    size: int
    sha256: str
    action: Action
    source: Path | None = None  # None for a manifest the plan renders (its bytes are in `content`)
    content: bytes | None = None


@dataclass(frozen=True)
class UploadPlan:
    tenant_id: str
    steps: tuple[PlannedUpload, ...]
    new_batches: tuple[str, ...]  # batches the sensor will pick up once the plan has run
    landed_batches: tuple[str, ...]  # batches already complete in the landing zone: nothing to do

    @property
    def uploads(self) -> tuple[PlannedUpload, ...]:
        return tuple(s for s in self.steps if s.action != "skip")

    @property
    def bytes_to_upload(self) -> int:
        return sum(s.size for s in self.uploads)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def scan_local(directory: Path, tenant_id: str) -> list[LocalBatch]:
    """Local batch folders: `DIR/{tenant}/{batch_id}/` when DIR holds the tenant's folder (the generator's layout),
    else `DIR/{batch_id}/`. A folder counts as a batch when it holds at least one `<table>_*.ndjson[.gz]` file."""
    check_name("tenant", tenant_id)
    root = directory / tenant_id if (directory / tenant_id).is_dir() else directory
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    batches = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        data = [p for p in folder.iterdir() if p.is_file() and file_entity(p.name)]
        if not data:
            continue
        check_name("batch id", folder.name)
        files = [BatchFile(p.name, file_entity(p.name) or "", p.stat().st_size, _sha256_file(p)) for p in data]
        batches.append(LocalBatch(folder.name, folder, tuple(sorted_files(files))))
    return batches


def plan_upload(tenant_id: str, local: Sequence[LocalBatch], remote: Mapping[str, RemoteObject]) -> UploadPlan:
    """Plan the upload of `local` batches given the landing zone's current objects (`remote`: key -> object).

    Batches go in batch-id order; in each, data files in foreign-key order, then the manifest. A local manifest is
    uploaded as it is when it agrees with the files (else the plan refuses, rather than land an unverifiable
    batch); without one the plan renders it. A remote object with the same sha256 is skipped; one with a different
    sha256 is replaced (and the batch is then picked up again, as its content changed).
    """
    steps: list[PlannedUpload] = []
    new_batches: list[str] = []
    landed: list[str] = []
    for batch in sorted(local, key=lambda b: b.batch_id):
        prefix = batch_prefix(tenant_id, batch.batch_id)
        manifest_path = batch.path / MANIFEST_NAME
        if manifest_path.is_file():
            manifest = manifest_path.read_bytes()
            listed = {(f.name, f.size, f.sha256) for f in parse_manifest(manifest).files}
            actual = {(f.name, f.size, f.sha256) for f in batch.files}
            if listed != actual:
                raise ValueError(
                    f"{manifest_path} does not match the files beside it: "
                    f"listed only {sorted(listed - actual)}, present only {sorted(actual - listed)}"
                )
            manifest_source: Path | None = manifest_path
            content: bytes | None = None
        else:
            manifest = render_manifest(tenant_id, batch.batch_id, batch.files)
            manifest_source, content = None, manifest
        batch_steps = [
            _step(batch.batch_id, f.name, prefix + f.name, f.size, f.sha256 or "", batch.path / f.name, None, remote)
            for f in batch.files
        ]
        manifest_step = _step(
            batch.batch_id,
            MANIFEST_NAME,
            prefix + MANIFEST_NAME,
            len(manifest),
            hashlib.sha256(manifest).hexdigest(),
            manifest_source,
            content,
            remote,
        )
        batch_steps.append(manifest_step)
        steps.extend(batch_steps)
        if all(s.action == "skip" for s in batch_steps):
            landed.append(batch.batch_id)
        else:
            new_batches.append(batch.batch_id)
    return UploadPlan(tenant_id, tuple(steps), tuple(new_batches), tuple(landed))


def _step(
    batch_id: str,
    name: str,
    key: str,
    size: int,
    sha256: str,
    source: Path | None,
    content: bytes | None,
    remote: Mapping[str, RemoteObject],
) -> PlannedUpload:
    existing = remote.get(key)
    if existing is None:
        action: Action = "upload"
    elif existing.sha256 is not None and existing.sha256 == sha256 and existing.size == size:
        action = "skip"
    else:
        action = "replace"
    return PlannedUpload(batch_id, name, key, size, sha256, action, source, content)


def render_plan(plan: UploadPlan) -> str:
    """The `--dry-run` report: every step, then what the sensor will do."""
    lines = [f"tenant {plan.tenant_id}: {len(plan.uploads)} object(s) to upload, {plan.bytes_to_upload:,} bytes"]
    for step in plan.steps:
        lines.append(f"  {step.action:<7} {step.key} ({step.size:,} bytes, sha256 {step.sha256[:12]})")
    for batch_id in plan.new_batches:
        lines.append(
            f"sensor will pick up batch {batch_id} (landing/{plan.tenant_id}/commerce/{batch_id}/) once "
            f"{MANIFEST_NAME} lands: one run of commerce/customers -> products -> orders -> order_items"
        )
    for batch_id in plan.landed_batches:
        lines.append(f"batch {batch_id} is already landed with the same content: nothing to do")
    if not plan.steps:
        lines.append(f"no batch folders with <table>_*.ndjson files found (a {SUCCESS_MARKER} alone is not a batch)")
    return "\n".join(lines)
