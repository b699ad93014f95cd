"""netsuite/<table> end to end: the NetSuite sandbox (SuiteQL over HTTP with TBA) into the embedded PostgreSQL.

Expected rows come from the sandbox's own tables (`ground_truth`, DuckDB SQL), never from the code under test.
"""

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml

from ingestion_platform.defs.netsuite.assets import build_table_asset
from ingestion_platform.defs.netsuite.extract import Extraction
from ingestion_platform.defs.netsuite.schedules import netsuite_run_requests
from ingestion_platform.defs.netsuite.suiteql import Window
from ingestion_platform.resources.netsuite import NetSuiteResource
from ingestion_platform.resources.netsuite_auth import NetSuiteTBA
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.netsuite_api import (
    SANDBOX_TBA_KEYS,
    SUITEQL_PATH,
    M2MClient,
    NetSuiteSandbox,
    NetSuiteSandboxConfig,
    generate_m2m_key,
    run_netsuite_api,
)

START = date(2024, 3, 1)
DAYS = 4
ENV_NAMES = {
    "consumer_key": "NS_TEST_CONSUMER_KEY",
    "consumer_secret": "NS_TEST_CONSUMER_SECRET",
    "token_id": "NS_TEST_TOKEN_ID",
    "token_secret": "NS_TEST_TOKEN_SECRET",
}
ROWS = {"subsidiary": 5, "account": 20, "customer": 600, "vendor": 40, "employee": 20, "item": 50, "transaction": 300}
LAG = timedelta(minutes=15)

customer = build_table_asset("customer")
transaction = build_table_asset("transaction")
transactionline = build_table_asset("transactionline")


