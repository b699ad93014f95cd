"""Profile a warehouse table inside PostgreSQL: counts, distincts, ranges, top values, patterns, key candidates.

Why in SQL: the replaced service pulled samples into pandas, which neither scales to a million rows nor gives exact
numbers. Here every statistic is computed by the warehouse in a few set-based statements:
- one scan computing the row count, every column's non-null count, and min, max and avg of numbers and times, as
  plain aggregates that PostgreSQL runs as a parallel aggregate;
- one statement with a UNION ALL branch per column that groups the column's non-null values once
  (`value, count(*)`): the number of groups is the distinct count, the largest groups are the top values, and text
  statistics (min, max, lengths, pattern shares) come from the groups weighted by their counts, so a regex runs once
  per distinct value (a column of repeated codes costs one per code), behind a cheap guard (length, first
  character, an `@`) that every match passes, so most values never reach a regex;
- at most one statement for composite key candidates and one for foreign-key candidates.

Text is grouped and ordered with `COLLATE "C"` so ties in top values and text min/max are the same on every server
whatever its default collation (and byte order is cheaper to sort than a linguistic collation).

Scoping by tenant adds `tenant_id = %(tenant)s` to every scan, so a tenant's profile never reads another tenant's
rows, and key candidates are keys within the tenant (the table's own key is (tenant_id, id)).
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import dagster as dg
from psycopg import Connection, sql

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.warehouse.schema import check_identifier

Kind = Literal["integer", "decimal", "temporal", "text", "boolean", "other"]

_KINDS: Mapping[str, Kind] = {
    "smallint": "integer",
    "integer": "integer",
    "bigint": "integer",
    "numeric": "decimal",
    "real": "decimal",
    "double precision": "decimal",
    "date": "temporal",
    "timestamp without time zone": "temporal",
    "timestamp with time zone": "temporal",
    "text": "text",
    "character varying": "text",
    "character": "text",
    "boolean": "boolean",
}

# The inferred type of a non-text column follows from its declared type.
_DECLARED_INFERRED = {
    "smallint": "integer",
    "integer": "integer",
    "bigint": "integer",
    "numeric": "decimal",
    "real": "decimal",
    "double precision": "decimal",
    "date": "date",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamp",
    "boolean": "boolean",
    "json": "json",
    "jsonb": "json",
    "uuid": "uuid",
}

# Value patterns tested on text columns (case-insensitive, PostgreSQL regular expressions). A column's `pattern` is
# the first of PATTERNS, in this order, that at least PATTERN_THRESHOLD of its non-null values match: specific
# shapes come first because the loose ones also match them (an ISO date also looks like a dash-separated phone).
PATTERNS: Mapping[str, str] = {
    "uuid": r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    "email": r"^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$",
    "url": r"^https?://[^\s/?#]+[^\s]*$",
    "timestamp_iso": (
        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[t ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(z|[+-][0-9]{2}(:?[0-9]{2})?)?$"
    ),
    "date_iso": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    "date_mdy": r"^[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}$",
    "date_dmy_dot": r"^[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{4}$",
    # Groups of digits separated by space, dot or dash, optionally a +country code: 555-123-4567, (555) 123-4567,
    # +44 20 7946 0958. Bare digit strings are not phones here: they are indistinguishable from ids.
    "phone": r"^(\+[0-9]{1,3}[ .-]?)?(\([0-9]{2,4}\)|[0-9]{2,4})([ .-][0-9]{2,4}){1,3}$",
}
# Regexes that only serve type inference: a text column whose every value matches is that type in disguise.
TYPE_PATTERNS: Mapping[str, str] = {
    "integer": r"^[+-]?[0-9]+$",
    "decimal": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(e[+-]?[0-9]+)?$",
    "boolean": r"^(t|f|true|false|yes|no)$",
}
# Text columns are typed by the first of these whose share is 1 (every value); declared types need no guessing.
_TYPE_ORDER = (
    ("integer", "integer"),
    ("decimal", "decimal"),
    ("boolean", "boolean"),
    ("timestamp_iso", "timestamp"),
    ("date_iso", "date"),
    ("date_mdy", "date"),
    ("date_dmy_dot", "date"),
    ("uuid", "uuid"),
)
_ALL_PATTERNS = {**PATTERNS, **TYPE_PATTERNS}
# Cheap tests every match of a pattern passes, evaluated before its regex: most values of most columns fail them,
# which keeps eleven regexes over a million values at the cost of about one.
_DIGIT_FIRST = "ascii({v}) BETWEEN 48 AND 57"
_GUARDS: Mapping[str, str] = {
    "uuid": "length({v}) = 36",
    "email": "strpos({v}, '@') > 0",
    "url": "lower(left({v}, 4)) = 'http'",
    "timestamp_iso": f"length({{v}}) >= 16 AND {_DIGIT_FIRST}",
    "date_iso": f"length({{v}}) = 10 AND {_DIGIT_FIRST}",
    "date_mdy": f"length({{v}}) BETWEEN 8 AND 10 AND {_DIGIT_FIRST}",
    "date_dmy_dot": f"length({{v}}) BETWEEN 8 AND 10 AND {_DIGIT_FIRST}",
    "phone": f"length({{v}}) BETWEEN 7 AND 26 AND ({_DIGIT_FIRST} OR ascii({{v}}) IN (40, 43))",
    "integer": f"({_DIGIT_FIRST} OR ascii({{v}}) IN (43, 45))",
    "decimal": f"({_DIGIT_FIRST} OR ascii({{v}}) IN (43, 45, 46))",
    "boolean": "length({v}) <= 5",
}
PATTERN_THRESHOLD = 0.9
# A phone needs at least this many digits, or version strings and short codes would pass.
_PHONE_MIN_DIGITS = 7

# Foreign keys are looked for only between columns that can hold identifiers.
_KEYABLE_KINDS = frozenset({"integer", "text"})
# Hash aggregates over a million distinct values fit in memory with this; larger ones spill to disk, still correct.
DEFAULT_WORK_MEM = "64MB"


@dataclass(frozen=True)
class TopValue:
    value: str
    count: int


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    ordinal: int
    data_type: str
    kind: Kind
    non_null_count: int
    null_count: int
    distinct_count: int
    min_value: str | None
    max_value: str | None
    avg_value: float | datetime | None
    min_length: int | None
    max_length: int | None
    top_values: tuple[TopValue, ...]
    pattern_shares: Mapping[str, float]
    inferred_type: str
    pattern: str | None
    is_unique: bool

    @property
    def null_rate(self) -> float:
        total = self.non_null_count + self.null_count
        return self.null_count / total if total else 0.0


@dataclass(frozen=True)
class ForeignKeyCandidate:
    """`column` of the profiled table whose distinct non-null values are (mostly) values of a candidate key."""

    column: str
    ref_schema: str
    ref_table: str
    ref_column: str
    distinct_values: int
    contained: int

    @property
    def coverage(self) -> float:
        return self.contained / self.distinct_values if self.distinct_values else 0.0

    @property
    def ref_qualified_name(self) -> str:
        return f"{self.ref_schema}.{self.ref_table}.{self.ref_column}"


@dataclass(frozen=True)
class TableProfile:
    schema: str
    table: str
    tenant_id: str | None
    profiled_at: datetime
    row_count: int
    columns: tuple[ColumnProfile, ...]
    candidate_keys: tuple[tuple[str, ...], ...]
    foreign_keys: tuple[ForeignKeyCandidate, ...] = ()
    seconds: float = 0.0
    tenant_column: str | None = field(default=None)

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}"

    def column(self, name: str) -> ColumnProfile:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.qualified_name} profile has no column {name!r}")


def kind_of(data_type: str) -> Kind:
    """How the profiler treats a warehouse type (`information_schema` spelling)."""
    return _KINDS.get(data_type, "other")


def key_column_profile(name: str, ordinal: int, data_type: str, rows: int, distinct: int) -> ColumnProfile:
    """A unique, non-null column described only as far as foreign-key detection reads it (type, distinct count):
    the key of a table known without profiling it again."""
    kind = kind_of(data_type)
    return ColumnProfile(
        name=name,
        ordinal=ordinal,
        data_type=data_type,
        kind=kind,
        non_null_count=rows,
        null_count=0,
        distinct_count=distinct,
        min_value=None,
        max_value=None,
        avg_value=None,
        min_length=None,
        max_length=None,
        top_values=(),
        pattern_shares={},
        inferred_type=_DECLARED_INFERRED.get(data_type, data_type) if kind != "text" else "text",
        pattern=None,
        is_unique=True,
    )


def declared_key_profile(
    warehouse: WarehouseResource,
    schema: str,
    table: str,
    key: str,
    *,
    tenant_id: str,
    tenant_column: str = "tenant_id",
) -> TableProfile | None:
    """`table` reduced to its declared key (unique per tenant by its primary key), from one count: a reference for
    foreign-key detection before the table has a profile of its own. None when the table or column is missing."""
    for name in (schema, table, key, tenant_column):
        check_identifier(name)
    with warehouse.raw_connection() as conn:
        found = conn.execute(
            "SELECT ordinal_position, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s AND column_name = %s",
            (schema, table, key),
        ).fetchone()
        if found is None:
            return None
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
                sql.Identifier(schema, table), sql.Identifier(tenant_column)
            ),
            (tenant_id,),
        ).fetchone()
    rows = int(row[0]) if row else 0
    return TableProfile(
        schema=schema,
        table=table,
        tenant_id=tenant_id,
        profiled_at=datetime.now(UTC),
        row_count=rows,
        columns=(key_column_profile(key, int(found[0]), str(found[1]), rows, rows),),
        candidate_keys=((key,),),
        tenant_column=tenant_column,
    )


def _scope(tenant_column: str | None, alias: str | None = None) -> sql.Composable:
    if tenant_column is None:
        return sql.SQL("TRUE")
    ident = sql.Identifier(alias, tenant_column) if alias else sql.Identifier(tenant_column)
    return sql.SQL("{} = %(tenant)s").format(ident)


def _value_expr(column: str, kind: Kind) -> sql.Composable:
    if kind == "text":
        return sql.SQL('{} COLLATE "C"').format(sql.Identifier(column))
    if kind == "other":  # json has no equality, arrays and others print fine: group their text form
        return sql.SQL('{}::text COLLATE "C"').format(sql.Identifier(column))
    return sql.Identifier(column)


def _text_aggregates(value: sql.Composable, *, grouped: bool) -> sql.Composable:
    """min, max, min and max length, and pattern match counts of text `value`: over the raw rows, or over grouped
    values `v` with counts `n` (each regex then runs once per distinct value and counts for all its rows)."""
    tally = "coalesce(sum(n) FILTER (WHERE {cond}), 0)" if grouped else "count(*) FILTER (WHERE {cond})"
    counts = [
        sql.SQL("{}, ").format(sql.Literal(name))
        + sql.SQL(tally).format(
            cond=sql.SQL("{} AND {} ~* {}{}").format(
                sql.SQL(_GUARDS[name]).format(v=value),
                value,
                sql.Placeholder(f"re_{name}"),
                sql.SQL(" AND length(regexp_replace({}, '[^0-9]', '', 'g')) >= {}").format(
                    value, sql.Literal(_PHONE_MIN_DIGITS)
                )
                if name == "phone"
                else sql.SQL(""),
            )
        )
        for name in _ALL_PATTERNS
    ]
    return sql.SQL(
        "min({v})::text, max({v})::text, min(length({v})), max(length({v})), jsonb_build_object({c})"
    ).format(v=value, c=sql.SQL(", ").join(counts))


_NO_TEXT = sql.SQL("NULL::text, NULL::text, NULL::integer, NULL::integer, NULL::jsonb")


def _scan_columns(kind: Kind, column: str, *, text_here: bool) -> list[sql.Composable]:
    """The per-column aggregates of the one-scan statement: non-null count; min, max and avg of numbers and times;
    the text statistics of text columns with many distinct values (`text_here`)."""
    col = sql.Identifier(column)
    exprs: list[sql.Composable] = [sql.SQL("count({})").format(col)]
    if kind in ("integer", "decimal", "temporal"):
        exprs += [sql.SQL("min({})::text").format(col), sql.SQL("max({})::text").format(col)]
    else:
        exprs += [sql.SQL("NULL::text"), sql.SQL("NULL::text")]
    if kind in ("integer", "decimal"):
        exprs += [sql.SQL("avg({})::float8").format(col), sql.SQL("NULL::timestamptz")]
    elif kind == "temporal":
        exprs += [sql.SQL("NULL::float8"), sql.SQL("to_timestamp(avg(extract(epoch FROM {})))").format(col)]
    else:
        exprs += [sql.SQL("NULL::float8"), sql.SQL("NULL::timestamptz")]
    exprs.append(_text_aggregates(_value_expr(column, kind), grouped=False) if text_here else _NO_TEXT)
    return exprs


_SCAN_WIDTH = 10
# PostgreSQL allows 1,664 result columns; wider tables are scanned in chunks of this many columns.
_COLUMNS_PER_SCAN = 150
# Text columns with more distinct values than this (by the planner's statistics) get their text statistics from the
# parallel raw scan; fewer, from their grouped values. Either way the numbers are exact: only the cost differs.
GROUPED_TEXT_MAX_DISTINCT = 10_000


def _estimated_distinct(conn: Connection, schema: str, table: str) -> dict[str, float]:
    """The planner's distinct-value estimates (pg_stats, kept by ANALYZE/autovacuum); empty if never analyzed."""
    rows = conn.execute(
        "SELECT s.attname, CASE WHEN s.n_distinct >= 0 THEN s.n_distinct ELSE -s.n_distinct * greatest(c.reltuples, 0) "
        "END FROM pg_stats s JOIN pg_namespace ns ON ns.nspname = s.schemaname "
        "JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = s.tablename "
        "WHERE s.schemaname = %s AND s.tablename = %s",
        (schema, table),
    ).fetchall()
    return {str(name): float(estimate) for name, estimate in rows}


