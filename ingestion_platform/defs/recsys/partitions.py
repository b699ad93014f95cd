"""Upload partitions: one per (tenant, upload), where the upload id is the content's hash.

The tenant is a partition dimension of every upload rather than a prefix inside one key, so Dagster itself knows
which tenant an upload belongs to: the per-tenant features map onto uploads with the built-in
`MultiToSingleDimensionPartitionMapping`, and declarative automation recomputes exactly the uploading tenant. Keys
read `{tenant}|{upload_id}` (dimensions in name order), like the other sources' `{date}|{tenant}`.
"""

import hashlib
from typing import BinaryIO

import dagster as dg

from ingestion_platform.defs.recsys.parse import DataType
from ingestion_platform.tenants import TENANT_DIMENSION, TENANT_PARTITIONS

DATA_TYPES: tuple[DataType, ...] = ("interactions", "items")
UPLOAD_DIMENSION = "upload"
UPLOAD_PARTITION_NAMES: dict[DataType, str] = {data_type: f"recsys_{data_type}_upload" for data_type in DATA_TYPES}
UPLOADS: dict[DataType, dg.DynamicPartitionsDefinition] = {
    data_type: dg.DynamicPartitionsDefinition(name=name) for data_type, name in UPLOAD_PARTITION_NAMES.items()
}
UPLOAD_PARTITIONS: dict[DataType, dg.MultiPartitionsDefinition] = {
    data_type: dg.MultiPartitionsDefinition({TENANT_DIMENSION: TENANT_PARTITIONS, UPLOAD_DIMENSION: uploads})
    for data_type, uploads in UPLOADS.items()
}
BY_TENANT = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=TENANT_DIMENSION)
# 128 bits of SHA-256: collisions are not a practical concern, and the key stays readable in the UI.
UPLOAD_ID_HEX = 32
_CHUNK = 8 * 2**20


def upload_id(data: bytes | BinaryIO) -> str:
    """The id of an upload's content: the same bytes under any name get the same id."""
    digest = hashlib.sha256()
    if isinstance(data, bytes):
        digest.update(data)
    else:
        while chunk := data.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:UPLOAD_ID_HEX]


def upload_partition_key(tenant: str, upload: str) -> str:
    return str(dg.MultiPartitionKey({TENANT_DIMENSION: tenant, UPLOAD_DIMENSION: upload}))


def landing_prefix(tenant: str, data_type: DataType) -> str:
    """The only folder read as `tenant`'s `data_type` uploads."""
    if not tenant or "/" in tenant or tenant in {".", ".."} or tenant.startswith("."):
        raise ValueError(f"tenant id {tenant!r} cannot name a landing folder")
    return f"landing/{tenant}/recsys/{data_type}/"
