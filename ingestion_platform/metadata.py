"""Materialization metadata every source attaches the same way: schema, load counts, timings, a preview.

Definition metadata also carries each asset's full `TableSpec` (as JSON under `ingestion/table/<schema.table>`),
so `ingestion-platform migrate` can enumerate every declared table from the loaded definitions, without a second
registry and without any I/O at definition load. Tables written outside assets (a sensor's) are declared the same
way with `dg.Definitions(metadata=table_spec_metadata(spec))` in their defs module. Views over those tables (the
contract's `commerce.rejects`) are declared alike under `ingestion/view/<schema.view>`, so a read-only production
role never has to create one at run time.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from ingestion_platform.warehouse import LoadResult, TableSpec

TABLE_SPEC_PREFIX = "ingestion/table/"
VIEW_PREFIX = "ingestion/view/"


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
        **table_spec_metadata(spec),
    }


def table_spec_metadata(spec: TableSpec) -> dict[str, Any]:
    return {f"{TABLE_SPEC_PREFIX}{spec.qualified_name}": dg.MetadataValue.json(spec.to_dict())}


def view_metadata(qualified_name: str, create_sql: str) -> dict[str, Any]:
    """`create_sql` must be idempotent (`CREATE OR REPLACE VIEW`): migrate runs it on every call."""
    return {f"{VIEW_PREFIX}{qualified_name}": dg.MetadataValue.text(create_sql)}


def declared_views(defs: dg.Definitions) -> dict[str, str]:
    """Every declared view's name -> its `CREATE OR REPLACE VIEW` statement, from the definitions' metadata."""
    return {
        key.removeprefix(VIEW_PREFIX): value.value if isinstance(value, dg.TextMetadataValue) else str(value)
        for key, value in defs.metadata.items()
        if key.startswith(VIEW_PREFIX)
    }


def declared_tables(defs: dg.Definitions) -> list[TableSpec]:
    """Every TableSpec the definitions declare (assets' and the definitions' own metadata), once each."""
    entries: list[Any] = [*defs.metadata.items()]
    for asset_spec in defs.resolve_all_asset_specs():
        entries.extend(asset_spec.metadata.items())
    found: dict[str, TableSpec] = {}
    for key, value in entries:
        if key.startswith(TABLE_SPEC_PREFIX):
            data = value.value if isinstance(value, dg.JsonMetadataValue) else value
            if not isinstance(data, Mapping):
                raise TypeError(f"definition metadata {key!r} holds {type(data).__name__}, not a TableSpec mapping")
            spec = TableSpec.from_dict(data)
            found[spec.qualified_name] = spec
    return list(found.values())


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
        "rows_rejected": dg.MetadataValue.int(sum(r.rejected for r in results)),
        "rows_parked": dg.MetadataValue.int(sum(r.parked for r in results)),
        "rows_unparked": dg.MetadataValue.int(sum(r.unparked for r in results)),
        "rows_pending": dg.MetadataValue.int(sum(r.pending for r in results)),
        "oldest_pending_seconds": dg.MetadataValue.float(
            max((r.oldest_pending_seconds for r in results if r.oldest_pending_seconds is not None), default=0.0)
        ),
        "rows_tombstoned": dg.MetadataValue.int(sum(r.tombstoned for r in results)),
        "bytes_copied": dg.MetadataValue.int(sum(r.bytes_copied for r in results)),
        "load_seconds": dg.MetadataValue.float(round(sum(r.seconds for r in results), 3)),
        "transaction_seconds": dg.MetadataValue.float(round(sum(r.transaction_seconds for r in results), 3)),
    }
