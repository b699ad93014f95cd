"""Declared table schemas and the DDL that creates and evolves them.

Sources declare their tables as data (`TableSpec`) instead of writing DDL, so that creating a table, adding a
column in a later release and validating an incoming batch all follow from one declaration. Identifiers are
validated against a strict pattern and always quoted through `psycopg.sql`, never formatted into SQL text.
"""

import re
from dataclasses import dataclass, field

from psycopg import Connection, sql

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# The vocabulary is closed on purpose: every type here has a CSV text form that pyarrow writes and COPY reads
# unchanged, which is what lets the loader stream Arrow batches without per-value Python code.
PG_TYPES = frozenset(
    {"text", "bigint", "integer", "smallint", "double precision", "numeric", "boolean", "date", "timestamptz", "jsonb"}
)

# information_schema.columns.data_type spells some types differently from the DDL name.
_INFORMATION_SCHEMA_NAMES = {"timestamp with time zone": "timestamptz"}


def check_identifier(name: str) -> str:
    """Reject anything that is not a plain lower-case SQL identifier, so quoting can never be a surprise."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"invalid SQL identifier {name!r}: use lower-case letters, digits and _ (max 63)")
    return name


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        check_identifier(self.name)
        if self.type not in PG_TYPES:
            raise ValueError(f"column {self.name}: unsupported type {self.type!r}; use one of {sorted(PG_TYPES)}")


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

    def __post_init__(self) -> None:
        check_identifier(self.schema)
        check_identifier(self.name)
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.qualified_name}: duplicate column names")
        for col in (*self.key, *(c for index in self.indexes for c in index), *filter(None, [self.version])):
            if col not in names:
                raise ValueError(f"{self.qualified_name}: key/index column {col!r} is not a declared column")
        for col in self.key:
            if self.column(col).nullable:
                raise ValueError(f"{self.qualified_name}: key column {col!r} must be declared nullable=False")

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

    def ident(self) -> sql.Composed:
        return sql.Identifier(self.schema, self.name)


def _column_ddl(col: Column) -> sql.Composed:
    return sql.SQL("{} {}{}").format(
        sql.Identifier(col.name), sql.SQL(col.type), sql.SQL("" if col.nullable else " NOT NULL")
    )


def ensure_table(conn: Connection, spec: TableSpec) -> list[str]:
    """Create the schema and table if missing and add declared columns the table lacks; return the added columns.

    Runs under a transaction-scoped advisory lock on the table name, because several Dagster run processes
    may load the same new table at once and `CREATE ... IF NOT EXISTS` alone still races in PostgreSQL.
    Columns are only ever added (as nullable): dropping or retyping a column is a migration for a human.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (spec.qualified_name,))
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(spec.schema)))
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (spec.schema, spec.name),
        )
        existing = {name: _INFORMATION_SCHEMA_NAMES.get(dtype, dtype) for name, dtype in cur.fetchall()}
        if not existing:
            parts = [_column_ddl(c) for c in spec.columns]
            if spec.key:
                parts.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, spec.key))))
            cur.execute(sql.SQL("CREATE TABLE {} ({})").format(spec.ident(), sql.SQL(", ").join(parts)))
            added = []
        else:
            mismatched = [
                f"{c.name} is {existing[c.name]}, declared {c.type}"
                for c in spec.columns
                if c.name in existing and existing[c.name] != c.type
            ]
            if mismatched:
                raise ValueError(f"{spec.qualified_name}: column types differ from the declaration: {mismatched}")
            added = [c.name for c in spec.columns if c.name not in existing]
            for name in added:
                col = spec.column(name)
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        spec.ident(), sql.Identifier(col.name), sql.SQL(col.type)
                    )
                )
        for index in spec.indexes:
            index_name = check_identifier(f"{spec.name}__{'_'.join(index)}_idx"[:63])
            cur.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    sql.Identifier(index_name), spec.ident(), sql.SQL(", ").join(map(sql.Identifier, index))
                )
            )
    return added
