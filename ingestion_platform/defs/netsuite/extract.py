"""One table's incremental extraction: key-set pages of a last-modified window into `netsuite.<table>`.

Columns come from two places. The metadata catalog says which columns exist and their types, so the select list
is explicit (never `SELECT *` on `transaction`) and date columns are read through TO_CHAR. The data says which
columns hold values: NetSuite leaves null fields out of result items, so a column joins the warehouse table when a
row first carries it (a custom field an administrator added midway), and the table evolves then.

Pages stream into the loader, which encodes the next page while COPY sends the current one, so memory stays at a
couple of pages whatever the window holds. The loader fixes its columns at the first batch; a page that brings a
new column ends that load and starts the next with the wider set (each load upserts, so the split is invisible in
the result). Columns the warehouse table already has are always part of the set: an item without a field means the
field is null now, and the row's stored value must be cleared, not kept.
"""

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa
from psycopg import sql

from ingestion_platform.defs.netsuite.suiteql import (
    DELETED_RECORD_TYPES,
    IN_LIST_MAX,
    LINE_PARENT,
    NO_SELECT_STAR,
    SuiteQLPage,
    Window,
    count_query,
    date_columns,
    deleted_records_query,
    discover_columns,
    key_column,
    keyset_pages,
    last_modified_column,
    line_keys_query,
    modified_ids_query,
    parse_count,
    parse_metadata_catalog,
    parse_page,
    select_query,
)
from ingestion_platform.resources.netsuite import NetSuiteClient
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.warehouse import LoadResult, TableSpec, table_spec_from_pairs

SCHEMA = "netsuite"
TENANT = "tenant_id"
# Set from deletedrecord.deleteddate: when NetSuite deleted the record (the account's time zone, stored as UTC).
TOMBSTONE = "deleted_at"
# JSON-schema type (or format) in the metadata catalog -> warehouse type. Values arrive as strings and are cast by
# the loader, which quarantines a value that does not parse instead of failing the load.
CATALOG_TYPES: Mapping[str, str] = {
    "integer": "bigint",
    "number": "double precision",
    "boolean": "boolean",
    "date": "date",
    "date-time": "timestamp",
    "string": "text",
}
# Columns we add beside NetSuite's: never selected from NetSuite.
OWN_COLUMNS = frozenset({TENANT, TOMBSTONE})


def warehouse_type(catalog_type: str | None) -> str:
    return CATALOG_TYPES.get(catalog_type or "string", "text")


def base_spec(table: str, columns: Sequence[tuple[str, str]] = ()) -> TableSpec:
    """`netsuite.<table>`: (tenant_id, key) primary key, the last-modified column as the version (an old backfill
    never overwrites a newer row), the tombstone, and `columns` (name, warehouse type) discovered so far."""
    key = key_column(table)
    modified = last_modified_column(table)
    pairs: dict[str, str] = {TENANT: "text", key: "bigint", modified: "timestamp", TOMBSTONE: "timestamptz"}
    for name, pg_type in columns:
        pairs.setdefault(name, pg_type)
    return table_spec_from_pairs(
        SCHEMA, table, pairs.items(), key=(TENANT, key), version=modified, tombstone=TOMBSTONE, indexes=((modified,),)
    )


@dataclass
class Columns:
    """The select list and the types of one table, from the metadata catalog or, without one, a sample page."""

    table: str
    types: dict[str, str]  # column -> catalog type ("string" for columns only seen in a sample)

    @property
    def select(self) -> list[str]:
        """Scalar columns: a record's catalog also lists sublists and links (object, array), not SuiteQL fields."""
        return [c for c, kind in self.types.items() if c not in OWN_COLUMNS and kind not in ("object", "array")]

    @property
    def timestamp_columns(self) -> list[str]:
        return date_columns(self.types)

    def pg_type(self, column: str) -> str:
        if column == key_column(self.table):
            return "bigint"
        if column == last_modified_column(self.table):
            return "timestamp"
        return warehouse_type(self.types.get(column))