def _group_branch(
    table: sql.Composable,
    column: str,
    ordinal: int,
    kind: Kind,
    scope: sql.Composable,
    top_n: int,
    *,
    text_here: bool,
) -> sql.Composed:
    """Distinct count and top values of one column (and, for text, the text statistics) from one grouping of its
    non-null values."""
    text = _text_aggregates(sql.SQL("v"), grouped=True) if text_here else _NO_TEXT
    return sql.SQL(
        "(WITH g AS MATERIALIZED (SELECT {value} AS v, count(*) AS n FROM {table} WHERE {scope} AND {col} IS NOT NULL "
        "GROUP BY 1) "
        "SELECT {ordinal}::integer AS ordinal, count(*) AS distinct_count, "
        "(SELECT coalesce(jsonb_agg(jsonb_build_array(t.v::text, t.n) ORDER BY t.n DESC, t.v), '[]'::jsonb) "
        "FROM (SELECT v, n FROM g ORDER BY n DESC, v LIMIT {top}) t) AS top_values, {text} FROM g)"
    ).format(
        value=_value_expr(column, kind),
        table=table,
        scope=scope,
        col=sql.Identifier(column),
        ordinal=sql.Literal(ordinal),
        top=sql.Literal(top_n),
        text=text,
    )


def _infer(data_type: str, kind: Kind, shares: Mapping[str, float], non_null: int) -> tuple[str, str | None]:
    """(inferred type, dominant pattern): see PATTERNS and _TYPE_ORDER for the rules."""
    if kind != "text":
        return _DECLARED_INFERRED.get(data_type, data_type), None
    if non_null == 0:
        return "text", None
    pattern = next((name for name in PATTERNS if shares.get(name, 0.0) >= PATTERN_THRESHOLD), None)
    inferred = next((type_ for name, type_ in _TYPE_ORDER if shares.get(name, 0.0) == 1.0), None)
    if inferred is None:
        inferred = {"email": "email", "phone": "phone", "url": "url"}.get(pattern or "", "text")
    return inferred, pattern


