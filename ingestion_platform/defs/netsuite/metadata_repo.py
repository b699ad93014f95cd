"""The metadata repository: data source -> schema -> table -> column -> profile statistics, with history.

The replaced service kept this hierarchy in Azure SQL; here it is five (plus one) warehouse tables in schema
`metadata`, written only through the loader:
- `data_sources`: one row per tenant's NetSuite account: non-secret connection facts, the names of the env vars
  holding its credentials (never the secrets), its refresh schedule;
- `schemas`, `tables`, `columns`: the current state (a table's latest row count and key candidates, a column's type,
  inferred type, sample values, when it was first and last seen, and when it disappeared);
- `profile_runs`: one row per profile run (table-level statistics: row count, key and foreign-key candidates);
- `profile_stats`: one row per column per profile run: the history anomaly checks compare against.

Idempotency: a profile run's id is derived from the Dagster run id and what was profiled, its statistics replace
the run's slice of `profile_stats`, and every other table is merged on its natural key, so recording the same run
twice leaves the same rows as recording it once. `profile_runs` is written last, after the statistics, and history
is read through it, so a run that failed half-way is never seen as history.
"""

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pandas as pd

from ingestion_platform.defs.netsuite.profiling import ColumnProfile, TableProfile, key_column_profile
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.tenants import NetSuiteSettings
from ingestion_platform.warehouse import Column, LoadResult, TableSpec

SCHEMA = "metadata"
# uuid5 namespace for profile run ids: the same Dagster run profiling the same table gets the same id.
_RUN_NAMESPACE = uuid.UUID("0b7c6f2e-5d1a-4c4e-9a57-3f1d2e8b9c10")
SAMPLE_VALUES = 5

DATA_SOURCES = TableSpec(
    schema=SCHEMA,
    name="data_sources",
    columns=(
        Column("data_source_id", "text", nullable=False, description="netsuite/<tenant>"),
        Column("tenant_id", "text", nullable=False),
        Column("source_type", "text", nullable=False, description="netsuite"),
        Column("name", "text", nullable=False),
        Column("connection", "jsonb", description="non-secret connection facts: account id, REST base URL, auth"),
        Column("credentials_ref", "jsonb", description="names of the env vars holding the secrets, never values"),
        Column("refresh_schedule", "text", description="cron schedule of the loads"),
        Column("updated_at", "timestamptz", nullable=False),
    ),
    key=("data_source_id",),
)

SCHEMAS = TableSpec(
    schema=SCHEMA,
    name="schemas",
    columns=(
        Column("data_source_id", "text", nullable=False),
        Column("schema_name", "text", nullable=False, description="the warehouse schema holding the tables"),
        Column("description", "text"),
        Column("updated_at", "timestamptz", nullable=False),
    ),
    key=("data_source_id", "schema_name"),
)

TABLES = TableSpec(
    schema=SCHEMA,
    name="tables",
    columns=(
        Column("data_source_id", "text", nullable=False),
        Column("schema_name", "text", nullable=False),
        Column("table_name", "text", nullable=False),
        Column("row_count", "bigint", nullable=False, description="rows in scope at the last profile"),
        Column("column_count", "integer", nullable=False),
        Column("candidate_keys", "jsonb", description="JSON list of column lists unique and non-null"),
        Column("foreign_keys", "jsonb", description="candidate foreign keys of the last profile"),
        Column("last_profile_run_id", "text", nullable=False),
        Column("last_profiled_at", "timestamptz", nullable=False),
    ),
    key=("data_source_id", "schema_name", "table_name"),
)

COLUMNS = TableSpec(
    schema=SCHEMA,
    name="columns",
    columns=(
        Column("data_source_id", "text", nullable=False),
        Column("schema_name", "text", nullable=False),
        Column("table_name", "text", nullable=False),
        Column("column_name", "text", nullable=False),
        Column("ordinal_position", "integer"),
        Column("data_type", "text", nullable=False, description="the warehouse column type"),
        Column("inferred_type", "text", description="what the values are: integer, date, email, ..."),
        Column("pattern", "text", description="dominant value pattern (email, phone, uuid, date_mdy, ...)"),
        Column("is_nullable", "boolean", description="nulls seen at the last profile"),
        Column("is_candidate_key", "boolean"),
        Column("sample_values", "jsonb", description="most frequent values of the last profile"),
        Column("first_seen_at", "timestamptz", nullable=False),
        Column("last_seen_at", "timestamptz", nullable=False),
        Column("removed_at", "timestamptz", description="the first profile that no longer saw the column"),
    ),
    key=("data_source_id", "schema_name", "table_name", "column_name"),
)