def discover(client: NetSuiteClient, table: str, window: Window) -> Columns:
    """The catalog's columns; for a table the catalog lacks, the columns of one `SELECT *` page of the window
    (typed as text, except the key and last-modified columns), never on tables where `SELECT *` times out."""
    schema = client.metadata_catalog(table)
    if schema is not None:
        return Columns(table, parse_metadata_catalog(schema))
    if table.lower() in NO_SELECT_STAR:
        raise ValueError(
            f"NetSuite has no metadata-catalog schema for {table!r}, and SELECT * on it times out: "
            "its columns cannot be discovered"
        )
    sample = parse_page(client.suiteql(select_query(table, None, window), 1000, 0))
    return Columns(table, dict.fromkeys(discover_columns(sample.items), "string"))


def existing_columns(warehouse: WarehouseResource, table: str) -> list[str]:
    frame = warehouse.query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = :schema AND table_name = :table "
        "ORDER BY ordinal_position",
        {"schema": SCHEMA, "table": table},
    )
    return [c for c in frame["column_name"] if c not in OWN_COLUMNS]


@dataclass
class Extraction:
    """What one tenant's window extraction did, for metadata and the reconciliation check."""

    table: str
    window: Window
    source_count: int = 0  # COUNT(*) over the window, asked before the first page
    total_results: int | None = None  # the first page's totalResults (the whole window)
    rows: int = 0
    pages: int = 0
    loads: list[LoadResult] = field(default_factory=list)
    added_columns: list[str] = field(default_factory=list)
    deleted_records: int = 0
    tombstoned: int = 0
    deleted_lines: int = 0  # transactionline: lines of deleted transactions, and lines removed from edited ones
    http_seconds: float = 0.0
    preview: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reconciled(self) -> bool:
        """Every row the source counted was extracted, and the paging saw the same total."""
        return self.rows == self.source_count and self.total_results in (None, self.source_count)


def _timed_pages(pages: Iterator[SuiteQLPage], extraction: Extraction) -> Iterator[SuiteQLPage]:
    while True:
        started = time.perf_counter()
        page = next(pages, None)
        extraction.http_seconds += time.perf_counter() - started
        if page is None:
            return
        yield page


def _to_arrow(items: list[dict[str, Any]], columns: Sequence[str], tenant_id: str) -> pa.Table:
    schema = pa.schema([(c, pa.string()) for c in columns])
    table = pa.Table.from_pylist(items, schema=schema)
    return table.append_column(TENANT, pa.array([tenant_id] * len(items), pa.string()))


class _Segments:
    """Splits a stream of pages into runs of pages that fit one column set (see the module docstring)."""

    def __init__(self, pages: Iterator[SuiteQLPage], known: Sequence[str], extraction: Extraction) -> None:
        self._pages = pages
        self.columns: list[str] = list(known)
        self._held: list[dict[str, Any]] | None = None
        self._extraction = extraction
        self.done = False

    def _next_items(self) -> list[dict[str, Any]] | None:
        if self._held is not None:
            items, self._held = self._held, None
            return items
        for page in self._pages:
            self._extraction.pages += 1
            if self._extraction.total_results is None:
                self._extraction.total_results = page.total_results
            if page.items:
                return page.items
        self.done = True
        return None

    def start(self) -> bool:
        """Peek the next page and widen the column set to it; False when the stream is exhausted."""
        items = self._next_items()
        if items is None:
            return False
        self.columns += [c for c in discover_columns(items) if c not in self.columns]
        self._held = items
        return True

    def segment(self, tenant_id: str) -> Iterator[pa.Table]:
        """Pages until one carries a column outside the set (held back for the next segment)."""
        fixed = set(self.columns)
        while (items := self._next_items()) is not None:
            if any(c not in fixed for item in items for c in item):
                self._held = items
                return
            self._extraction.rows += len(items)
            if not self._extraction.preview:
                self._extraction.preview = items[:5]
            yield _to_arrow(items, self.columns, tenant_id)


