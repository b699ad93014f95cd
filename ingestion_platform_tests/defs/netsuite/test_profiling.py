"""Profiling in the real warehouse: exact statistics on a hand-checked table, key and foreign-key candidates,
tenant scoping, Dagster metadata, and a million-row table."""

import time
from datetime import UTC, datetime

import dagster as dg
import pytest

from ingestion_platform.defs.netsuite.profiling import (
    TableProfile,
    TopValue,
    column_schema,
    declared_key_profile,
    profile_metadata,
    profile_table,
    stats_table,
    summary_markdown,
)
from ingestion_platform.resources.warehouse import WarehouseResource

U = "6f1c2a9e-0b7d-4c1e-9a3f-0000000001"  # + two hex digits: a valid lower-case UUID

# Tenant acme: 10 customers, every value chosen so the statistics below can be checked by hand.
# id, email, phone, amount, created, status, code, subsidiary, legacy_sub, external_id, signup
ACME = [
    (101, "ann@example.com", "555-123-4567", 10, "2024-01-01", "active", "100", 1, 1, U + "01", "1/15/2024"),
    (102, "bob@example.com", "(555) 123-4568", 20, "2024-01-02", "active", "200", 1, 2, U + "02", "1/15/2024"),
    (103, "cy@example.org", "+44 20 7946 0958", 30, "2024-01-03", "inactive", "300", 2, 3, U + "03", "2/1/2024"),
    (104, "dee@example.com", "555.123.4570", None, "2024-01-04", "active", "400", 2, 42, U + "04", "12/31/2023"),
    (105, "ivy@example.com", None, 50, "2024-01-05", "lead", "500", 2, None, U + "05", "3/3/2024"),
    (106, "not-an-email", "555-123-4572", 60, None, "active", "600", 3, None, U + "06", "3/3/2024"),
    (107, "eve@example.com", None, 70, "2024-01-07", "inactive", "700", None, None, U + "07", "3/3/2024"),
    (108, "fay@example.com", "555-123-4574", 80, "2024-01-08", "active", "800", 3, None, U + "08", "3/3/2024"),
    (109, "fay@example.com", "555-123-4575", 90, "2024-01-09", "lead", "900", 3, None, None, "3/3/2024"),
    (110, "hal@example.com", "555-123-4576", 100, "2024-01-10", "active", "900", 3, None, None, "3/3/2024"),
]
# Tenant other: same ids, so id is unique per tenant only; its rows must never leak into acme's numbers.
OTHER = [
    (101, "zed@example.com", "555-000-0001", 5, "2024-02-01", "active", "100", 9, None, None, "1/1/2024"),
    (102, "yan@example.com", None, 7, "2024-02-02", "lead", "200", 9, None, None, "1/2/2024"),
]
SUBSIDIARIES = [("acme", 1, "US"), ("acme", 2, "UK"), ("acme", 3, "DE"), ("acme", 4, "FR"), ("other", 9, "NL")]


def create_tables(warehouse: WarehouseResource) -> None:
    with warehouse.raw_connection() as conn:
        conn.execute(
            "CREATE SCHEMA erp;"
            "CREATE TABLE erp.customer (tenant_id text NOT NULL, id bigint NOT NULL, email text, phone text, "
            "amount numeric, created date, status text, code text, subsidiary bigint, legacy_sub bigint, "
            "external_id text, signup text, PRIMARY KEY (tenant_id, id));"
            "CREATE TABLE erp.subsidiary (tenant_id text NOT NULL, id bigint NOT NULL, name text, "
            "PRIMARY KEY (tenant_id, id))"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO erp.customer VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [("acme", *r) for r in ACME] + [("other", *r) for r in OTHER],
            )
            cur.executemany("INSERT INTO erp.subsidiary VALUES (%s, %s, %s)", SUBSIDIARIES)


@pytest.fixture
def customer(warehouse: WarehouseResource) -> TableProfile:
    create_tables(warehouse)
    subsidiary = profile_table(warehouse, "erp", "subsidiary", tenant_id="acme")
    return profile_table(warehouse, "erp", "customer", tenant_id="acme", references=[subsidiary])


