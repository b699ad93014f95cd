"""Warehouse tables of the commerce source, declared from the parsed entities so the two cannot drift apart.

UUID ids are `text` until the loader's type vocabulary gains `uuid`; foreign keys (which include tenant_id, so a
tenant's order can never resolve to another tenant's customer) are declared once the loader supports them.
"""

from ingestion_platform.defs.commerce.ndjson import ENTITIES, Entity, Kind
from ingestion_platform.warehouse import Column, TableSpec

SCHEMA = "commerce"
_PG_TYPES: dict[Kind, str] = {
    "uuid": "text",
    "text": "text",
    "decimal": "numeric",
    "integer": "integer",
    "boolean": "boolean",
    "timestamp": "timestamptz",
    "json": "jsonb",
}
# child table -> (its column, parent table): the order in which batches load and what the loader will enforce.
FOREIGN_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "customers": (),
    "products": (),
    "orders": (("customer_id", "customers"),),
    "order_items": (("order_id", "orders"), ("product_id", "products")),
}


def table_spec(entity: Entity) -> TableSpec:
    return TableSpec(
        schema=SCHEMA,
        name=entity.name,
        columns=(
            Column("tenant_id", "text", nullable=False),
            *(Column(f.name, _PG_TYPES[f.kind], nullable=not f.required) for f in entity.fields),
            Column("extra", "jsonb", description="fields of the line this table does not declare"),
            Column("batch_id", "text", nullable=False, description="the landing batch that last wrote the row"),
            Column("source_file", "text", nullable=False),
            Column("source_line", "bigint", nullable=False),
        ),
        key=("tenant_id", entity.id_field),
        indexes=tuple(("tenant_id", col) for col, _ in FOREIGN_KEYS[entity.name]),
    )


TABLES: dict[str, TableSpec] = {name: table_spec(entity) for name, entity in ENTITIES.items()}
CUSTOMERS_TABLE = TABLES["customers"]
PRODUCTS_TABLE = TABLES["products"]
ORDERS_TABLE = TABLES["orders"]
ORDER_ITEMS_TABLE = TABLES["order_items"]

REJECTS_TABLE = TableSpec(
    schema=SCHEMA,
    name="rejects",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("batch_id", "text", nullable=False),
        Column("table_name", "text", nullable=False),
        Column("source_file", "text", nullable=False),
        Column("line_number", "bigint", nullable=False),
        Column("raw_line", "text", nullable=False),
        Column("reason", "text", nullable=False),
    ),
    # One reject per line of a file in a batch: re-running the batch rewrites the same rows.
    key=("tenant_id", "batch_id", "source_file", "line_number"),
)

# The content hashes of files already loaded per tenant: how a file re-sent in a new batch is recognised and skipped.
LOADED_FILES_TABLE = TableSpec(
    schema=SCHEMA,
    name="loaded_files",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("sha256", "text", nullable=False),
        Column("table_name", "text", nullable=False),
        Column("batch_id", "text", nullable=False),
        Column("source_file", "text", nullable=False),
        Column("size_bytes", "bigint", nullable=False),
        Column("rows_valid", "bigint", nullable=False),
        Column("rows_rejected", "bigint", nullable=False),
        Column("loaded_at", "timestamptz", nullable=False),
    ),
    key=("tenant_id", "sha256"),
)
