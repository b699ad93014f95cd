"""Consistent commerce sample batches (customers, products, orders, order_items NDJSON) for the demo, tests and bench.

Why vectorised: the benchmark needs a million order items, and building each JSON line in Python would make the
generator slower than the pipeline it feeds. Lines are assembled column-wise with pyarrow string kernels and written
straight from the Arrow buffer. Every foreign key resolves within a tenant's batches, except the orphans asked for:
with `orphans`, some parents are held back to a second batch, as happens when a tenant exports in the wrong order.
With `bad_rows`, the first batch also carries one line per rejection reason (and a BOM, an unknown field, duplicate
ids within and across files), listed in `GeneratedBatch.expected_rejects` so tests can check each is caught.
"""

import gzip
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingestion_platform.defs.commerce.batches import MANIFEST_NAME, BatchFile, file_entity, render_manifest

FIRST = ("Ann", "Bob", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Inés", "Jonas")
LAST = ("Lee", "Müller", "O'Brien", "Nakamura", "García", "Smith", "Kowalski", "Dubois")
TENANT_CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CAD")
STATUSES = ("pending", "processing", "paid", "shipped", "delivered", "cancelled", "refunded")
STATUS_WEIGHTS = (0.05, 0.05, 0.15, 0.2, 0.45, 0.06, 0.04)
METADATA = (
    '{"tier":"gold","newsletter":true}',
    '{"tier":"silver","newsletter":false}',
    '{"tier":"bronze","newsletter":true,"tags":["new"]}',
)
CHANNELS = ("web", "ios", "android", "pos")
EPOCH_2024 = 1_704_067_200
YEAR_SECONDS = 365 * 86_400
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass(frozen=True)
class GeneratedBatch:
    tenant_id: str
    batch_id: str
    path: Path
    rows: dict[str, int]  # data lines per table, bad ones included
    expected_rejects: tuple[tuple[str, str], ...] = ()  # (table, fragment of the reason)
    orphan_orders: int = 0  # orders of this batch whose customer arrives only in a later batch
    orphan_items: int = 0  # items of this batch whose order or product arrives only in a later batch
    duplicates: dict[str, int] = field(default_factory=dict)  # repeated ids (last wins) per table


def _uuids(rng: np.random.Generator, n: int) -> pa.Array:
    """n random version-4 UUIDs as text, formatted with numpy (no Python object per id)."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = np.empty((n, 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[raw >> 4]
    hexed[:, 1::2] = _HEX[raw & 0x0F]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for src, dst in ((slice(0, 8), slice(0, 8)), (slice(8, 12), slice(9, 13)), (slice(12, 16), slice(14, 18))):
        out[:, dst] = hexed[:, src]
    out[:, 19:23] = hexed[:, 16:20]
    out[:, 24:36] = hexed[:, 20:32]
    offsets = np.arange(n + 1, dtype=np.int32) * 36
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out.tobytes()))


def _text(values: np.ndarray | pa.Array) -> pa.Array:
    return pc.cast(values if isinstance(values, pa.Array) else pa.array(values), pa.string())


def _money(cents: np.ndarray) -> pa.Array:
    """Cents as decimal text ("12.34"), the way Django's JSON encoder writes a DecimalField."""
    whole = _text(cents // 100)
    frac = pc.utf8_lpad(_text(cents % 100), 2, "0")
    return pc.binary_join_element_wise(whole, frac, ".")


def _timestamps(seconds: np.ndarray) -> pa.Array:
    text = pc.cast(pa.array(seconds, pa.timestamp("s", tz="UTC")), pa.string())
    return pc.replace_substring(text, " ", "T")


def _choice(rng: np.random.Generator, options: Sequence[str], n: int, p: Sequence[float] | None = None) -> pa.Array:
    return pa.array(list(options), pa.string()).take(pa.array(rng.choice(len(options), size=n, p=p)))


def _lines(parts: list[str | pa.Array]) -> pa.Array:
    """JSON lines from alternating literal fragments and value columns, each line ending in a newline."""
    return pc.binary_join_element_wise(*parts, "\n", "")


def _quoted(values: pa.Array) -> list[str | pa.Array]:
    return ['"', values, '"']


def _write(path: Path, lines: pa.Array, *, prefix: bytes = b"", suffix: bytes = b"", compress: bool = False) -> None:
    array = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + len(array) + 1]
    body = array.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]] if len(array) else b""
    data = prefix + body + suffix
    path.write_bytes(gzip.compress(data, compresslevel=1, mtime=0) if compress else data)


@dataclass
class _Tenant:
    customer_ids: pa.Array
    customer_names: pa.Array
    customer_emails: pa.Array
    product_ids: pa.Array
    price_cents: np.ndarray
    order_ids: pa.Array
    order_customer: np.ndarray
    item_order: np.ndarray
    item_product: np.ndarray


