"""The four commerce assets, one per table, partitioned by landing batch (`commerce_batch`: `<tenant>/<batch_id>`).

Why four assets and not one: the asset dependencies are the foreign-key order (customers and products before orders,
orders before order_items), and each table is its own step, so a run that fails at orders is re-executed from that
failure without reloading customers. Every asset runs even when its batch has no file for its table: the loader
then retries the parked rows whose parent an earlier step of this run may just have brought.
"""

import json
from typing import Any

import dagster as dg

from ingestion_platform.defs.commerce.batches import (
    MANIFEST_NAME,
    SUCCESS_MARKER,
    BatchState,
    batch_prefix,
    batch_state,
    split_partition_key,
)
from ingestion_platform.defs.commerce.load import EntityLoad, load_entity
from ingestion_platform.defs.commerce.ndjson import ENTITIES
from ingestion_platform.defs.commerce.tables import FOREIGN_KEYS, TABLES, ensure_commerce_tables
from ingestion_platform.metadata import definition_metadata, preview_md
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.retry import STEP_RETRY, per_tenant

BATCH_PARTITIONS = dg.DynamicPartitionsDefinition(name="commerce_batch")
PENDING_CHECK = "pending_age"
DEFAULT_PENDING_WARN_HOURS = 24.0


class CommerceLoadConfig(dg.Config):
    pending_warn_after_hours: float = DEFAULT_PENDING_WARN_HOURS
    """Parked rows (orphans waiting for their parent) older than this turn the `pending_age` check into a warning."""


def read_batch_state(store: ObjectStoreResource, tenant_id: str, batch_id: str) -> BatchState:
    """The batch folder's state from one listing (and its manifest, when there is one)."""
    prefix = batch_prefix(tenant_id, batch_id)
    listing = {o.key[len(prefix) :]: o.size for o in store.list(prefix)}
    manifest = store.get(prefix + MANIFEST_NAME) if MANIFEST_NAME in listing else None
    return batch_state(listing, manifest, tenant_id=tenant_id, batch_id=batch_id)


def _metadata(run: EntityLoad, state: BatchState) -> dict[str, Any]:
    result = run.result
    oldest_hours = None if run.oldest_pending_seconds is None else round(run.oldest_pending_seconds / 3600, 3)
    return {
        "dagster/row_count": dg.MetadataValue.int(result.inserted + result.updated),
        "files_loaded": dg.MetadataValue.json(
            [{"file": f.file_name, "rows_valid": f.rows_valid, "rows_rejected": f.rows_rejected} for f in run.files]
        ),
        "files_skipped_same_content": dg.MetadataValue.json(
            [{"file": name, "loaded_by_batch": prior.batch_id, "as": prior.name} for name, prior in run.skipped]
        ),
        "rows_staged": dg.MetadataValue.int(result.rows_staged),
        "inserted": dg.MetadataValue.int(result.inserted),
        "updated": dg.MetadataValue.int(result.updated),
        "duplicates_last_wins": dg.MetadataValue.int(run.duplicates_in_batch),
        "rejected": dg.MetadataValue.int(result.rejected),
        "reject_reasons": dg.MetadataValue.json(run.reject_reasons),
        "parked": dg.MetadataValue.int(result.parked),
        "unparked": dg.MetadataValue.int(result.unparked),
        "pending": dg.MetadataValue.int(run.pending_for_tenant),
        "oldest_pending_hours": dg.MetadataValue.float(oldest_hours) if oldest_hours is not None else None,
        "bytes_read": dg.MetadataValue.int(run.bytes_read),
        "bytes_copied": dg.MetadataValue.int(result.bytes_copied),
        "seconds": dg.MetadataValue.float(round(run.seconds, 3)),
        "transaction_seconds": dg.MetadataValue.float(round(result.transaction_seconds, 3)),
        "batch_completion": dg.MetadataValue.text(state.reason),
    }


def build_table_asset(table: str) -> dg.AssetsDefinition:
    spec = TABLES[table]
    parents = {parent for _, parent in FOREIGN_KEYS[table]}
    key = dg.AssetKey(["commerce", table])

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["commerce", p]) for p in sorted(parents)],
        partitions_def=BATCH_PARTITIONS,
        group_name="commerce",
        kinds={"ndjson", "postgres"},
        owners=["team:data-platform"],
        tags={"source": "commerce"},
        metadata=definition_metadata(spec),
        retry_policy=STEP_RETRY,
        check_specs=[
            dg.AssetCheckSpec(
                PENDING_CHECK,
                asset=key,
                description="Orphans of this table (parent still missing) parked no longer than the configured age.",
            )
        ],
        description=f"`commerce.{table}`: the batch's `{table}_*.ndjson[.gz]` files, validated, upserted by "
        f"(tenant_id, {ENTITIES[table].id_field}); bad rows in `commerce.rejects`, orphans parked in "
        "`commerce.pending` until their parent arrives.",
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: CommerceLoadConfig,
        warehouse: WarehouseResource,
        object_store: ObjectStoreResource,
    ) -> dg.MaterializeResult:
        tenant_id, batch_id = split_partition_key(context.partition_key)
        state = read_batch_state(object_store, tenant_id, batch_id)
        if not state.complete:
            raise dg.Failure(
                f"batch {context.partition_key} is not complete: {state.reason} "
                f"(needs {SUCCESS_MARKER} or a {MANIFEST_NAME} whose files are all present)",
                allow_retries=False,
            )
        files = state.by_entity()[table]
        done: dict[str, tuple[EntityLoad, list[dict[str, Any]]]] = {}

        def work(tenant: str, _: object) -> None:
            with warehouse.raw_connection() as conn:
                ensure_commerce_tables(conn)
                loaded = load_entity(conn, object_store, tenant, batch_id, table, files)
                with conn.cursor() as cur:
                    cur.execute(
                        f"SELECT * FROM commerce.{table} WHERE tenant_id = %s AND batch_id = %s LIMIT 5",
                        (tenant, batch_id),
                    )
                    names = [d.name for d in cur.description or []]
                    done[tenant] = (loaded, [dict(zip(names, row, strict=True)) for row in cur.fetchall()])

        # per_tenant turns a non-transient error into a Failure that is not retried (bad bytes stay bad).
        per_tenant({tenant_id: None}, work, context.log)
        run, preview = done[tenant_id]
        for name, prior in run.skipped:
            context.log.info(f"{name}: same content as {prior.name} of batch {prior.batch_id}, already loaded; skipped")
        if run.result.parked:
            context.log.warning(f"{run.result.parked} {table} row(s) parked: their parent is not loaded yet")
        limit = config.pending_warn_after_hours * 3600
        oldest = run.oldest_pending_seconds
        metadata = _metadata(run, state)
        metadata["preview"] = preview_md([{k: json.dumps(v, default=str)[:40] for k, v in r.items()} for r in preview])
        return dg.MaterializeResult(
            metadata={k: v for k, v in metadata.items() if v is not None},
            check_results=[
                dg.AssetCheckResult(
                    check_name=PENDING_CHECK,
                    passed=oldest is None or oldest <= limit,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "pending": run.pending_for_tenant,
                        "oldest_pending_hours": round((oldest or 0.0) / 3600, 3),
                        "warn_after_hours": config.pending_warn_after_hours,
                    },
                )
            ],
        )

    return _asset


COMMERCE_ASSETS = [build_table_asset(table) for table in ENTITIES]
COMMERCE_KEYS = [a.key for a in COMMERCE_ASSETS]
