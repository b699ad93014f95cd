"""Loader v2 against a real PostgreSQL: row-level quarantine, foreign keys with parking, deletes, new types, short
transactions, DDL only where needed, a least-privilege role and a fresh warehouse loaded in parallel."""

import decimal
import multiprocessing
import threading
import uuid
from datetime import UTC, datetime

import pandas as pd
import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.warehouse import (
    Column,
    ForeignKey,
    Reject,
    TableSpec,
    ensure_table,
    table_spec_from_arrow,
    table_spec_from_pairs,
)

ITEMS = TableSpec(
    schema="shop",
    name="items",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("item_id", "bigint", nullable=False),
        Column("quantity", "integer"),
        Column("name", "text", nullable=False),
        Column("attrs", "jsonb"),
    ),
    key=("tenant_id", "item_id"),
    checks={"quantity_positive": "quantity > 0"},
)
CUSTOMERS = TableSpec(
    schema="shop",
    name="customers",
    columns=(Column("tenant_id", "text", nullable=False), Column("customer_id", "text", nullable=False)),
    key=("tenant_id", "customer_id"),
)


def orders_spec(on_missing: str) -> TableSpec:
    return TableSpec(
        schema="shop",
        name="orders",
        columns=(
            Column("tenant_id", "text", nullable=False),
            Column("order_id", "text", nullable=False),
            Column("customer_id", "text"),
            Column("total", "numeric(12,2)"),
        ),
        key=("tenant_id", "order_id"),
        foreign_keys=(ForeignKey(("tenant_id", "customer_id"), "shop.customers", on_missing=on_missing),),  # type: ignore[arg-type]
    )


def q(warehouse: WarehouseResource, statement: str) -> list[tuple]:
    with warehouse.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(statement))]


def test_one_bad_value_rejects_one_row_with_reason_column_and_raw(warehouse: WarehouseResource) -> None:
    batch = pa.table(
        {
            "tenant_id": ["a"] * 8,
            "item_id": ["1", "2", "1.0", "4", "5", "6", "7", "8"],
            "quantity": ["3", "99999999999", "1", "2", "-1", "1", "1", "1"],
            "name": ["ok", "big", "float", None, "neg", "nul\x00byte", "badjson", "ok2"],
            "attrs": ['{"a": 1}', None, None, None, None, None, "{not json", "[1, 2]"],
        }
    )
    result = warehouse.load(ITEMS, [batch], mode="merge", source="batch-1")
    assert (result.inserted, result.rejected) == (2, 6)
    assert q(warehouse, "SELECT item_id, attrs FROM shop.items ORDER BY 1") == [(1, {"a": 1}), (8, [1, 2])]
    rejects = {
        r[0]: r[1:]
        for r in q(
            warehouse,
            "SELECT line_number, column_name, reason, raw->>'name', tenant_id, source_file, loaded_at IS NOT NULL "
            "FROM shop.items_rejects",
        )
    }
    assert rejects[2][0] == "quantity" and "out of range for type integer" in rejects[2][1]
    assert rejects[3][0] == "item_id" and 'invalid input syntax for type bigint: "1.0"' in rejects[3][1]
    assert rejects[4][0] == "name" and "not-null" in rejects[4][1]
    assert rejects[5][1] == "check quantity_positive failed: quantity > 0" and rejects[5][2] == "neg"
    assert rejects[6][0] == "name" and "NUL byte" in rejects[6][1] and rejects[6][2] == "nul\ufffdbyte"
    assert rejects[7][0] == "attrs" and "json" in rejects[7][1]
    assert all(r[3:] == ("a", "batch-1", True) for r in rejects.values())
    # The check is a real constraint too.
    with pytest.raises(sa.exc.IntegrityError, match="quantity_positive"), warehouse.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO shop.items VALUES ('a', 99, 0, 'x', NULL)")

    # Reloading the same source replaces its rejects instead of adding to them.
    again = warehouse.load(ITEMS, [batch], mode="merge", source="batch-1")
    assert again.rejected == 6 and q(warehouse, "SELECT count(*) FROM shop.items_rejects") == [(6,)]


