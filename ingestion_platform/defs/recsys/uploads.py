"""`recsys/interactions` and `recsys/items`: one partition per upload, validated, written as Parquet.

The landing object is read whole (parsing needs the bytes anyway) and its hash checked against the partition's
upload id, so a file overwritten between discovery and the run is never loaded under the old content's id: the
sensor sees the new content and requests it as a new upload. Accepted rows go to
`{tenant}/raw/{data_type}/{YYYY-MM-DD}/{upload_id}.parquet` (the day the file landed, so a re-run writes the same
key) and rejected rows with their reasons beside it as `{upload_id}.rejects.parquet`, both through the object
store's atomic writes. Item rows carry `uploaded_at` (when the file landed) so the catalog can let the latest upload
of an item win.

A file that cannot be used at all (not text, no header, required columns missing) fails the blocking
`file_usable` check and the run, without retries: nothing downstream is computed from it and its partition shows
the reason. Each expectation is a non-blocking check: rejected rows are kept, the good ones load.
"""

from datetime import datetime
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from ingestion_platform.assets import OWNERS
from ingestion_platform.defs.recsys.parse import DataType
from ingestion_platform.defs.recsys.partitions import (
    DATA_TYPES,
    UPLOAD_DIMENSION,
    UPLOAD_PARTITIONS,
    landing_prefix,
    upload_id,
)
from ingestion_platform.defs.recsys.validate import (
    ACCEPTED_ROW_GROUP_ROWS,
    ACCEPTED_SCHEMA,
    ValidationResult,
    expectation_names,
    validate_file,
)
from ingestion_platform.metadata import preview_md
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.retry import STEP_RETRY
from ingestion_platform.tenants import TENANT_DIMENSION

LANDING_KEY_TAG = "recsys/landing_key"
DATA_TYPE_TAG = "recsys/data_type"
FILE_USABLE = "file_usable"
UPLOADED_AT = "uploaded_at"


def raw_keys(tenant: str, data_type: DataType, day: str, upload: str) -> tuple[str, str]:
    """The accepted and rejects Parquet keys of one upload."""
    base = f"{tenant}/raw/{data_type}/{day}/{upload}"
    return f"{base}.parquet", f"{base}.rejects.parquet"


def accepted_schema(data_type: DataType) -> pa.Schema:
    schema = ACCEPTED_SCHEMA[data_type]
    return schema.append(pa.field(UPLOADED_AT, pa.timestamp("us", tz="UTC"))) if data_type == "items" else schema


def _column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])


def _landing_key(context: dg.AssetExecutionContext, tenant: str, data_type: DataType) -> str:
    """The sensor names the file in a run tag; a re-run from the UI reuses what the last materialization read."""
    key = context.run.tags.get(LANDING_KEY_TAG)
    if key is None:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[context.partition_key]), limit=1
        ).records
        materialization = records[0].asset_materialization if records else None
        entry = materialization.metadata.get("landing_key") if materialization else None
        key = str(entry.value) if entry is not None else None
    if key is None:
        raise dg.Failure(
            f"no landing file known for upload {context.partition_key}: run it from the recsys landing sensor "
            f"or with the {LANDING_KEY_TAG} tag",
            allow_retries=False,
        )
    if not key.startswith(landing_prefix(tenant, data_type)):
        raise dg.Failure(
            f"{key} is outside {landing_prefix(tenant, data_type)}: it is not tenant {tenant!r}'s {data_type} upload",
            allow_retries=False,
        )
    return key


def _summary_table(result: ValidationResult) -> dg.MetadataValue:
    rows = result.summary()
    return dg.MetadataValue.table(
        records=[dg.TableRecord(row) for row in rows],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("expectation", "string"),
                dg.TableColumn("gx_type", "string"),
                dg.TableColumn("column", "string"),
                dg.TableColumn("success", "bool"),
                dg.TableColumn("unexpected_count", "int"),
                dg.TableColumn("unexpected_percent", "float"),
            ]
        ),
    )


def _write_parquet(store: ObjectStoreResource, key: str, table: pa.Table) -> int:
    with store.open_write(key, content_type="application/vnd.apache.parquet") as out:
        pq.write_table(table, out, compression="zstd", row_group_size=ACCEPTED_ROW_GROUP_ROWS)
    return store.head(key).size


