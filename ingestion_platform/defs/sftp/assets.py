"""`sftp/users` and `sftp/locations`: a tenant's report file for a day, upserted into `crm.<kind>`.

The file is streamed to a temporary folder (resumable, size-verified) and parsed there; good rows are merged by
(tenant_id, key), where a report never overwrites a newer report's row. Rows the parser could not read and rows
the loader quarantines (a value the column's type refuses, a NUL byte) land in `crm.<kind>_rejects` in the same
transaction as the good rows, replacing whatever an earlier load of the same file rejected.
"""

import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd

from ingestion_platform.defs.sftp.discovery import file_name
from ingestion_platform.defs.sftp.partitions import SFTP_PARTITIONS
from ingestion_platform.defs.sftp.reports import REPORT_KINDS, ReportKind, ReportStream, open_report
from ingestion_platform.metadata import definition_metadata, preview_md
from ingestion_platform.resources.sftp import SFTPResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.retry import STEP_RETRY, per_tenant
from ingestion_platform.tenants import SFTPSettings, tenant_days


def report_pattern(kind: ReportKind, settings: SFTPSettings) -> str:
    return getattr(settings, f"{kind.name}_pattern")


def build_report_asset(kind: ReportKind) -> dg.AssetsDefinition:
    @dg.asset(
        key=["sftp", kind.name],
        description=f"{kind.description} Rejected rows go to `{kind.rejects_table.qualified_name}`.",
        group_name="sftp",
        partitions_def=SFTP_PARTITIONS,
        retry_policy=STEP_RETRY,
        pool="sftp",
        kinds={"sftp", "csv", "postgres"},
        owners=["team:data-platform"],
        tags={"source": "sftp"},
        metadata=definition_metadata(kind.table),
    )
    def _report_asset(
        context: dg.AssetExecutionContext,
        sftp: SFTPResource,
        warehouse: WarehouseResource,
        tenants: TenantsResource,
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        registry = tenants.registry()
        files, totals = [], {"bytes": 0, "read": 0, "upserted": 0, "unchanged": 0, "rejected": 0, "duplicates": 0}
        preview: list[dict] = []
        rejects_preview: list[dict] = []
        extra_columns: set[str] = set()

        def load_tenant(tenant_id: str, days: list[str]) -> None:
            nonlocal preview, rejects_preview
            settings = registry.get(tenant_id).sftp()
            with tempfile.TemporaryDirectory(prefix="sftp-") as tmp, sftp.session(settings, tenant_id) as session:
                for day in days:
                    name = file_name(report_pattern(kind, settings), date.fromisoformat(day))
                    local = Path(tmp) / name
                    download = session.download(session.remote_path(name), local)
                    report = open_report(kind, local, encoding=settings.encoding, tenant_id=tenant_id, report_date=day)
                    first: list[dict] = []

                    def batches(report: ReportStream = report, first: list[dict] = first) -> Iterator[pd.DataFrame]:
                        for frame in report.batches():
                            first.extend(frame.head(5 - len(first)).to_dict("records"))
                            yield frame

                    merged = warehouse.load(kind.table, batches(), mode="merge", source=name, rejects=report.rejects)
                    context.log.info(
                        f"{tenant_id}: {name} ({download.bytes} bytes, {download.seconds:.2f}s): "
                        f"{report.rows_read} rows read, {merged.inserted + merged.updated} upserted, "
                        f"{merged.rejected} rejected, {merged.duplicates_in_input} duplicate keys"
                    )
                    files.append(name)
                    totals["bytes"] += download.bytes
                    totals["read"] += report.rows_read
                    totals["upserted"] += merged.inserted + merged.updated
                    quarantined = merged.rejected - len(report.rejects)  # rejected by the loader, not the parser
                    totals["unchanged"] += (
                        merged.rows_staged - merged.inserted - merged.updated - quarantined - merged.duplicates_in_input
                    )
                    totals["rejected"] += merged.rejected
                    totals["duplicates"] += merged.duplicates_in_input
                    extra_columns.update(report.extra_columns)
                    preview = preview or first
                    rejects_preview = rejects_preview or [
                        {"line_number": r.line_number, "reason": r.reason, **r.raw} for r in report.rejects[:5]
                    ]

        per_tenant(tenant_days(context.partition_keys), load_tenant, context.log)
        return dg.MaterializeResult(
            metadata={
                "files": dg.MetadataValue.json(files),
                "file_bytes": dg.MetadataValue.int(totals["bytes"]),
                "rows_read": dg.MetadataValue.int(totals["read"]),
                "rows_upserted": dg.MetadataValue.int(totals["upserted"]),
                "rows_unchanged": dg.MetadataValue.int(totals["unchanged"]),
                "rows_rejected": dg.MetadataValue.int(totals["rejected"]),
                "duplicate_keys_in_file": dg.MetadataValue.int(totals["duplicates"]),
                "extra_columns": dg.MetadataValue.json(sorted(extra_columns)),
                "duration_seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
                "preview": preview_md(preview),
                "rejects_preview": preview_md(rejects_preview),
            }
        )

    return _report_asset


sftp_report_assets = [build_report_asset(kind) for kind in REPORT_KINDS.values()]