EVENTS = TableSpec(
    schema="shop",
    name="events",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("event_id", "bigint", nullable=False),
        Column("payload", "jsonb"),
        Column("note", "text"),
    ),
    key=("tenant_id", "event_id"),
)


@pytest.mark.parametrize("target", ["empty", "loaded"])
def test_json_that_jsonb_refuses_is_rejected_without_checks_declared(warehouse: WarehouseResource, target) -> None:
    """A spec without checks tries the load unchecked, then marks values that are not JSON with the cheap check;
    values that are JSON but not jsonb (a \\u0000 escape, a number beyond numeric) still fail, and the exact check
    finds them. Into an empty table (plain INSERT) and a loaded one (MERGE); with a NUL byte marked before COPY too."""
    if target == "loaded":
        warehouse.load(EVENTS, [pa.table({"tenant_id": ["a"], "event_id": [100], "payload": ["{}"]})], mode="merge")
    batch = pa.table(
        {
            "tenant_id": ["a"] * 6,
            "event_id": [1, 2, 3, 4, 5, 6],
            "payload": ['{"a": 1}', "{not json", '{"a": "\\u0000"}', "[1, 2]", '{"n": 1e1000000}', '"s"'],
            "note": ["ok", "x", "y", "ok", "z", "nul\x00" if target == "loaded" else "ok"],
        }
    )
    result = warehouse.load(EVENTS, [batch], mode="merge", source="events-1")
    good = [(1, {"a": 1}), (4, [1, 2])] + ([] if target == "loaded" else [(6, "s")])
    assert (result.inserted, result.rejected) == (len(good), 6 - len(good))
    assert q(warehouse, "SELECT event_id, payload FROM shop.events WHERE event_id < 100 ORDER BY 1") == good
    rejects = q(warehouse, "SELECT line_number, column_name, reason, raw->>'payload' FROM shop.events_rejects")
    by_line = {line: (column, reason, raw) for line, column, reason, raw in rejects}
    assert sorted(by_line) == ([2, 3, 5, 6] if target == "loaded" else [2, 3, 5])
    assert by_line[2][0] == "payload" and "json" in by_line[2][1] and by_line[2][2] == "{not json"
    assert by_line[3][0] == "payload" and "unsupported Unicode escape sequence" in by_line[3][1]
    assert by_line[5][0] == "payload" and by_line[5][1]
    if target == "loaded":
        assert by_line[6][0] == "note" and "NUL byte" in by_line[6][1]
    # A reload of the same source replaces its rejects.
    again = warehouse.load(EVENTS, [batch], mode="merge", source="events-1")
    assert again.rejected == 6 - len(good) and q(warehouse, "SELECT count(*) FROM shop.events_rejects") == [
        (6 - len(good),)
    ]


def test_parser_rejects_go_to_the_same_table_in_the_same_load(warehouse: WarehouseResource) -> None:
    frame = pd.DataFrame({"tenant_id": ["a"], "item_id": [1], "name": ["x"], "quantity": [1]})
    parse_failure = Reject(line_number=7, reason="expected 3 fields, found 2", raw={"a": "1"}, tenant_id="a")
    result = warehouse.load(ITEMS, [frame], mode="merge", source="f.csv", rejects=[parse_failure])
    assert (result.inserted, result.rejected) == (1, 1)
    assert q(warehouse, "SELECT line_number, reason, raw, source_file FROM shop.items_rejects") == [
        (7, "expected 3 fields, found 2", {"a": "1"}, "f.csv")
    ]


