"""Declared table schemas and the DDL that creates and evolves them, issued only where the catalog differs.

Sources declare their tables as data (`TableSpec`) instead of writing DDL, so that creating a table, adding a
column in a later release, its checks and foreign keys, and validating an incoming batch all follow from one
declaration. Identifiers are validated against a strict pattern and always quoted through `psycopg.sql`.

Public API (used by every source):

- `Column(name, type, nullable=True, description="")`; `type` is one of `PG_TYPES` or `numeric(p,s)`.
- `ForeignKey(columns, references, ref_columns=(), on_missing="reject"|"park", name=None)`: a real constraint.
  Scope it by tenant by listing `tenant_id` first on both sides: `ForeignKey(("tenant_id", "customer_id"),
  "commerce.customers")` never resolves one tenant's row to another tenant's parent. `ref_columns` defaults to the
  parent's primary key (it must be the parent's key). `on_missing="park"` keeps rows whose parent is missing in
  `<schema>.pending`; the child's next load (any load of that table, even an empty one) retries them.
- `TableSpec(schema, name, columns, key=(), indexes=(), version=None, checks={}, foreign_keys=(),
  tombstone=None, line_column=None)`: `checks` maps a constraint name to a SQL boolean expression over the
  columns (`{"quantity_positive": "quantity > 0"}`), created as CHECK constraints and applied row by row by the
  loader; `tombstone` names a timestamptz column set by deletes; `line_column` names the column holding the
  source line, copied into rejects.
- `ensure_table(conn, spec)`: compare with the catalog and run DDL (under `lock_timeout`) only for what differs;
  a least-privilege role (SELECT/INSERT/UPDATE/DELETE/TEMP) loads into tables that are already as declared.
- `migrate(conn, specs)`: create and evolve every declared table (parents before children), with their rejects
  and pending tables; what `ingestion-platform migrate` runs.
- `table_spec_from_arrow(schema, name, arrow_schema, key=..., ...)` / `table_spec_from_pairs(...)`: a TableSpec
  for a schema discovered at run time (NetSuite).
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from psycopg import Connection, Cursor, sql

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_NUMERIC = re.compile(r"^numeric\((\d{1,4}),(\d{1,4})\)$")

# The vocabulary is closed on purpose: every type here has a text form that pyarrow writes and COPY reads, and
# PostgreSQL 16's pg_input_is_valid can check, which lets the loader stream batches and quarantine bad values
# without per-value Python code. `numeric(p,s)` is accepted besides these.
PG_TYPES = frozenset(
    {
        "text",
        "bigint",
        "integer",
        "smallint",
        "double precision",
        "numeric",
        "boolean",
        "date",
        "timestamptz",
        "timestamp",
        "jsonb",
        "uuid",
        "text[]",
    }
)
# format_type() spells some types differently from the DDL name.
_CATALOG_NAMES = {
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
}
# Statements that must wait for a lock (ALTER TABLE, CREATE INDEX behind writers) give up after this instead of
# queueing every later reader behind them; the step fails and is retried.
LOCK_TIMEOUT = "5s"
PENDING_TABLE = "pending"

OnMissing = Literal["reject", "park"]


def check_identifier(name: str) -> str:
    """Reject anything that is not a plain lower-case SQL identifier, so quoting can never be a surprise."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"invalid SQL identifier {name!r}: use lower-case letters, digits and _ (max 63)")
    return name


