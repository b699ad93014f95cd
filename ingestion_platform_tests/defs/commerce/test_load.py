"""Validated commerce rows load through today's loader into the declared tables (real PostgreSQL).

The foreign keys, `uuid` types and quarantine tables arrive with loader v2; this proves now that the Arrow types
`validate.py` produces are what COPY reads into the `tables.py` columns, that "last wins" holds across files, and
that a re-run changes nothing.
"""

import dataclasses
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa

from ingestion_platform.defs.commerce.batches import MANIFEST_NAME, batch_state
from ingestion_platform.defs.commerce.ndjson import ENTITIES, DuplicateTracker, Source
from ingestion_platform.defs.commerce.tables import REJECTS_TABLE, TABLES
from ingestion_platform.defs.commerce.validate import read_file
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.commerce_data import generate_commerce

SCHEMA = "commerce_load_test"


def load_batch(warehouse: WarehouseResource, path: Path, tenant_id: str) -> dict[str, tuple[int, int, int]]:
    """(inserted, updated, duplicates) per table, rejects loaded too, in foreign-key order."""
    listing = {p.name: p.stat().st_size for p in path.iterdir()}
    state = batch_state(listing, (path / MANIFEST_NAME).read_bytes())
    results = {}
    rejects: list[pa.Table] = []
    for table, files in state.by_entity().items():
        entity = ENTITIES[table]
        tracker = DuplicateTracker(entity.id_field)

        def valid_batches(files=files, entity=entity, tracker=tracker):  # type: ignore[no-untyped-def]
            for f in files:
                with (path / f.name).open("rb") as handle:
                    source = Source(tenant_id, path.name, f.name)
                    for part in read_file(handle, entity, source, duplicates=tracker):
                        rejects.append(part.rejects)
                        yield part.valid

        result = warehouse.load(dataclasses.replace(TABLES[table], schema=SCHEMA), valid_batches(), mode="merge")
        assert result.duplicates_in_input == tracker.duplicates()
        results[table] = (result.inserted, result.updated, result.duplicates_in_input)
    warehouse.load(dataclasses.replace(REJECTS_TABLE, schema=SCHEMA), rejects, mode="merge")
    return results


def test_generated_batch_loads_with_types_last_wins_and_idempotent_rerun(
    warehouse: WarehouseResource, tmp_path: Path
) -> None:
    (batch,) = generate_commerce(["acme"], 60, 15, 120, tmp_path, seed=4, bad_rows=True)
    first = load_batch(warehouse, batch.path, "acme")
    assert first["customers"][2] == 2  # the restated customer: three lines, the last one kept
    with warehouse.engine.connect() as conn:
        counts = {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.{t} WHERE tenant_id = 'acme'")).scalar()
            for t in (*TABLES, "rejects")
        }
        assert counts["rejects"] == len(batch.expected_rejects)
        for table in TABLES:
            assert counts[table] == first[table][0]
        restated = conn.execute(
            sa.text(f"SELECT name, extra, source_file FROM {SCHEMA}.customers WHERE name = 'Restated Name'")
        ).one()
        assert restated.extra == {"loyalty_points": 120}
        assert restated.source_file == "customers_9999_corrections.ndjson"
        order = conn.execute(
            sa.text(
                f"SELECT total_amount, order_date, raw_payload, currency FROM {SCHEMA}.orders ORDER BY order_id LIMIT 1"
            )
        ).one()
        assert isinstance(order.total_amount, Decimal) and order.total_amount.as_tuple().exponent == -2
        assert order.order_date.tzinfo is not None
        assert order.raw_payload["channel"] in {"web", "ios", "android", "pos"}
        assert order.currency == "USD"
        reject = conn.execute(
            sa.text(f"SELECT raw_line, reason FROM {SCHEMA}.rejects WHERE reason LIKE 'currency%'")
        ).one()
        assert json.loads(reject.raw_line)["currency"] == "XYZ"
    again = load_batch(warehouse, batch.path, "acme")
    assert all(inserted == 0 and updated == 0 for inserted, updated, _ in again.values())
