"""The bulk loader against a real PostgreSQL: merge, replace, schema evolution, awkward values, big batches."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.warehouse import Column, TableSpec, loader

USERS = TableSpec(
    schema="crm_test",
    name="users",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("user_id", "bigint", nullable=False),
        Column("email", "text"),
        Column("score", "double precision"),
        Column("active", "boolean"),
        Column("created_at", "timestamptz"),
        Column("payload", "jsonb"),
    ),
    key=("tenant_id", "user_id"),
)

EVENTS = TableSpec(
    schema="ev_test",
    name="events",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("event_date", "date", nullable=False),
        Column("n", "integer"),
    ),
    indexes=(("tenant_id", "event_date"),),
)


@pytest.fixture(params=["merge", "on_conflict"])
def upsert(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run merge tests with both upsert statements: MERGE (PostgreSQL 17+) and the ON CONFLICT one older servers get."""
    if request.param == "on_conflict":
        monkeypatch.setattr(loader, "MERGE_MIN_SERVER_VERSION", 10**9)
    return request.param


def rows(warehouse: WarehouseResource, table: str, order: str) -> list[tuple]:
    with warehouse.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {order}"))]


def test_merge_inserts_then_updates_only_changed_rows(warehouse: WarehouseResource, upsert: str) -> None:
    first = pd.DataFrame({"tenant_id": ["a", "a"], "user_id": [1, 2], "email": ["x@a.io", "y@a.io"]})
    result = warehouse.load(USERS, [first], mode="merge")
    assert (result.inserted, result.updated) == (2, 0)

    second = pd.DataFrame({"tenant_id": ["a", "a", "a"], "user_id": [1, 2, 3], "email": ["x@a.io", "new@a.io", None]})
    result = warehouse.load(USERS, [second], mode="merge")
    assert (result.inserted, result.updated) == (1, 1)  # user 1 unchanged: not rewritten
    assert [r[:3] for r in rows(warehouse, "crm_test.users", "user_id")] == [
        ("a", 1, "x@a.io"),
        ("a", 2, "new@a.io"),
        ("a", 3, None),
    ]

    again = warehouse.load(USERS, [second], mode="merge")
    assert (again.inserted, again.updated) == (0, 0)


def test_merge_keeps_last_of_duplicate_keys_and_counts_them(warehouse: WarehouseResource, upsert: str) -> None:
    batch = pd.DataFrame({"tenant_id": ["a"] * 3, "user_id": [7, 7, 8], "email": ["first", "last", "other"]})
    result = warehouse.load(USERS, [batch], mode="merge")
    assert result.duplicates_in_input == 1
    assert result.inserted == 2
    assert [r[2] for r in rows(warehouse, "crm_test.users", "user_id")] == ["last", "other"]


def test_replace_swaps_only_the_slice(warehouse: WarehouseResource) -> None:
    d1, d2 = date(2024, 1, 1), date(2024, 1, 2)
    base = pd.DataFrame({"tenant_id": ["a", "a", "b"], "event_date": [d1, d2, d1], "n": [1, 2, 3]})
    warehouse.load(EVENTS, [base], mode="replace", slice_={"tenant_id": ["a", "b"], "event_date": [d1, d2]})

    new = pd.DataFrame({"tenant_id": ["a", "a"], "event_date": [d1, d1], "n": [10, 11]})
    result = warehouse.load(EVENTS, [new], mode="replace", slice_={"tenant_id": ["a"], "event_date": [d1]})
    assert (result.deleted, result.inserted) == (1, 2)
    assert rows(warehouse, "ev_test.events", "tenant_id, event_date, n") == [
        ("a", d1, 10),
        ("a", d1, 11),
        ("a", d2, 2),
        ("b", d1, 3),
    ]
    # Idempotent: the same slice again leaves the same rows.
    warehouse.load(EVENTS, [new], mode="replace", slice_={"tenant_id": ["a"], "event_date": [d1]})
    assert len(rows(warehouse, "ev_test.events", "n")) == 4


def test_replace_with_no_rows_empties_the_slice(warehouse: WarehouseResource) -> None:
    d1 = date(2024, 1, 1)
    warehouse.load(
        EVENTS,
        [pd.DataFrame({"tenant_id": ["a"], "event_date": [d1], "n": [1]})],
        mode="replace",
        slice_={"tenant_id": ["a"], "event_date": [d1]},
    )
    result = warehouse.load(EVENTS, [], mode="replace", slice_={"tenant_id": ["a"], "event_date": [d1]})
    assert result.deleted == 1
    assert rows(warehouse, "ev_test.events", "n") == []


