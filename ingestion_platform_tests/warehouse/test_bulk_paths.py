"""The loader's fast paths against a real PostgreSQL: binary COPY of every encoded Arrow type, jsonb values marked
in Arrow before COPY, and indexes built after the insert into an empty table (only where that is safe)."""

import threading
import uuid
from datetime import UTC, date, datetime

import numpy as np
import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.warehouse import Column, ForeignKey, TableSpec, loader

TYPED = TableSpec(
    schema="bin",
    name="typed",
    columns=(
        Column("id", "bigint", nullable=False),
        Column("small", "smallint"),
        Column("medium", "integer"),
        Column("big", "bigint"),
        Column("ratio", "double precision"),
        Column("flag", "boolean"),
        Column("day", "date"),
        Column("at", "timestamptz"),
        Column("wall", "timestamp"),
        Column("label", "text"),
        Column("amount", "numeric(12,2)"),
        Column("doc", "jsonb"),
    ),
    key=("id",),
)


def q(warehouse: WarehouseResource, statement: str) -> list[tuple]:
    with warehouse.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(statement))]


def test_binary_copy_round_trips_every_encoded_arrow_type_and_null(warehouse: WarehouseResource) -> None:
    """Arrow widths, units and time zones differ from the staging types: each is converted, NULLs stay NULL."""
    nanos = pa.array([1_704_067_200_000_000_500, 1_704_067_200_000_001_500, None], pa.timestamp("ns", tz="UTC"))
    batch = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int32()),
            "small": pa.array([-128, 127, None], pa.int8()),
            "medium": pa.array([65_535, 0, None], pa.uint16()),
            "big": pa.array([2**63 - 1, -(2**63), None], pa.int64()),
            "ratio": pa.array([0.1, float("inf"), None], pa.float32()),
            "flag": [True, False, None],
            "day": pa.array([date(1999, 12, 31), date(2000, 1, 1), None], pa.date32()),
            "at": nanos,  # half a microsecond rounds to even, as PostgreSQL rounds text input
            "wall": pa.array([0, 86_400, None], pa.timestamp("s")),
            "label": pa.array(['ü ✓ "q" , \\ \n', "", None], pa.large_string()),
            "amount": pa.array([12, -3, None], pa.int64()),
            "doc": ['{"a": [1, 2]}', "null", None],
        }
    )
    result = warehouse.load(TYPED, [batch], mode="merge")
    assert (result.inserted, result.rejected) == (3, 0)
    assert q(warehouse, "SELECT * FROM bin.typed ORDER BY id") == [
        (
            1,
            -128,
            65_535,
            2**63 - 1,
            pytest.approx(0.1),
            True,
            date(1999, 12, 31),
            datetime(2024, 1, 1, tzinfo=UTC),
            datetime(1970, 1, 1),
            'ü ✓ "q" , \\ \n',
            12,
            {"a": [1, 2]},
        ),
        (
            2,
            127,
            0,
            -(2**63),
            float("inf"),
            False,
            date(2000, 1, 1),
            datetime(2024, 1, 1, 0, 0, 0, 2, tzinfo=UTC),
            datetime(1970, 1, 2),
            "",
            -3,
            None,
        ),
        (3, None, None, None, None, None, None, None, None, None, None, None),
    ]
    # JSON null is a value, SQL NULL is not.
    assert q(warehouse, "SELECT id FROM bin.typed WHERE doc IS NOT NULL ORDER BY id") == [(1,), (2,)]


def test_jsonb_values_that_cannot_be_json_are_rejected_with_postgres_reason(warehouse: WarehouseResource) -> None:
    docs = ['{"a": 1}', "[1", "", "  true ", "tru", '"unterminated', "-", "1e5", '{"a": 1}}']
    batch = pa.table({"id": list(range(1, len(docs) + 1)), "doc": docs})
    result = warehouse.load(TYPED, [batch], mode="merge", source="docs")
    assert q(warehouse, "SELECT id FROM bin.typed ORDER BY id") == [(1,), (4,), (8,)]
    rejects = dict(q(warehouse, "SELECT line_number, reason FROM bin.typed_rejects"))
    assert result.rejected == 6 and sorted(rejects) == [2, 3, 5, 6, 7, 9]
    assert all(reason.startswith("invalid input syntax for type json") for reason in rejects.values())


PARENT = TableSpec(
    schema="bulk",
    name="parent",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("id", "bigint", nullable=False),
        Column("grp", "integer"),
        Column("doc", "jsonb"),
    ),
    key=("tenant_id", "id"),
    indexes=(("tenant_id", "grp"),),
)
CHILD = TableSpec(
    schema="bulk",
    name="child",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("child_id", "bigint", nullable=False),
        Column("id", "bigint"),
    ),
    key=("tenant_id", "child_id"),
    foreign_keys=(ForeignKey(("tenant_id", "id"), "bulk.parent"),),
)


def many(rows: int, repeat_every: int = 0) -> pa.Table:
    ids = np.arange(rows) % repeat_every if repeat_every else np.arange(rows)
    return pa.table(
        {
            "tenant_id": ["t"] * rows,
            "id": ids,
            "grp": np.arange(rows) % 7,
            "doc": [f'{{"n": {i}}}' for i in range(rows)],
        }
    )