def test_statistics_are_exact(customer: TableProfile) -> None:
    assert customer.row_count == 10
    assert [c.name for c in customer.columns][:3] == ["tenant_id", "id", "email"]

    tenant = customer.column("tenant_id")
    assert (tenant.null_count, tenant.distinct_count, tenant.top_values) == (0, 1, (TopValue("acme", 10),))

    ident = customer.column("id")
    assert (ident.kind, ident.inferred_type, ident.null_count, ident.distinct_count) == ("integer", "integer", 0, 10)
    assert (ident.min_value, ident.max_value, ident.avg_value) == ("101", "110", 105.5)
    assert ident.top_values == tuple(TopValue(str(i), 1) for i in range(101, 106))
    assert ident.is_unique and ident.pattern is None and ident.pattern_shares == {}

    email = customer.column("email")
    assert (email.null_count, email.distinct_count, email.min_length, email.max_length) == (0, 9, 12, 15)
    assert (email.min_value, email.max_value, email.avg_value) == ("ann@example.com", "not-an-email", None)
    assert email.top_values == (
        TopValue("fay@example.com", 2),
        TopValue("ann@example.com", 1),
        TopValue("bob@example.com", 1),
        TopValue("cy@example.org", 1),
        TopValue("dee@example.com", 1),
    )
    assert email.pattern_shares["email"] == 0.9 and email.pattern_shares["phone"] == 0.0
    assert (email.pattern, email.inferred_type, email.is_unique) == ("email", "email", False)

    phone = customer.column("phone")
    assert (phone.null_count, phone.non_null_count, phone.distinct_count) == (2, 8, 8)
    assert phone.null_rate == 0.2
    assert (phone.min_value, phone.max_value, phone.min_length, phone.max_length) == (
        "(555) 123-4568",
        "555.123.4570",
        12,
        16,
    )
    assert [t.value for t in phone.top_values] == [
        "(555) 123-4568",
        "+44 20 7946 0958",
        "555-123-4567",
        "555-123-4572",
        "555-123-4574",
    ]
    assert (phone.pattern, phone.inferred_type, phone.pattern_shares["phone"]) == ("phone", "phone", 1.0)

    amount = customer.column("amount")
    assert (amount.kind, amount.null_count, amount.distinct_count) == ("decimal", 1, 9)
    assert (amount.min_value, amount.max_value) == ("10", "100")
    assert amount.avg_value == pytest.approx(510 / 9, rel=1e-15)
    assert amount.top_values[0] == TopValue("10", 1)

    created = customer.column("created")
    assert (created.kind, created.inferred_type, created.null_count, created.distinct_count) == (
        "temporal",
        "date",
        1,
        9,
    )
    assert (created.min_value, created.max_value) == ("2024-01-01", "2024-01-10")
    # mean of days 1,2,3,4,5,7,8,9,10 is day 5 + 4/9: 2024-01-05 10:40 exactly
    assert created.avg_value == datetime(2024, 1, 5, 10, 40, tzinfo=UTC)

    status = customer.column("status")
    assert status.top_values == (TopValue("active", 6), TopValue("inactive", 2), TopValue("lead", 2))
    assert (status.distinct_count, status.inferred_type, status.pattern) == (3, "text", None)
    assert (status.min_value, status.max_value) == ("active", "lead")

    code = customer.column("code")
    assert (code.inferred_type, code.pattern, code.distinct_count) == ("integer", None, 9)
    assert code.top_values[:2] == (TopValue("900", 2), TopValue("100", 1))
    assert (code.min_value, code.max_value) == ("100", "900")

    subsidiary = customer.column("subsidiary")
    assert subsidiary.top_values == (TopValue("3", 4), TopValue("2", 3), TopValue("1", 2))
    assert (subsidiary.null_count, subsidiary.distinct_count) == (1, 3)
    assert subsidiary.avg_value == pytest.approx(20 / 9, rel=1e-15)

    external = customer.column("external_id")
    assert (external.null_count, external.distinct_count) == (2, 8)
    assert (external.pattern, external.inferred_type) == ("uuid", "uuid")

    signup = customer.column("signup")
    assert signup.top_values == (
        TopValue("3/3/2024", 6),
        TopValue("1/15/2024", 2),
        TopValue("12/31/2023", 1),
        TopValue("2/1/2024", 1),
    )
    assert (signup.pattern, signup.inferred_type, signup.pattern_shares["date_mdy"]) == ("date_mdy", "date", 1.0)
    assert (signup.min_value, signup.max_value) == ("1/15/2024", "3/3/2024")


def test_text_statistics_are_the_same_from_the_scan_and_from_the_groups(
    warehouse: WarehouseResource, customer: TableProfile
) -> None:
    """Text statistics come from the raw scan for columns the planner expects to have many distinct values, from
    the grouped values otherwise: both paths must give the same numbers."""
    with warehouse.raw_connection() as conn:
        conn.execute("ANALYZE erp.customer")
    subsidiary = profile_table(warehouse, "erp", "subsidiary", tenant_id="acme")
    from_scan = profile_table(
        warehouse, "erp", "customer", tenant_id="acme", references=[subsidiary], grouped_text_max_distinct=0
    )
    assert from_scan.columns == customer.columns
    assert (from_scan.candidate_keys, from_scan.foreign_keys) == (customer.candidate_keys, customer.foreign_keys)