@dataclass
class Env:
    sandbox: NetSuiteSandbox
    warehouse: WarehouseResource
    instance: dg.DagsterInstance
    resources: dict[str, Any]

    def run(self, assets: list[dg.AssetsDefinition], partition_key: str | None = None, **tags: str) -> Any:
        return dg.materialize(
            assets,
            partition_key=partition_key,
            tags=tags or None,
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
        )

    def run_range(self, assets: list[dg.AssetsDefinition], first: date, last: date) -> Any:
        return self.run(
            assets,
            **{
                "dagster/asset_partition_range_start": f"{first}|acme",
                "dagster/asset_partition_range_end": f"{last}|acme",
            },
        )

    def truth(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.sandbox.ground_truth(sql, params)


def _window(first: date, last: date) -> tuple[datetime, datetime]:
    return datetime.combine(first, datetime.min.time()) - LAG, datetime.combine(
        last + timedelta(days=1), datetime.min.time()
    )


@pytest.fixture
def make_env(tmp_path: Path, warehouse: WarehouseResource, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    stack: list[Any] = []

    def make(token_secret: str | None = None, page_size: int = 1000, m2m: bool = False, **config: Any) -> Env:
        for name, env in ENV_NAMES.items():
            monkeypatch.setenv(env, SANDBOX_TBA_KEYS[name])
        if token_secret is not None:
            monkeypatch.setenv(ENV_NAMES["token_secret"], token_secret)
        settings = {"start": START, "days": DAYS, "rows": ROWS, "new_column_from_day": 2, **config}
        auth: dict[str, Any] = {"auth": "tba", **{f"{name}_env": env for name, env in ENV_NAMES.items()}}
        if m2m:
            private_pem, public_pem = generate_m2m_key("ES256")
            settings |= {"tba": None, "m2m": M2MClient("client-id-m2m", "cert-id-m2m", public_pem)}
            for env, value in (("NS_TEST_CLIENT_ID", "client-id-m2m"), ("NS_TEST_CERT_ID", "cert-id-m2m")):
                monkeypatch.setenv(env, value)
            monkeypatch.setenv("NS_TEST_PRIVATE_KEY", private_pem)
            auth = {
                "auth": "oauth2",
                "client_id_env": "NS_TEST_CLIENT_ID",
                "certificate_id_env": "NS_TEST_CERT_ID",
                "private_key_env": "NS_TEST_PRIVATE_KEY",
                "jwt_algorithm": "ES256",
            }
        context = run_netsuite_api(NetSuiteSandboxConfig(**settings))
        sandbox = context.__enter__()
        stack.append(context)
        tenants_file = tmp_path / "tenants.yaml"
        netsuite = {
            "account_id": sandbox.account_id,
            "start_date": START.isoformat(),
            "base_url": sandbox.base_url,
            **auth,
        }
        tenants_file.write_text(yaml.safe_dump({"tenants": {"acme": {"netsuite": netsuite}}}))
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("tenant", ["acme"])
        stack.append(instance)
        resources = {
            "warehouse": warehouse,
            "tenants": TenantsResource(path=str(tenants_file)),
            "netsuite": NetSuiteResource(page_size=page_size, lag_minutes=15, max_retry_wait_s=2),
        }
        return Env(sandbox, warehouse, instance, resources)

    yield make
    for item in reversed(stack):
        if isinstance(item, dg.DagsterInstance):
            item.dispose()
        else:
            item.__exit__(None, None, None)


def loaded_ids(env: Env, table: str = "customer", key: str = "id") -> set[int]:
    frame = env.warehouse.query(f"SELECT {key} FROM netsuite.{table} WHERE deleted_at IS NULL AND tenant_id = 'acme'")
    return set(frame[key].astype(int))


def checks(result: Any) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def tenant_outcome(check: dg.AssetCheckEvaluation, tenant: str) -> dict[str, Any]:
    """One tenant's entry in the reconciliation check's `by_tenant` JSON metadata (counts keyed by name)."""
    by_tenant = check.metadata["by_tenant"].value
    assert isinstance(by_tenant, dict), by_tenant
    outcome = by_tenant[tenant]
    assert isinstance(outcome, dict), outcome
    return outcome


def test_a_day_partition_fetches_only_that_day_and_reconciles(make_env: Any) -> None:
    env = make_env()
    day = START + timedelta(days=1)
    result = env.run([customer], f"{day}|acme")
    assert result.success
    low, high = _window(day, day)
    expected = {
        r[0]
        for r in env.truth("SELECT id FROM customer WHERE lastmodifieddate >= ? AND lastmodifieddate < ?", low, high)
    }
    assert expected and loaded_ids(env) == expected
    stamps = env.warehouse.query("SELECT min(lastmodifieddate) lo, max(lastmodifieddate) hi FROM netsuite.customer")
    assert stamps["lo"][0] >= low and stamps["hi"][0] < high
    check = checks(result)["reconciled_with_source"]
    assert check.passed
    by_tenant = tenant_outcome(check, "acme")
    assert by_tenant["extracted"] == by_tenant["source_count"] == len(expected)
    metadata = result.asset_materializations_for_node("netsuite__customer")[0].metadata
    assert metadata["rows_extracted"].value == len(expected)


def test_a_range_backfill_is_one_run_and_one_keyset_query(make_env: Any) -> None:
    env = make_env(page_size=200)
    last = START + timedelta(days=DAYS - 1)
    result = env.run_range([customer, transaction], START, last)
    assert result.success
    materializations = result.asset_materializations_for_node("netsuite__customer")
    assert {m.partition for m in materializations} == {f"{START + timedelta(days=i)}|acme" for i in range(DAYS)}
    assert materializations[0].metadata["windows"].value == [
        f"acme: {START - timedelta(days=1)} 23:45 .. {last + timedelta(days=1)} 00:00"
    ]
    assert loaded_ids(env) == {r[0] for r in env.truth("SELECT id FROM customer")}
    assert loaded_ids(env, "transaction") == {r[0] for r in env.truth("SELECT id FROM transaction")}
    # One count, ceil(n / 200) pages (+1 empty-final at most) and one deletedrecord page per table; not per day.
    n_customers = len(env.truth("SELECT id FROM customer"))
    assert materializations[0].metadata["suiteql_requests"].value <= 2 * (1 + n_customers // 200 + 2) + 2 * (
        1 + 300 // 200 + 2
    )
    # Typed columns: the catalog's types, values read through TO_CHAR where they are dates.
    row = env.warehouse.query(
        "SELECT trandate, foreigntotal, lastmodifieddate FROM netsuite.transaction WHERE deleted_at IS NULL LIMIT 1"
    )
    truth = env.truth("SELECT trandate, foreigntotal FROM transaction WHERE id = (SELECT min(id) FROM transaction)")
    assert isinstance(row["foreigntotal"][0], float) and truth


def test_a_table_larger_than_the_offset_cap_loads_completely(make_env: Any) -> None:
    env = make_env(page_size=50, offset_cap=100, rows={**ROWS, "customer": 900})
    result = env.run_range([customer], START, START + timedelta(days=DAYS - 1))
    assert result.success
    expected = {r[0] for r in env.truth("SELECT id FROM customer")}
    assert len(expected) > 100 * 5  # far past what offset paging could reach
    assert loaded_ids(env) == expected
    assert checks(result)["reconciled_with_source"].passed


def test_transactionline_is_keyed_by_uniquekey(make_env: Any) -> None:
    env = make_env(rows={**ROWS, "transactionline": 900})
    assert env.run_range([transactionline], START, START + timedelta(days=DAYS - 1)).success
    assert loaded_ids(env, "transactionline", "uniquekey") == {
        r[0] for r in env.truth("SELECT uniquekey FROM transactionline")
    }


def test_429_from_the_concurrency_limit_backs_off_and_succeeds(make_env: Any) -> None:
    env = make_env(max_concurrency=1, latency_s=0.3)
    auth = NetSuiteTBA(env.sandbox.account_id, **SANDBOX_TBA_KEYS)
    stats = env.sandbox.stats
    occupied = threading.Event()

    def other_integration() -> None:
        """Holds the account's only slot, request after request, until the asset has been turned away once."""
        refused = 0
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=env.sandbox.base_url, auth=auth, headers={"Prefer": "transient"}) as client:
            while stats.rejected_concurrency <= refused and time.monotonic() < deadline:
                occupied.set()
                response = client.post(SUITEQL_PATH, params={"limit": 1}, json={"q": "SELECT id FROM subsidiary"})
                refused += response.status_code == 429

    thread = threading.Thread(target=other_integration)
    thread.start()
    occupied.wait()
    result = env.run([customer], f"{START + timedelta(days=1)}|acme")
    thread.join()
    assert result.success
    assert stats.rejected_concurrency >= 1
    assert result.asset_materializations_for_node("netsuite__customer")[0].metadata["concurrency_waits"].value >= 1
    assert checks(result)["reconciled_with_source"].passed


def test_deleted_records_are_tombstoned_with_their_deletion_time(make_env: Any) -> None:
    env = make_env(deleted_share=0.1)
    last = START + timedelta(days=DAYS - 1)
    assert env.run_range([customer], START, last).success
    deleted = dict(env.truth("SELECT recordid, deleteddate FROM deletedrecord WHERE type = 'customer'"))
    assert deleted
    frame = env.warehouse.query("SELECT id, deleted_at FROM netsuite.customer WHERE deleted_at IS NOT NULL")
    stored = {int(r.id): r.deleted_at.replace(tzinfo=None) for r in frame.itertuples()}
    assert stored == deleted
    assert not loaded_ids(env) & set(deleted)  # never confused with live rows


def test_a_column_appearing_midway_evolves_the_table(make_env: Any) -> None:
    env = make_env()
    assert env.run([customer], f"{START}|acme").success
    columns = set(env.warehouse.query("SELECT * FROM netsuite.customer LIMIT 0").columns)
    assert "custentity_loyalty_tier" not in columns and "email" in columns
    later = START + timedelta(days=2)
    result = env.run([customer], f"{later}|acme")
    assert result.success
    assert result.asset_materializations_for_node("netsuite__customer")[0].metadata["added_columns"].value == [
        "custentity_loyalty_tier"
    ]
    low, high = _window(later, later)
    expected = dict(
        env.truth(
            "SELECT id, custentity_loyalty_tier FROM customer WHERE lastmodifieddate >= ? AND lastmodifieddate < ?",
            low,
            high,
        )
    )
    frame = env.warehouse.query(
        "SELECT id, custentity_loyalty_tier FROM netsuite.customer WHERE lastmodifieddate >= :lo", {"lo": low}
    )
    assert {int(r.id): r.custentity_loyalty_tier for r in frame.itertuples()} == expected
    early = env.warehouse.scalar(
        "SELECT count(*) FROM netsuite.customer WHERE lastmodifieddate < :d AND custentity_loyalty_tier IS NOT NULL",
        {"d": datetime.combine(START + timedelta(days=1), datetime.min.time())},
    )
    assert early == 0


def test_reconciliation_fails_when_rows_vanish_during_extraction(make_env: Any) -> None:
    env = make_env(latency_s=1.0)
    day = START + timedelta(days=1)
    low, high = _window(day, day)

    def delete_after_the_count() -> None:
        deadline = time.monotonic() + 10
        while env.sandbox.stats.suiteql_requests < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.4)  # the count is computed; its latency (1 s) still runs before the first page is asked
        env.truth("DELETE FROM customer WHERE lastmodifieddate >= ? AND lastmodifieddate < ? AND id % 2 = 0", low, high)

    thread = threading.Thread(target=delete_after_the_count)
    thread.start()
    result = env.run([customer], f"{day}|acme")
    thread.join()
    assert result.success  # the check warns the operator; the rows that were read are loaded
    check = checks(result)["reconciled_with_source"]
    assert not check.passed
    outcome = tenant_outcome(check, "acme")
    assert outcome["extracted"] < outcome["source_count"]


