"""The commerce assets end to end: object store (local files and S3) -> parse -> validate -> loader v2 -> PostgreSQL."""

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from ingestion_platform.defs.commerce.tables import TABLES
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.commerce_data import generate_commerce
from ingestion_platform_tests.defs.commerce.landing import land, metadata, run_batch

ORDER = ["commerce/customers", "commerce/products", "commerce/orders", "commerce/order_items"]


def counts(warehouse: WarehouseResource, tenant_id: str) -> dict[str, int]:
    with warehouse.engine.connect() as conn:
        return {
            t: conn.execute(
                sa.text(f"SELECT count(*) FROM commerce.{t} WHERE tenant_id = :t"), {"t": tenant_id}
            ).scalar_one()
            for t in (*TABLES, "rejects", "pending")
        }


def test_batch_loads_in_fk_order_with_every_reject_reason_and_reruns_idempotently(
    warehouse: WarehouseResource, store: ObjectStoreResource, tmp_path: Path
) -> None:
    (batch,) = generate_commerce(["acme"], 60, 15, 120, tmp_path / "gen", seed=4, bad_rows=True)
    key = land(store, batch.path, "acme")
    with dg.instance_for_test() as instance:
        result = run_batch(instance, warehouse, store, key)
        order = [
            e.step_materialization_data.materialization.asset_key.to_user_string()
            for e in result.get_asset_materialization_events()
        ]
        assert order == ORDER  # the asset deps are the foreign-key order
        first = counts(warehouse, "acme")
        assert first["pending"] == 0
        assert first["rejects"] == len(batch.expected_rejects)
        for table in TABLES:
            assert first[table] == metadata(result, table)["inserted"] > 0
        customers = metadata(result, "customers")
        assert customers["duplicates_last_wins"] == 2  # the restated customer: within and across files
        with warehouse.engine.connect() as conn:
            rejects = conn.execute(
                sa.text("SELECT batch_id, table_name, source_file, line_number, raw_line, reason FROM commerce.rejects")
            ).all()
            for table, fragment in batch.expected_rejects:
                hits = [r for r in rejects if r.table_name == table and fragment in r.reason]
                assert hits, f"no {table} reject with reason {fragment!r}: {[r.reason for r in rejects]}"
                assert all(r.batch_id == "b0001" and r.source_file.startswith(f"{table}_") for r in hits)
                assert all(r.line_number >= 1 and r.raw_line for r in hits)
            truncated = next(r for r in rejects if "truncated last line" in r.reason)
            assert truncated.raw_line.endswith('"na') and truncated.source_file == "customers_9999_corrections.ndjson"
            not_json = next(r for r in rejects if r.reason.startswith("not JSON"))
            assert not_json.line_number == 1 and '"name": "Broken' in not_json.raw_line
            restated = conn.execute(
                sa.text("SELECT extra, source_file FROM commerce.customers WHERE name = 'Restated Name'")
            ).one()
            assert restated.extra == {"loyalty_points": 120}
            assert restated.source_file == "customers_9999_corrections.ndjson"
            types: dict[str, str] = dict(
                conn.execute(
                    sa.text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = 'commerce' AND table_name = 'order_items'"
                    )
                ).all()
            )
            assert types["order_item_id"] == "uuid" and types["unit_price"] == "numeric"
            bad_item = sa.text(
                "INSERT INTO commerce.order_items (tenant_id, order_item_id, order_id, product_id, quantity,"
                " unit_price, line_total, batch_id, source_file, source_line)"
                " SELECT tenant_id, gen_random_uuid(), order_id, product_id, 0, 1, 0, 'x', 'x', 1"
                " FROM commerce.order_items LIMIT 1"
            )
            with pytest.raises(sa.exc.IntegrityError, match="quantity_positive"):
                conn.execute(bad_item)

        again = run_batch(instance, warehouse, store, key)
        for table in TABLES:
            meta = metadata(again, table)
            assert (meta["inserted"], meta["updated"]) == (0, 0), table
        assert counts(warehouse, "acme") == first


def test_orphans_park_across_tenants_never_resolve_and_a_later_batch_resolves_them(
    warehouse: WarehouseResource, store: ObjectStoreResource, tmp_path: Path
) -> None:
    first, second = generate_commerce(["acme"], 200, 100, 200, tmp_path / "gen", seed=7, orphans=True)
    assert first.orphan_orders and first.orphan_items
    with dg.instance_for_test() as instance:
        result = run_batch(instance, warehouse, store, land(store, first.path, "acme"))
        orders, items = metadata(result, "orders"), metadata(result, "order_items")
        assert orders["parked"] == orders["pending"] == first.orphan_orders
        assert items["pending"] >= first.orphan_items  # items of parked orders wait too
        assert items["oldest_pending_hours"] >= 0
        checks = {c.asset_key.to_user_string(): c for c in result.get_asset_check_evaluations()}
        assert checks["commerce/orders"].passed

        # The missing parents land for another tenant with the same ids: acme's orphans must stay parked, and
        # globex's load does not even retry them (it never pays for, or touches, another tenant's parked rows).
        other = run_batch(instance, warehouse, store, land(store, second.path, "globex"))
        assert metadata(other, "orders")["unparked"] == 0
        assert counts(warehouse, "acme")["pending"] == orders["pending"] + items["pending"]
        assert counts(warehouse, "acme")["orders"] == 200 - first.orphan_orders - second.rows["orders"]

        stale = run_batch(
            instance,
            warehouse,
            store,
            land(store, first.path, "acme", "b0001r"),
            run_config={"ops": {"commerce__orders": {"config": {"pending_warn_after_hours": 0.0}}}},
        )
        (check,) = [
            c for c in stale.get_asset_check_evaluations() if c.asset_key == dg.AssetKey(["commerce", "orders"])
        ]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert metadata(stale, "orders")["files_skipped_same_content"]  # same bytes as b0001: not read again

        resolved = run_batch(instance, warehouse, store, land(store, second.path, "acme"))
        assert metadata(resolved, "orders")["unparked"] >= first.orphan_orders  # acme's own load retries them
        after = counts(warehouse, "acme")
        assert after["pending"] == 0
        assert after["orders"] == 200 and after["customers"] == 200 and after["products"] == 100
        assert after["order_items"] == first.rows["order_items"]
        with warehouse.engine.connect() as conn:
            cross = conn.execute(
                sa.text(
                    "SELECT count(*) FROM commerce.orders o JOIN commerce.customers c ON c.customer_id = o.customer_id "
                    "AND c.tenant_id <> o.tenant_id"
                )
            ).scalar_one()
            assert cross > 0  # the same ids exist for both tenants, yet each order resolved within its tenant


def test_gzip_batch_with_success_marker(
    warehouse: WarehouseResource, store: ObjectStoreResource, tmp_path: Path
) -> None:
    (batch,) = generate_commerce(["acme"], 20, 5, 30, tmp_path / "gen", seed=2, compress=True)
    (batch.path / "_manifest.json").unlink()
    (batch.path / "_SUCCESS").write_bytes(b"")
    with dg.instance_for_test() as instance:
        result = run_batch(instance, warehouse, store, land(store, batch.path, "acme", marker=False))
    assert metadata(result, "order_items")["inserted"] == batch.rows["order_items"]
    assert counts(warehouse, "acme")["customers"] == 20
