"""Pull one event type for one tenant's days out of BigQuery, as a stream of Arrow batches.

Errors are sorted here: transient ones are retried with backoff (the shared policy), while a missing dataset or
table and authentication problems become `dg.Failure(allow_retries=False)` naming the tenant and table, because
retrying them only delays the message an operator needs.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date

import dagster as dg
import pyarrow as pa
from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import bigquery

from ingestion_platform.defs.ga4.events import EventType
from ingestion_platform.defs.ga4.export import ExportPlan, build_count_query, build_event_query, plan_tables
from ingestion_platform.retry import is_transient, retry_transient
from ingestion_platform.tenants import GA4Settings


@dataclass
class Extraction:
    plan: ExportPlan
    job: bigquery.QueryJob
    preview: list[dict] = field(default_factory=list)

    @property
    def bytes_processed(self) -> int:
        return int(self.job.total_bytes_processed or 0)


def call_bigquery[T](tenant: str, settings: GA4Settings, what: str, fn: Callable[[], T]) -> T:
    """Run one BigQuery call under the shared retry policy and turn permanent errors into operator messages."""
    where = f"{settings.project}.{settings.dataset}"
    try:
        return retry_transient(fn)()
    except google_exceptions.NotFound as exc:
        raise dg.Failure(
            f"tenant {tenant!r}: {what}: not found in BigQuery ({where}): {exc.message}", allow_retries=False
        ) from exc
    except (google_exceptions.Unauthorized, auth_exceptions.GoogleAuthError) as exc:
        if is_transient(exc):  # a network error while refreshing a token is not bad credentials
            raise
        raise dg.Failure(
            f"tenant {tenant!r}: {what}: BigQuery authentication failed: {exc}", allow_retries=False
        ) from exc
    except google_exceptions.Forbidden as exc:
        if is_transient(exc):
            raise
        raise dg.Failure(
            f"tenant {tenant!r}: {what}: access to {where} denied: {exc.message}", allow_retries=False
        ) from exc


def plan_export(client: bigquery.Client, tenant: str, settings: GA4Settings, days: list[date]) -> ExportPlan:
    dataset = f"{settings.project}.{settings.dataset}"
    table_ids = call_bigquery(
        tenant,
        settings,
        f"listing GA4 export dataset {dataset}",
        lambda: [t.table_id for t in client.list_tables(dataset)],
    )
    plan = plan_tables(settings.project, settings.dataset, table_ids, days)
    if plan.missing:
        wanted = ", ".join(f"events_{d} / events_intraday_{d}" for d in plan.missing)
        raise dg.Failure(
            f"tenant {tenant!r}: GA4 export {dataset} has no table for {len(plan.missing)} day(s): {wanted}",
            allow_retries=False,
            metadata={"missing_days": list(plan.missing)},
        )
    return plan


def _fields(
    client: bigquery.Client, tenant: str, settings: GA4Settings, plan: ExportPlan, tables: list[str]
) -> set[str]:
    """Top-level fields of the newest table of a kind: a wildcard query reads with that table's schema."""
    if not tables:
        return set()
    newest = max(tables)
    schema = call_bigquery(
        tenant,
        settings,
        f"reading schema of {newest}",
        lambda: client.get_table(f"{plan.project}.{plan.dataset}.{newest}").schema,
    )
    return {f.name for f in schema}


def _query(client: bigquery.Client, tenant: str, settings: GA4Settings, sql: str, params: list) -> bigquery.QueryJob:
    config = bigquery.QueryJobConfig(query_parameters=params, use_legacy_sql=False)

    def run() -> bigquery.QueryJob:
        job = client.query(sql, job_config=config)
        job.result()
        return job

    return call_bigquery(tenant, settings, "querying the GA4 export", run)


def _prepare(
    client: bigquery.Client, event: EventType, tenant: str, settings: GA4Settings, days: list[date]
) -> tuple[ExportPlan, str, list]:
    plan = plan_export(client, tenant, settings, days)
    daily_fields = _fields(client, tenant, settings, plan, [f"events_{d}" for d in plan.daily])
    intraday_fields = _fields(client, tenant, settings, plan, [f"events_intraday_{d}" for d in plan.intraday])
    sql, params = build_event_query(event, tenant, plan, daily_fields, intraday_fields)
    return plan, sql, params


def extract_events(
    client: bigquery.Client, event: EventType, tenant: str, settings: GA4Settings, days: list[date]
) -> tuple[Extraction, Iterator[pa.RecordBatch]]:
    plan, sql, params = _prepare(client, event, tenant, settings, days)
    job = _query(client, tenant, settings, sql, params)
    extraction = Extraction(plan=plan, job=job)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in job.result().to_arrow_iterable():
            if not extraction.preview and batch.num_rows:
                extraction.preview = batch.slice(0, 5).to_pylist()
            yield batch

    return extraction, batches()


def count_source_events(
    client: bigquery.Client, event: EventType, tenant: str, settings: GA4Settings, days: list[date]
) -> int:
    """Distinct events of this type in the export for the slice, as the extraction would return them."""
    _, sql, params = _prepare(client, event, tenant, settings, days)
    job = _query(client, tenant, settings, build_count_query(sql), params)
    return int(next(iter(job.result()))[0])