def test_key_and_foreign_key_candidates(customer: TableProfile) -> None:
    # id is the only unique non-null column for one tenant; email and code repeat a value, others hold NULLs
    assert customer.candidate_keys == (("id",),)
    found = {(fk.column, fk.ref_qualified_name): (fk.contained, fk.distinct_values) for fk in customer.foreign_keys}
    # subsidiary's values {1, 2, 3} all exist in acme's subsidiaries; legacy_sub's 42 does not (3 of 4 < 99%);
    # code looks like integers but none is a subsidiary or customer id; tenant_id and the key itself are skipped
    assert found == {("subsidiary", "erp.subsidiary.id"): (3, 3)}


def test_foreign_key_threshold_is_honoured(warehouse: WarehouseResource) -> None:
    create_tables(warehouse)
    subsidiary = profile_table(warehouse, "erp", "subsidiary", tenant_id="acme")
    loose = profile_table(warehouse, "erp", "customer", tenant_id="acme", references=[subsidiary], fk_threshold=0.75)
    assert {(fk.column, fk.ref_qualified_name, fk.coverage) for fk in loose.foreign_keys} == {
        ("subsidiary", "erp.subsidiary.id", 1.0),
        ("legacy_sub", "erp.subsidiary.id", 0.75),
    }


def test_whole_table_profile_finds_the_composite_key(warehouse: WarehouseResource) -> None:
    create_tables(warehouse)
    whole = profile_table(warehouse, "erp", "customer")
    assert whole.row_count == 12 and whole.tenant_id is None
    assert whole.column("tenant_id").top_values == (TopValue("acme", 10), TopValue("other", 2))
    assert whole.column("id").distinct_count == 10 and not whole.column("id").is_unique
    # no single column is unique across tenants; the pair with the fewest combinations comes first
    assert whole.candidate_keys[0] == ("tenant_id", "id")
    other = profile_table(warehouse, "erp", "customer", tenant_id="other")
    assert other.row_count == 2 and other.column("subsidiary").top_values == (TopValue("9", 2),)


def test_profile_refuses_unknown_tables_and_scopes(warehouse: WarehouseResource) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        profile_table(warehouse, "erp", "nothing")
    with warehouse.raw_connection() as conn:
        conn.execute("CREATE SCHEMA erp; CREATE TABLE erp.plain (id bigint)")
    with pytest.raises(ValueError, match="no 'tenant_id' column"):
        profile_table(warehouse, "erp", "plain", tenant_id="acme")
    with pytest.raises(ValueError, match="invalid SQL identifier"):
        profile_table(warehouse, "erp", "plain; DROP TABLE x")
    empty = profile_table(warehouse, "erp", "plain")
    assert empty.row_count == 0 and empty.candidate_keys == ()
    assert empty.column("id").distinct_count == 0 and empty.column("id").avg_value is None


def test_profile_renders_as_dagster_metadata(customer: TableProfile) -> None:
    schema = column_schema(customer)
    email = next(c for c in schema.columns if c.name == "email")
    assert email.type == "text" and email.tags == {"inferred_type": "email", "pattern": "email"}
    assert "distinct 9" in (email.description or "") and "fay@example.com (2)" in (email.description or "")
    ident = next(c for c in schema.columns if c.name == "id")
    assert ident.constraints.unique and not ident.constraints.nullable

    table = stats_table(customer)
    assert [r.data["column"] for r in table.records] == [c.name for c in customer.columns]
    phone = next(r.data for r in table.records if r.data["column"] == "phone")
    assert (phone["nulls"], phone["null_rate"], phone["distinct"], phone["pattern"]) == (2, 0.2, 8, "phone")

    summary = summary_markdown(customer)
    assert "10 rows" in summary and "candidate keys: (id)" in summary and "subsidiary → erp.subsidiary.id" in summary

    metadata = profile_metadata(customer)
    assert metadata["dagster/row_count"] == dg.MetadataValue.int(10)
    assert metadata["candidate_keys"] == dg.MetadataValue.json([["id"]])
    # the metadata is accepted by Dagster as a materialization's metadata
    dg.MaterializeResult(metadata=metadata)