def _customer_lines(t: _Tenant, idx: np.ndarray, rng: np.random.Generator) -> pa.Array:
    n = len(idx)
    sel = pa.array(idx)
    return _lines(
        [
            '{"customer_id":"',
            t.customer_ids.take(sel),
            '","name":"',
            t.customer_names.take(sel),
            '","email":"',
            t.customer_emails.take(sel),
            '","metadata":',
            _choice(rng, METADATA, n),
            ',"created_at":"',
            _timestamps(EPOCH_2024 - rng.integers(0, YEAR_SECONDS, n)),
            '"}',
        ]
    )


def _product_lines(t: _Tenant, idx: np.ndarray, rng: np.random.Generator, categories: pa.Array) -> pa.Array:
    n = len(idx)
    sel = pa.array(idx)
    return _lines(
        [
            '{"product_id":"',
            t.product_ids.take(sel),
            '","sku":"SKU-',
            pc.utf8_lpad(_text(idx), 7, "0"),
            '","name":"Product ',
            _text(idx),
            '","price":"',
            _money(t.price_cents[idx]),
            '","category_id":"',
            categories.take(pa.array(rng.integers(0, len(categories), n))),
            '","active":',
            _choice(rng, ("true", "false"), n, (0.9, 0.1)),
            ',"created_at":"',
            _timestamps(EPOCH_2024 - rng.integers(0, YEAR_SECONDS, n)),
            '"}',
        ]
    )


def _order_lines(
    t: _Tenant, idx: np.ndarray, rng: np.random.Generator, totals: np.ndarray, currency: str, tenant_id: str
) -> pa.Array:
    n = len(idx)
    sel = pa.array(idx)
    customer = pa.array(t.order_customer[idx])
    external = pc.binary_join_element_wise(f"EXT-{tenant_id}-", pc.utf8_lpad(_text(idx), 8, "0"), "")
    order_date = EPOCH_2024 + rng.integers(0, YEAR_SECONDS, n)
    return _lines(
        [
            '{"order_id":"',
            t.order_ids.take(sel),
            '","external_order_id":"',
            external,
            '","customer_id":"',
            t.customer_ids.take(customer),
            '","customer_name_snapshot":"',
            t.customer_names.take(customer),
            '","customer_email_snapshot":"',
            t.customer_emails.take(customer),
            '","total_amount":"',
            _money(totals[idx]),
            f'","currency":"{currency}","order_status":"',
            _choice(rng, STATUSES, n, STATUS_WEIGHTS),
            '","order_date":"',
            _timestamps(order_date),
            '","raw_payload":{"channel":"',
            _choice(rng, CHANNELS, n),
            '","external_order_id":"',
            external,
            '"},"created_at":"',
            _timestamps(order_date + rng.integers(0, 600, n)),
            '"}',
        ]
    )


def _item_lines(t: _Tenant, idx: np.ndarray, item_ids: pa.Array, quantity: np.ndarray) -> pa.Array:
    product = t.item_product[idx]
    unit = t.price_cents[product]
    return _lines(
        [
            '{"order_item_id":"',
            item_ids.take(pa.array(idx)),
            '","order_id":"',
            t.order_ids.take(pa.array(t.item_order[idx])),
            '","product_id":"',
            t.product_ids.take(pa.array(product)),
            '","quantity":',
            _text(quantity[idx]),
            ',"unit_price":"',
            _money(unit),
            '","line_total":"',
            _money(unit * quantity[idx]),
            '"}',
        ]
    )


