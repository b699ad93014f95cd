"""Which days of which event type are loaded per tenant, with the gaps: the old service's availability endpoint.

Dagster's partition status shows the same per asset; this table answers it for the warehouse's consumers in SQL.
It is summarised from `ga4.daily_counts`, which every event load keeps for its own days, never from the events.
"""

import itertools
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from ingestion_platform.defs.ga4.counts import DAILY_COUNTS
from ingestion_platform.defs.ga4.events import EVENT_TYPES
from ingestion_platform.metadata import definition_metadata
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.warehouse import Column, TableSpec

AVAILABILITY_TABLE = TableSpec(
    schema="ga4",
    name="availability",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("event_name", "text", nullable=False),
        Column("first_day", "date"),
        Column("last_day", "date"),
        Column("days_loaded", "integer"),
        Column("rows", "bigint"),
        Column("gaps", "jsonb", description="[[first missing day, last missing day], ...] between first and last day"),
    ),
    key=("tenant_id", "event_name"),
)


def find_gaps(days: list[date]) -> list[tuple[date, date]]:
    """Missing runs of days between the first and last loaded day, as inclusive (start, end) pairs."""
    gaps = []
    ordered = sorted(set(days))
    for previous, current in itertools.pairwise(ordered):
        if current - previous > timedelta(days=1):
            gaps.append((previous + timedelta(days=1), current - timedelta(days=1)))
    return gaps


def summarise(event_name: str, per_day: pd.DataFrame) -> list[dict]:
    """per_day: tenant_id, event_date, rows (one row per loaded day)."""
    summaries = []
    for tenant_id, group in per_day.groupby("tenant_id"):
        days = [d if isinstance(d, date) else d.date() for d in group["event_date"]]
        summaries.append(
            {
                "tenant_id": tenant_id,
                "event_name": event_name,
                "first_day": min(days),
                "last_day": max(days),
                "days_loaded": len(set(days)),
                "rows": int(group["rows"].sum()),
                "gaps": [[start.isoformat(), end.isoformat()] for start, end in find_gaps(days)],
            }
        )
    return summaries


@dg.asset(
    key=["ga4", "availability"],
    description="Per tenant and event type: first and last day loaded, days loaded, rows and gaps.",
    group_name="ga4",
    deps=[dg.AssetKey(["ga4", e.name]) for e in EVENT_TYPES],
    # Plain eager() waits until no upstream partition is missing, which never happens for day partitions
    # reaching back to the start date; refresh whenever any event partition is updated instead.
    automation_condition=dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing()),
    kinds={"postgres"},
    owners=["team:data-platform"],
    tags={"source": "ga4"},
    metadata=definition_metadata(AVAILABILITY_TABLE),
)
def ga4_availability(warehouse: WarehouseResource) -> dg.MaterializeResult:
    summaries: list[dict] = []
    exists = warehouse.scalar("SELECT to_regclass(:name) IS NOT NULL", {"name": DAILY_COUNTS.qualified_name})
    if exists:
        per_day = warehouse.query(
            f"SELECT tenant_id, event_name, event_date, rows FROM {DAILY_COUNTS.qualified_name} "
            "WHERE event_name = ANY(:events)",
            {"events": [e.name for e in EVENT_TYPES]},
        )
        for event_name, rows in per_day.groupby("event_name"):
            summaries.extend(summarise(str(event_name), rows))
    frame = pd.DataFrame(summaries, columns=AVAILABILITY_TABLE.column_names)
    result = warehouse.load(
        AVAILABILITY_TABLE, [frame], mode="replace", slice_={"event_name": [e.name for e in EVENT_TYPES]}
    )
    table = dg.MetadataValue.table(
        records=[
            dg.TableRecord({k: (str(v) if k in {"first_day", "last_day", "gaps"} else v) for k, v in row.items()})
            for row in summaries
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("tenant_id", "string"),
                dg.TableColumn("event_name", "string"),
                dg.TableColumn("first_day", "string"),
                dg.TableColumn("last_day", "string"),
                dg.TableColumn("days_loaded", "int"),
                dg.TableColumn("rows", "int"),
                dg.TableColumn("gaps", "string"),
            ]
        ),
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.rows_staged),
            "availability": table,
            "tenants_with_gaps": dg.MetadataValue.int(len({s["tenant_id"] for s in summaries if s["gaps"]})),
        }
    )