PROFILE_RUNS = TableSpec(
    schema=SCHEMA,
    name="profile_runs",
    columns=(
        Column("profile_run_id", "text", nullable=False),
        Column("run_id", "text", nullable=False, description="the Dagster run that profiled"),
        Column("data_source_id", "text", nullable=False),
        Column("schema_name", "text", nullable=False),
        Column("table_name", "text", nullable=False),
        Column("tenant_id", "text", description="the tenant the profile was scoped to; NULL for the whole table"),
        Column("profiled_at", "timestamptz", nullable=False),
        Column("row_count", "bigint", nullable=False),
        Column("column_count", "integer", nullable=False),
        Column("candidate_keys", "jsonb"),
        Column("foreign_keys", "jsonb"),
        Column("seconds", "double precision"),
    ),
    key=("profile_run_id",),
    indexes=(("data_source_id", "schema_name", "table_name", "profiled_at"),),
)

PROFILE_STATS = TableSpec(
    schema=SCHEMA,
    name="profile_stats",
    columns=(
        Column("profile_run_id", "text", nullable=False),
        Column("column_name", "text", nullable=False),
        Column("data_source_id", "text", nullable=False),
        Column("schema_name", "text", nullable=False),
        Column("table_name", "text", nullable=False),
        Column("profiled_at", "timestamptz", nullable=False),
        Column("ordinal_position", "integer"),
        Column("data_type", "text", nullable=False),
        Column("inferred_type", "text"),
        Column("pattern", "text"),
        Column("row_count", "bigint", nullable=False),
        Column("null_count", "bigint", nullable=False),
        Column("null_rate", "double precision", nullable=False),
        Column("distinct_count", "bigint", nullable=False),
        Column("min_value", "text"),
        Column("max_value", "text"),
        Column("avg_value", "text", description="a number, or an ISO timestamp for dates"),
        Column("min_length", "integer"),
        Column("max_length", "integer"),
        Column("top_values", "jsonb", description="[[value, count], ...] most frequent first"),
        Column("pattern_shares", "jsonb", description="share of non-null values matching each pattern"),
        Column("is_unique", "boolean"),
    ),
    key=("profile_run_id", "column_name"),
    indexes=(("data_source_id", "schema_name", "table_name", "profiled_at"),),
)

REPOSITORY_TABLES = (DATA_SOURCES, SCHEMAS, TABLES, COLUMNS, PROFILE_RUNS, PROFILE_STATS)


@dataclass(frozen=True)
class DataSource:
    data_source_id: str
    tenant_id: str
    source_type: str
    name: str
    connection: Mapping[str, Any] = field(default_factory=dict)
    credentials_ref: Mapping[str, str] = field(default_factory=dict)
    refresh_schedule: str | None = None


def netsuite_data_source(
    tenant_id: str, settings: NetSuiteSettings, *, refresh_schedule: str | None = None
) -> DataSource:
    """The tenant's NetSuite account as a data source: the env var names of its secrets, never their values."""
    secret_fields = (
        "consumer_key_env",
        "consumer_secret_env",
        "token_id_env",
        "token_secret_env",
        "client_id_env",
        "certificate_id_env",
        "private_key_env",
    )
    return DataSource(
        data_source_id=f"netsuite/{tenant_id}",
        tenant_id=tenant_id,
        source_type="netsuite",
        name=f"NetSuite account {settings.account_id}",
        connection={
            "account_id": settings.account_id,
            "auth": settings.auth,
            "base_url": settings.base_url,
            "tables": list(settings.tables),
            "start_date": settings.start_date,
        },
        credentials_ref={name: value for name in secret_fields if (value := getattr(settings, name))},
        refresh_schedule=refresh_schedule,
    )


def profile_run_id(run_id: str, source: DataSource, profile: TableProfile) -> str:
    scope = profile.tenant_id if profile.tenant_id is not None else "*"
    return str(uuid.uuid5(_RUN_NAMESPACE, f"{run_id}|{source.data_source_id}|{profile.qualified_name}|{scope}"))


def _json(value: Any) -> str:
    return json.dumps(value, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))


def _avg_text(col: ColumnProfile) -> str | None:
    if col.avg_value is None:
        return None
    return col.avg_value.isoformat() if isinstance(col.avg_value, datetime) else repr(col.avg_value)


@dataclass(frozen=True)
class RecordedProfile:
    profile_run_id: str
    loads: tuple[LoadResult, ...]
    removed_columns: tuple[str, ...]