def test_foreign_keys_are_tenant_scoped_real_constraints_and_reject(warehouse: WarehouseResource) -> None:
    orders = orders_spec("reject")
    warehouse.migrate([orders, CUSTOMERS])  # parents first, whatever the order given
    warehouse.load(CUSTOMERS, [pd.DataFrame({"tenant_id": ["a"], "customer_id": ["c1"]})], mode="merge")
    batch = pd.DataFrame(
        {"tenant_id": ["a", "b", "a"], "order_id": ["o1", "o2", "o3"], "customer_id": ["c1", "c1", None]}
    )
    result = warehouse.load(orders, [batch], mode="merge")
    # Tenant b's c1 is not tenant a's c1; an order without a customer has no parent to miss.
    assert (result.inserted, result.rejected) == (2, 1)
    assert q(warehouse, "SELECT tenant_id, reason FROM shop.orders_rejects") == [
        ("b", "foreign key orders__tenant_id_customer_id_fkey: no shop.customers row with this tenant_id, customer_id")
    ]
    with (
        pytest.raises(sa.exc.IntegrityError, match="orders__tenant_id_customer_id_fkey"),
        warehouse.engine.begin() as c,
    ):
        c.exec_driver_sql("INSERT INTO shop.orders VALUES ('b', 'o9', 'c1', 1)")


def test_bad_values_duplicates_and_orphans_into_an_empty_table_without_checks(warehouse: WarehouseResource) -> None:
    """Without declared checks a merge is first tried before its values are checked (into an empty target as a
    plain INSERT); every way that can fail (a value that does not parse, a repeated key, a missing parent) must
    still end as the checked merge would."""
    lines = TableSpec(
        schema="shop",
        name="lines",
        columns=(
            Column("tenant_id", "text", nullable=False),
            Column("line_id", "bigint", nullable=False),
            Column("customer_id", "text"),
            Column("attrs", "jsonb"),
        ),
        key=("tenant_id", "line_id"),
        foreign_keys=(ForeignKey(("tenant_id", "customer_id"), "shop.customers"),),
    )
    warehouse.migrate([CUSTOMERS, lines])
    warehouse.load(CUSTOMERS, [pd.DataFrame({"tenant_id": ["a"], "customer_id": ["c1"]})], mode="merge")
    batch = pa.table(
        {
            "tenant_id": ["a"] * 7,
            "line_id": ["1", "2", "2", "3", "3", "4.5", "5"],
            "customer_id": ["c1"] * 6 + ["zz"],
            "attrs": ['{"v": 1}', '{"v": 2}', '{"v": 22}', '{"v": 3}', "{bad", "{}", "{}"],
        }
    )
    result = warehouse.load(lines, [batch], mode="merge")
    # Key 2: the last occurrence wins; key 3: its last occurrence is rejected, so the valid first one loads.
    assert (result.inserted, result.rejected, result.duplicates_in_input) == (3, 3, 1)
    assert q(warehouse, "SELECT line_id, attrs FROM shop.lines ORDER BY 1") == [
        (1, {"v": 1}),
        (2, {"v": 22}),
        (3, {"v": 3}),
    ]
    assert q(warehouse, "SELECT column_name, line_number FROM shop.lines_rejects ORDER BY line_number") == [
        ("attrs", 5),
        ("line_id", 6),
        ("customer_id", 7),
    ]

    # Into the stored table: a merge tried before its values are checked, then again after one fails to parse.
    again = pa.table(
        {
            "tenant_id": ["a"] * 3,
            "line_id": pa.array([1, 2, 6], pa.int64()),
            "customer_id": ["c1"] * 3,
            "attrs": ['{"v": 10}', "{bad", '{"v": 6}'],
        }
    )
    result = warehouse.load(lines, [again], mode="merge")
    assert (result.inserted, result.updated, result.rejected) == (1, 1, 1)
    assert q(warehouse, "SELECT line_id, attrs FROM shop.lines ORDER BY 1") == [
        (1, {"v": 10}),
        (2, {"v": 22}),
        (3, {"v": 3}),
        (6, {"v": 6}),
    ]


