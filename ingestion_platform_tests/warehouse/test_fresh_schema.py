"""The first loads into a fresh warehouse: many tables of one schema created at once, as a run's parallel steps do.

Against an empty PostgreSQL, the first one-day GA4 run (six steps, six tables of schema `ga4`) once failed with a
UniqueViolation on `pg_namespace_nspname_index`: two `CREATE SCHEMA IF NOT EXISTS` racing. `ensure_table` is called
here directly, on separate connections released together, so no retry can hide a race the locks let through.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import sqlalchemy as sa

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.warehouse import Column, TableSpec, ensure_table

TABLES = [
    TableSpec(
        schema="fresh_race",
        name=f"events_{i}",
        columns=(Column("tenant_id", "text", nullable=False), Column("n", "integer")),
        key=("tenant_id",),
    )
    for i in range(8)
]


def test_many_tables_of_a_fresh_schema_are_created_at_once(warehouse: WarehouseResource) -> None:
    barrier = threading.Barrier(len(TABLES))

    # One connection per table, as each step process has its own (the resource's pool holds only 6).
    assert warehouse.url is not None
    url = sa.make_url(warehouse.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def create(spec: TableSpec) -> list[str]:
        with psycopg.connect(url, autocommit=True) as conn:
            barrier.wait(timeout=30)
            return ensure_table(conn, spec)

    with ThreadPoolExecutor(len(TABLES)) as pool:
        futures = [pool.submit(create, spec) for spec in TABLES]
        errors = [f.exception(timeout=60) for f in futures]
    assert errors == [None] * len(TABLES), [e for e in errors if e]
    assert warehouse.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'fresh_race' ORDER BY 1"
    )["table_name"].tolist() == sorted([spec.name for spec in TABLES] + [spec.rejects.name for spec in TABLES])
    with warehouse.raw_connection() as conn:
        assert all(ensure_table(conn, spec) == [] for spec in TABLES)  # and nothing left to do afterwards
