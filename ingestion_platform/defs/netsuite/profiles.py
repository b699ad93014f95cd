"""`netsuite/profile`: one asset, partitioned by tenant, that profiles the tenant's loaded NetSuite tables.

A profile describes a whole loaded table of one tenant (every day ever loaded), not one day's rows: a day
partition's rows are only the rows modified that day, whose row count, null rates and key candidates mean nothing
about the table. So the asset is partitioned by tenant alone and depends on every day partition of that tenant's
`netsuite/<table>` assets (`MultiToSingleDimensionPartitionMapping` on the tenant dimension).

It runs by declarative automation once the tenant's loads are done: after any of their day partitions is updated,
and only while none is in progress. A backfill from the start date is one run per table (single-run backfill
policy), so 300 day partitions yield one profile after the runs, not 300; the daily schedule's two-day run yields
one per day. The running `automation` sensor (defs/platform) evaluates the condition.

A step profiles the tables loaded for the tenant since its last profile (read from the instance's event log), plus
any table never profiled; with no such table (a run asked for by hand) it profiles them all. Tables are profiled
reference tables first and `transaction`, `transactionline` last: foreign-key candidates are looked for in the
other tables' last recorded profiles of the same tenant (`reference_profiles`) and, for a table not profiled yet,
in its declared key (`declared_key_profile`), so the first profiles of a tenant find each other's ids, and a
transaction line is compared with reference profiles of this very run.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg
from psycopg import sql

from ingestion_platform.assets import OWNERS
from ingestion_platform.defs.netsuite.assets import configured_tables
from ingestion_platform.defs.netsuite.extract import SCHEMA, TENANT, base_spec
from ingestion_platform.defs.netsuite.metadata_repo import netsuite_data_source, profiled_tables, reference_profiles
from ingestion_platform.defs.netsuite.profile_run import (
    ANOMALY_CHECK,
    KEY_CHECK,
    SCHEMA_DRIFT_CHECK,
    ProfileOutcome,
    combined_check_results,
    run_profile,
)
from ingestion_platform.defs.netsuite.profiling import (
    column_schema,
    declared_key_profile,
    stats_table,
    summary_markdown,
)
from ingestion_platform.defs.netsuite.schedules import NETSUITE_DAILY_CRON
from ingestion_platform.defs.netsuite.suiteql import key_column
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.retry import STEP_RETRY
from ingestion_platform.tenants import TENANT_DIMENSION, TENANT_PARTITIONS, TenantConfigError

PROFILE_KEY = dg.AssetKey(["netsuite", "profile"])
# Profiles scan whole tables in the warehouse: their own pool, so a burst of them cannot crowd out the loads.
PROFILE_POOL = "netsuite_profile"
BY_TENANT = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=TENANT_DIMENSION)
# Tables that reference the others: profiled last, so the tables they point at have a profile of this run.
_REFERENCING = ("transaction", "transactionline")
_EVENT_PAGE = 500

PROFILE_AFTER_LOADS = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("profile once this tenant's loads are done")

CHECK_DESCRIPTIONS = {
    SCHEMA_DRIFT_CHECK: "Columns added, removed or retyped (or whose values changed kind) since the previous "
    "profile of each profiled table of this tenant. WARN: the load already evolved the table; readers may not "
    "have. Fails if any table drifted; the metadata names the tables and the changes.",
    ANOMALY_CHECK: "Row count and per-column null rates of each profiled table against its last profiles (z-score "
    "with a minimum effect, a drop to zero always). WARN: a jump is worth a look, not always an error.",
    KEY_CHECK: "Each profiled table's key is unique and non-null over this tenant's loaded rows (a duplicate or NULL "
    "key means the table was written outside the loader). Fails if any table fails.",
}


def table_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["netsuite", table])


def fk_order(tables: Iterable[str]) -> list[str]:
    """Referenced tables first, then `transaction`, then `transactionline`; otherwise the given order."""
    return sorted(tables, key=lambda t: _REFERENCING.index(t) + 1 if t in _REFERENCING else 0)


def _skipped(reason: str) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"skipped": reason},
        check_results=[
            dg.AssetCheckResult(check_name=name, passed=True, description=f"skipped: {reason}")
            for name in CHECK_DESCRIPTIONS
        ],
    )


def loaded_since_last_profile(instance: dg.DagsterInstance, tenant_id: str, tables: Sequence[str]) -> set[str] | None:
    """The tables with a load of `tenant_id` recorded since the tenant's last `netsuite/profile` run started (a load
    that finished while that run was profiling may have been missed by it); None before the first profile. Reads
    only the event log records newer than that, newest first, and stops at the first one of the tenant, so the
    cost follows the loads since the last profile, not the table's history."""
    last = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=PROFILE_KEY, asset_partitions=[tenant_id]), limit=1
    ).records
    if not last:
        return None
    run = instance.get_run_record_by_id(last[0].run_id)
    started = run.start_time if run is not None else None
    loaded = set()
    for table in tables:
        since = (
            dg.AssetRecordsFilter(asset_key=table_key(table), after_timestamp=started)
            if started is not None
            else dg.AssetRecordsFilter(asset_key=table_key(table), after_storage_id=last[0].storage_id)
        )
        cursor = None
        while True:
            page = instance.fetch_materializations(since, limit=_EVENT_PAGE, cursor=cursor)
            if any((r.partition_key or "").rsplit("|", 1)[-1] == tenant_id for r in page.records):
                loaded.add(table)
                break
            if not page.has_more:
                break
            cursor = page.cursor
    return loaded