def normalise_type(pg_type: str) -> str:
    compact = re.sub(r"\s+", "", pg_type) if pg_type.startswith("numeric") else pg_type
    if compact in PG_TYPES or _NUMERIC.fullmatch(compact):
        return compact
    raise ValueError(f"unsupported type {pg_type!r}; use one of {sorted(PG_TYPES)} or numeric(p,s)")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        check_identifier(self.name)
        try:
            object.__setattr__(self, "type", normalise_type(self.type))
        except ValueError as exc:
            raise ValueError(f"column {self.name}: {exc}") from None


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    references: str
    ref_columns: tuple[str, ...] = ()
    on_missing: OnMissing = "reject"
    name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "ref_columns", tuple(self.ref_columns or self.columns))
        parts = self.references.split(".")
        if len(parts) != 2:
            raise ValueError(f"foreign key references {self.references!r}: use schema.table")
        for ident in (*parts, *self.columns, *self.ref_columns):
            check_identifier(ident)
        if len(self.columns) != len(self.ref_columns):
            raise ValueError(f"foreign key {self.columns} -> {self.references}{self.ref_columns}: column counts differ")
        if self.on_missing not in ("reject", "park"):
            raise ValueError(f"foreign key on_missing must be 'reject' or 'park', not {self.on_missing!r}")

    @property
    def parent(self) -> tuple[str, str]:
        schema, table = self.references.split(".")
        return schema, table

    def constraint_name(self, table: str) -> str:
        return check_identifier(self.name or f"{table}__{'_'.join(self.columns)}_fkey"[:63])