def extract_window(
    client: NetSuiteClient,
    warehouse: WarehouseResource,
    *,
    table: str,
    tenant_id: str,
    window: Window,
    page_size: int,
    columns: Columns | None = None,
) -> Extraction:
    """Upsert the window's rows into `netsuite.<table>`, then tombstone the records NetSuite deleted in it."""
    columns = columns or discover(client, table, window)
    extraction = Extraction(table, window)
    started = time.perf_counter()
    extraction.source_count = parse_count(parse_page(client.suiteql(count_query(table, window), 1, 0)))
    extraction.http_seconds += time.perf_counter() - started
    key = key_column(table)
    select = columns.select

    def post(query: str, limit: int, offset: int) -> Any:
        return client.suiteql(query, limit, offset)

    pages = keyset_pages(
        post,
        lambda after: select_query(table, select, window, after, timestamp_columns=columns.timestamp_columns),
        page_size=page_size,
        key=key,
    )
    segments = _Segments(_timed_pages(pages, extraction), existing_columns(warehouse, table), extraction)
    source = f"{table}:{window.start:%Y-%m-%dT%H:%M:%S}..{window.end:%Y-%m-%dT%H:%M:%S}"
    while segments.start():
        spec = base_spec(table, [(c, columns.pg_type(c)) for c in segments.columns])
        # One rejects source per segment: the loader replaces a source's earlier rejects on reload.
        result = warehouse.load(
            spec, segments.segment(tenant_id), mode="merge", source=f"{source}#{len(extraction.loads)}"
        )
        extraction.loads.append(result)
        extraction.added_columns += result.added_columns
    if table.lower() in DELETED_RECORD_TYPES:
        _tombstone(client, warehouse, extraction, tenant_id, page_size)
    if table.lower() == "transactionline":
        _tombstone_lines(client, warehouse, extraction, tenant_id, page_size)
    return extraction


def _keyed_items(
    client: NetSuiteClient, extraction: Extraction, make_query: Callable[[int | None], str], key: str, page_size: int
) -> Iterator[dict[str, Any]]:
    def post(query: str, limit: int, offset: int) -> Any:
        return client.suiteql(query, limit, offset)

    for page in _timed_pages(keyset_pages(post, make_query, page_size=page_size, key=key), extraction):
        yield from page.items


