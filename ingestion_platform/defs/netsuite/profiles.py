"""`netsuite/profile/<table>`: one profile asset per loaded table, partitioned by tenant.

A profile describes the whole loaded table of one tenant (every day ever loaded), not one day's rows: a day
partition's rows are only the rows modified that day, whose row count, null rates and key candidates mean nothing
about the table. So the asset is partitioned by tenant alone and depends on every day partition of that tenant's
`netsuite/<table>` (`MultiToSingleDimensionPartitionMapping` on the tenant dimension).

It runs by declarative automation once the tenant's loads of the table are done: after any of its day partitions
is updated, and only while none is in progress. A backfill from the start date is one run (single-run backfill
policy), so 300 day partitions yield one profile after the run, not 300; the daily schedule's two-day run yields
one per day. The running `automation` sensor (defs/platform) evaluates the condition.

Foreign-key candidates are looked for in the other tables' last recorded profiles of the same tenant
(`reference_profiles`: every key candidate they found) and, for a table not profiled yet, in its declared key
(`declared_key_profile`), so the first profiles of a tenant find each other's ids in any order.
"""

import dagster as dg

from ingestion_platform.assets import OWNERS
from ingestion_platform.defs.netsuite.assets import configured_tables
from ingestion_platform.defs.netsuite.extract import SCHEMA, TENANT, base_spec
from ingestion_platform.defs.netsuite.metadata_repo import netsuite_data_source, reference_profiles
from ingestion_platform.defs.netsuite.profile_run import ANOMALY_CHECK, KEY_CHECK, SCHEMA_DRIFT_CHECK, run_profile
from ingestion_platform.defs.netsuite.profiling import declared_key_profile
from ingestion_platform.defs.netsuite.schedules import NETSUITE_DAILY_CRON
from ingestion_platform.defs.netsuite.suiteql import key_column
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.retry import STEP_RETRY
from ingestion_platform.tenants import TENANT_DIMENSION, TENANT_PARTITIONS, TenantConfigError

# Profiles scan whole tables in the warehouse: their own pool, so a burst of them cannot crowd out the loads.
PROFILE_POOL = "netsuite_profile"
BY_TENANT = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=TENANT_DIMENSION)

PROFILE_AFTER_LOADS = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("profile once this tenant's loads of the table are done")

CHECK_DESCRIPTIONS = {
    SCHEMA_DRIFT_CHECK: "Columns added, removed or retyped (or whose values changed kind) since the previous "
    "profile of this tenant's table. WARN: the load already evolved the table; readers may not have.",
    ANOMALY_CHECK: "Row count and per-column null rates against the last profiles (z-score with a minimum effect, "
    "a drop to zero always). WARN: a jump is worth a look, not always an error.",
    KEY_CHECK: "The table's key is unique and non-null over this tenant's loaded rows (a duplicate or NULL key "
    "means the table was written outside the loader).",
}


def profile_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["netsuite", "profile", table])


def _skipped(reason: str) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"skipped": reason},
        check_results=[
            dg.AssetCheckResult(check_name=name, passed=True, description=f"skipped: {reason}")
            for name in CHECK_DESCRIPTIONS
        ],
    )


def build_profile_asset(table: str) -> dg.AssetsDefinition:
    spec = base_spec(table)
    key = profile_key(table)

    @dg.asset(
        key=key,
        description=(
            f"Profile of `{spec.qualified_name}` per tenant, computed in the warehouse: row count, nulls, distinct "
            "counts, ranges, top values, inferred types and patterns, key and foreign-key candidates; recorded with "
            "history in `metadata.*` and shown as the column schema."
        ),
        group_name="netsuite",
        deps=[dg.AssetDep(dg.AssetKey(["netsuite", table]), partition_mapping=BY_TENANT)],
        partitions_def=TENANT_PARTITIONS,
        automation_condition=PROFILE_AFTER_LOADS,
        retry_policy=STEP_RETRY,
        pool=PROFILE_POOL,
        kinds={"postgres"},
        owners=list(OWNERS),
        tags={"source": "netsuite"},
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, description=description, partitions_def=TENANT_PARTITIONS)
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
        if table not in settings.tables:
            return _skipped(f"{table} is not in tenant {tenant_id!r}'s NetSuite tables")
        if not warehouse.scalar("SELECT to_regclass(:name) IS NOT NULL", {"name": spec.qualified_name}):
            return _skipped(f"{spec.qualified_name} is not loaded yet")
        source = netsuite_data_source(tenant_id, settings, refresh_schedule=NETSUITE_DAILY_CRON)
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
            key=spec.key,
            tenant_id=tenant_id,
            references=references,
        )
        context.log.info(
            f"{tenant_id}: {spec.qualified_name} {outcome.profile.row_count} rows, "
            f"{len(outcome.profile.columns)} columns, profiled in {outcome.profile.seconds:.2f} s; "
            f"{outcome.drift.describe()}"
        )
        return dg.MaterializeResult(
            metadata={**outcome.metadata(), "dagster/table_name": spec.qualified_name, "tenant": tenant_id},
            check_results=outcome.check_results(),
        )

    return _profile


netsuite_profile_assets = [build_profile_asset(table) for table in configured_tables()]