def test_replace_refuses_rows_outside_the_slice_and_keeps_previous_rows(warehouse: WarehouseResource) -> None:
    d1, d2 = date(2024, 1, 1), date(2024, 1, 2)
    warehouse.load(
        EVENTS,
        [pd.DataFrame({"tenant_id": ["a"], "event_date": [d1], "n": [1]})],
        mode="replace",
        slice_={"tenant_id": ["a"], "event_date": [d1]},
    )
    stray = pd.DataFrame({"tenant_id": ["a", "a"], "event_date": [d1, d2], "n": [5, 6]})
    with pytest.raises(ValueError, match="1 input rows fall outside the slice"):
        warehouse.load(EVENTS, [stray], mode="replace", slice_={"tenant_id": ["a"], "event_date": [d1]})
    assert rows(warehouse, "ev_test.events", "n") == [("a", d1, 1)]


def test_failed_batch_rolls_back_the_whole_load(warehouse: WarehouseResource) -> None:
    warehouse.load(USERS, [pd.DataFrame({"tenant_id": ["a"], "user_id": [1], "email": ["keep"]})], mode="merge")

    def batches():
        yield pd.DataFrame({"tenant_id": ["a"], "user_id": [1], "email": ["changed"]})
        raise ConnectionError("source dropped mid-stream")

    with pytest.raises(ConnectionError):
        warehouse.load(USERS, batches(), mode="merge")
    assert [r[2] for r in rows(warehouse, "crm_test.users", "user_id")] == ["keep"]


def test_schema_evolution_adds_declared_nullable_columns(warehouse: WarehouseResource, upsert: str) -> None:
    warehouse.load(USERS, [pd.DataFrame({"tenant_id": ["a"], "user_id": [1], "email": ["e"]})], mode="merge")
    evolved = TableSpec(
        schema=USERS.schema,
        name=USERS.name,
        columns=(*USERS.columns, Column("country", "text")),
        key=USERS.key,
    )
    result = warehouse.load(
        evolved, [pd.DataFrame({"tenant_id": ["a"], "user_id": [2], "country": ["DE"]})], mode="merge"
    )
    assert result.added_columns == ("country",)
    assert [(r[1], r[2], r[-1]) for r in rows(warehouse, "crm_test.users", "user_id")] == [
        (1, "e", None),
        (2, None, "DE"),
    ]


def test_type_mismatch_and_undeclared_columns_are_clear_errors(warehouse: WarehouseResource) -> None:
    warehouse.load(USERS, [pd.DataFrame({"tenant_id": ["a"], "user_id": [1]})], mode="merge")
    retyped = TableSpec(USERS.schema, USERS.name, (*USERS.columns[:2], Column("email", "bigint")), key=USERS.key)
    with pytest.raises(ValueError, match="email is text, declared bigint"):
        warehouse.load(retyped, [pd.DataFrame({"tenant_id": ["a"], "user_id": [1]})], mode="merge")
    with pytest.raises(ValueError, match=r"undeclared columns \['surprise'\]"):
        warehouse.load(USERS, [pd.DataFrame({"tenant_id": ["a"], "user_id": [1], "surprise": [1]})], mode="merge")
    with pytest.raises(ValueError, match=r"lacks required columns \['user_id'\]"):
        warehouse.load(USERS, [pd.DataFrame({"tenant_id": ["a"], "email": ["x"]})], mode="merge")


def test_identifiers_are_validated() -> None:
    with pytest.raises(ValueError, match="invalid SQL identifier"):
        TableSpec(schema="crm; DROP TABLE x", name="users", columns=(Column("a", "text"),))
    with pytest.raises(ValueError, match="unsupported type"):
        Column("a", "text); --")


def test_unicode_nulls_and_awkward_text_round_trip(warehouse: WarehouseResource, upsert: str) -> None:
    awkward = ["", 'comma, "quoted"', "line\nbreak\r\nand CRLF", "émoji 🚀 中文", "back\\slash", "\\N", None]
    frame = pd.DataFrame(
        {
            "tenant_id": ["a"] * len(awkward),
            "user_id": range(len(awkward)),
            "email": awkward,
            "score": [0.1, None, float("nan"), -1e300, 1e-300, 3.0, None],
            "active": [True, False, None, True, False, None, True],
            "created_at": [datetime(2024, 1, 1, 12, tzinfo=UTC)] * 6 + [None],
            "payload": [{"k": [1, "é"]}, None, [], {}, "null", {"a": None}, None],
        }
    )
    warehouse.load(USERS, [frame], mode="merge")
    loaded = warehouse.query("SELECT * FROM crm_test.users ORDER BY user_id")
    assert loaded["email"].tolist()[:6] == awkward[:6]
    assert loaded["email"].isna().tolist()[6]
    assert pd.isna(loaded["score"][1]) and loaded["score"][3] == -1e300
    assert loaded["active"].tolist()[:2] == [True, False]
    assert loaded["payload"][0] == {"k": [1, "é"]}
    assert loaded["created_at"][0] == pd.Timestamp("2024-01-01 12:00", tz="UTC")


