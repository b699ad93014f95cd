"""PostgreSQL schema management and the one bulk loader every source uses."""

from ingestion_platform.warehouse.loader import MIN_SERVER_VERSION, LoadResult, Reject, load
from ingestion_platform.warehouse.schema import (
    Column,
    ForeignKey,
    TableSpec,
    ensure_table,
    migrate,
    pending_spec,
    rejects_spec,
    table_spec_from_arrow,
    table_spec_from_pairs,
)

__all__ = [
    "MIN_SERVER_VERSION",
    "Column",
    "ForeignKey",
    "LoadResult",
    "Reject",
    "TableSpec",
    "ensure_table",
    "load",
    "migrate",
    "pending_spec",
    "rejects_spec",
    "table_spec_from_arrow",
    "table_spec_from_pairs",
]
