"""Reading a GA4 BigQuery export: which table serves each day, and the one parameterized query for a range.

Facts of the export this is built around: a day's `events_YYYYMMDD` appears once the day is complete (and keeps
receiving late events for 72 hours); until then only `events_intraday_YYYYMMDD` exists, and properties over the
daily export cap may only ever have intraday tables; intraday tables lack some fields (traffic_source);
360 properties also have `events_fresh_YYYYMMDD` tables, which discovery must ignore. The daily wildcard is
`events_20*`, never `events_*`, which would also match intraday and fresh tables and take its schema from
whichever table was created last.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from google.cloud import bigquery

from ingestion_platform.defs.ga4.events import DEDUPE_COLUMNS, EventType

_DAILY = re.compile(r"^events_(\d{8})$")
_INTRADAY = re.compile(r"^events_intraday_(\d{8})$")
_PROJECT = re.compile(r"^[a-z][a-z0-9.:-]{2,62}$")
_DATASET = re.compile(r"^[A-Za-z0-9_]{1,1024}$")


@dataclass(frozen=True)
class ExportPlan:
    """Which export table serves each requested day."""

    project: str
    dataset: str
    daily: tuple[str, ...]  # YYYYMMDD
    intraday: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def tables(self) -> list[str]:
        return [f"events_{d}" for d in self.daily] + [f"events_intraday_{d}" for d in self.intraday]

    def qualified(self, table: str) -> str:
        return f"`{self.project}.{self.dataset}.{table}`"


def ymd(day: date | str) -> str:
    return (day if isinstance(day, date) else date.fromisoformat(day)).strftime("%Y%m%d")


def validate_location(project: str, dataset: str) -> None:
    """Project and dataset are spliced into SQL as identifiers (they cannot be parameters), so check them."""
    if not _PROJECT.fullmatch(project):
        raise ValueError(f"invalid BigQuery project id {project!r}")
    if not _DATASET.fullmatch(dataset):
        raise ValueError(f"invalid BigQuery dataset id {dataset!r}")


def plan_tables(project: str, dataset: str, table_ids: Iterable[str], days: Sequence[date | str]) -> ExportPlan:
    """Pick the daily table for each day when it exists, else the intraday table; anything else is ignored."""
    validate_location(project, dataset)
    daily_days, intraday_days = set(), set()
    for table_id in table_ids:
        if m := _DAILY.fullmatch(table_id):
            daily_days.add(m.group(1))
        elif m := _INTRADAY.fullmatch(table_id):
            intraday_days.add(m.group(1))
    wanted = sorted({ymd(d) for d in days})
    daily = tuple(d for d in wanted if d in daily_days)
    intraday = tuple(d for d in wanted if d not in daily_days and d in intraday_days)
    missing = tuple(d for d in wanted if d not in daily_days and d not in intraday_days)
    return ExportPlan(project, dataset, daily, intraday, missing)


def _select(event: EventType, available_fields: set[str], provenance: str) -> str:
    columns = ["@tenant_id AS tenant_id"]
    for field in event.all_fields:
        expression = field.expression if field.requires is None or field.requires in available_fields else "NULL"
        if expression == "NULL":
            expression = f"CAST(NULL AS {_BIGQUERY_TYPES[field.column.type]})"
        columns.append(f"{expression} AS {field.column.name}")
    columns.append(f"'{provenance}' AS provenance")
    return ",\n  ".join(columns)


_BIGQUERY_TYPES = {
    "text": "STRING",
    "jsonb": "STRING",
    "bigint": "INT64",
    "integer": "INT64",
    "double precision": "FLOAT64",
    "date": "DATE",
    "timestamptz": "TIMESTAMP",
}


def build_event_query(
    event: EventType, tenant_id: str, plan: ExportPlan, daily_fields: set[str], intraday_fields: set[str]
) -> tuple[str, list[bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter]]:
    """One query over `_TABLE_SUFFIX` for all days of the plan, deduplicated on the declared composite key.

    Returns SQL and its parameters: the event name, tenant and day lists are parameters; only the validated
    project and dataset are spliced in, as quoted identifiers.
    """
    if not plan.daily and not plan.intraday:
        raise ValueError("the export plan has no table to read")
    branches = []
    if plan.daily:
        branches.append(
            f"SELECT\n  {_select(event, daily_fields, 'daily')}\n"
            f"FROM {plan.qualified('events_20*')}\n"
            "WHERE _TABLE_SUFFIX IN UNNEST(@daily_suffixes) AND event_name = @event_name "
            "AND event_date IN UNNEST(@event_dates)"
        )
    if plan.intraday:
        branches.append(
            f"SELECT\n  {_select(event, intraday_fields, 'intraday')}\n"
            f"FROM {plan.qualified('events_intraday_*')}\n"
            "WHERE _TABLE_SUFFIX IN UNNEST(@intraday_days) AND event_name = @event_name "
            "AND event_date IN UNNEST(@event_dates)"
        )
    union = "\nUNION ALL\n".join(branches)
    partition = ", ".join(DEDUPE_COLUMNS)
    sql = (
        f"SELECT * EXCEPT (dedupe_rank) FROM (\n  SELECT *, ROW_NUMBER() OVER (PARTITION BY {partition}) AS dedupe_rank"
        f"\n  FROM (\n{union}\n  )\n) WHERE dedupe_rank = 1"
    )
    params: list[bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter] = [
        bigquery.ScalarQueryParameter("event_name", "STRING", event.name),
        bigquery.ScalarQueryParameter("tenant_id", "STRING", tenant_id),
        bigquery.ArrayQueryParameter("daily_suffixes", "STRING", [d[2:] for d in plan.daily]),
        bigquery.ArrayQueryParameter("intraday_days", "STRING", list(plan.intraday)),
        # A row whose event_date is not its table's day would fall outside the slice being replaced.
        bigquery.ArrayQueryParameter("event_dates", "STRING", [*plan.daily, *plan.intraday]),
    ]
    return sql, params


def build_count_query(sql: str) -> str:
    """Count the distinct events the extraction query returns, computed by BigQuery for the asset check."""
    return f"SELECT COUNT(*) AS n FROM (\n{sql}\n)"