def test_arrow_batches_of_100k_rows_stream_in(warehouse: WarehouseResource) -> None:
    n = 100_000

    def batches():
        for start in range(0, 3 * n, n):
            ids = pa.array(range(start, start + n), pa.int64())
            yield pa.record_batch(
                {"tenant_id": pa.array(["t"] * n), "user_id": ids, "score": pa.compute.multiply(ids, 0.5)}
            )

    result = warehouse.load(USERS, batches(), mode="merge")
    assert (result.rows_staged, result.inserted) == (3 * n, 3 * n)
    assert warehouse.scalar("SELECT sum(score) FROM crm_test.users") == sum(range(3 * n)) * 0.5
    result = warehouse.load(USERS, batches(), mode="merge")
    assert (result.inserted, result.updated) == (0, 0)


def test_merge_with_a_version_column_never_goes_back_in_time(warehouse: WarehouseResource, upsert: str) -> None:
    spec = TableSpec(
        schema="crm_test",
        name="versioned",
        columns=(Column("id", "text", nullable=False), Column("v", "text"), Column("as_of", "date")),
        key=("id",),
        version="as_of",
    )
    warehouse.load(spec, [pd.DataFrame({"id": ["a"], "v": ["march"], "as_of": [date(2024, 3, 1)]})], mode="merge")
    stale = warehouse.load(spec, [pd.DataFrame({"id": ["a"], "v": ["jan"], "as_of": [date(2024, 1, 1)]})], mode="merge")
    assert (stale.inserted, stale.updated) == (0, 0)
    newer = warehouse.load(
        spec, [pd.DataFrame({"id": ["a"], "v": ["april"], "as_of": [date(2024, 4, 1)]})], mode="merge"
    )
    assert newer.updated == 1
    assert rows(warehouse, "crm_test.versioned", "id") == [("a", "april", date(2024, 4, 1))]


def test_duplicate_keys_matching_stored_rows_still_keep_the_last(warehouse: WarehouseResource, upsert: str) -> None:
    warehouse.load(USERS, [pd.DataFrame({"tenant_id": ["a"], "user_id": [1], "email": ["one"]})], mode="merge")
    # The last occurrence equals the stored row; the first would change it. Single-row upserts in order end at "one".
    batch = pd.DataFrame({"tenant_id": ["a", "a"], "user_id": [1, 1], "email": ["two", "one"]})
    result = warehouse.load(USERS, [batch], mode="merge")
    assert result.duplicates_in_input == 1
    assert [r[2] for r in rows(warehouse, "crm_test.users", "user_id")] == ["one"]


def test_a_stored_null_version_does_not_block_updates(warehouse: WarehouseResource, upsert: str) -> None:
    spec = TableSpec(
        schema="crm_test",
        name="versioned_null",
        columns=(Column("id", "text", nullable=False), Column("v", "text"), Column("as_of", "date")),
        key=("id",),
        version="as_of",
    )
    warehouse.load(spec, [pd.DataFrame({"id": ["a"], "v": ["undated"], "as_of": [None]})], mode="merge")
    result = warehouse.load(
        spec, [pd.DataFrame({"id": ["a"], "v": ["dated"], "as_of": [date(2024, 1, 1)]})], mode="merge"
    )
    assert result.updated == 1


def test_concurrent_replacements_of_one_slice_never_duplicate_rows(warehouse: WarehouseResource) -> None:
    d1 = date(2024, 1, 1)
    frame = pd.DataFrame({"tenant_id": ["a"] * 3, "event_date": [d1] * 3, "n": [1, 2, 3]})
    warehouse.load(EVENTS, [frame], mode="replace", slice_={"tenant_id": ["a"], "event_date": [d1]})
    barrier = threading.Barrier(4)

    def replace() -> None:
        def batches():
            barrier.wait(timeout=30)  # all four loads are inside their transactions before any sends rows
            yield frame

        warehouse.load(EVENTS, batches(), mode="replace", slice_={"tenant_id": ["a"], "event_date": [d1]})

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(replace) for _ in range(4)]:
            future.result(timeout=60)
    assert warehouse.scalar("SELECT count(*) FROM ev_test.events") == 3