@pytest.mark.parametrize("child_first", [True, False])
def test_parked_rows_load_on_the_childs_next_load_after_the_parent(warehouse: WarehouseResource, child_first) -> None:
    orders = orders_spec("park")
    warehouse.migrate([CUSTOMERS, orders])
    customer = pd.DataFrame({"tenant_id": ["a"], "customer_id": ["c1"]})
    order = pd.DataFrame({"tenant_id": ["a"], "order_id": ["o1"], "customer_id": ["c1"], "total": ["12.50"]})
    if not child_first:  # parent already there: nothing is parked
        warehouse.load(CUSTOMERS, [customer], mode="merge")
        result = warehouse.load(orders, [order], mode="merge")
        assert (result.inserted, result.parked, result.pending) == (1, 0, 0)
        return
    parked = warehouse.load(orders, [order], mode="merge", source="batch-1")
    assert (parked.inserted, parked.parked, parked.pending, parked.rejected) == (0, 1, 1, 0)
    assert parked.oldest_pending_seconds is not None
    assert q(warehouse, "SELECT table_name, tenant_id, parent, source_file FROM shop.pending") == [
        ("orders", "a", {"tenant_id": "a", "customer_id": "c1"}, "batch-1")
    ]
    # Still no parent: the parked row stays parked, once.
    still = warehouse.load(orders, [], mode="merge")
    assert (still.unparked, still.parked, still.pending, still.inserted) == (1, 1, 1, 0)
    warehouse.load(CUSTOMERS, [customer], mode="merge")
    resolved = warehouse.load(orders, [], mode="merge")
    assert (resolved.unparked, resolved.inserted, resolved.pending) == (1, 1, 0)
    assert q(warehouse, "SELECT order_id, total FROM shop.orders") == [("o1", decimal.Decimal("12.50"))]
    assert q(warehouse, "SELECT count(*) FROM shop.pending") == [(0,)]


def test_a_tenants_load_retries_only_its_own_parked_rows(warehouse: WarehouseResource) -> None:
    """Tenant b's load neither loads, re-parks, locks nor counts tenant a's parked rows, even once a's parent exists;
    a's own next load does, and an empty load (no tenant named) retries every tenant's."""
    orders = orders_spec("park")
    warehouse.migrate([CUSTOMERS, orders])
    for tenant in ("a", "b"):
        order = pd.DataFrame({"tenant_id": [tenant], "order_id": ["o1"], "customer_id": ["c1"], "total": ["1.00"]})
        assert warehouse.load(orders, [order], mode="merge", source=f"{tenant}-1").parked == 1
    a_parked = q(warehouse, "SELECT xmin::text, parked_at FROM shop.pending WHERE tenant_id = 'a'")
    customers = pd.DataFrame({"tenant_id": ["a", "b"], "customer_id": ["c1", "c1"]})
    warehouse.load(CUSTOMERS, [customers], mode="merge")

    b_order = pd.DataFrame({"tenant_id": ["b"], "order_id": ["o2"], "customer_id": ["c1"], "total": ["2.00"]})
    b_load = warehouse.load(orders, [b_order], mode="merge", source="b-2")
    assert (b_load.unparked, b_load.inserted, b_load.pending) == (1, 2, 0)
    # a's parked row is untouched: same row version (xmin), same parked_at, and not loaded although its parent exists.
    assert q(warehouse, "SELECT xmin::text, parked_at FROM shop.pending WHERE tenant_id = 'a'") == a_parked
    assert q(warehouse, "SELECT tenant_id, order_id FROM shop.orders ORDER BY 1, 2") == [("b", "o1"), ("b", "o2")]

    # A slice names the tenant too, with no input rows.
    a_load = warehouse.load(orders, [], mode="merge", slice_={"tenant_id": ["a"]})
    assert (a_load.unparked, a_load.inserted, a_load.pending) == (1, 1, 0)
    assert q(warehouse, "SELECT count(*) FROM shop.pending") == [(0,)]

    # With no tenant named at all, every tenant's parked rows are retried.
    for tenant in ("c", "d"):
        order = pd.DataFrame({"tenant_id": [tenant], "order_id": ["o1"], "customer_id": ["c9"], "total": ["1.00"]})
        warehouse.load(orders, [order], mode="merge")
    everyone = warehouse.load(orders, [], mode="merge")
    assert (everyone.unparked, everyone.parked, everyone.pending) == (2, 2, 2)