def _columns(conn: Connection, schema: str, table: str) -> list[tuple[str, int, str]]:
    rows = conn.execute(
        "SELECT column_name, ordinal_position, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    ).fetchall()
    if not rows:
        raise ValueError(f"{schema}.{table} does not exist (or has no columns) in the warehouse")
    return [(str(name), int(pos), str(dtype)) for name, pos, dtype in rows]


def profile_table(
    warehouse: WarehouseResource,
    schema: str,
    table: str,
    *,
    tenant_id: str | None = None,
    tenant_column: str = "tenant_id",
    references: Sequence[TableProfile] = (),
    top_n: int = 5,
    fk_threshold: float = 0.99,
    max_pair_checks: int = 10,
    work_mem: str = DEFAULT_WORK_MEM,
    grouped_text_max_distinct: int = GROUPED_TEXT_MAX_DISTINCT,
) -> TableProfile:
    """Profile `schema.table` (only `tenant_id`'s rows when given) and find key and foreign-key candidates.

    Candidate keys: every column that is non-null and unique in scope; when there is none, pairs of non-null
    columns unique together (at most `max_pair_checks` pairs, smallest distinct-count product first: a natural
    composite key like (tenant, id) multiplies to about the row count, pairs unique by accident to far more).
    Foreign keys: columns whose distinct non-null values lie at least `fk_threshold` inside a single-column
    candidate key of this table or of `references` (profiles of other tables, scoped to the same tenant).
    """
    check_identifier(schema)
    check_identifier(table)
    if not 0 < fk_threshold <= 1:
        raise ValueError(f"fk_threshold must be in (0, 1], got {fk_threshold}")
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    started = time.perf_counter()
    profiled_at = datetime.now(UTC)
    target = sql.Identifier(schema, table)
    # Regexes travel as parameters: a literal `%` in SQL text would read as a placeholder.
    params: dict[str, Any] = {"tenant": tenant_id, **{f"re_{name}": regex for name, regex in _ALL_PATTERNS.items()}}
    with warehouse.raw_connection() as conn, conn.transaction():
        # One snapshot for every statement, so a load committing mid-profile cannot make the row count and the
        # distinct counts describe different rows; read-only repeatable read never fails on serialization.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # min/max/avg of dates and timestamps are read as text: make their spelling independent of the server.
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
        conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(work_mem)))
        described = _columns(conn, schema, table)
        scope_column = tenant_column if tenant_id is not None else None
        if scope_column is not None and scope_column not in {name for name, _, _ in described}:
            raise ValueError(f"{schema}.{table} has no {scope_column!r} column to scope the profile by tenant")
        scope = _scope(scope_column)
        kinds: dict[str, Kind] = {name: _KINDS.get(dtype, "other") for name, _, dtype in described}
        estimates = _estimated_distinct(conn, schema, table)
        text_in_scan = {
            name
            for name, _, _ in described
            if kinds[name] == "text" and estimates.get(name, 0.0) > grouped_text_max_distinct
        }
        rows = 0
        scanned: dict[int, Sequence[Any]] = {}
        for first in range(0, len(described), _COLUMNS_PER_SCAN):
            chunk = described[first : first + _COLUMNS_PER_SCAN]
            exprs = [
                sql.SQL("count(*)"),
                *(e for name, _, _ in chunk for e in _scan_columns(kinds[name], name, text_here=name in text_in_scan)),
            ]
            found = conn.execute(
                sql.SQL("SELECT {} FROM {} WHERE {}").format(sql.SQL(", ").join(exprs), target, scope), params
            ).fetchone()
            assert found is not None  # an aggregate without GROUP BY always returns one row
            rows = int(found[0])
            for i, (_, pos, _) in enumerate(chunk):
                scanned[pos] = found[1 + i * _SCAN_WIDTH : 1 + (i + 1) * _SCAN_WIDTH]
        branches = [
            _group_branch(
                target,
                name,
                pos,
                kinds[name],
                scope,
                top_n,
                text_here=kinds[name] == "text" and name not in text_in_scan,
            )
            for name, pos, _ in described
        ]
        grouped = {int(r[0]): r[1:] for r in conn.execute(sql.SQL(" UNION ALL ").join(branches), params).fetchall()}
        columns = tuple(
            _column_profile(name, pos, dtype, kinds[name], rows, scanned[pos], grouped[pos])
            for name, pos, dtype in described
        )
        keys: list[tuple[str, ...]] = [(c.name,) for c in columns if c.is_unique and c.name != scope_column]
        if not keys and rows:
            keys = _pair_keys(conn, target, scope, params, columns, rows, scope_column, max_pair_checks)
        profile = TableProfile(
            schema=schema,
            table=table,
            tenant_id=tenant_id,
            profiled_at=profiled_at,
            row_count=rows,
            columns=columns,
            candidate_keys=tuple(keys),
            tenant_column=scope_column,
        )
        foreign_keys = _foreign_keys(conn, profile, [profile, *references], fk_threshold)
    return replace(profile, foreign_keys=tuple(foreign_keys), seconds=time.perf_counter() - started)