def test_reconciled_is_false_whenever_counts_disagree() -> None:
    window = Window(datetime(2024, 1, 1), datetime(2024, 1, 2))
    assert Extraction("customer", window, source_count=5, total_results=5, rows=5).reconciled
    assert not Extraction("customer", window, source_count=5, total_results=5, rows=4).reconciled
    assert not Extraction("customer", window, source_count=5, total_results=4, rows=5).reconciled


def test_rerun_is_idempotent(make_env: Any) -> None:
    env = make_env()
    day = START + timedelta(days=3)
    assert env.run([customer], f"{day}|acme").success
    before = env.warehouse.query("SELECT * FROM netsuite.customer ORDER BY id")
    again = env.run([customer], f"{day}|acme")
    assert again.success
    metadata = again.asset_materializations_for_node("netsuite__customer")[0].metadata
    assert metadata["rows_extracted"].value == len(before[before["deleted_at"].isna()])
    after = env.warehouse.query("SELECT * FROM netsuite.customer ORDER BY id")
    assert before.equals(after)
    counts = env.warehouse.scalar("SELECT count(*) FROM netsuite.customer")
    assert counts == len(before)


def test_secrets_never_reach_logs_or_events(make_env: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = make_env(token_secret="w" * 20 + "wrong-token-secret")
    result = env.run([customer], f"{START}|acme")
    assert not result.success  # the sandbox refuses the signature
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "INVALID_LOGIN" in failure.message
    events = "\n".join(dg.serialize_value(r) for r in env.instance.all_logs(result.run_id))
    text = events + "\n" + caplog.text
    for secret in [
        *(SANDBOX_TBA_KEYS[k] for k in ("consumer_secret", "token_id", "consumer_key")),
        "w" * 20 + "wrong-token-secret",
    ]:
        assert secret not in text
    assert "INVALID_LOGIN" in events


def test_oauth2_tenant_extracts_with_one_cached_token(make_env: Any) -> None:
    env = make_env(m2m=True, page_size=100)
    result = env.run_range([customer], START, START + timedelta(days=DAYS - 1))
    assert result.success
    assert loaded_ids(env) == {r[0] for r in env.truth("SELECT id FROM customer")}
    requests = result.asset_materializations_for_node("netsuite__customer")[0].metadata["suiteql_requests"].value
    assert requests > 5 and env.sandbox.stats.tokens_issued == 1


def test_schedule_loads_yesterday_and_rechecks_the_day_before() -> None:
    requests = netsuite_run_requests(date(2024, 3, 10), ["globex", "acme"])
    assert [r.tags["dagster/asset_partition_range_start"] for r in requests] == ["2024-03-08|acme", "2024-03-08|globex"]
    assert [r.tags["dagster/asset_partition_range_end"] for r in requests] == ["2024-03-09|acme", "2024-03-09|globex"]


def test_lines_of_deleted_and_edited_transactions_are_tombstoned(make_env: Any) -> None:
    """NetSuite lists deleted transactions in deletedrecord, never their lines: a deleted transaction's stored
    lines take its deletion time, and a line removed from an edited transaction takes the edit time."""
    env = make_env(rows={**ROWS, "transactionline": 900})
    last = START + timedelta(days=DAYS - 1)
    assert env.run_range([transactionline], START, last).success
    lines = env.truth("SELECT transaction, uniquekey FROM transactionline ORDER BY transaction, uniquekey")
    by_parent: dict[int, list[int]] = {}
    for parent, key in lines:
        by_parent.setdefault(parent, []).append(key)
    dropped, edited = [p for p, keys in by_parent.items() if len(keys) >= 2][:2]
    removed_line, kept_lines = by_parent[edited][0], by_parent[edited][1:]
    when = datetime.combine(last, datetime.min.time()) + timedelta(hours=12)
    env.truth("DELETE FROM transactionline WHERE transaction = ?", dropped)
    env.truth("DELETE FROM transaction WHERE id = ?", dropped)
    env.truth("INSERT INTO deletedrecord VALUES (?, 'salesorder', 'gone', ?, 'userinterface')", dropped, when)
    env.truth("DELETE FROM transactionline WHERE uniquekey = ?", removed_line)
    env.truth("UPDATE transaction SET lastmodifieddate = ? WHERE id = ?", when + timedelta(minutes=5), edited)

    result = env.run([transactionline], f"{last}|acme")
    assert result.success
    frame = env.warehouse.query(
        "SELECT uniquekey, deleted_at FROM netsuite.transactionline WHERE deleted_at IS NOT NULL AND tenant_id = 'acme'"
    )
    stored = {int(r.uniquekey): r.deleted_at.replace(tzinfo=None) for r in frame.itertuples()}
    assert stored == {
        **dict.fromkeys(by_parent[dropped], when),
        removed_line: when + timedelta(minutes=5),
    }
    assert set(kept_lines) <= loaded_ids(env, "transactionline", "uniquekey")
    metadata = result.asset_materializations_for_node("netsuite__transactionline")[0].metadata
    assert metadata["deleted_lines"].value == len(by_parent[dropped]) + 1
