"""Pure parts of the GA4 source: table discovery, the query text, the schedule window, availability gaps."""

from datetime import date

import dagster as dg
import pytest
import stamina
from google.api_core import exceptions as google_exceptions

from ingestion_platform.defs.ga4.availability import find_gaps
from ingestion_platform.defs.ga4.events import EVENT_TYPES_BY_NAME
from ingestion_platform.defs.ga4.export import build_event_query, plan_tables
from ingestion_platform.defs.ga4.extract import call_bigquery
from ingestion_platform.defs.ga4.schedules import ga4_run_requests, lookback_window
from ingestion_platform.tenants import GA4Settings

TABLES = [
    "events_20240301",
    "events_20240302",
    "events_intraday_20240302",  # the daily table exists too: daily wins
    "events_intraday_20240303",
    "events_fresh_20240303",  # 360 properties: never read
    "pseudonymous_users_20240301",
]


def test_plan_prefers_daily_then_intraday_and_ignores_fresh_tables() -> None:
    plan = plan_tables("acme-analytics", "analytics_1", TABLES, [date(2024, 3, d) for d in (1, 2, 3, 4)])
    assert plan.daily == ("20240301", "20240302")
    assert plan.intraday == ("20240303",)
    assert plan.missing == ("20240304",)
    assert plan.tables == ["events_20240301", "events_20240302", "events_intraday_20240303"]


@pytest.mark.parametrize(("project", "dataset"), [("acme`; DROP", "ds"), ("acme-analytics", "ds.x"), ("", "ds")])
def test_plan_rejects_identifiers_that_could_break_out_of_quoting(project: str, dataset: str) -> None:
    with pytest.raises(ValueError, match="invalid BigQuery"):
        plan_tables(project, dataset, TABLES, [date(2024, 3, 1)])


def test_query_is_parameterised_and_reads_only_daily_wildcard_and_needed_intraday() -> None:
    plan = plan_tables("acme-analytics", "analytics_1", TABLES, [date(2024, 3, 2), date(2024, 3, 3)])
    sql, params = build_event_query(
        EVENT_TYPES_BY_NAME["page_view"], "acme", plan, {"traffic_source", "device", "geo"}, {"device", "geo"}
    )
    assert "`acme-analytics.analytics_1.events_20*`" in sql
    assert "`acme-analytics.analytics_1.events_intraday_*`" in sql
    assert "events_*`" not in sql and "fresh" not in sql
    assert "'page_view'" not in sql and "'acme'" not in sql  # values travel as parameters
    values = {p.name: getattr(p, "value", None) or getattr(p, "values", None) for p in params}
    assert values == {
        "event_name": "page_view",
        "tenant_id": "acme",
        "daily_suffixes": ["240302"],
        "intraday_days": ["20240303"],
        "event_dates": ["20240302", "20240303"],
    }
    # Intraday tables lack traffic_source: that branch selects a typed NULL instead of failing.
    intraday_branch = sql.split("UNION ALL")[1]
    assert "CAST(NULL AS STRING) AS traffic_source_source" in intraday_branch
    assert "UNNEST(event_params) AS p" in sql


def test_lookback_window_and_schedule_requests_yesterday_apart_from_the_refresh() -> None:
    assert lookback_window(date(2024, 3, 10)) == ("2024-03-07", "2024-03-09")
    requests = ga4_run_requests(date(2024, 3, 10), ["zeta", "acme"])
    ranges = [
        (r.tags["tenant"], r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in requests
    ]
    assert ranges == [
        ("acme", "2024-03-09|acme", "2024-03-09|acme"),
        ("acme", "2024-03-07|acme", "2024-03-08|acme"),
        ("zeta", "2024-03-09|zeta", "2024-03-09|zeta"),
        ("zeta", "2024-03-07|zeta", "2024-03-08|zeta"),
    ]
    assert len({r.run_key for r in requests}) == 4


def test_find_gaps() -> None:
    days = [date(2024, 1, d) for d in (1, 2, 5, 6, 9)]
    assert find_gaps(days) == [(date(2024, 1, 3), date(2024, 1, 4)), (date(2024, 1, 7), date(2024, 1, 8))]
    assert find_gaps([date(2024, 1, 1)]) == []


def test_bigquery_errors_become_clear_failures_and_only_transient_ones_are_retried() -> None:
    settings = GA4Settings(project="acme-analytics", dataset="analytics_1")
    stamina.set_testing(True, attempts=3)
    try:
        calls: list[int] = []

        def unauthorized() -> None:
            calls.append(1)
            raise google_exceptions.Unauthorized("Request had invalid authentication credentials.")

        with pytest.raises(dg.Failure, match="tenant 'acme': listing: BigQuery authentication failed") as failure:
            call_bigquery("acme", settings, "listing", unauthorized)
        assert failure.value.allow_retries is False and len(calls) == 1

        def denied() -> None:
            raise google_exceptions.Forbidden("no", errors=[{"reason": "accessDenied"}])

        with pytest.raises(dg.Failure, match=r"access to acme-analytics.analytics_1 denied"):
            call_bigquery("acme", settings, "listing", denied)

        calls.clear()

        def rate_limited() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise google_exceptions.Forbidden("slow down", errors=[{"reason": "rateLimitExceeded"}])
            return "ok"

        assert call_bigquery("acme", settings, "listing", rate_limited) == "ok" and len(calls) == 3
    finally:
        stamina.set_testing(False)
