"""PostgreSQL schema management and the one bulk loader every source uses."""

from ingestion_platform.warehouse.loader import LoadResult, load
from ingestion_platform.warehouse.schema import Column, TableSpec, ensure_table

__all__ = ["Column", "LoadResult", "TableSpec", "ensure_table", "load"]