def _has_rows(warehouse: WarehouseResource, table: str, tenant_id: str) -> bool:
    spec = base_spec(table)
    if not warehouse.scalar("SELECT to_regclass(:name) IS NOT NULL", {"name": spec.qualified_name}):
        return False
    statement = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {} = %s)").format(
        sql.Identifier(spec.schema, spec.name), sql.Identifier(TENANT)
    )
    with warehouse.raw_connection() as conn:
        row = conn.execute(statement, (tenant_id,)).fetchone()
    return bool(row and row[0])


_SUMMARY_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("table", "string"),
        dg.TableColumn("rows", "int"),
        dg.TableColumn("columns", "int"),
        dg.TableColumn("candidate_keys", "string"),
        dg.TableColumn("foreign_keys", "string"),
        dg.TableColumn("schema_drift", "string"),
        dg.TableColumn("anomalies", "int"),
        dg.TableColumn("key_unique", "bool"),
        dg.TableColumn("history_profiles", "int"),
        dg.TableColumn("seconds", "float"),
    ]
)


def profiles_metadata(outcomes: dict[str, ProfileOutcome]) -> dict[str, Any]:
    """What the UI shows for one run: a row per profiled table, each table's column schema (with its statistics in
    the column descriptions) and statistics table, and the candidate keys and foreign keys by table."""
    records = [
        dg.TableRecord(
            {
                "table": o.profile.qualified_name,
                "rows": o.profile.row_count,
                "columns": len(o.profile.columns),
                "candidate_keys": ", ".join("(" + ", ".join(k) + ")" for k in o.profile.candidate_keys),
                "foreign_keys": ", ".join(f"{fk.column} -> {fk.ref_qualified_name}" for fk in o.profile.foreign_keys),
                "schema_drift": o.drift.describe(),
                "anomalies": len(o.anomalies),
                "key_unique": o.key_check.passed,
                "history_profiles": len(o.history),
                "seconds": round(o.profile.seconds, 3),
            }
        )
        for o in outcomes.values()
    ]
    return {
        "tables_profiled": dg.MetadataValue.json(list(outcomes)),
        "profiles": dg.MetadataValue.table(records, schema=_SUMMARY_SCHEMA),
        "summary": dg.MetadataValue.md(
            "\n\n".join(
                f"{summary_markdown(o.profile)}\n- schema drift: {o.drift.describe()}" for o in outcomes.values()
            )
        ),
        "rows_profiled": dg.MetadataValue.int(sum(o.profile.row_count for o in outcomes.values())),
        "profile_seconds": dg.MetadataValue.float(round(sum(o.profile.seconds for o in outcomes.values()), 3)),
        "profile_run_ids": dg.MetadataValue.json({t: o.recorded.profile_run_id for t, o in outcomes.items()}),
        "candidate_keys": dg.MetadataValue.json(
            {t: [list(k) for k in o.profile.candidate_keys] for t, o in outcomes.items()}
        ),
        "candidate_foreign_keys": dg.MetadataValue.json(
            {
                t: [
                    {"column": fk.column, "references": fk.ref_qualified_name, "coverage": round(fk.coverage, 4)}
                    for fk in o.profile.foreign_keys
                ]
                for t, o in outcomes.items()
            }
        ),
        **{f"columns/{t}": dg.MetadataValue.table_schema(column_schema(o.profile)) for t, o in outcomes.items()},
        **{f"profile_stats/{t}": stats_table(o.profile) for t, o in outcomes.items()},
    }