def _tombstone_lines(
    client: NetSuiteClient, warehouse: WarehouseResource, extraction: Extraction, tenant_id: str, page_size: int
) -> None:
    """Mark stored lines deleted that NetSuite no longer has: `deletedrecord` lists transactions, never lines.

    - Lines of a transaction deleted within the window: deleted at the transaction's deletion time.
    - Lines removed from a transaction edited within the window (the edit moves the transaction's last-modified
      time, not necessarily any remaining line's): the transaction's current line keys are read back, and stored
      lines not among them are deleted at the edit time. This costs a key-only read of the stored lines of the
      window's transactions, `IN_LIST_MAX` transactions a query; an initial load (every stored line just read)
      skips it.
    Detection happens at the load of the window holding the deletion or the edit; the daily re-check of the day
    before catches an edit committed late.
    """
    window = extraction.window
    if LINE_PARENT not in set(existing_columns(warehouse, extraction.table)):
        return  # no line stored with its transaction yet: nothing to compare
    deleted = {
        int(item["recordid"]): item.get("deleteddate")
        for item in _keyed_items(
            client, extraction, lambda after: deleted_records_query("transaction", window, after), "recordid", page_size
        )
    }
    table = sql.Identifier(SCHEMA, extraction.table)
    key = key_column(extraction.table)
    # When every stored line of the tenant was just read (an initial load), none can have been removed: skip
    # listing the window's transactions and re-reading their line keys.
    all_read = _stored_lines(warehouse, table, tenant_id) == extraction.rows
    edited = (
        {}
        if all_read
        else {
            int(item["id"]): item.get("lastmodifieddate")
            for item in _keyed_items(
                client, extraction, lambda after: modified_ids_query("transaction", window, after), "id", page_size
            )
            if int(item["id"]) not in deleted
        }
    )
    if not deleted and not edited:
        return
    with warehouse.raw_connection() as conn:
        stored = conn.execute(
            sql.SQL(
                "SELECT {key}, {parent} FROM {table} WHERE tenant_id = %(tenant)s AND deleted_at IS NULL "
                "AND {parent} = ANY(%(parents)s)"
            ).format(key=sql.Identifier(key), parent=sql.Identifier(LINE_PARENT), table=table),
            {"tenant": tenant_id, "parents": sorted({*deleted, *edited})},
        ).fetchall()
    if not stored:
        return
    current: set[int] = set()
    parents = sorted({int(parent) for _, parent in stored} & set(edited))
    for first in range(0, len(parents), IN_LIST_MAX):
        chunk = parents[first : first + IN_LIST_MAX]
        current.update(
            int(item[key]) for item in _keyed_items(client, extraction, partial(line_keys_query, chunk), key, page_size)
        )
    gone: dict[int, Any] = {}
    for line, parent in stored:
        if parent in deleted:
            gone[line] = deleted[parent]
        elif line not in current:
            gone[line] = edited[parent]
    if not gone:
        return
    spec = table_spec_from_pairs(
        SCHEMA,
        extraction.table,
        [(TENANT, "text"), (key, "bigint"), (TOMBSTONE, "timestamptz")],
        key=(TENANT, key),
        tombstone=TOMBSTONE,
    )
    batch = pa.table(
        {
            TENANT: pa.array([tenant_id] * len(gone), pa.string()),
            key: pa.array([str(line) for line in gone], pa.string()),
            TOMBSTONE: pa.array(list(gone.values()), pa.string()),
        }
    )
    result = warehouse.load(
        spec, [batch], mode="merge", source=f"{extraction.table}:removed:{window.start:%Y-%m-%dT%H:%M:%S}"
    )
    extraction.deleted_lines += len(gone)
    extraction.tombstoned += result.updated


def _stored_lines(warehouse: WarehouseResource, table: sql.Identifier, tenant_id: str) -> int:
    with warehouse.raw_connection() as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %(tenant)s AND deleted_at IS NULL").format(table),
            {"tenant": tenant_id},
        ).fetchone()
    return int(row[0]) if row else 0


def _tombstone(
    client: NetSuiteClient, warehouse: WarehouseResource, extraction: Extraction, tenant_id: str, page_size: int
) -> None:
    """Set `deleted_at` to NetSuite's deletion time on the window's deleted records.

    A merge of (tenant, key, deleted_at) rather than the loader's `deleted_keys` (which stamps the load time): the
    deletion time is what users ask about. A record created and deleted between two loads gets a row holding only
    its key and deletion time, so the deletion is known rather than lost.
    """
    table, key = extraction.table, key_column(extraction.table)

    def post(query: str, limit: int, offset: int) -> Any:
        return client.suiteql(query, limit, offset)

    def batches() -> Iterator[pa.Table]:
        pages = keyset_pages(
            post,
            lambda after: deleted_records_query(table, extraction.window, after),
            page_size=page_size,
            key="recordid",
        )
        for page in _timed_pages(pages, extraction):
            if not page.items:
                continue
            extraction.deleted_records += len(page.items)
            yield pa.table(
                {
                    TENANT: pa.array([tenant_id] * len(page.items), pa.string()),
                    key: pa.array([item["recordid"] for item in page.items], pa.string()),
                    TOMBSTONE: pa.array([item.get("deleteddate") for item in page.items], pa.string()),
                }
            )

    spec = table_spec_from_pairs(
        SCHEMA,
        table,
        [(TENANT, "text"), (key, "bigint"), (TOMBSTONE, "timestamptz")],
        key=(TENANT, key),
        tombstone=TOMBSTONE,
    )
    result = warehouse.load(
        spec, batches(), mode="merge", source=f"{table}:deleted:{extraction.window.start:%Y-%m-%dT%H:%M:%S}"
    )
    extraction.tombstoned = result.inserted + result.updated