def _column_profile(
    name: str, ordinal: int, data_type: str, kind: Kind, rows: int, scanned: Sequence[Any], grouped: Sequence[Any]
) -> ColumnProfile:
    non_null, min_value, max_value, avg_number, avg_time = scanned[:5]
    distinct, top = grouped[:2]
    # text statistics come from the scan or from the groups, whichever computed them; the other holds NULLs
    text_stats = scanned[5:] if scanned[9] is not None else grouped[2:]
    text_min, text_max, min_len, max_len, patterns = text_stats
    if kind == "text":
        min_value, max_value = text_min, text_max
    non_null = int(non_null)
    shares = {k: (int(v) / non_null if non_null else 0.0) for k, v in (patterns or {}).items()}
    inferred, pattern = _infer(data_type, kind, shares, non_null)
    return ColumnProfile(
        name=name,
        ordinal=ordinal,
        data_type=data_type,
        kind=kind,
        non_null_count=non_null,
        null_count=rows - non_null,
        distinct_count=int(distinct),
        min_value=min_value,
        max_value=max_value,
        avg_value=avg_number if avg_number is not None else avg_time,
        min_length=min_len,
        max_length=max_len,
        top_values=tuple(TopValue(str(v), int(n)) for v, n in top),
        pattern_shares={k: v for k, v in shares.items() if k in PATTERNS},
        inferred_type=inferred,
        pattern=pattern,
        is_unique=rows > 0 and non_null == rows and int(distinct) == rows,
    )


