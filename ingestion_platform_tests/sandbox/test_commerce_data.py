"""The commerce sample generator: batches that parse, foreign keys that resolve except the deliberate orphans,
and one caught reject per bad-row reason."""

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingestion_platform.defs.commerce.batches import MANIFEST_NAME, batch_state
from ingestion_platform.defs.commerce.ndjson import ENTITIES, DuplicateTracker, Source
from ingestion_platform.defs.commerce.validate import read_file
from ingestion_platform.sandbox.commerce_data import GeneratedBatch, generate_commerce


def load(batch: GeneratedBatch) -> tuple[dict[str, pa.Table], pa.Table, dict[str, int]]:
    """Parse and validate a generated batch folder the way the assets will: manifest, FK order, per file."""
    listing = {p.name: p.stat().st_size for p in batch.path.iterdir()}
    state = batch_state(
        listing, (batch.path / MANIFEST_NAME).read_bytes(), tenant_id=batch.tenant_id, batch_id=batch.batch_id
    )
    assert state.complete, state.reason
    valid: dict[str, list[pa.RecordBatch]] = {name: [] for name in ENTITIES}
    rejects: list[pa.Table] = []
    duplicates: dict[str, int] = {}
    for table, files in state.by_entity().items():
        tracker = DuplicateTracker(ENTITIES[table].id_field)
        for f in files:
            with (batch.path / f.name).open("rb") as handle:
                source = Source(batch.tenant_id, batch.batch_id, f.name)
                for part in read_file(handle, ENTITIES[table], source, duplicates=tracker):
                    valid[table].append(part.valid)
                    rejects.append(part.rejects)
        duplicates[table] = tracker.duplicates()
    tables = {name: pa.Table.from_batches(parts) if parts else None for name, parts in valid.items()}
    return tables, pa.concat_tables(rejects), duplicates  # type: ignore[return-value]


def ids(table: pa.Table | None, column: str) -> pa.Array:
    return pa.array([], pa.string()) if table is None else pc.unique(table.column(column).combine_chunks())


def unresolved(child: pa.Table, column: str, *parents: pa.Table | None) -> int:
    known = pa.concat_arrays([ids(p, column) for p in parents])
    return int(pc.sum(pc.invert(pc.is_in(child.column(column), value_set=known))).as_py() or 0)


def test_every_foreign_key_resolves_within_a_tenant(tmp_path: Path) -> None:
    batches = generate_commerce(["acme", "globex"], 300, 40, 1200, tmp_path, seed=3, compress=True)
    assert [(b.tenant_id, b.batch_id) for b in batches] == [("acme", "b0001"), ("globex", "b0001")]
    loaded = {}
    for batch in batches:
        tables, rejects, duplicates = load(batch)
        assert rejects.num_rows == 0 and set(duplicates.values()) == {0}
        assert {name: t.num_rows for name, t in tables.items()} == batch.rows
        assert unresolved(tables["orders"], "customer_id", tables["customers"]) == 0
        assert unresolved(tables["order_items"], "order_id", tables["orders"]) == 0
        assert unresolved(tables["order_items"], "product_id", tables["products"]) == 0
        loaded[batch.tenant_id] = tables
    # About four items per order, totals that add up, and ids that never collide across tenants.
    items, orders = loaded["acme"]["order_items"], loaded["acme"]["orders"]
    assert 3.5 < items.num_rows / orders.num_rows < 4.5
    totals = pa.TableGroupBy(items, "order_id").aggregate([("line_total", "sum")])
    joined = orders.join(totals, "order_id")
    assert pc.all(
        pc.equal(joined.column("total_amount"), pc.cast(joined.column("line_total_sum"), pa.decimal128(12, 2)))
    ).as_py()
    assert (
        pc.sum(
            pc.is_in(
                ids(loaded["acme"]["customers"], "customer_id"),
                value_set=ids(loaded["globex"]["customers"], "customer_id"),
            )
        ).as_py()
        == 0
    )
    assert set(orders.column("currency").to_pylist()) == {"USD"}
    assert set(loaded["globex"]["orders"].column("currency").to_pylist()) == {"EUR"}


def test_orphans_resolve_only_with_the_second_batch(tmp_path: Path) -> None:
    first, second = generate_commerce(["acme"], 500, 200, 1000, tmp_path, seed=5, orphans=True)
    assert (first.batch_id, second.batch_id) == ("b0001", "b0002") and "order_items" not in second.rows
    assert first.orphan_orders > 0 and first.orphan_items > 0
    one, _, _ = load(first)
    two, _, _ = load(second)
    assert unresolved(one["orders"], "customer_id", one["customers"]) == first.orphan_orders
    item_orphans = pc.or_(
        pc.invert(pc.is_in(one["order_items"].column("order_id"), value_set=ids(one["orders"], "order_id"))),
        pc.invert(pc.is_in(one["order_items"].column("product_id"), value_set=ids(one["products"], "product_id"))),
    )
    assert pc.sum(item_orphans).as_py() == first.orphan_items
    assert unresolved(one["orders"], "customer_id", one["customers"], two["customers"]) == 0
    assert unresolved(two["orders"], "customer_id", one["customers"], two["customers"]) == 0
    assert unresolved(one["order_items"], "order_id", one["orders"], two["orders"]) == 0
    assert unresolved(one["order_items"], "product_id", one["products"], two["products"]) == 0


def test_bad_rows_produce_every_rejection_reason_once(tmp_path: Path) -> None:
    (batch,) = generate_commerce(["acme"], 100, 20, 200, tmp_path, seed=9, bad_rows=True)
    tables, rejects, duplicates = load(batch)
    found = list(zip(rejects.column("table_name").to_pylist(), rejects.column("reason").to_pylist(), strict=True))
    for table, fragment in batch.expected_rejects:
        matches = [r for t, r in found if t == table and fragment in r]
        assert len(matches) == 1, (table, fragment, found)
    assert len(found) == len(batch.expected_rejects)
    reasons = Counter(t for t, _ in found)
    assert set(reasons) == set(ENTITIES)
    assert duplicates == batch.duplicates | {k: 0 for k in ENTITIES if k not in batch.duplicates}
    # The BOM did not cost the first customer, and the unknown field of the restated customer is kept.
    first_file = tables["customers"].filter(pc.equal(tables["customers"].column("source_line"), 1))
    assert first_file.num_rows >= 1
    extra = [e for e in tables["customers"].column("extra").to_pylist() if e]
    assert extra and all(e == '{"loyalty_points":120}' for e in extra)
    # Rejected rows plus valid rows account for every data line written.
    assert sum(t.num_rows for t in tables.values()) + rejects.num_rows == sum(batch.rows.values())


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = generate_commerce(["acme"], 50, 10, 100, tmp_path / "a", seed=1)[0]
    b = generate_commerce(["acme"], 50, 10, 100, tmp_path / "b", seed=1)[0]
    assert (a.path / MANIFEST_NAME).read_bytes() == (b.path / MANIFEST_NAME).read_bytes()


def test_counts_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generate_commerce(["acme"], 0, 1, 1, tmp_path)