def build_upload_asset(data_type: DataType) -> dg.AssetsDefinition:
    asset_key = dg.AssetKey(["recsys", data_type])
    partitions_def = UPLOAD_PARTITIONS[data_type]
    expectations = expectation_names(data_type)
    check_specs = [
        dg.AssetCheckSpec(
            FILE_USABLE,
            asset=asset_key,
            blocking=True,
            description="The file can be read as this data type at all: text, a header, every required column.",
            partitions_def=partitions_def,
        ),
        *(
            dg.AssetCheckSpec(
                name,
                asset=asset_key,
                description=f"Great Expectations `{name}`: every row passes; failing rows are kept as rejects.",
                partitions_def=partitions_def,
            )
            for name in expectations
        ),
    ]

    @dg.asset(
        key=asset_key,
        description=f"One {data_type} upload from the tenant's landing zone, validated with Great Expectations: "
        f"accepted rows as Parquet under {{tenant}}/raw/{data_type}/, rejected rows with their reasons beside them.",
        group_name="recsys",
        partitions_def=partitions_def,
        kinds={"parquet", "s3"},
        owners=list(OWNERS),
        tags={"source": "recsys"},
        retry_policy=STEP_RETRY,
        check_specs=check_specs,
        metadata={"dagster/column_schema": _column_schema(accepted_schema(data_type))},
    )
    def upload_asset(context: dg.AssetExecutionContext, object_store: ObjectStoreResource) -> Any:
        keys = partitions_def.get_partition_key_from_str(context.partition_key).keys_by_dimension
        tenant, upload = keys[TENANT_DIMENSION], keys[UPLOAD_DIMENSION]
        landing_key = _landing_key(context, tenant, data_type)
        info = object_store.head(landing_key)
        with object_store.open_read(landing_key) as stream:
            data = stream.read()
        if upload_id(data) != upload:
            raise dg.Failure(
                f"{landing_key} no longer holds upload {upload} (it changed after discovery); the landing sensor "
                "requests its new content as a new upload",
                allow_retries=False,
            )
        result = validate_file(data, data_type, name=landing_key)
        if not result.usable:
            yield dg.AssetCheckResult(
                check_name=FILE_USABLE,
                passed=False,
                metadata={"code": result.blocking_code or "", "reason": result.blocking_error or ""},
            )
            raise dg.Failure(
                f"{landing_key} is unusable ({result.blocking_code}): {result.blocking_error}",
                metadata={"landing_key": landing_key, "code": result.blocking_code or ""},
                allow_retries=False,
            )
        yield from _materialize(context, object_store, data_type, tenant, upload, landing_key, info.mtime, result)

    return upload_asset


def _materialize(
    context: dg.AssetExecutionContext,
    store: ObjectStoreResource,
    data_type: DataType,
    tenant: str,
    upload: str,
    landing_key: str,
    landed: datetime,
    result: ValidationResult,
) -> Any:
    accepted = result.accepted
    if data_type == "items":
        accepted = accepted.append_column(
            pa.field(UPLOADED_AT, pa.timestamp("us", tz="UTC")),
            pa.array([landed] * accepted.num_rows, pa.timestamp("us", tz="UTC")),
        )
    accepted_key, rejects_key = raw_keys(tenant, data_type, landed.date().isoformat(), upload)
    accepted_bytes = _write_parquet(store, accepted_key, accepted)
    rejects_bytes = _write_parquet(store, rejects_key, result.rejected)
    context.log.info(
        f"{landing_key}: {result.rows_accepted} accepted -> {accepted_key}, {result.rows_rejected} rejected"
    )
    for outcome in result.expectations:
        yield dg.AssetCheckResult(
            check_name=outcome.name,
            passed=outcome.success,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "unexpected_count": dg.MetadataValue.int(outcome.unexpected_count),
                "unexpected_percent": dg.MetadataValue.float(round(outcome.unexpected_percent, 4)),
                "description": outcome.description,
            },
        )
    yield dg.AssetCheckResult(check_name=FILE_USABLE, passed=True, metadata={"format": result.format or ""})
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.rows_accepted),
            "rows_total": dg.MetadataValue.int(result.rows_total),
            "rows_accepted": dg.MetadataValue.int(result.rows_accepted),
            "rows_rejected": dg.MetadataValue.int(result.rows_rejected),
            "duplicates_dropped": dg.MetadataValue.int(result.duplicates_dropped),
            "malformed_rows": dg.MetadataValue.int(result.malformed_rows),
            "unknown_columns": dg.MetadataValue.json(list(result.unknown_columns)),
            "format": result.format or "",
            "landing_key": landing_key,
            "parquet_path": dg.MetadataValue.path(store.uri(accepted_key)),
            "rejects_path": dg.MetadataValue.path(store.uri(rejects_key)),
            "bytes_written": dg.MetadataValue.int(accepted_bytes + rejects_bytes),
            "validation_summary": _summary_table(result),
            "dagster/column_schema": _column_schema(accepted.schema),
            "seconds": dg.MetadataValue.json({k: round(v, 3) for k, v in result.seconds.items()}),
            "rejects_preview": preview_md(
                [{k: v for k, v in row.items() if k != "raw" or v} for row in result.rejected.slice(0, 5).to_pylist()]
            ),
        }
    )


upload_assets = [build_upload_asset(data_type) for data_type in DATA_TYPES]
