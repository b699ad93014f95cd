"""Materialization metadata every source attaches the same way: schema, load counts, timings, a preview."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from ingestion_platform.warehouse import LoadResult, TableSpec


def column_schema(spec: TableSpec) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.type,
                description=c.description or None,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in spec.columns
        ]
    )


def definition_metadata(spec: TableSpec) -> dict[str, Any]:
    """Static metadata for the asset definition: the table it owns and its declared columns."""
    return {
        "dagster/table_name": spec.qualified_name,
        "dagster/column_schema": column_schema(spec),
    }


def preview_md(rows: Sequence[dict[str, Any]], limit: int = 5) -> dg.MetadataValue:
    rows = list(rows)[:limit]
    if not rows:
        return dg.MetadataValue.md("_no rows_")
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [str(row.get(h, "")).replace("|", "\\|").replace("\n", " ")[:60] for h in headers]
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def load_metadata(results: Sequence[LoadResult]) -> dict[str, Any]:
    """Sum the loader's counts over the loads of one materialization (one per tenant in a multi-tenant run)."""
    rows = sum(r.rows_staged for r in results)
    return {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "rows_loaded": dg.MetadataValue.int(rows),
        "rows_inserted": dg.MetadataValue.int(sum(r.inserted for r in results)),
        "rows_updated": dg.MetadataValue.int(sum(r.updated for r in results)),
        "rows_deleted": dg.MetadataValue.int(sum(r.deleted for r in results)),
        "duplicates_in_input": dg.MetadataValue.int(sum(r.duplicates_in_input for r in results)),
        "bytes_copied": dg.MetadataValue.int(sum(r.bytes_copied for r in results)),
        "load_seconds": dg.MetadataValue.float(round(sum(r.seconds for r in results), 3)),
    }
