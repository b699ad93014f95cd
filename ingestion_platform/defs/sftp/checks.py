"""Quality of what the reports left in `crm.*` for the tenant of the partition just loaded."""

import dagster as dg

from ingestion_platform.defs.sftp.partitions import SFTP_PARTITIONS
from ingestion_platform.defs.sftp.reports import LOCATIONS, REPORT_KINDS, USERS, ReportKind
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.tenants import tenant_days

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
MIN_VALID_EMAIL_SHARE = 0.95


def _tenants(context: dg.AssetCheckExecutionContext) -> list[str]:
    return list(tenant_days(context.partition_keys))


def near_duplicate_keys(warehouse: WarehouseResource, kind: ReportKind, tenant_id: str) -> int:
    """Keys that differ only in case or surrounding spaces: the primary key cannot see these, consumers join on them."""
    return int(
        warehouse.scalar(
            f"SELECT count(*) - count(DISTINCT lower(trim({kind.key}))) FROM {kind.table.qualified_name} "
            "WHERE tenant_id = :tenant_id",
            {"tenant_id": tenant_id},
        )
    )


def email_validity(warehouse: WarehouseResource, tenant_id: str) -> tuple[int, int]:
    """(valid, total) emails among the tenant's users with an email."""
    frame = warehouse.query(
        "SELECT count(*) FILTER (WHERE email ~ :pattern) AS valid, count(*) AS total FROM crm.users "
        "WHERE tenant_id = :tenant_id AND email IS NOT NULL",
        {"pattern": EMAIL_PATTERN, "tenant_id": tenant_id},
    )
    return int(frame["valid"][0]), int(frame["total"][0])


def coordinates_out_of_range(warehouse: WarehouseResource, tenant_id: str) -> int:
    return int(
        warehouse.scalar(
            "SELECT count(*) FROM crm.locations WHERE tenant_id = :tenant_id "
            "AND (latitude NOT BETWEEN -90 AND 90 OR longitude NOT BETWEEN -180 AND 180)",
            {"tenant_id": tenant_id},
        )
    )


def build_key_check(kind: ReportKind) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(["sftp", kind.name]),
        name="no_duplicate_keys",
        blocking=True,
        partitions_def=SFTP_PARTITIONS,
        description=f"No two {kind.name} of a tenant share a {kind.key} up to case and surrounding spaces.",
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        found = {t: near_duplicate_keys(warehouse, kind, t) for t in _tenants(context)}
        return dg.AssetCheckResult(passed=not any(found.values()), metadata={"duplicates_by_tenant": found})

    return _check


@dg.asset_check(
    asset=dg.AssetKey(["sftp", USERS.name]),
    name="email_format_share",
    partitions_def=SFTP_PARTITIONS,
    description=f"At least {MIN_VALID_EMAIL_SHARE:.0%} of the tenant's users' emails look like emails.",
)
def email_format_share(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    shares = {}
    for tenant_id in _tenants(context):
        valid, total = email_validity(warehouse, tenant_id)
        shares[tenant_id] = round(valid / total, 4) if total else 1.0
    return dg.AssetCheckResult(
        passed=all(s >= MIN_VALID_EMAIL_SHARE for s in shares.values()),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"valid_share_by_tenant": shares, "threshold": MIN_VALID_EMAIL_SHARE},
    )


@dg.asset_check(
    asset=dg.AssetKey(["sftp", LOCATIONS.name]),
    name="coordinates_in_range",
    partitions_def=SFTP_PARTITIONS,
    description="Latitudes lie in [-90, 90] and longitudes in [-180, 180].",
)
def coordinates_in_range(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    found = {t: coordinates_out_of_range(warehouse, t) for t in _tenants(context)}
    return dg.AssetCheckResult(passed=not any(found.values()), metadata={"out_of_range_by_tenant": found})


sftp_checks = [*(build_key_check(kind) for kind in REPORT_KINDS.values()), email_format_share, coordinates_in_range]