def _pair_keys(
    conn: Connection,
    target: sql.Composable,
    scope: sql.Composable,
    params: Mapping[str, Any],
    columns: Sequence[ColumnProfile],
    rows: int,
    scope_column: str | None,
    max_pair_checks: int,
) -> list[tuple[str, ...]]:
    """Pairs unique together, checked in one statement; a pair whose distinct counts multiply to fewer than the
    row count cannot be unique and is never scanned."""
    eligible = [c for c in columns if c.null_count == 0 and c.kind != "decimal" and c.name != scope_column]
    pairs = [
        (a, b) for i, a in enumerate(eligible) for b in eligible[i + 1 :] if a.distinct_count * b.distinct_count >= rows
    ]
    pairs.sort(key=lambda p: p[0].distinct_count * p[1].distinct_count)
    pairs = pairs[:max_pair_checks]
    if not pairs:
        return []
    branches = [
        sql.SQL(
            "SELECT {i} AS pair, NOT EXISTS (SELECT 1 FROM {table} WHERE {scope} GROUP BY {a}, {b} HAVING count(*) > 1)"
        ).format(
            i=sql.Literal(i),
            table=target,
            scope=scope,
            a=_value_expr(a.name, a.kind),
            b=_value_expr(b.name, b.kind),
        )
        for i, (a, b) in enumerate(pairs)
    ]
    unique = conn.execute(sql.SQL(" UNION ALL ").join(branches), params).fetchall()
    return [(pairs[i][0].name, pairs[i][1].name) for i, ok in sorted(unique) if ok]