def record_profile(
    warehouse: WarehouseResource, source: DataSource, profile: TableProfile, *, run_id: str
) -> RecordedProfile:
    """Write `profile` into the repository as profile run `run_id` (a Dagster run id); safe to repeat."""
    run = profile_run_id(run_id, source, profile)
    at = profile.profiled_at
    where = {"data_source_id": source.data_source_id, "schema_name": profile.schema, "table_name": profile.table}
    keys = [list(k) for k in profile.candidate_keys]
    fks = [
        {
            "column": fk.column,
            "ref_schema": fk.ref_schema,
            "ref_table": fk.ref_table,
            "ref_column": fk.ref_column,
            "distinct_values": fk.distinct_values,
            "contained": fk.contained,
        }
        for fk in profile.foreign_keys
    ]
    single_keys = {k[0] for k in profile.candidate_keys if len(k) == 1}
    loads = [
        warehouse.load(
            DATA_SOURCES,
            [
                pd.DataFrame(
                    [
                        {
                            "data_source_id": source.data_source_id,
                            "tenant_id": source.tenant_id,
                            "source_type": source.source_type,
                            "name": source.name,
                            "connection": _json(source.connection),
                            "credentials_ref": _json(source.credentials_ref),
                            "refresh_schedule": source.refresh_schedule,
                            "updated_at": at,
                        }
                    ]
                )
            ],
            mode="merge",
        ),
        warehouse.load(
            SCHEMAS,
            [pd.DataFrame([{**_pick(where, "data_source_id", "schema_name"), "description": None, "updated_at": at}])],
            mode="merge",
        ),
        warehouse.load(
            PROFILE_STATS,
            [
                pd.DataFrame(
                    [
                        {
                            "profile_run_id": run,
                            "column_name": col.name,
                            **where,
                            "profiled_at": at,
                            "ordinal_position": col.ordinal,
                            "data_type": col.data_type,
                            "inferred_type": col.inferred_type,
                            "pattern": col.pattern,
                            "row_count": profile.row_count,
                            "null_count": col.null_count,
                            "null_rate": col.null_rate,
                            "distinct_count": col.distinct_count,
                            "min_value": col.min_value,
                            "max_value": col.max_value,
                            "avg_value": _avg_text(col),
                            "min_length": col.min_length,
                            "max_length": col.max_length,
                            "top_values": _json([[t.value, t.count] for t in col.top_values]),
                            "pattern_shares": _json(dict(col.pattern_shares)) if col.pattern_shares else None,
                            "is_unique": col.is_unique,
                        }
                        for col in profile.columns
                    ]
                ).astype({"ordinal_position": "Int32", "min_length": "Int32", "max_length": "Int32"})
            ],
            mode="replace",
            slice_={"profile_run_id": [run]},
        ),
    ]
    removed, columns_load = _record_columns(warehouse, where, profile, single_keys)
    loads.append(columns_load)
    loads.append(
        warehouse.load(
            TABLES,
            [
                pd.DataFrame(
                    [
                        {
                            **where,
                            "row_count": profile.row_count,
                            "column_count": len(profile.columns),
                            "candidate_keys": _json(keys),
                            "foreign_keys": _json(fks),
                            "last_profile_run_id": run,
                            "last_profiled_at": at,
                        }
                    ]
                )
            ],
            mode="merge",
        )
    )
    loads.append(
        warehouse.load(
            PROFILE_RUNS,
            [
                pd.DataFrame(
                    [
                        {
                            "profile_run_id": run,
                            "run_id": run_id,
                            **where,
                            "tenant_id": profile.tenant_id,
                            "profiled_at": at,
                            "row_count": profile.row_count,
                            "column_count": len(profile.columns),
                            "candidate_keys": _json(keys),
                            "foreign_keys": _json(fks),
                            "seconds": profile.seconds,
                        }
                    ]
                )
            ],
            mode="merge",
        )
    )
    return RecordedProfile(run, tuple(loads), removed)