@dataclass(frozen=True)
class TableSpec:
    """A warehouse table: `key` is the primary key used by merges; `indexes` speed up slice replacement.

    `version` names a column (a report date, a last-modified time) that orders versions of a row: a merge never
    replaces a row with an older version, so backfilling an old file cannot undo a newer one.
    """

    schema: str
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = field(default=())
    version: str | None = None
    checks: Mapping[str, str] = field(default_factory=dict)
    foreign_keys: tuple[ForeignKey, ...] = ()
    tombstone: str | None = None
    line_column: str | None = None

    def __post_init__(self) -> None:
        check_identifier(self.schema)
        check_identifier(self.name)
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "key", tuple(self.key))
        object.__setattr__(self, "indexes", tuple(tuple(i) for i in self.indexes))
        object.__setattr__(self, "foreign_keys", tuple(self.foreign_keys))
        object.__setattr__(self, "checks", dict(self.checks))
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.qualified_name}: duplicate column names")
        referenced = (
            *self.key,
            *(c for index in self.indexes for c in index),
            *(c for fk in self.foreign_keys for c in fk.columns),
            *filter(None, [self.version, self.tombstone, self.line_column]),
        )
        for col in referenced:
            if col not in names:
                raise ValueError(f"{self.qualified_name}: key/index column {col!r} is not a declared column")
        for col in self.key:
            if self.column(col).nullable:
                raise ValueError(f"{self.qualified_name}: key column {col!r} must be declared nullable=False")
        for check_name in self.checks:
            check_identifier(check_name)
        if self.tombstone and self.column(self.tombstone).type != "timestamptz":
            raise ValueError(f"{self.qualified_name}: tombstone column {self.tombstone!r} must be timestamptz")

    def __hash__(self) -> int:
        return hash((self.schema, self.name, self.columns, self.key))

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.qualified_name} has no column {name!r}")

    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def rejects(self) -> "TableSpec":
        return rejects_spec(self.schema, self.name)

    @property
    def parks(self) -> bool:
        return any(fk.on_missing == "park" for fk in self.foreign_keys)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, so asset definitions can carry their table in metadata (see `migrate`)."""
        return {
            "schema": self.schema,
            "name": self.name,
            "columns": [[c.name, c.type, c.nullable, c.description] for c in self.columns],
            "key": list(self.key),
            "indexes": [list(i) for i in self.indexes],
            "version": self.version,
            "checks": dict(self.checks),
            "foreign_keys": [
                [list(fk.columns), fk.references, list(fk.ref_columns), fk.on_missing, fk.name]
                for fk in self.foreign_keys
            ],
            "tombstone": self.tombstone,
            "line_column": self.line_column,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TableSpec":
        return cls(
            schema=data["schema"],
            name=data["name"],
            columns=tuple(Column(*c) for c in data["columns"]),
            key=tuple(data.get("key", ())),
            indexes=tuple(tuple(i) for i in data.get("indexes", ())),
            version=data.get("version"),
            checks=data.get("checks", {}),
            foreign_keys=tuple(
                ForeignKey(tuple(c), r, tuple(rc), om, n) for c, r, rc, om, n in data.get("foreign_keys", ())
            ),
            tombstone=data.get("tombstone"),
            line_column=data.get("line_column"),
        )


def rejects_spec(schema: str, table: str) -> TableSpec:
    """`<schema>.<table>_rejects`: one row per quarantined input row, whatever the source and the reason."""
    return TableSpec(
        schema=schema,
        name=check_identifier(f"{table}_rejects"[:63]),
        columns=(
            Column("tenant_id", "text"),
            Column("source_file", "text", description="the file or batch the row came from"),
            Column("line_number", "bigint", description="line in the file, or the row's ordinal in the input"),
            Column("column_name", "text", description="the column whose value failed, if one did"),
            Column("reason", "text", nullable=False),
            Column("raw", "jsonb", description="the row as received, column -> value"),
            Column("loaded_at", "timestamptz", nullable=False),
        ),
        indexes=(("tenant_id", "source_file"),),
    )


def pending_spec(schema: str) -> TableSpec:
    """`<schema>.pending`: rows parked because a parent is missing, for every table of the schema."""
    return TableSpec(
        schema=schema,
        name=PENDING_TABLE,
        columns=(
            Column("table_name", "text", nullable=False),
            Column("tenant_id", "text"),
            Column("foreign_key", "text", nullable=False, description="the constraint whose parent is missing"),
            Column("parent", "jsonb", description="the missing parent's key"),
            Column("source_file", "text"),
            Column("line_number", "bigint"),
            Column("raw", "jsonb", nullable=False),
            Column("parked_at", "timestamptz", nullable=False),
        ),
        indexes=(("table_name", "tenant_id"),),
    )


def _column_ddl(col: Column) -> sql.Composed:
    return sql.SQL("{} {}{}").format(
        sql.Identifier(col.name), sql.SQL(col.type), sql.SQL("" if col.nullable else " NOT NULL")
    )


def _index_name(spec: TableSpec, index: Sequence[str]) -> str:
    return check_identifier(f"{spec.name}__{'_'.join(index)}_idx"[:63])


@dataclass(frozen=True)
class _Catalog:
    exists: bool
    columns: dict[str, str]
    constraints: set[str]
    indexes: set[str]


def _catalog(cur: Any, spec: TableSpec) -> _Catalog:
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (spec.schema, spec.name),
    )
    columns = {name: _CATALOG_NAMES.get(t, t.replace(", ", ",")) for name, t in cur.fetchall()}
    if not columns:
        return _Catalog(False, {}, set(), set())
    cur.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass", (f'"{spec.schema}"."{spec.name}"',))
    constraints = {r[0] for r in cur.fetchall()}
    cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s", (spec.schema, spec.name))
    return _Catalog(True, columns, constraints, {r[0] for r in cur.fetchall()})


def _is_rejects(spec: TableSpec) -> bool:
    return spec.name.endswith("_rejects") and spec == rejects_spec(spec.schema, spec.name.removesuffix("_rejects"))


def _legacy_rejects(spec: TableSpec, found: _Catalog) -> bool:
    """A quarantine table from before loader v2 (per-source shape): kept under another name, never altered."""
    return (
        found.exists
        and _is_rejects(spec)
        and any(found.columns.get(c.name, c.type) != c.type or c.name not in found.columns for c in spec.columns)
    )


def _differences(spec: TableSpec, found: _Catalog) -> list[str]:
    """What DDL the table needs, as a list of short descriptions; empty when the catalog matches the spec."""
    if not found.exists:
        return ["create table"]
    if _legacy_rejects(spec, found):
        return [f"rename the older rejects table to {_legacy_name(spec)}", "create table"]
    mismatched = [
        f"{c.name} is {found.columns[c.name]}, declared {c.type}"
        for c in spec.columns
        if c.name in found.columns and found.columns[c.name] != c.type
    ]
    if mismatched:
        raise ValueError(f"{spec.qualified_name}: column types differ from the declaration: {mismatched}")
    todo = [f"add column {c.name}" for c in spec.columns if c.name not in found.columns]
    todo += [f"add check {n}" for n in spec.checks if n not in found.constraints]
    todo += [f"add foreign key {fk.constraint_name(spec.name)}" for fk in spec.foreign_keys]
    todo = [t for t in todo if not (t.startswith("add foreign key") and t.split()[-1] in found.constraints)]
    todo += [f"create index {_index_name(spec, i)}" for i in spec.indexes if _index_name(spec, i) not in found.indexes]
    return todo


def _fk_ddl(spec: TableSpec, fk: ForeignKey) -> sql.Composed:
    return sql.SQL("CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({})").format(
        sql.Identifier(fk.constraint_name(spec.name)),
        sql.SQL(", ").join(map(sql.Identifier, fk.columns)),
        sql.Identifier(*fk.parent),
        sql.SQL(", ").join(map(sql.Identifier, fk.ref_columns)),
    )


def _legacy_name(spec: TableSpec) -> str:
    return check_identifier(f"{spec.name[:55]}_legacy")


def _apply(cur: Any, spec: TableSpec) -> list[str]:
    """Run the DDL the catalog lacks; the caller holds the table's advisory lock inside a transaction."""
    found = _catalog(cur, spec)
    todo = _differences(spec, found)
    if not todo:
        return []
    if _legacy_rejects(spec, found):
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(spec.ident(), sql.Identifier(_legacy_name(spec))))
        found = _Catalog(False, {}, set(), set())
    if not found.exists:
        parts = [_column_ddl(c) for c in spec.columns]
        if spec.key:
            parts.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, spec.key))))
        parts += [
            sql.SQL("CONSTRAINT {} CHECK ({})").format(sql.Identifier(n), sql.SQL(expr))  # type: ignore[arg-type]
            for n, expr in spec.checks.items()
        ]
        parts += [_fk_ddl(spec, fk) for fk in spec.foreign_keys]
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(spec.ident(), sql.SQL(", ").join(parts)))
    else:
        for col in spec.columns:
            if col.name not in found.columns:
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        spec.ident(), sql.Identifier(col.name), sql.SQL(col.type)
                    )
                )
        for check_name, expr in spec.checks.items():
            if check_name not in found.constraints:
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({})").format(
                        spec.ident(),
                        sql.Identifier(check_name),
                        sql.SQL(expr),  # type: ignore[arg-type]
                    )
                )
        for fk in spec.foreign_keys:
            if fk.constraint_name(spec.name) not in found.constraints:
                cur.execute(sql.SQL("ALTER TABLE {} ADD {}").format(spec.ident(), _fk_ddl(spec, fk)))
    for index in spec.indexes:
        if _index_name(spec, index) not in found.indexes:
            cur.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    sql.Identifier(_index_name(spec, index)),
                    spec.ident(),
                    sql.SQL(", ").join(map(sql.Identifier, index)),
                )
            )
    return todo


