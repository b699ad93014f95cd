"""`sftp/users` and `sftp/locations`: a tenant's report file for a day, upserted into `crm.<kind>`.

The file is streamed to a temporary folder (resumable, size-verified) and parsed there; good rows are merged by
(tenant_id, key), where a report never overwrites a newer report's row. Rows the parser could not read and rows
the loader quarantines (a value the column's type refuses, a NUL byte) land in `crm.<kind>_rejects` in the same
transaction as the good rows, replacing whatever an earlier load of the same file rejected.

Each materialization records the files it loaded with the server's size and mtime (`loaded_files`), so the
sensors never request again a file that is already loaded and unchanged, whatever their cursor remembers.
"""

import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd

from ingestion_platform.assets import Check, TenantRun, tenant_partitioned_asset
from ingestion_platform.defs.sftp.checks import (
    COORDINATES_IN_RANGE,
    EMAIL_FORMAT_SHARE,
    MIN_VALID_EMAIL_SHARE,
    coordinates_out_of_range,
    email_validity,
    near_duplicate_keys,
    no_duplicate_keys,
)
from ingestion_platform.defs.sftp.discovery import LOADED_FILES_METADATA_KEY, file_name, loaded_file_entry
from ingestion_platform.defs.sftp.partitions import SFTP_PARTITIONS
from ingestion_platform.defs.sftp.reports import LOCATIONS, REPORT_KINDS, USERS, ReportKind, ReportStream, open_report
from ingestion_platform.resources.sftp import SFTPResource
from ingestion_platform.tenants import SFTPSettings, Tenant


def report_pattern(kind: ReportKind, settings: SFTPSettings) -> str:
    return getattr(settings, f"{kind.name}_pattern")


def _first_rows(report: ReportStream, first: list[dict]) -> Iterator[pd.DataFrame]:
    """The report's batches as they are read, keeping the first rows for the preview on the way."""
    for frame in report.batches():
        first.extend(frame.head(5 - len(first)).to_dict("records"))
        yield frame


def build_report_asset(kind: ReportKind) -> dg.AssetsDefinition:
    key_check = no_duplicate_keys(kind)
    kind_checks: list[Check] = {USERS.name: [EMAIL_FORMAT_SHARE], LOCATIONS.name: [COORDINATES_IN_RANGE]}[kind.name]

    @tenant_partitioned_asset(
        key=["sftp", kind.name],
        description=f"{kind.description} Rejected rows go to `{kind.rejects_table.qualified_name}`.",
        table=kind.table,
        partitions_def=SFTP_PARTITIONS,
        pool="sftp",
        kinds={"sftp", "csv", "postgres"},
        resources={"sftp": SFTPResource},
        checks=[key_check, *kind_checks],
    )
    def _report_asset(run: TenantRun, tenant: Tenant, days: list[date]) -> None:
        settings = tenant.sftp()
        sftp = run.resource("sftp", SFTPResource)
        with tempfile.TemporaryDirectory(prefix="sftp-") as tmp, sftp.session(settings, tenant.id) as session:
            for day in days:
                name = file_name(report_pattern(kind, settings), day)
                download = session.download(session.remote_path(name), Path(tmp) / name)
                report = open_report(
                    kind, Path(tmp) / name, encoding=settings.encoding, tenant_id=tenant.id, report_date=day.isoformat()
                )
                first: list[dict] = []
                merged = run.warehouse.load(
                    kind.table, _first_rows(report, first), mode="merge", source=name, rejects=report.rejects
                )
                run.log.info(
                    f"{tenant.id}: {name} ({download.bytes} bytes, {download.seconds:.2f}s): "
                    f"{report.rows_read} rows read, {merged.inserted + merged.updated} upserted, "
                    f"{merged.rejected} rejected, {merged.duplicates_in_input} duplicate keys"
                )
                quarantined = merged.rejected - len(report.rejects)  # rejected by the loader, not the parser
                run.loaded(merged)
                run.count(
                    file_bytes=download.bytes,
                    rows_read=report.rows_read,
                    rows_upserted=merged.inserted + merged.updated,
                    rows_unchanged=merged.rows_staged
                    - merged.inserted
                    - merged.updated
                    - quarantined
                    - merged.duplicates_in_input,
                )
                run.collect("files", [name])
                run.collect(LOADED_FILES_METADATA_KEY, [loaded_file_entry(name, download.bytes, download.mtime)])
                run.collect("extra_columns", report.extra_columns, unique=True)
                run.preview(first)
                run.preview(
                    [{"line_number": r.line_number, "reason": r.reason, **r.raw} for r in report.rejects[:5]],
                    name="rejects_preview",
                )

        duplicates = near_duplicate_keys(run.warehouse, kind, tenant.id)
        run.check(key_check.name, passed=duplicates == 0, duplicates=duplicates)
        if kind is USERS:
            valid, total = email_validity(run.warehouse, tenant.id)
            share = round(valid / total, 4) if total else 1.0
            run.check(
                EMAIL_FORMAT_SHARE.name,
                passed=share >= MIN_VALID_EMAIL_SHARE,
                valid_share=share,
                threshold=MIN_VALID_EMAIL_SHARE,
            )
        if kind is LOCATIONS:
            out_of_range = coordinates_out_of_range(run.warehouse, tenant.id)
            run.check(COORDINATES_IN_RANGE.name, passed=out_of_range == 0, out_of_range=out_of_range)

    return _report_asset


sftp_report_assets = [build_report_asset(kind) for kind in REPORT_KINDS.values()]