def build_profile_asset(tables: Sequence[str]) -> dg.AssetsDefinition:
    """The `netsuite/profile` asset over the `netsuite/<table>` assets of `tables`."""
    specs = {table: base_spec(table) for table in fk_order(tables)}

    @dg.asset(
        key=PROFILE_KEY,
        description=(
            "Profiles of this tenant's loaded NetSuite tables, computed in the warehouse: row count, nulls, distinct "
            "counts, ranges, top values, inferred types and patterns, key and foreign-key candidates; recorded with "
            "history in `metadata.*` and shown per table as a column schema (`columns/<table>`)."
        ),
        group_name="netsuite",
        deps=[dg.AssetDep(table_key(table), partition_mapping=BY_TENANT) for table in specs],
        partitions_def=TENANT_PARTITIONS,
        automation_condition=PROFILE_AFTER_LOADS,
        retry_policy=STEP_RETRY,
        pool=PROFILE_POOL,
        kinds={"postgres"},
        owners=list(OWNERS),
        tags={"source": "netsuite"},
        check_specs=[
            dg.AssetCheckSpec(name, asset=PROFILE_KEY, description=description, partitions_def=TENANT_PARTITIONS)
            for name, description in CHECK_DESCRIPTIONS.items()
        ],
    )
    def _profile(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, tenants: TenantsResource
    ) -> dg.MaterializeResult:
        tenant_id = context.partition_key
        try:
            settings = tenants.registry().get(tenant_id).netsuite()
        except TenantConfigError as exc:
            return _skipped(str(exc))
        wanted = [table for table in specs if table in settings.tables]
        if not wanted:
            return _skipped(f"none of {', '.join(specs)} is in tenant {tenant_id!r}'s NetSuite tables")
        present = [table for table in wanted if _has_rows(warehouse, table, tenant_id)]
        skipped = {table: "nothing loaded" for table in wanted if table not in present}
        if not present:
            return _skipped(f"nothing loaded for tenant {tenant_id!r} in {', '.join(wanted)}")
        source = netsuite_data_source(tenant_id, settings, refresh_schedule=NETSUITE_DAILY_CRON)
        loaded = loaded_since_last_profile(context.instance, tenant_id, present)
        if loaded is None:
            chosen, scope = present, "all tables: first profile of this tenant"
        else:
            never = set(present) - profiled_tables(warehouse, source, SCHEMA)
            chosen = [table for table in present if table in loaded or table in never]
            scope = "tables loaded since the last profile, and any never profiled"
            if not chosen:
                chosen, scope = present, "all tables: nothing loaded since the last profile (a requested re-profile)"
        outcomes: dict[str, ProfileOutcome] = {}
        for table in chosen:
            references = reference_profiles(warehouse, source, SCHEMA, exclude_table=table, tenant_column=TENANT)
            profiled = {ref.table for ref in references}
            for other in settings.tables:  # not profiled yet: its declared key stands in until it is
                if other != table and other not in profiled:
                    declared = declared_key_profile(warehouse, SCHEMA, other, key_column(other), tenant_id=tenant_id)
                    references += [declared] if declared is not None else []
            outcome = run_profile(
                warehouse,
                source,
                SCHEMA,
                table,
                run_id=context.run.run_id,
                key=specs[table].key,
                tenant_id=tenant_id,
                references=references,
            )
            context.log.info(
                f"{tenant_id}: {specs[table].qualified_name} {outcome.profile.row_count} rows, "
                f"{len(outcome.profile.columns)} columns, profiled in {outcome.profile.seconds:.2f} s; "
                f"{outcome.drift.describe()}"
            )
            outcomes[table] = outcome
        return dg.MaterializeResult(
            metadata={
                "tenant": tenant_id,
                "profile_scope": scope,
                "tables_skipped": dg.MetadataValue.json(skipped),
                **profiles_metadata(outcomes),
            },
            check_results=combined_check_results(outcomes),
        )

    return _profile


netsuite_profile = build_profile_asset(configured_tables())