def _bad_lines(rng: np.random.Generator, t: _Tenant) -> dict[str, list[tuple[bytes, str]]]:
    """One line per rejection reason, by table: (raw line, fragment of the expected reason)."""
    fresh = [u.as_py() for u in _uuids(rng, 8)]
    cust, order, product = t.customer_ids[0].as_py(), t.order_ids[0].as_py(), t.product_ids[0].as_py()

    def customer(
        cid: str, name: str = "Ann Lee", email: str = "ann@example.com", created: str = "2024-01-02T03:04:05Z"
    ):
        return f'{{"customer_id":"{cid}","name":"{name}","email":"{email}","created_at":"{created}"}}'.encode()

    def item(quantity: str = "2", unit: str = '"10.00"', total: str = '"20.00"', product_id: str = product) -> bytes:
        return (
            f'{{"order_item_id":"{fresh[7]}","order_id":"{order}","product_id":"{product_id}",'
            f'"quantity":{quantity},"unit_price":{unit},"line_total":{total}}}'
        ).encode()

    def order_line(**overrides: str) -> bytes:
        values = {
            "order_id": f'"{fresh[6]}"',
            "customer_id": f'"{cust}"',
            "total_amount": '"20.00"',
            "currency": '"EUR"',
            "order_status": '"paid"',
            "order_date": '"2024-05-01T10:00:00+02:00"',
        } | overrides
        return ("{" + ",".join(f'"{k}":{v}' for k, v in values.items()) + "}").encode()

    return {
        "customers": [
            (b'{"customer_id": "' + fresh[0].encode() + b'", "name": "Broken', "not JSON"),
            (customer(fresh[1], email="not-an-email"), "email is not an email address"),
            (customer(fresh[2], name="x" * 300), "name is longer than 255"),
            (customer("CUST-42"), "customer_id is not a UUID"),
            (customer(fresh[3], created="2024-02-30T10:00:00Z"), "created_at is not an ISO 8601 timestamp"),
            (f'{{"customer_id":"{fresh[4]}","email":"no.name@example.com"}}'.encode(), "name is missing"),
            (b"\xff\xfe not utf-8", "not UTF-8"),
        ],
        "products": [
            (f'{{"product_id":"{fresh[0]}","sku":"S1","name":"P","price":"-1.00"}}'.encode(), "price is negative"),
            (
                f'{{"product_id":"{fresh[1]}","sku":"S2","name":"P","price":"1.005"}}'.encode(),
                "price has more than 2 decimal places",
            ),
            (f'{{"product_id":"{fresh[2]}","sku":"S3","name":"P","price":true}}'.encode(), "wrong type: price"),
            (f'{{"product_id":"{fresh[3]}","sku":"{"S" * 65}","name":"P","price":"1"}}'.encode(), "sku is longer"),
        ],
        "orders": [
            (order_line(currency='"XYZ"'), "currency is not an ISO 4217 currency code"),
            (order_line(order_status='"teleported"'), "order_status is not one of"),
            (order_line(order_date='"yesterday"'), "order_date is not an ISO 8601 timestamp"),
            (order_line(total_amount='"10000000000.00"'), "total_amount is out of range"),
            (b"[1, 2, 3]", "not a JSON object"),
        ],
        "order_items": [
            (item(quantity="0", total='"0.00"'), "quantity must be > 0"),
            (item(quantity='"two"'), "wrong type: quantity is string, expected integer"),
            (item(total='"25.00"'), "line_total differs from quantity x unit_price"),
            (
                f'{{"order_item_id":"{fresh[5]}","order_id":"{order}","quantity":1,"unit_price":"1.00",'
                f'"line_total":"1.00"}}'.encode(),
                "product_id is missing",
            ),
        ],
    }


def generate_commerce(
    tenants: Sequence[str],
    customers: int,
    products: int,
    orders: int,
    out_dir: Path,
    seed: int | str = 0,
    orphans: bool = False,
    bad_rows: bool = False,
    *,
    items_per_order: float = 4.0,
    rows_per_file: int = 500_000,
    compress: bool = False,
) -> list[GeneratedBatch]:
    """Write `out_dir/{tenant}/{batch_id}/` folders with NDJSON files and a `_manifest.json`; return what they hold.

    Batch `b0001` holds everything, or with `orphans` everything but a few parents, which `b0002` brings.
    """
    if min(customers, products, orders) < 1:
        raise ValueError("customers, products and orders must each be at least 1")
    batches: list[GeneratedBatch] = []
    for position, tenant_id in enumerate(tenants):
        digest = hashlib.sha256(f"{seed}:{tenant_id}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        batches.extend(
            _generate_tenant(
                tenant_id,
                TENANT_CURRENCIES[position % len(TENANT_CURRENCIES)],
                rng,
                customers,
                products,
                orders,
                Path(out_dir) / tenant_id,
                orphans=orphans,
                bad_rows=bad_rows,
                items_per_order=items_per_order,
                rows_per_file=rows_per_file,
                compress=compress,
            )
        )
    return batches