def _fk_compatible(col: ColumnProfile, key: ColumnProfile) -> bool:
    return col.kind in _KEYABLE_KINDS and key.kind in _KEYABLE_KINDS and col.inferred_type == key.inferred_type


def _foreign_keys(
    conn: Connection, profile: TableProfile, references: Sequence[TableProfile], threshold: float
) -> list[ForeignKeyCandidate]:
    """Inclusion of each column's distinct values in each compatible candidate key, all pairs in one statement.

    A column that is itself a single-column key of its table is not a candidate (ids of unrelated tables often
    overlap as 1..N ranges), and a key that has fewer distinct values than the column cannot contain it.

    Small id ranges are contained in many keys (values 1..5 lie inside every table's 1..N ids), so each column keeps
    one candidate, the most likely: a key of the table the column is named after, then the highest coverage, then
    the tightest key (fewest distinct values: containment in it implies less by chance), then the key's position.
    """
    own_keys = {k[0] for k in profile.candidate_keys if len(k) == 1}
    checks: list[tuple[ColumnProfile, TableProfile, ColumnProfile]] = []
    seen: set[tuple[str, str, str]] = set()
    for ref in references:
        if ref.tenant_id != profile.tenant_id:
            continue
        for key in (ref.column(k[0]) for k in ref.candidate_keys if len(k) == 1):
            if (ref.schema, ref.table, key.name) in seen:
                continue
            seen.add((ref.schema, ref.table, key.name))
            for col in profile.columns:
                if (
                    col.name in own_keys
                    or col.name == profile.tenant_column
                    or col.non_null_count == 0
                    or col.distinct_count > key.distinct_count
                    or not _fk_compatible(col, key)
                ):
                    continue
                checks.append((col, ref, key))
    if not checks:
        return []
    branches = []
    for i, (col, ref, key) in enumerate(checks):
        same_type = col.data_type == key.data_type
        col_expr = (
            sql.Identifier("a", col.name)
            if same_type
            else sql.SQL('a.{}::text COLLATE "C"').format(sql.Identifier(col.name))
        )
        key_expr = (
            sql.Identifier("r", key.name)
            if same_type
            else sql.SQL('r.{}::text COLLATE "C"').format(sql.Identifier(key.name))
        )
        branches.append(
            sql.SQL(
                "SELECT {i} AS pair, count(*) AS distinct_values, count(k.k) AS contained "
                "FROM (SELECT DISTINCT {col} AS v FROM {table} a WHERE {scope_a} AND a.{name} IS NOT NULL) d "
                "LEFT JOIN (SELECT {key} AS k FROM {ref} r WHERE {scope_r}) k ON k.k = d.v"
            ).format(
                i=sql.Literal(i),
                col=col_expr,
                table=sql.Identifier(profile.schema, profile.table),
                scope_a=_scope(profile.tenant_column, "a"),
                name=sql.Identifier(col.name),
                key=key_expr,
                ref=sql.Identifier(ref.schema, ref.table),
                scope_r=_scope(ref.tenant_column, "r"),
            )
        )
    best: dict[str, tuple[tuple[bool, float, int, int], ForeignKeyCandidate]] = {}
    for i, distinct_values, contained in sorted(
        conn.execute(sql.SQL(" UNION ALL ").join(branches), {"tenant": profile.tenant_id}).fetchall()
    ):
        col, ref, key = checks[i]
        if distinct_values and contained / distinct_values >= threshold:
            candidate = ForeignKeyCandidate(col.name, ref.schema, ref.table, key.name, distinct_values, contained)
            rank = (not _names_table(col.name, ref.table), -candidate.coverage, key.distinct_count, key.ordinal)
            if col.name not in best or rank < best[col.name][0]:
                best[col.name] = (rank, candidate)
    return [best[col.name][1] for col in profile.columns if col.name in best]