def test_deleted_keys_set_tombstones_and_a_full_slice_refresh_removes_absent_rows(warehouse: WarehouseResource) -> None:
    spec = TableSpec(
        schema="ns",
        name="customer",
        columns=(
            Column("tenant_id", "text", nullable=False),
            Column("id", "bigint", nullable=False),
            Column("name", "text"),
            Column("deleted_at", "timestamptz"),
        ),
        key=("tenant_id", "id"),
        tombstone="deleted_at",
    )
    frame = pd.DataFrame({"tenant_id": ["a", "a", "a", "b"], "id": [1, 2, 3, 1], "name": ["x", "y", "z", "w"]})
    warehouse.load(spec, [frame], mode="merge")
    result = warehouse.load(
        spec, [], mode="merge", deleted_keys=[pd.DataFrame({"tenant_id": ["a", "a"], "id": [2, 99]})]
    )
    assert result.tombstoned == 1
    assert q(warehouse, "SELECT id FROM ns.customer WHERE deleted_at IS NOT NULL") == [(2,)]
    again = warehouse.load(spec, [], mode="merge", deleted_keys=[pd.DataFrame({"tenant_id": ["a"], "id": [2]})])
    assert again.tombstoned == 0  # already tombstoned: the first deletion time stays

    plain = TableSpec("ns", "plain", spec.columns[:3], key=spec.key)
    warehouse.load(plain, [frame], mode="merge")
    refreshed = warehouse.load(
        plain,
        [pd.DataFrame({"tenant_id": ["a"], "id": [1], "name": ["x2"]})],
        mode="merge",
        slice_={"tenant_id": ["a"]},
    )
    assert (refreshed.updated, refreshed.deleted) == (1, 2)
    assert q(warehouse, "SELECT tenant_id, id, name FROM ns.plain ORDER BY 1, 2") == [("a", 1, "x2"), ("b", 1, "w")]


def test_new_types_round_trip_from_arrow_and_pandas(warehouse: WarehouseResource) -> None:
    spec = TableSpec(
        schema="types",
        name="t",
        columns=(
            Column("id", "uuid", nullable=False),
            Column("amount", "numeric(10,2)"),
            Column("local_time", "timestamp"),
            Column("tags", "text[]"),
        ),
        key=("id",),
    )
    ids = [uuid.uuid4() for _ in range(3)]
    arrow = pa.table(
        {
            "id": pa.array(ids[:2], pa.uuid()),
            "amount": pa.array([decimal.Decimal("1.25"), None], pa.decimal128(10, 2)),
            "local_time": pa.array([datetime(2024, 1, 2, 3, 4, 5), None], pa.timestamp("us")),
            "tags": pa.array([["a", 'q"uo,te', "back\\slash"], []], pa.list_(pa.string())),
        }
    )
    frame = pd.DataFrame(
        {
            "id": [str(ids[2])],
            "amount": ["123456789.99"],
            "local_time": [pd.Timestamp("2024-06-01 12:00")],
            "tags": [["x", None]],
        }
    )
    assert warehouse.load(spec, [arrow], mode="merge").inserted == 2
    result = warehouse.load(spec, [frame], mode="merge")
    assert (result.inserted, result.rejected) == (0, 1)  # 123456789.99 overflows numeric(10,2)
    assert "numeric field overflow" in q(warehouse, "SELECT reason FROM types.t_rejects")[0][0]
    rows = dict((r[0], r[1:]) for r in q(warehouse, "SELECT id, amount, local_time, tags FROM types.t"))
    assert rows[ids[0]] == (decimal.Decimal("1.25"), datetime(2024, 1, 2, 3, 4, 5), ["a", 'q"uo,te', "back\\slash"])
    assert rows[ids[1]] == (None, None, [])
    ok = frame.assign(amount=["12.5"])
    assert warehouse.load(spec, [ok], mode="merge").inserted == 1
    assert dict((r[0], r[1:]) for r in q(warehouse, "SELECT id, amount, tags FROM types.t"))[ids[2]] == (
        decimal.Decimal("12.50"),
        ["x", None],
    )