def indexes(warehouse: WarehouseResource, table: str) -> dict[str, tuple[int, str]]:
    return {
        name: (oid, definition)
        for oid, name, definition in q(
            warehouse,
            f"SELECT indexrelid::int, indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
            f"WHERE indrelid = '{table}'::regclass",
        )
    }


def test_a_large_load_into_an_empty_table_builds_its_indexes_after_the_insert(warehouse: WarehouseResource) -> None:
    warehouse.migrate([PARENT])
    before = indexes(warehouse, "bulk.parent")
    rows = loader.REBUILD_INDEXES_MIN_ROWS
    result = warehouse.load(PARENT, [many(rows)], mode="merge")
    assert (result.inserted, result.rejected) == (rows, 0)
    after = indexes(warehouse, "bulk.parent")
    assert {n: d for n, (_, d) in after.items()} == {n: d for n, (_, d) in before.items()} and len(after) == 2
    assert all(after[n][0] != before[n][0] for n in after)  # rebuilt, under the same names and definitions
    assert q(
        warehouse,
        "SELECT conname, contype FROM pg_constraint WHERE conrelid = 'bulk.parent'::regclass AND contype = 'p'",
    ) == [("parent_pkey", "p")]
    assert warehouse.migrate([PARENT]) == {}  # the catalog is as declared
    # The rebuilt primary key is enforced.
    with pytest.raises(sa.exc.IntegrityError), warehouse.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO bulk.parent (tenant_id, id) VALUES ('t', 1)")


def test_repeated_keys_fail_the_index_build_and_the_load_keeps_the_last(warehouse: WarehouseResource) -> None:
    rows = loader.REBUILD_INDEXES_MIN_ROWS * 2
    result = warehouse.load(PARENT, [many(rows, repeat_every=rows // 2)], mode="merge")
    assert (result.inserted, result.duplicates_in_input) == (rows // 2, rows // 2)
    assert q(warehouse, "SELECT min(doc->>'n')::int, count(*) FROM bulk.parent") == [(rows // 2, rows // 2)]
    assert len(indexes(warehouse, "bulk.parent")) == 2


def test_indexes_are_maintained_when_a_child_references_the_table(warehouse: WarehouseResource) -> None:
    warehouse.migrate([PARENT, CHILD])
    before = indexes(warehouse, "bulk.parent")
    warehouse.load(PARENT, [many(loader.REBUILD_INDEXES_MIN_ROWS)], mode="merge")
    assert indexes(warehouse, "bulk.parent") == before  # dropping the key would need the child's constraint gone
    child = pa.table({"tenant_id": ["t", "t"], "child_id": [1, 2], "id": [5, -1]})
    assert warehouse.load(CHILD, [child], mode="merge").rejected == 1


def test_a_reader_of_the_empty_table_is_never_blocked_by_an_index_rebuild(
    warehouse: WarehouseResource, warehouse_url: str
) -> None:
    warehouse.migrate([PARENT])
    before = indexes(warehouse, "bulk.parent")
    libpq = sa.make_url(warehouse_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq) as reader:
        reader.execute("SELECT count(*) FROM bulk.parent")  # holds ACCESS SHARE until its transaction ends
        done = threading.Event()

        def load() -> None:
            warehouse.load(PARENT, [many(loader.REBUILD_INDEXES_MIN_ROWS)], mode="merge")
            done.set()

        thread = threading.Thread(target=load)
        thread.start()
        thread.join(timeout=60)
        assert done.is_set(), "the load waited for the reader"
        # Committed while the reader's transaction is still open.
        assert reader.execute("SELECT count(*) FROM bulk.parent").fetchone() == (loader.REBUILD_INDEXES_MIN_ROWS,)
    assert indexes(warehouse, "bulk.parent") == before


def test_a_role_that_does_not_own_the_table_maintains_its_indexes(
    warehouse: WarehouseResource, warehouse_url: str
) -> None:
    warehouse.migrate([PARENT])
    before = indexes(warehouse, "bulk.parent")
    role = f"loader_{uuid.uuid4().hex[:8]}"
    with warehouse.engine.begin() as conn:
        db = conn.exec_driver_sql("SELECT current_database()").scalar()
        for statement in (
            f"CREATE ROLE {role} LOGIN PASSWORD 'pw'",
            f'GRANT CONNECT, TEMPORARY ON DATABASE "{db}" TO {role}',
            f"GRANT USAGE ON SCHEMA bulk TO {role}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA bulk TO {role}",
        ):
            conn.exec_driver_sql(statement)
    try:
        limited = WarehouseResource(
            url=sa.make_url(warehouse_url).set(username=role, password="pw").render_as_string(hide_password=False)
        )
        rows = loader.REBUILD_INDEXES_MIN_ROWS
        assert limited.load(PARENT, [many(rows)], mode="merge").inserted == rows
        limited.engine.dispose()
        assert indexes(warehouse, "bulk.parent") == before
    finally:
        with warehouse.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
