"""The metadata repository in the real warehouse: hierarchy, history across profile runs, idempotent recording,
schema drift, anomalies against history, and key uniqueness."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from ingestion_platform.defs.netsuite.drift import (
    AnomalyThresholds,
    anomaly_check_result,
    detect_anomalies,
    drift_check_result,
    key_check_result,
    key_uniqueness,
    schema_drift,
)
from ingestion_platform.defs.netsuite.metadata_repo import (
    REPOSITORY_TABLES,
    ColumnSnapshot,
    DataSource,
    ProfileSnapshot,
    netsuite_data_source,
    profile_history,
    record_profile,
    snapshot_of,
)
from ingestion_platform.defs.netsuite.profiling import profile_table
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.tenants import NetSuiteSettings

SOURCE = DataSource(
    data_source_id="netsuite/acme",
    tenant_id="acme",
    source_type="netsuite",
    name="NetSuite account 1234567",
    connection={"account_id": "1234567"},
    credentials_ref={"client_id_env": "ACME_NS_CLIENT_ID"},
    refresh_schedule="0 3 * * *",
)


def make_vendor(warehouse: WarehouseResource) -> None:
    with warehouse.raw_connection() as conn:
        conn.execute(
            "CREATE SCHEMA netsuite;"
            "CREATE TABLE netsuite.vendor (tenant_id text NOT NULL, id bigint NOT NULL, companyname text, "
            "email text, balance numeric, PRIMARY KEY (tenant_id, id));"
            "INSERT INTO netsuite.vendor SELECT 'acme', g, 'Vendor ' || g, "
            "CASE WHEN g % 4 = 0 THEN NULL ELSE 'v' || g || '@example.com' END, g * 10 FROM generate_series(1, 40) g;"
            "INSERT INTO netsuite.vendor VALUES ('other', 1, 'Other vendor', NULL, 5)"
        )


def repository_rows(warehouse: WarehouseResource) -> dict[str, pd.DataFrame]:
    return {
        spec.name: warehouse.query(f"SELECT * FROM {spec.qualified_name} ORDER BY 1, 2") for spec in REPOSITORY_TABLES
    }


def test_profile_is_recorded_through_the_hierarchy_with_history(warehouse: WarehouseResource) -> None:
    make_vendor(warehouse)
    first = profile_table(warehouse, "netsuite", "vendor", tenant_id="acme")
    recorded = record_profile(warehouse, SOURCE, first, run_id="run-1")

    source = warehouse.query("SELECT * FROM metadata.data_sources").to_dict("records")
    assert len(source) == 1 and source[0]["credentials_ref"] == {"client_id_env": "ACME_NS_CLIENT_ID"}
    assert warehouse.scalar("SELECT schema_name FROM metadata.schemas WHERE data_source_id = 'netsuite/acme'") == (
        "netsuite"
    )
    table = warehouse.query("SELECT * FROM metadata.tables").to_dict("records")
    assert len(table) == 1
    assert (table[0]["row_count"], table[0]["candidate_keys"], table[0]["last_profile_run_id"]) == (
        40,
        [["id"], ["companyname"], ["balance"]],
        recorded.profile_run_id,
    )
    email = warehouse.query(
        "SELECT data_type, inferred_type, pattern, is_nullable, is_candidate_key, sample_values "
        "FROM metadata.columns WHERE column_name = 'email'"
    ).to_dict("records")
    assert email == [
        {
            "data_type": "text",
            "inferred_type": "email",
            "pattern": "email",
            "is_nullable": True,
            "is_candidate_key": False,
            "sample_values": [
                "v10@example.com",
                "v11@example.com",
                "v13@example.com",
                "v14@example.com",
                "v15@example.com",
            ],
        }
    ]
    stats = warehouse.query(
        "SELECT column_name, row_count, null_count, null_rate, distinct_count, min_value, max_value, avg_value "
        "FROM metadata.profile_stats WHERE column_name IN ('email', 'balance') ORDER BY 1"
    ).to_dict("records")
    assert stats == [
        {
            "column_name": "balance",
            "row_count": 40,
            "null_count": 0,
            "null_rate": 0.0,
            "distinct_count": 40,
            "min_value": "10",
            "max_value": "400",
            "avg_value": "205.0",
        },
        {
            "column_name": "email",
            "row_count": 40,
            "null_count": 10,
            "null_rate": 0.25,
            "distinct_count": 30,
            "min_value": "v10@example.com",
            "max_value": "v9@example.com",
            "avg_value": None,
        },
    ]

    # a second run after the data changed: history keeps both runs, the current state follows the latest
    with warehouse.raw_connection() as conn:
        conn.execute(
            "INSERT INTO netsuite.vendor SELECT 'acme', g, 'Vendor ' || g, NULL, g FROM generate_series(41, 50) g"
        )
    second = replace(
        profile_table(warehouse, "netsuite", "vendor", tenant_id="acme"),
        profiled_at=first.profiled_at + timedelta(hours=1),
    )
    record_profile(warehouse, SOURCE, second, run_id="run-2")
    history = profile_history(warehouse, "netsuite/acme", "netsuite", "vendor")
    assert [h.row_count for h in history] == [50, 40]
    assert [h.columns["email"].null_count for h in history] == [20, 10]
    assert history[0].columns["email"].null_rate == 0.4
    assert warehouse.scalar("SELECT count(*) FROM metadata.profile_stats") == 2 * 5
    assert warehouse.scalar("SELECT row_count FROM metadata.tables") == 50
    assert (
        profile_history(warehouse, "netsuite/acme", "netsuite", "vendor", before=second.profiled_at)[0].row_count == 40
    )
    assert [h.row_count for h in profile_history(warehouse, "netsuite/acme", "netsuite", "vendor", limit=1)] == [50]
    assert profile_history(warehouse, "netsuite/other", "netsuite", "vendor") == []


def test_recording_the_same_run_twice_changes_nothing(warehouse: WarehouseResource) -> None:
    make_vendor(warehouse)
    profile = profile_table(warehouse, "netsuite", "vendor", tenant_id="acme")
    first = record_profile(warehouse, SOURCE, profile, run_id="run-1")
    before = repository_rows(warehouse)
    again = record_profile(warehouse, SOURCE, profile, run_id="run-1")
    assert again.profile_run_id == first.profile_run_id
    after = repository_rows(warehouse)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame)
    assert sum(load.inserted + load.updated for load in again.loads if load.mode == "merge") == 0
    assert len(profile_history(warehouse, "netsuite/acme", "netsuite", "vendor")) == 1


def test_removed_and_returning_columns_are_tracked(warehouse: WarehouseResource) -> None:
    make_vendor(warehouse)
    first = profile_table(warehouse, "netsuite", "vendor", tenant_id="acme")
    record_profile(warehouse, SOURCE, first, run_id="run-1")
    with warehouse.raw_connection() as conn:
        conn.execute("ALTER TABLE netsuite.vendor DROP COLUMN balance")
    second = replace(
        profile_table(warehouse, "netsuite", "vendor", tenant_id="acme"), profiled_at=first.profiled_at + timedelta(1)
    )
    assert record_profile(warehouse, SOURCE, second, run_id="run-2").removed_columns == ("balance",)
    columns = warehouse.query(
        "SELECT column_name, first_seen_at, last_seen_at, removed_at FROM metadata.columns ORDER BY column_name"
    ).set_index("column_name")
    assert columns.loc["balance", "removed_at"] == second.profiled_at
    assert columns.loc["balance", "last_seen_at"] == first.profiled_at
    assert columns.loc["email", "first_seen_at"] == first.profiled_at
    assert columns.loc["email", "last_seen_at"] == second.profiled_at
    assert columns["removed_at"].isna().sum() == 4


def test_netsuite_data_source_names_env_vars_never_secrets() -> None:
    settings = NetSuiteSettings(
        account_id="1234567_SB1",
        auth="oauth2",
        start_date="2026-01-01",
        client_id_env="ACME_NS_CLIENT_ID",
        certificate_id_env="ACME_NS_CERT_ID",
        private_key_env="ACME_NS_KEY",
    )
    source = netsuite_data_source("acme", settings, refresh_schedule="0 3 * * *")
    assert source.data_source_id == "netsuite/acme"
    assert source.credentials_ref == {
        "client_id_env": "ACME_NS_CLIENT_ID",
        "certificate_id_env": "ACME_NS_CERT_ID",
        "private_key_env": "ACME_NS_KEY",
    }
    assert source.connection["account_id"] == "1234567_SB1" and source.connection["auth"] == "oauth2"


def snapshot(row_count: int, columns: dict[str, tuple[str, str, float]], run: str = "") -> ProfileSnapshot:
    return ProfileSnapshot(
        profile_run_id=run,
        profiled_at=datetime(2026, 11, 1, tzinfo=UTC),
        row_count=row_count,
        columns={
            name: ColumnSnapshot(name, dtype, inferred, round(rate * row_count), rate)
            for name, (dtype, inferred, rate) in columns.items()
        },
    )


BASE = {"id": ("bigint", "integer", 0.0), "email": ("text", "email", 0.1), "code": ("text", "integer", 0.0)}


def test_schema_drift_reports_added_removed_and_retyped_columns() -> None:
    before = snapshot(100, BASE)
    assert not schema_drift(before, snapshot(120, BASE)).has_drift
    assert not schema_drift(None, before).has_drift

    after = snapshot(
        100,
        {
            "id": ("text", "integer", 0.0),  # the warehouse type changed
            "code": ("text", "text", 0.0),  # same type, but values are no longer all integers
            "phone": ("text", "phone", 0.5),
        },
    )
    drift = schema_drift(before, after)
    assert drift.added == ("phone",) and drift.removed == ("email",)
    assert [(r.column, r.before, r.after) for r in drift.retyped] == [("id", "bigint", "text")]
    assert [(r.column, r.before, r.after) for r in drift.reinferred] == [("code", "integer", "text")]
    result = drift_check_result(drift)
    assert not result.passed and "added phone" in (result.description or "")
    assert drift_check_result(schema_drift(before, before)).passed


def test_schema_drift_between_real_profiles(warehouse: WarehouseResource) -> None:
    make_vendor(warehouse)
    first = profile_table(warehouse, "netsuite", "vendor", tenant_id="acme")
    record_profile(warehouse, SOURCE, first, run_id="run-1")
    unchanged = profile_table(warehouse, "netsuite", "vendor", tenant_id="acme")
    previous = profile_history(warehouse, "netsuite/acme", "netsuite", "vendor", limit=1)[0]
    assert not schema_drift(previous, snapshot_of(unchanged)).has_drift
    with warehouse.raw_connection() as conn:
        conn.execute(
            "ALTER TABLE netsuite.vendor ADD COLUMN phone text; ALTER TABLE netsuite.vendor DROP COLUMN email;"
            "ALTER TABLE netsuite.vendor ALTER COLUMN balance TYPE double precision"
        )
    changed = profile_table(warehouse, "netsuite", "vendor", tenant_id="acme")
    drift = schema_drift(previous, snapshot_of(changed))
    assert (drift.added, drift.removed) == (("phone",), ("email",))
    assert [(r.column, r.before, r.after) for r in drift.retyped] == [("balance", "numeric", "double precision")]


def test_anomalies_flag_jumps_and_ignore_normal_variation() -> None:
    history = [snapshot(n, BASE) for n in (1000, 1010, 990, 1005, 995)]
    assert detect_anomalies(history, snapshot(1008, BASE)) == []
    assert detect_anomalies(history[:2], snapshot(10, BASE)) == []  # too little history to judge

    drop = detect_anomalies(history, snapshot(400, BASE))
    assert [(a.metric, a.column) for a in drop] == [("row_count", None)]
    assert drop[0].z_score < -3 and "row_count is 400" in drop[0].describe()

    nulls = {**BASE, "email": ("text", "email", 0.6)}
    found = detect_anomalies(history, snapshot(1000, nulls))
    assert [(a.metric, a.column, a.value) for a in found] == [("null_rate", "email", 0.6)]

    # a perfectly flat history has stdev 0: the minimum effect keeps one extra row from being an anomaly
    flat = [snapshot(1000, BASE) for _ in range(4)]
    assert detect_anomalies(flat, snapshot(1001, BASE)) == []
    assert [a.metric for a in detect_anomalies(flat, snapshot(1500, BASE))] == ["row_count"]
    assert [a.metric for a in detect_anomalies(flat, snapshot(0, BASE))] == ["row_count"]
    lenient = AnomalyThresholds(row_count_min_change=0.6)
    assert detect_anomalies(flat, snapshot(1500, BASE), lenient) == []

    result = anomaly_check_result(drop, len(history))
    assert not result.passed and result.metadata["history_profiles"].value == 5
    assert anomaly_check_result([], len(history)).passed


def test_key_uniqueness_in_the_loaded_table(warehouse: WarehouseResource) -> None:
    with warehouse.raw_connection() as conn:
        conn.execute(
            "CREATE SCHEMA netsuite;"
            "CREATE TABLE netsuite.item (tenant_id text, id bigint, name text);"
            "INSERT INTO netsuite.item VALUES ('acme', 1, 'a'), ('acme', 2, 'b'), ('acme', 3, 'c'), ('other', 1, 'x')"
        )
    ok = key_uniqueness(warehouse, "netsuite", "item", ("tenant_id", "id"))
    assert ok.passed and (ok.rows, ok.duplicate_keys, ok.rows_with_null_key) == (4, 0, 0)
    assert key_check_result(ok).passed
    with warehouse.raw_connection() as conn:
        conn.execute(
            "INSERT INTO netsuite.item VALUES ('acme', 2, 'b again'), ('acme', 2, 'b thrice'), ('acme', NULL, 'n')"
        )
    bad = key_uniqueness(warehouse, "netsuite", "item", ("tenant_id", "id"))
    assert (bad.rows, bad.duplicate_keys, bad.rows_with_null_key) == (7, 1, 1)
    assert bad.sample_duplicates == (("acme", "2"),) and not key_check_result(bad).passed
    scoped = key_uniqueness(warehouse, "netsuite", "item", ("id",), tenant_id="other")
    assert scoped.passed and scoped.rows == 1
    with pytest.raises(ValueError, match="invalid SQL identifier"):
        key_uniqueness(warehouse, "netsuite", "item", ("id; --",))