def _generate_tenant(
    tenant_id: str,
    currency: str,
    rng: np.random.Generator,
    customers: int,
    products: int,
    orders: int,
    root: Path,
    *,
    orphans: bool,
    bad_rows: bool,
    items_per_order: float,
    rows_per_file: int,
    compress: bool,
) -> list[GeneratedBatch]:
    first = _choice(rng, FIRST, customers)
    last = _choice(rng, LAST, customers)
    # Items per order: 1 + binomial, so every order has at least one item and the mean is `items_per_order`.
    extra_items = max(items_per_order - 1.0, 0.0)
    trials = max(round(extra_items * 2), 1)
    counts = 1 + rng.binomial(trials, extra_items / trials, orders)
    item_order = np.repeat(np.arange(orders), counts)
    t = _Tenant(
        customer_ids=_uuids(rng, customers),
        customer_names=pc.binary_join_element_wise(first, last, " "),
        customer_emails=pc.binary_join_element_wise("customer", _text(np.arange(customers)), "@example.com", ""),
        product_ids=_uuids(rng, products),
        price_cents=rng.integers(199, 50_000, products),
        order_ids=_uuids(rng, orders),
        order_customer=rng.integers(0, customers, orders),
        item_order=item_order,
        item_product=rng.integers(0, products, len(item_order)),
    )
    item_ids = _uuids(rng, len(item_order))
    quantity = rng.integers(1, 6, len(item_order))
    totals = np.bincount(item_order, weights=t.price_cents[t.item_product] * quantity, minlength=orders).astype(
        np.int64
    )
    categories = _uuids(rng, 20)

    # Parents held back to the second batch: their children in the first batch are orphans until it arrives.
    late_customers = np.zeros(customers, bool)
    late_products = np.zeros(products, bool)
    late_orders = np.zeros(orders, bool)
    if orphans:
        late_customers[rng.choice(customers, max(1, customers // 100), replace=False)] = customers > 1
        late_products[rng.choice(products, max(1, products // 100), replace=False)] = products > 1
        late_orders[rng.choice(orders, max(1, orders // 100), replace=False)] = orders > 1
    orphan_orders = int((~late_orders & late_customers[t.order_customer]).sum())
    item_late_parent = late_orders[item_order] | late_products[t.item_product]
    orphan_items = int(item_late_parent.sum())

    plans: list[tuple[str, dict[str, pa.Array]]] = [
        (
            "b0001",
            {
                "customers": _customer_lines(t, np.flatnonzero(~late_customers), rng),
                "products": _product_lines(t, np.flatnonzero(~late_products), rng, categories),
                "orders": _order_lines(t, np.flatnonzero(~late_orders), rng, totals, currency, tenant_id),
                "order_items": _item_lines(t, np.arange(len(item_order)), item_ids, quantity),
            },
        )
    ]
    if orphans:
        plans.append(
            (
                "b0002",
                {
                    "customers": _customer_lines(t, np.flatnonzero(late_customers), rng),
                    "products": _product_lines(t, np.flatnonzero(late_products), rng, categories),
                    "orders": _order_lines(t, np.flatnonzero(late_orders), rng, totals, currency, tenant_id),
                },
            )
        )
    out: list[GeneratedBatch] = []
    for number, (batch_id, tables) in enumerate(plans):
        folder = root / batch_id
        folder.mkdir(parents=True, exist_ok=True)
        rows: dict[str, int] = {}
        expected: list[tuple[str, str]] = []
        duplicates: dict[str, int] = {}
        for table, lines in tables.items():
            if len(lines) == 0:
                continue
            rows[table] = len(lines)
            parts = [lines.slice(start, rows_per_file) for start in range(0, len(lines), rows_per_file)]
            suffix = ".ndjson.gz" if compress else ".ndjson"
            for i, part in enumerate(parts, start=1):
                prefix = b"\xef\xbb\xbf" if bad_rows and number == 0 and table == "customers" and i == 1 else b""
                _write(folder / f"{table}_{i:04d}{suffix}", part, prefix=prefix, compress=compress)
        if bad_rows and number == 0:
            bad = _bad_lines(rng, t)
            for table, entries in bad.items():
                body = b"\n".join(line for line, _ in entries) + b"\n"
                if table == "customers":
                    # Across files: a corrected first customer (last wins), an unknown field, then a cut-off line.
                    first_on_time = int(np.flatnonzero(~late_customers)[0])
                    restated = (
                        f'{{"customer_id":"{t.customer_ids[first_on_time]}","name":"Restated Name",'
                        f'"email":"r@example.com","loyalty_points":120}}\n'
                    ).encode()
                    body += restated + restated + b'{"customer_id":"' + _uuids(rng, 1)[0].as_py().encode() + b'","na'
                    duplicates[table] = 2
                    expected.append((table, "truncated last line"))
                (folder / f"{table}_9999_corrections.ndjson").write_bytes(body)
                rows[table] = rows.get(table, 0) + body.count(b"\n") + int(not body.endswith(b"\n"))
                expected.extend((table, reason) for _, reason in entries)
        files = []
        for path in sorted(folder.iterdir()):
            entity = file_entity(path.name)
            if entity is not None:
                data = path.read_bytes()
                files.append(BatchFile(path.name, entity, len(data), hashlib.sha256(data).hexdigest()))
        (folder / MANIFEST_NAME).write_bytes(render_manifest(tenant_id, batch_id, files))
        out.append(
            GeneratedBatch(
                tenant_id=tenant_id,
                batch_id=batch_id,
                path=folder,
                rows=rows,
                expected_rejects=tuple(expected),
                orphan_orders=orphan_orders if number == 0 else 0,
                orphan_items=orphan_items if number == 0 else 0,
                duplicates=duplicates,
            )
        )
    return out
