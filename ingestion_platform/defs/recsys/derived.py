"""Per-tenant `recsys/user_features`, `recsys/item_features` and `recsys/training_samples`.

Each depends on the tenant's uploads through `MultiToSingleDimensionPartitionMapping` on the `tenant` dimension,
so an upload of tenant A makes exactly partition A stale and declarative automation recomputes A alone (this
replaces the old Kafka topics). The condition is `eager()` without its missing-dependency clause: the upload
dimension is shared, so every tenant "misses" the other tenants' upload ids, which would block eager forever.

DuckDB reads Parquet from local paths: with a local store, the store's own files; with S3 or GCS, the tenant's
files are first streamed to a local work folder through the store's Arrow filesystem (bounded memory), and results
are written locally and put into the store atomically. The item catalog (title, category, price, brand) is the
latest upload of each item, joined onto the item features.
"""

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import Field

from ingestion_platform.assets import OWNERS
from ingestion_platform.defs.recsys.features import (
    EngineSettings,
    SamplingSettings,
    compute_features,
    training_samples,
)
from ingestion_platform.defs.recsys.partitions import BY_TENANT
from ingestion_platform.defs.recsys.uploads import UPLOADED_AT
from ingestion_platform.metadata import preview_md
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.retry import STEP_RETRY
from ingestion_platform.tenants import TENANT_PARTITIONS

INTERACTIONS = dg.AssetKey(["recsys", "interactions"])
ITEMS = dg.AssetKey(["recsys", "items"])
USER_FEATURES = dg.AssetKey(["recsys", "user_features"])
ITEM_FEATURES = dg.AssetKey(["recsys", "item_features"])
TRAINING_SAMPLES = dg.AssetKey(["recsys", "training_samples"])

RECOMPUTE_AFTER_UPLOADS = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("recompute after this tenant's new uploads")

_COMMON: dict[str, Any] = {
    "group_name": "recsys",
    "owners": list(OWNERS),
    "tags": {"source": "recsys"},
    "kinds": {"duckdb", "parquet"},
    "automation_condition": RECOMPUTE_AFTER_UPLOADS,
}


def feature_keys(tenant: str) -> dict[str, str]:
    return {
        "user_features": f"{tenant}/features/user_features.parquet",
        "item_features": f"{tenant}/features/item_features.parquet",
        "training_samples": f"{tenant}/training/training_samples.parquet",
    }


def accepted_keys(store: ObjectStoreResource, tenant: str, data_type: str) -> list[str]:
    """Every accepted-rows Parquet object of the tenant's uploads of `data_type` (rejects are beside them)."""
    return [
        o.key
        for o in store.list(f"{tenant}/raw/{data_type}")
        if o.key.endswith(".parquet") and not o.key.endswith(".rejects.parquet")
    ]


@contextmanager
def local_files(store: ObjectStoreResource, keys: Sequence[str], work: Path) -> Iterator[list[Path]]:
    """Local paths DuckDB can read: the store's own files when it is local, else streamed copies in `work`."""
    if store.location.scheme == "file":
        yield [p for k in keys if (p := store.local_path(k)) is not None]
        return
    paths = []
    for n, key in enumerate(keys):
        target = work / "input" / f"{n:06d}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(
            store.path(key),
            str(target),
            source_filesystem=store.filesystem,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        paths.append(target)
    yield paths


def _put(store: ObjectStoreResource, key: str, path: Path) -> str:
    store.put_file(key, path, content_type="application/vnd.apache.parquet")
    return store.uri(key)


def _column_schema(path: Path) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in pq.read_schema(path)])


def _preview(path: Path) -> dg.MetadataValue:
    first = pq.ParquetFile(path).iter_batches(batch_size=5)
    rows = next(first).to_pylist() if pq.ParquetFile(path).metadata.num_rows else []
    return preview_md(rows)


def _with_catalog(features: Path, items: Sequence[Path], out: Path) -> int:
    """Item features plus the catalog's attributes, the latest upload of each item winning."""
    con = duckdb.connect()
    try:
        source = f"read_parquet('{features}')"
        if items:
            files = "[" + ", ".join(f"'{p}'" for p in items) + "]"
            query = f"""
                WITH catalog AS (
                    SELECT item_id, title, category, price, brand FROM read_parquet({files}, filename = true)
                    QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY {UPLOADED_AT} DESC, filename DESC) = 1
                )
                SELECT f.*, c.title, c.category, c.price, c.brand
                FROM {source} f LEFT JOIN catalog c USING (item_id) ORDER BY item_id
            """
        else:
            query = f"SELECT * FROM {source} ORDER BY item_id"
        con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
        row = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


_NOTHING_YET = "tenant {tenant!r} has no accepted interaction uploads yet: nothing to compute, nothing written"


def _nothing_yet(key: dg.AssetKey, tenant: str) -> dg.MaterializeResult:
    """An items-only upload makes a tenant's features stale before any interactions exist: the result is empty,
    which is not a failure to retry or alert on."""
    return dg.MaterializeResult(
        asset_key=key,
        metadata={"dagster/row_count": dg.MetadataValue.int(0), "note": _NOTHING_YET.format(tenant=tenant)},
    )


