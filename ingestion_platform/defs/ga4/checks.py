"""Quality of each loaded (tenant, day) slice, measured in the warehouse right after the load, in the same step."""

from datetime import date

from ingestion_platform.defs.ga4.events import DEDUPE_COLUMNS, EventType
from ingestion_platform.resources.warehouse import WarehouseResource


def duplicate_events(warehouse: WarehouseResource, event: EventType, tenant_id: str, days: list[date]) -> int:
    """Rows beyond the first for each event identity (NULLs compare equal, as the export's identity does)."""
    identity = ", ".join(f"coalesce({c}::text, '')" for c in DEDUPE_COLUMNS)
    return int(
        warehouse.scalar(
            f"SELECT count(*) - count(DISTINCT ({identity})) FROM {event.table.qualified_name} "
            "WHERE tenant_id = :tenant_id AND event_date = ANY(:days)",
            {"tenant_id": tenant_id, "days": days},
        )
    )


def invalid_purchases(warehouse: WarehouseResource, tenant_id: str, days: list[date]) -> int:
    return int(
        warehouse.scalar(
            "SELECT count(*) FROM ga4.purchase WHERE tenant_id = :tenant_id AND event_date = ANY(:days) "
            "AND (purchase_revenue < 0 OR transaction_id IS NULL OR transaction_id = '')",
            {"tenant_id": tenant_id, "days": days},
        )
    )


def loaded_events(warehouse: WarehouseResource, event: EventType, tenant_id: str, days: list[date]) -> int:
    return int(
        warehouse.scalar(
            f"SELECT count(*) FROM {event.table.qualified_name} "
            "WHERE tenant_id = :tenant_id AND event_date = ANY(:days)",
            {"tenant_id": tenant_id, "days": days},
        )
    )