def _scalar(cur: Cursor) -> Any:
    """The single value of a query that returns exactly one row (an aggregate, a cast)."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError("expected one row from the catalog query, got none")
    return row[0]


def _schema_exists(cur: Any, schema: str) -> bool:
    cur.execute("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,))
    return bool(cur.fetchone()[0])


def _tables_of(spec: TableSpec) -> list[TableSpec]:
    """The target and the tables the loader writes beside it."""
    return [spec, spec.rejects, *([pending_spec(spec.schema)] if spec.parks else [])]


def ensure_table(conn: Connection, spec: TableSpec) -> list[str]:
    """Bring the table (and its rejects and pending tables) to the declaration; return the columns added.

    Reads the catalog first and returns without a single DDL statement or lock when nothing differs, so a role
    without CREATE can load. Otherwise the DDL runs in one transaction under `lock_timeout`, after advisory locks
    on the schema and the table name: parallel first loads of many tables of one schema would otherwise race on
    `CREATE SCHEMA IF NOT EXISTS` (UniqueViolation on pg_namespace) or `CREATE TABLE IF NOT EXISTS`.
    Columns are only ever added (as nullable): dropping or retyping a column is a migration for a human.
    """
    with conn.cursor() as cur:
        tables = _tables_of(spec)
        if _schema_exists(cur, spec.schema) and not any(_differences(t, _catalog(cur, t)) for t in tables):
            return []
    missing_parents = []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"schema:{spec.schema}",))
        if not _schema_exists(cur, spec.schema):
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(spec.schema)))
        added: list[str] = []
        for table in tables:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (table.qualified_name,))
            for fk in table.foreign_keys:
                cur.execute("SELECT to_regclass(%s)", (f'"{fk.parent[0]}"."{fk.parent[1]}"',))
                if _scalar(cur) is None:
                    missing_parents.append(fk.references)
            if missing_parents:
                break
            done = _apply(cur, table)
            if table is spec:
                added = [t.removeprefix("add column ") for t in done if t.startswith("add column ")]
        if missing_parents:
            raise ValueError(
                f"{spec.qualified_name}: parent table(s) {sorted(set(missing_parents))} do not exist; "
                "create parents first (`ingestion-platform migrate` orders them)"
            )
    return added


def _ordered(specs: Iterable[TableSpec]) -> list[TableSpec]:
    """Parents before children, so foreign keys can be created; unknown parents must already exist."""
    by_name = {s.qualified_name: s for s in specs}
    ordered: list[TableSpec] = []
    seen: set[str] = set()

    def visit(spec: TableSpec, path: tuple[str, ...]) -> None:
        if spec.qualified_name in seen:
            return
        if spec.qualified_name in path:
            raise ValueError(f"foreign keys form a cycle: {' -> '.join((*path, spec.qualified_name))}")
        for fk in spec.foreign_keys:
            if fk.references in by_name and fk.references != spec.qualified_name:
                visit(by_name[fk.references], (*path, spec.qualified_name))
        seen.add(spec.qualified_name)
        ordered.append(spec)

    for spec in by_name.values():
        visit(spec, ())
    return ordered


def migrate(conn: Connection, specs: Iterable[TableSpec]) -> dict[str, list[str]]:
    """Create and evolve every declared table (parents first); return table -> what changed (empty: nothing)."""
    changes: dict[str, list[str]] = {}
    for spec in _ordered(specs):
        with conn.cursor() as cur:
            before = {t.qualified_name: _differences(t, _catalog(cur, t)) for t in _tables_of(spec)}
        if not conn.autocommit:
            conn.commit()
        ensure_table(conn, spec)
        for name, todo in before.items():
            if todo:
                changes.setdefault(name, []).extend(todo)
    return changes


# Arrow -> PostgreSQL for schemas discovered at run time.
def arrow_to_pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_int8(arrow_type) or pa.types.is_int16(arrow_type) or pa.types.is_uint8(arrow_type):
        return "smallint"
    if pa.types.is_int32(arrow_type) or pa.types.is_uint16(arrow_type):
        return "integer"
    if pa.types.is_integer(arrow_type):
        return "bigint"
    if pa.types.is_floating(arrow_type):
        return "double precision"
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if isinstance(arrow_type, pa.BaseExtensionType) and arrow_type.extension_name == "arrow.uuid":
        return "uuid"
    if (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)) and (
        pa.types.is_string(arrow_type.value_type) or pa.types.is_large_string(arrow_type.value_type)
    ):
        return "text[]"
    if pa.types.is_struct(arrow_type) or pa.types.is_list(arrow_type) or pa.types.is_map(arrow_type):
        return "jsonb"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    raise ValueError(f"no PostgreSQL type for Arrow type {arrow_type}")


def table_spec_from_pairs(
    schema: str,
    name: str,
    columns: Iterable[tuple[str, str]],
    *,
    key: Sequence[str] = (),
    **options: Any,
) -> TableSpec:
    """A TableSpec from discovered (name, PostgreSQL type) pairs; key columns become NOT NULL."""
    return TableSpec(
        schema=schema,
        name=name,
        columns=tuple(Column(n, t, nullable=n not in key) for n, t in columns),
        key=tuple(key),
        **options,
    )


def table_spec_from_arrow(
    schema: str, name: str, arrow_schema: pa.Schema, *, key: Sequence[str] = (), **options: Any
) -> TableSpec:
    """A TableSpec from an Arrow schema (for pandas: `pa.Schema.from_pandas(frame, preserve_index=False)`)."""
    return table_spec_from_pairs(
        schema, name, ((f.name, arrow_to_pg_type(f.type)) for f in arrow_schema), key=key, **options
    )