def test_million_row_table_is_profiled_in_the_warehouse(warehouse: WarehouseResource) -> None:
    with warehouse.raw_connection() as conn:
        conn.execute(
            "CREATE SCHEMA big;"
            "CREATE TABLE big.account (tenant_id text NOT NULL, id bigint NOT NULL, parent bigint, amount numeric, "
            "email text, status text, modified timestamptz);"
            "INSERT INTO big.account SELECT 'acme', g, CASE WHEN g % 10 = 0 THEN NULL ELSE (g + 1) / 2 END, "
            "g % 1000, 'user' || g || '@example.com', (ARRAY['open', 'closed', 'pending'])[g % 3 + 1], "
            "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' FROM generate_series(1, 1000000) g;"
            "ANALYZE big.account"
        )
    started = time.perf_counter()
    profile = profile_table(warehouse, "big", "account", tenant_id="acme")
    print(f"\nprofiled 1,000,000 rows x 7 columns in {time.perf_counter() - started:.2f} s")
    assert profile.row_count == 1_000_000
    ident = profile.column("id")
    assert (ident.distinct_count, ident.min_value, ident.max_value, ident.avg_value) == (
        1_000_000,
        "1",
        "1000000",
        500000.5,
    )
    parent = profile.column("parent")
    assert (parent.null_count, parent.distinct_count) == (100_000, 500_000)
    amount = profile.column("amount")
    assert (amount.distinct_count, amount.min_value, amount.max_value) == (1000, "0", "999")
    assert amount.avg_value == pytest.approx(499.5)  # every residue 0..999 appears 1,000 times
    email = profile.column("email")
    assert (email.distinct_count, email.pattern, email.pattern_shares["email"]) == (1_000_000, "email", 1.0)
    status = profile.column("status")
    assert {t.value: t.count for t in status.top_values} == {"open": 333_333, "closed": 333_334, "pending": 333_333}
    modified = profile.column("modified")
    assert modified.avg_value == datetime(2026, 1, 6, 18, 53, 20, 500000, tzinfo=UTC)
    assert set(profile.candidate_keys) == {("id",), ("email",), ("modified",)}
    # parent values are ids of the same table: a self-referencing foreign key
    assert [(fk.column, fk.ref_column) for fk in profile.foreign_keys] == [("parent", "id")]


def test_each_column_keeps_its_most_likely_foreign_key(warehouse: WarehouseResource) -> None:
    """Values 1..5 lie inside every table's 1..N ids: the key of the table the column is named after wins, and
    without one the tightest key (fewest values) does, not every table with enough ids."""
    with warehouse.raw_connection() as conn:
        conn.execute(
            "CREATE SCHEMA erp;"
            "CREATE TABLE erp.subsidiary (tenant_id text, id bigint);"
            "CREATE TABLE erp.account (tenant_id text, id bigint);"
            "CREATE TABLE erp.vendor (tenant_id text, id bigint, account bigint, owner bigint);"
            "INSERT INTO erp.subsidiary SELECT 'acme', g FROM generate_series(1, 5) g;"
            "INSERT INTO erp.account SELECT 'acme', g FROM generate_series(1, 60) g;"
            "INSERT INTO erp.vendor SELECT 'acme', g, 1 + g % 3, 1 + g % 5 FROM generate_series(1, 40) g;"
        )
    refs = [profile_table(warehouse, "erp", name, tenant_id="acme") for name in ("subsidiary", "account")]
    vendor = profile_table(warehouse, "erp", "vendor", tenant_id="acme", references=refs)
    assert [(fk.column, fk.ref_qualified_name) for fk in vendor.foreign_keys] == [
        ("account", "erp.account.id"),  # named after account, although subsidiary's 5 ids hold its 3 values too
        ("owner", "erp.subsidiary.id"),  # no table named owner: the tightest key holding all 5 values
    ]
    # Before subsidiary has a profile, its declared key stands in: one count, the same candidate.
    declared = declared_key_profile(warehouse, "erp", "subsidiary", "id", tenant_id="acme")
    assert declared is not None and declared.column("id").distinct_count == 5
    assert declared.column("id").inferred_type == refs[0].column("id").inferred_type == "integer"
    assert declared_key_profile(warehouse, "erp", "missing", "id", tenant_id="acme") is None
    owner = profile_table(warehouse, "erp", "vendor", tenant_id="acme", references=[declared]).foreign_keys
    assert [(fk.column, fk.ref_qualified_name) for fk in owner] == [
        ("account", "erp.subsidiary.id"),
        ("owner", "erp.subsidiary.id"),
    ]
