"""Warehouse tables of the commerce source, declared from the parsed entities so the two cannot drift apart.

Foreign keys list tenant_id first on both sides, so a tenant's order can never resolve to another tenant's customer;
a missing parent parks the row in `commerce.pending` (the loader retries it on the child's next load) instead of
failing the file as the old system did. The CHECK constraints repeat the rules `validate.py` applies in Arrow: the
validator gives the precise reason per row, the constraints keep the tables right whatever writes to them.

Quarantine: the loader keeps one `<table>_rejects` table per table (columns `source_file`, `line_number`, `raw`,
`reason`). The contract's `commerce.rejects` (tenant, batch, file, line, raw line, reason) is a view over the four,
not a fifth table: every load passes the batch id as the loader's `source` and puts the file name and raw line in
the reject's `raw`, so the view is a projection and the loader's replace-on-reload keeps it idempotent.
"""

from psycopg import Connection, sql

from ingestion_platform.defs.commerce.ndjson import ENTITIES, Entity, Kind
from ingestion_platform.warehouse import Column, ForeignKey, TableSpec, ensure_table

SCHEMA = "commerce"
MONEY = "numeric(12,2)"
_PG_TYPES: dict[Kind, str] = {
    "uuid": "uuid",
    "text": "text",
    "decimal": MONEY,
    "integer": "integer",
    "boolean": "boolean",
    "timestamp": "timestamptz",
    "json": "jsonb",
}
# child table -> (its column, parent table): the order in which batches load and what the loader enforces.
FOREIGN_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "customers": (),
    "products": (),
    "orders": (("customer_id", "customers"),),
    "order_items": (("order_id", "orders"), ("product_id", "products")),
}
CHECKS: dict[str, dict[str, str]] = {
    "customers": {},
    "products": {"products_price_nonnegative": "price >= 0"},
    "orders": {
        "orders_total_nonnegative": "total_amount >= 0",
        "orders_currency_iso": "currency ~ '^[A-Z]{3}$'",
    },
    "order_items": {
        "order_items_quantity_positive": "quantity > 0",
        "order_items_unit_price_nonnegative": "unit_price >= 0",
        "order_items_line_total_matches": "abs(line_total - quantity * unit_price) <= 0.01",
    },
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
        checks=CHECKS[entity.name],
        foreign_keys=tuple(
            ForeignKey(("tenant_id", col), f"{SCHEMA}.{parent}", on_missing="park")
            for col, parent in FOREIGN_KEYS[entity.name]
        ),
        line_column="source_line",
    )


TABLES: dict[str, TableSpec] = {name: table_spec(entity) for name, entity in ENTITIES.items()}
CUSTOMERS_TABLE = TABLES["customers"]
PRODUCTS_TABLE = TABLES["products"]
ORDERS_TABLE = TABLES["orders"]
ORDER_ITEMS_TABLE = TABLES["order_items"]
REJECTS_VIEW = "rejects"

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
ALL_TABLES: tuple[TableSpec, ...] = (*TABLES.values(), LOADED_FILES_TABLE)


def rejects_view_sql() -> sql.Composed:
    """`commerce.rejects`: the four quarantine tables as the contract names them (batch = the load's source)."""
    parts = [
        sql.SQL(
            "SELECT r.tenant_id, r.source_file AS batch_id, {name} AS table_name, "
            "coalesce(r.raw ->> 'source_file', '') AS source_file, r.line_number, "
            "coalesce(r.raw ->> 'raw_line', r.raw::text) AS raw_line, r.reason, r.column_name, r.loaded_at "
            "FROM {rejects} r"
        ).format(name=sql.Literal(spec.name), rejects=spec.rejects.ident())
        for spec in TABLES.values()
    ]
    return sql.SQL("CREATE OR REPLACE VIEW {} AS {}").format(
        sql.Identifier(SCHEMA, REJECTS_VIEW), sql.SQL(" UNION ALL ").join(parts)
    )


def ensure_commerce_tables(conn: Connection) -> None:
    """Create or evolve every commerce table (parents first) and the rejects view; a no-op once they match."""
    for spec in ALL_TABLES:
        ensure_table(conn, spec)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM pg_views WHERE schemaname = %s AND viewname = %s AND definition LIKE %s",
            (SCHEMA, REJECTS_VIEW, "%order_items_rejects%"),
        )
        if cur.fetchone() is None:
            cur.execute(rejects_view_sql())