def _pick(mapping: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {name: mapping[name] for name in names}


def _record_columns(
    warehouse: WarehouseResource, where: Mapping[str, Any], profile: TableProfile, single_keys: set[str]
) -> tuple[tuple[str, ...], LoadResult]:
    """Merge the profiled columns, keeping when each was first seen, and mark columns no longer present as removed.

    Reads then writes without a lock: profiles of one table for one data source run one at a time (one asset
    partition), and a lost race would only misdate `first_seen_at`.
    """
    known = _known_columns(warehouse, where)
    at = profile.profiled_at
    rows = [
        {
            **where,
            "column_name": col.name,
            "ordinal_position": col.ordinal,
            "data_type": col.data_type,
            "inferred_type": col.inferred_type,
            "pattern": col.pattern,
            "is_nullable": col.null_count > 0,
            "is_candidate_key": col.name in single_keys,
            "sample_values": _json([t.value for t in col.top_values[:SAMPLE_VALUES]]),
            "first_seen_at": min(known[col.name]["first_seen_at"], at) if col.name in known else at,
            "last_seen_at": at,
            "removed_at": None,
        }
        for col in profile.columns
    ]
    present = {col.name for col in profile.columns}
    removed = sorted(
        name
        for name, row in known.items()
        if name not in present and (pd.isna(row["removed_at"]) or row["removed_at"] > at)
    )
    rows += [{**known[name], **where, "column_name": name, "removed_at": at} for name in removed]
    frame = pd.DataFrame(rows).astype({"ordinal_position": "Int32"})
    frame["removed_at"] = pd.to_datetime(frame["removed_at"], utc=True)
    frame["first_seen_at"] = pd.to_datetime(frame["first_seen_at"], utc=True)
    frame["last_seen_at"] = pd.to_datetime(frame["last_seen_at"], utc=True)
    return tuple(removed), warehouse.load(COLUMNS, [frame], mode="merge")


def _known_columns(warehouse: WarehouseResource, where: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    if not _exists(warehouse, COLUMNS):
        return {}
    frame = warehouse.query(
        "SELECT column_name, ordinal_position, data_type, inferred_type, pattern, is_nullable, is_candidate_key, "
        "sample_values::text AS sample_values, first_seen_at, last_seen_at, removed_at FROM metadata.columns "
        "WHERE data_source_id = :data_source_id AND schema_name = :schema_name AND table_name = :table_name",
        where,
    )
    return {row["column_name"]: row for row in frame.to_dict("records")}


def _exists(warehouse: WarehouseResource, spec: TableSpec) -> bool:
    return bool(warehouse.scalar("SELECT to_regclass(:name) IS NOT NULL", {"name": spec.qualified_name}))


@dataclass(frozen=True)
class ColumnSnapshot:
    name: str
    data_type: str
    inferred_type: str | None
    null_count: int
    null_rate: float


@dataclass(frozen=True)
class ProfileSnapshot:
    """A recorded profile run as history: what drift and anomaly checks compare a new profile with."""

    profile_run_id: str
    profiled_at: datetime
    row_count: int
    columns: Mapping[str, ColumnSnapshot]


def profile_history(
    warehouse: WarehouseResource,
    data_source_id: str,
    schema: str,
    table: str,
    *,
    limit: int = 10,
    before: datetime | None = None,
    exclude_run_id: str | None = None,
) -> list[ProfileSnapshot]:
    """The latest `limit` recorded profiles of a table (newest first), optionally only those before a time and
    without a given profile run (the one being checked)."""
    if not _exists(warehouse, PROFILE_RUNS):
        return []
    params: dict[str, Any] = {
        "data_source_id": data_source_id,
        "schema_name": schema,
        "table_name": table,
        "before": before,
        "exclude": exclude_run_id,
        "limit": limit,
    }
    runs = warehouse.query(
        "SELECT profile_run_id, profiled_at, row_count FROM metadata.profile_runs "
        "WHERE data_source_id = :data_source_id AND schema_name = :schema_name AND table_name = :table_name "
        "AND (CAST(:before AS timestamptz) IS NULL OR profiled_at < :before) "
        "AND (CAST(:exclude AS text) IS NULL OR profile_run_id <> :exclude) "
        "ORDER BY profiled_at DESC, profile_run_id LIMIT :limit",
        params,
    )
    if runs.empty:
        return []
    stats = warehouse.query(
        "SELECT profile_run_id, column_name, data_type, inferred_type, null_count, null_rate "
        "FROM metadata.profile_stats WHERE profile_run_id = ANY(:runs)",
        {"runs": runs["profile_run_id"].tolist()},
    )
    by_run: dict[str, dict[str, ColumnSnapshot]] = {}
    for row in stats.itertuples(index=False):
        by_run.setdefault(str(row.profile_run_id), {})[str(row.column_name)] = ColumnSnapshot(
            name=str(row.column_name),
            data_type=str(row.data_type),
            inferred_type=None if pd.isna(row.inferred_type) else str(row.inferred_type),
            null_count=int(row.null_count),
            null_rate=float(row.null_rate),
        )
    return [
        ProfileSnapshot(
            profile_run_id=str(r.profile_run_id),
            profiled_at=pd.Timestamp(r.profiled_at).to_pydatetime(),
            row_count=int(r.row_count),
            columns=by_run.get(str(r.profile_run_id), {}),
        )
        for r in runs.itertuples(index=False)
    ]


def snapshot_of(profile: TableProfile, profile_run_id: str = "") -> ProfileSnapshot:
    """A fresh profile in the shape of history, so drift and anomaly checks treat both alike."""
    return ProfileSnapshot(
        profile_run_id=profile_run_id,
        profiled_at=profile.profiled_at,
        row_count=profile.row_count,
        columns={
            c.name: ColumnSnapshot(c.name, c.data_type, c.inferred_type, c.null_count, c.null_rate)
            for c in profile.columns
        },
    )


def reference_profiles(
    warehouse: WarehouseResource,
    source: DataSource,
    schema: str,
    *,
    exclude_table: str,
    tenant_column: str = "tenant_id",
) -> list[TableProfile]:
    """The other tables of `source` as their last recorded profiles, reduced to their single-column keys: what
    foreign-key detection compares a table's columns with, without profiling every other table again.

    Only key columns that still exist in the warehouse are returned, so a table dropped or a column renamed since
    its last profile is never joined. A table not profiled yet is simply absent (its keys count from its first
    profile on).
    """
    if not (_exists(warehouse, TABLES) and _exists(warehouse, PROFILE_STATS)):
        return []
    frame = warehouse.query(
        "SELECT t.table_name, t.last_profiled_at, s.row_count, s.column_name, s.ordinal_position, s.data_type, "
        "s.inferred_type, s.null_count, s.distinct_count "
        "FROM metadata.tables t JOIN metadata.profile_stats s ON s.profile_run_id = t.last_profile_run_id "
        "JOIN information_schema.columns c "
        "ON (c.table_schema, c.table_name, c.column_name) = (t.schema_name, t.table_name, s.column_name) "
        "WHERE t.data_source_id = :data_source_id AND t.schema_name = :schema_name AND t.table_name <> :exclude "
        "AND s.is_unique AND s.column_name <> :tenant_column ORDER BY t.table_name, s.ordinal_position",
        {
            "data_source_id": source.data_source_id,
            "schema_name": schema,
            "exclude": exclude_table,
            "tenant_column": tenant_column,
        },
    )
    profiles = []
    for table, rows in frame.groupby("table_name", sort=True):
        columns = tuple(
            replace(
                key_column_profile(
                    str(r.column_name),
                    int(r.ordinal_position),
                    str(r.data_type),
                    int(r.row_count) - int(r.null_count),
                    int(r.distinct_count),
                ),
                inferred_type=str(r.inferred_type),
            )
            for r in rows.itertuples(index=False)
        )
        first = rows.iloc[0]
        profiles.append(
            TableProfile(
                schema=schema,
                table=str(table),
                tenant_id=source.tenant_id,
                profiled_at=pd.Timestamp(first["last_profiled_at"]).to_pydatetime(),
                row_count=int(first["row_count"]),
                columns=columns,
                candidate_keys=tuple((c.name,) for c in columns),
                tenant_column=tenant_column,
            )
        )
    return profiles


def repository_summary(warehouse: WarehouseResource) -> list[str]:
    """One line per profiled table and tenant from `metadata.tables`: what an operator reads after a demo or a
    backfill (rows, columns, candidate keys, candidate foreign keys), newest profile only."""
    if not _exists(warehouse, TABLES):
        return []
    frame = warehouse.query(
        "SELECT d.tenant_id, t.schema_name || '.' || t.table_name AS name, t.row_count, t.column_count, "
        "t.candidate_keys::text AS keys, t.foreign_keys::text AS fks "
        "FROM metadata.tables t JOIN metadata.data_sources d ON d.data_source_id = t.data_source_id "
        "ORDER BY t.schema_name, t.table_name, d.tenant_id"
    )
    lines = [f"{'profile':<28}{'tenant':<10}{'rows':>8}{'columns':>9}  candidate keys; foreign keys"]
    for r in frame.itertuples(index=False):
        keys = ", ".join("(" + ", ".join(k) + ")" for k in json.loads(r.keys or "[]")) or "none"
        fks = ", ".join(f"{fk['column']} -> {fk['ref_table']}.{fk['ref_column']}" for fk in json.loads(r.fks or "[]"))
        lines.append(f"{r.name:<28}{r.tenant_id:<10}{r.row_count:>8}{r.column_count:>9}  {keys}; {fks or 'none'}")
    return lines