def test_a_discovered_schema_becomes_a_table_spec(warehouse: WarehouseResource) -> None:
    frame = pd.DataFrame(
        {"id": [1], "name": ["n"], "amount": [1.5], "when": [pd.Timestamp("2024-01-01", tz="UTC")], "ok": [True]}
    )
    spec = table_spec_from_arrow("ns", "discovered", pa.Schema.from_pandas(frame, preserve_index=False), key=("id",))
    assert [(c.name, c.type, c.nullable) for c in spec.columns] == [
        ("id", "bigint", False),
        ("name", "text", True),
        ("amount", "double precision", True),
        ("when", "timestamptz", True),
        ("ok", "boolean", True),
    ]
    assert warehouse.load(spec, [frame], mode="merge").inserted == 1
    pairs = table_spec_from_pairs("ns", "pairs", [("id", "bigint"), ("price", "numeric(12, 4)")], key=("id",))
    assert pairs.column("price").type == "numeric(12,4)"
    assert TableSpec.from_dict(pairs.to_dict()) == pairs


def test_staging_holds_no_transaction_while_the_source_is_read(warehouse: WarehouseResource) -> None:
    warehouse.load(ITEMS, [pd.DataFrame({"tenant_id": ["a"], "item_id": [1], "name": ["old"]})], mode="merge")
    reading = threading.Event()
    release = threading.Event()

    def slow_source():
        yield pd.DataFrame({"tenant_id": ["a"], "item_id": [1], "name": ["new"]})
        reading.set()
        assert release.wait(30)
        yield pd.DataFrame({"tenant_id": ["a"], "item_id": [2], "name": ["two"]})

    thread = threading.Thread(target=lambda: warehouse.load(ITEMS, slow_source(), mode="merge"))
    thread.start()
    try:
        assert reading.wait(30)
        assert warehouse.url is not None
        url = sa.make_url(warehouse.url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as other:
            states = other.execute(
                "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend' AND state LIKE 'idle in transaction%'"
            ).fetchall()
            assert states == []
            # An exclusive lock on the target is granted at once: the loader holds nothing on it while staging.
            with other.transaction():
                other.execute("SET LOCAL lock_timeout = '1s'")
                other.execute("LOCK TABLE shop.items IN ACCESS EXCLUSIVE MODE")
    finally:
        release.set()
        thread.join(60)
    assert q(warehouse, "SELECT item_id, name FROM shop.items ORDER BY 1") == [(1, "new"), (2, "two")]


def _first_load(url: str, index: int) -> None:
    spec = TableSpec("fresh", f"t{index}", (Column("id", "bigint", nullable=False),), key=("id",))
    WarehouseResource(url=url).load(spec, [pd.DataFrame({"id": [index]})], mode="merge")


def test_many_tables_of_one_schema_load_at_once_into_a_fresh_warehouse(warehouse_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        pool.starmap(_first_load, [(warehouse_url, i) for i in range(6)])
    threads = [threading.Thread(target=_first_load, args=(warehouse_url, i)) for i in range(6, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine = sa.create_engine(warehouse_url)
    with engine.connect() as conn:
        loaded = conn.exec_driver_sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'fresh' AND tablename ~ '^t'")
        assert loaded.scalar() == 24  # 12 tables and their rejects
    engine.dispose()


def test_ddl_runs_only_for_differences_and_a_least_privilege_role_can_load(
    warehouse: WarehouseResource, warehouse_url: str
) -> None:
    orders = orders_spec("park")
    changes = warehouse.migrate([orders, ITEMS, CUSTOMERS])
    assert "shop.orders" in changes and "shop.pending" in changes and "shop.items_rejects" in changes
    assert warehouse.migrate([orders, ITEMS, CUSTOMERS]) == {}
    role = f"loader_{uuid.uuid4().hex[:8]}"
    with warehouse.engine.begin() as conn:
        db = conn.exec_driver_sql("SELECT current_database()").scalar()
        for statement in (
            f"CREATE ROLE {role} LOGIN PASSWORD 'pw'",
            f'GRANT CONNECT, TEMPORARY ON DATABASE "{db}" TO {role}',
            f"GRANT USAGE ON SCHEMA shop TO {role}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA shop TO {role}",
        ):
            conn.exec_driver_sql(statement)
    try:
        limited = WarehouseResource(
            url=sa.make_url(warehouse_url).set(username=role, password="pw").render_as_string(hide_password=False)
        )
        limited.load(CUSTOMERS, [pd.DataFrame({"tenant_id": ["a"], "customer_id": ["c1"]})], mode="merge")
        result = limited.load(
            orders,
            [pd.DataFrame({"tenant_id": ["a", "a"], "order_id": ["o1", "o2"], "customer_id": ["c1", "c2"]})],
            mode="merge",
        )
        assert (result.inserted, result.parked) == (1, 1)
        bad = limited.load(
            ITEMS, [pd.DataFrame({"tenant_id": ["a"], "item_id": [1], "name": ["x"], "quantity": [0]})], mode="merge"
        )
        assert bad.rejected == 1
        # A declaration the catalog lacks needs DDL, which this role may not run: a clear error, nothing loaded.
        evolved = TableSpec(
            CUSTOMERS.schema, CUSTOMERS.name, (*CUSTOMERS.columns, Column("email", "text")), key=CUSTOMERS.key
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            limited.load(evolved, [pd.DataFrame({"tenant_id": ["a"], "customer_id": ["c3"]})], mode="merge")
        limited.engine.dispose()
    finally:
        with warehouse.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")


def test_ensure_table_issues_no_ddl_when_the_catalog_matches(warehouse: WarehouseResource) -> None:
    with warehouse.raw_connection() as conn:
        assert ensure_table(conn, ITEMS) == []
        before = conn.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()").fetchone()
        assert ensure_table(conn, ITEMS) == []
        after = conn.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()").fetchone()
        assert before is not None and after == before  # no lock left over, no transaction left open
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_parked_and_rejected_rows_under_concurrent_loads_of_one_table(warehouse: WarehouseResource) -> None:
    warehouse.migrate([CUSTOMERS, orders_spec("park")])
    warehouse.load(CUSTOMERS, [pd.DataFrame({"tenant_id": ["a"], "customer_id": ["c1"]})], mode="merge")

    def load(i: int) -> None:
        frame = pd.DataFrame({"tenant_id": ["a", "a"], "order_id": [f"o{i}", f"x{i}"], "customer_id": ["c1", "zz"]})
        warehouse.load(orders_spec("park"), [frame], mode="merge")

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert q(warehouse, "SELECT count(*) FROM shop.orders") == [(4,)]
    assert q(warehouse, "SELECT count(*) FROM shop.pending") == [(4,)]


def test_timestamps_stay_utc(warehouse: WarehouseResource) -> None:
    spec = TableSpec("types", "ts", (Column("id", "bigint", nullable=False), Column("at", "timestamptz")), key=("id",))
    warehouse.load(spec, [pd.DataFrame({"id": [1, 2], "at": ["2024-01-01T10:00:00+02:00", "nope"]})], mode="merge")
    assert q(warehouse, "SELECT at FROM types.ts") == [(datetime(2024, 1, 1, 8, tzinfo=UTC),)]
    assert q(warehouse, "SELECT count(*) FROM types.ts_rejects") == [(1,)]


def test_a_rejects_table_from_before_v2_is_kept_aside_and_replaced(warehouse: WarehouseResource) -> None:
    with warehouse.engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA shop")
        conn.exec_driver_sql(
            "CREATE TABLE shop.items_rejects (tenant_id text NOT NULL, source_file text NOT NULL, "
            "line_number integer NOT NULL, reason text NOT NULL, raw jsonb, report_date date NOT NULL, "
            "PRIMARY KEY (tenant_id, source_file, line_number))"
        )
        conn.exec_driver_sql(
            "INSERT INTO shop.items_rejects VALUES ('a', 'old.csv', 2, 'old reason', NULL, '2024-01-01')"
        )
    result = warehouse.load(
        ITEMS, [pd.DataFrame({"tenant_id": ["a"], "item_id": [1], "name": ["x"], "quantity": [0]})], mode="merge"
    )
    assert result.rejected == 1
    assert q(warehouse, "SELECT reason FROM shop.items_rejects_legacy") == [("old reason",)]
    assert q(warehouse, "SELECT reason FROM shop.items_rejects") == [("check quantity_positive failed: quantity > 0",)]