def _names_table(column: str, table: str) -> bool:
    """ERP fields are named after the record they point to (`subsidiary`, `item`, `customer_id`)."""
    return column.lower().removesuffix("_id").removesuffix("id").rstrip("_") == table.lower() or column == table


def _format_value(value: float | datetime | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return f"{value:.6g}"


def describe_column(col: ColumnProfile) -> str:
    """One line of statistics, shown as the column's description in the Dagster UI."""
    parts = [f"nulls {col.null_count} ({col.null_rate:.1%})", f"distinct {col.distinct_count}"]
    if col.min_value is not None:
        parts.append(f"min {col.min_value[:40]} · max {col.max_value[:40] if col.max_value else ''}")
    if col.avg_value is not None:
        parts.append(f"avg {_format_value(col.avg_value)}")
    parts.append(f"type {col.inferred_type}")
    if col.pattern:
        parts.append(f"pattern {col.pattern} ({col.pattern_shares[col.pattern]:.0%})")
    if col.top_values:
        parts.append("top " + ", ".join(f"{t.value[:30]} ({t.count})" for t in col.top_values))
    return " · ".join(parts)


def column_schema(profile: TableProfile) -> dg.TableSchema:
    """The profiled columns as `dagster/column_schema`, statistics in each column's description."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                col.name,
                col.data_type,
                description=describe_column(col),
                constraints=dg.TableColumnConstraints(nullable=col.null_count > 0, unique=col.is_unique),
                tags={"inferred_type": col.inferred_type, **({"pattern": col.pattern} if col.pattern else {})},
            )
            for col in profile.columns
        ]
    )


_STATS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("column", "string"),
        dg.TableColumn("type", "string"),
        dg.TableColumn("inferred", "string"),
        dg.TableColumn("pattern", "string"),
        dg.TableColumn("nulls", "int"),
        dg.TableColumn("null_rate", "float"),
        dg.TableColumn("distinct", "int"),
        dg.TableColumn("min", "string"),
        dg.TableColumn("max", "string"),
        dg.TableColumn("avg", "string"),
        dg.TableColumn("top", "string"),
    ]
)


def stats_table(profile: TableProfile) -> dg.TableMetadataValue:
    """Per-column statistics as a table for the asset's metadata."""
    records = [
        dg.TableRecord(
            {
                "column": col.name,
                "type": col.data_type,
                "inferred": col.inferred_type,
                "pattern": col.pattern or "",
                "nulls": col.null_count,
                "null_rate": round(col.null_rate, 4),
                "distinct": col.distinct_count,
                "min": (col.min_value or "")[:60],
                "max": (col.max_value or "")[:60],
                "avg": _format_value(col.avg_value),
                "top": ", ".join(f"{t.value[:30]} ({t.count})" for t in col.top_values),
            }
        )
        for col in profile.columns
    ]
    return dg.MetadataValue.table(records, schema=_STATS_SCHEMA)


def summary_markdown(profile: TableProfile) -> str:
    scope = f" for tenant `{profile.tenant_id}`" if profile.tenant_id is not None else ""
    keys = ", ".join("(" + ", ".join(k) + ")" for k in profile.candidate_keys) or "none"
    lines = [
        f"**{profile.qualified_name}**{scope}: {profile.row_count:,} rows, {len(profile.columns)} columns, "
        f"profiled in {profile.seconds:.2f} s",
        "",
        f"- candidate keys: {keys}",
    ]
    if profile.foreign_keys:
        lines.append("- candidate foreign keys:")
        lines += [
            f"  - {fk.column} → {fk.ref_qualified_name} ({fk.contained}/{fk.distinct_values} values, {fk.coverage:.1%})"
            for fk in profile.foreign_keys
        ]
    else:
        lines.append("- candidate foreign keys: none")
    patterned = [f"{c.name}: {c.pattern}" for c in profile.columns if c.pattern]
    if patterned:
        lines.append(f"- patterns: {', '.join(patterned)}")
    return "\n".join(lines)


def profile_metadata(profile: TableProfile) -> dict[str, Any]:
    """Everything a profiling asset attaches to its materialization."""
    return {
        "dagster/row_count": dg.MetadataValue.int(profile.row_count),
        "dagster/column_schema": column_schema(profile),
        "profile_stats": stats_table(profile),
        "summary": dg.MetadataValue.md(summary_markdown(profile)),
        "candidate_keys": dg.MetadataValue.json([list(k) for k in profile.candidate_keys]),
        "candidate_foreign_keys": dg.MetadataValue.json(
            [
                {"column": fk.column, "references": fk.ref_qualified_name, "coverage": round(fk.coverage, 4)}
                for fk in profile.foreign_keys
            ]
        ),
        "profile_seconds": dg.MetadataValue.float(round(profile.seconds, 3)),
    }