class EngineConfig(dg.Config):
    memory_limit: str = "1GB"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            USER_FEATURES,
            description="Per user: interaction counts by type, unique items, average rating, activity days, "
            "conversion rate and the 50 most recent items, over every accepted interaction upload of the tenant.",
            deps=[dg.AssetDep(INTERACTIONS, partition_mapping=BY_TENANT)],
            **_COMMON,
        ),
        dg.AssetSpec(
            ITEM_FEATURES,
            description="Per item: counts, unique users, average rating, popularity and engagement scores, "
            "purchase and click-through rates, with the catalog attributes of the item's latest upload.",
            deps=[
                dg.AssetDep(INTERACTIONS, partition_mapping=BY_TENANT),
                dg.AssetDep(ITEMS, partition_mapping=BY_TENANT),
            ],
            **_COMMON,
        ),
    ],
    partitions_def=TENANT_PARTITIONS,
    retry_policy=STEP_RETRY,
    can_subset=False,
)
def recsys_features(
    context: dg.AssetExecutionContext, config: EngineConfig, object_store: ObjectStoreResource
) -> Iterator[dg.MaterializeResult]:
    tenant = context.partition_key
    keys = feature_keys(tenant)
    interactions = accepted_keys(object_store, tenant, "interactions")
    if not interactions:
        context.log.warning(_NOTHING_YET.format(tenant=tenant))
        for key in (USER_FEATURES, ITEM_FEATURES):
            yield _nothing_yet(key, tenant)
        return
    items = accepted_keys(object_store, tenant, "items")
    with tempfile.TemporaryDirectory(prefix="recsys-features-") as tmp:
        work = Path(tmp)
        with (
            local_files(object_store, interactions, work / "i") as paths,
            local_files(object_store, items, work / "c") as item_paths,
        ):
            stats = compute_features(
                paths,
                work / "user_features.parquet",
                work / "item_features_only.parquet",
                engine=EngineSettings(memory_limit=config.memory_limit, temp_directory=work / "duckdb"),
            )
            catalog_rows = _with_catalog(
                work / "item_features_only.parquet", item_paths, work / "item_features.parquet"
            )
        shared = {
            "interactions": dg.MetadataValue.int(stats.interactions),
            "duplicates_dropped": dg.MetadataValue.int(stats.duplicates_dropped),
            "uploads": dg.MetadataValue.int(len(interactions)),
            "seconds": dg.MetadataValue.float(round(stats.seconds, 3)),
        }
        for key, name, rows in (
            (USER_FEATURES, "user_features", stats.users),
            (ITEM_FEATURES, "item_features", catalog_rows),
        ):
            path = work / f"{name}.parquet"
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    "dagster/row_count": dg.MetadataValue.int(rows),
                    "path": dg.MetadataValue.path(_put(object_store, keys[name], path)),
                    "dagster/column_schema": _column_schema(path),
                    "preview": _preview(path),
                    **shared,
                },
            )


class SamplingConfig(dg.Config):
    positive_types: list[str] = Field(default_factory=lambda: list(SamplingSettings.positive_types))
    negative_ratio: int = SamplingSettings.negative_ratio
    min_user_interactions: int = SamplingSettings.min_user_interactions
    min_item_interactions: int = SamplingSettings.min_item_interactions
    max_positives_per_user: int = SamplingSettings.max_positives_per_user
    seed: int = SamplingSettings.seed
    with_features: bool = True
    memory_limit: str = "1GB"


@dg.asset(
    key=TRAINING_SAMPLES,
    description="(user, item, label) rows: positives from the chosen interaction types, popularity-drawn negatives "
    "the user never touched at the configured ratio, seeded; joined with the user and item features.",
    deps=[
        dg.AssetDep(INTERACTIONS, partition_mapping=BY_TENANT),
        dg.AssetDep(USER_FEATURES),
        dg.AssetDep(ITEM_FEATURES),
    ],
    partitions_def=TENANT_PARTITIONS,
    retry_policy=STEP_RETRY,
    **_COMMON,
)
def recsys_training_samples(
    context: dg.AssetExecutionContext, config: SamplingConfig, object_store: ObjectStoreResource
) -> dg.MaterializeResult:
    tenant = context.partition_key
    keys = feature_keys(tenant)
    interactions = accepted_keys(object_store, tenant, "interactions")
    if not interactions:
        context.log.warning(_NOTHING_YET.format(tenant=tenant))
        return _nothing_yet(TRAINING_SAMPLES, tenant)
    settings = SamplingSettings(
        positive_types=tuple(config.positive_types),
        negative_ratio=config.negative_ratio,
        min_user_interactions=config.min_user_interactions,
        min_item_interactions=config.min_item_interactions,
        max_positives_per_user=config.max_positives_per_user,
        seed=config.seed,
    )
    feature_inputs = [keys["user_features"], keys["item_features"]] if config.with_features else []
    with tempfile.TemporaryDirectory(prefix="recsys-samples-") as tmp:
        work = Path(tmp)
        out = work / "training_samples.parquet"
        with (
            local_files(object_store, interactions, work / "i") as paths,
            local_files(object_store, feature_inputs, work / "f") as features,
        ):
            stats = training_samples(
                paths,
                out,
                settings,
                user_features=features[0] if features else None,
                item_features=features[1] if features else None,
                engine=EngineSettings(memory_limit=config.memory_limit, temp_directory=work / "duckdb"),
            )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(stats.rows),
                "positives": dg.MetadataValue.int(stats.positives),
                "negatives": dg.MetadataValue.int(stats.negatives),
                "label_balance": dg.MetadataValue.float(round(stats.label_balance, 4)),
                "users": dg.MetadataValue.int(stats.users),
                "items": dg.MetadataValue.int(stats.items),
                "interactions_kept": dg.MetadataValue.int(stats.interactions_kept),
                "users_short_of_negatives": dg.MetadataValue.int(stats.users_short_of_negatives),
                "seconds": dg.MetadataValue.float(round(stats.seconds, 3)),
                "path": dg.MetadataValue.path(_put(object_store, keys["training_samples"], out)),
                "dagster/column_schema": _column_schema(out),
                "preview": _preview(out),
            }
        )
