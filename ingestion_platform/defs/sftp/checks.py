"""Quality of what the reports left in `crm.*` for a tenant, evaluated in the asset's own step right after its
load (`sftp/assets.py`): a separate check step would cost a process and a definitions load each, for a query on
the rows the step just wrote."""

import dagster as dg

from ingestion_platform.assets import Check
from ingestion_platform.defs.sftp.reports import ReportKind
from ingestion_platform.resources.warehouse import WarehouseResource

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
MIN_VALID_EMAIL_SHARE = 0.95


def no_duplicate_keys(kind: ReportKind) -> Check:
    return Check(
        "no_duplicate_keys",
        f"No two {kind.name} of a tenant share a {kind.key} up to case and surrounding spaces.",
        blocking=True,
    )


EMAIL_FORMAT_SHARE = Check(
    "email_format_share",
    f"At least {MIN_VALID_EMAIL_SHARE:.0%} of the tenant's users' emails look like emails.",
    severity=dg.AssetCheckSeverity.WARN,
)
COORDINATES_IN_RANGE = Check(
    "coordinates_in_range",
    "Latitudes lie in [-90, 90] and longitudes in [-180, 180].",
)


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
