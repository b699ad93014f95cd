"""Benchmark the warehouse bulk loader against what users would otherwise pick: pandas to_sql, dlt and a bare COPY.

Why: the loader is the one write path every source uses. Targets (issue 6): a clean merge into an empty keyed
table at >= 0.8x a raw keyed `COPY` (CSV rendering excluded from COPY) and >= 3x dlt's merge; with 1% bad rows
(quarantined into `<table>_rejects`) within 15% of the clean merge; peak RSS flat in row count. This script loads
the same synthetic GA4 events each way into its own fresh table and prints the ratios; then the loader's quality
paths: 1% bad rows, a child table whose every row is checked against a tenant-scoped foreign key, and a set of
deleted keys applied as tombstones. It also runs the loader alone in a subprocess at two row counts and reads its
peak RSS, because streaming batches through COPY should keep memory bounded by one batch, not by the input.

Run: `uv run python bench/bench_loader.py [--rows 1000000] [--url postgresql://...]`. Without `--url` or
WAREHOUSE_URL an embedded PostgreSQL is started in a temporary directory and stopped at the end; with a URL the
tables go into fresh `bench_<id>_*` schemas that are dropped at the end. The last line is
`RESULT loader_rows_per_s=N to_sql_rows_per_s=N dlt_rows_per_s=N copy_rows_per_s=N loader_peak_rss_mb=N
bad_rows_per_s=N fk_rows_per_s=N delete_rows_per_s=N`.
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from psycopg import sql
from psycopg.abc import Query
from sqlalchemy.dialects.postgresql import JSONB

from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.warehouse import Column, ForeignKey, TableSpec, ensure_table
from ingestion_platform.warehouse.embedded import scratch_postgres

BATCH_ROWS = 100_000
TO_SQL_ROWS = 50_000
TO_SQL_CHUNK = 5_000  # 10 columns x 5,000 rows = 50,000 bind parameters, under PostgreSQL's limit of 65,535
KEY = ("tenant_id", "event_id")
COLUMNS = (
    Column("tenant_id", "text", nullable=False),
    Column("event_id", "bigint", nullable=False),
    Column("event_date", "date"),
    Column("event_timestamp", "timestamptz"),
    Column("user_pseudo_id", "text"),
    Column("event_name", "text"),
    Column("ga_session_id", "bigint"),
    Column("page_location", "text"),
    Column("price", "double precision"),
    Column("items", "jsonb"),
)
TENANTS = pa.array([f"tenant_{i:02d}" for i in range(8)])
EVENT_NAMES = pa.array(
    ["page_view", "view_item", "add_to_cart", "purchase", "view_search_results", "no_search_results"]
)
EPOCH_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
DAY_US = 86_400_000_000
# The same CSV dialect the loader writes, so the raw COPY baseline parses exactly what the loader sends.
CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed", batch_size=8192)


@dataclass(frozen=True)
class Timing:
    method: str
    rows: int
    seconds: float
    note: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def ga4_batch(start: int, stop: int, variant: int = 0) -> pa.RecordBatch:
    """Events `start`..`stop`-1, built column-wise; `variant` shifts every price (and items) so a re-load updates."""
    rng = np.random.default_rng(start)
    n = stop - start
    event_id = np.arange(start, stop, dtype=np.int64)
    ts_us = EPOCH_US + rng.integers(0, 30 * DAY_US, n)
    ts_s = ts_us // 1_000_000
    sku = pc.cast(pa.array(rng.integers(1, 50_000, n)), pa.string())
    price = pa.array(np.round(rng.uniform(1, 500, n), 2) + variant)
    quantity = pc.cast(pa.array(rng.integers(1, 5, n)), pa.string())
    client = pc.cast(pa.array(rng.integers(10**9, 2 * 10**9, n)), pa.string())
    first_seen = pc.cast(pa.array(ts_s - rng.integers(0, 90 * 86_400, n)), pa.string())
    return pa.RecordBatch.from_pydict(
        {
            "tenant_id": TENANTS.take(pa.array(event_id % len(TENANTS))),
            "event_id": event_id,
            "event_date": pa.array((ts_us // DAY_US).astype(np.int32), pa.date32()),
            "event_timestamp": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            "user_pseudo_id": pc.binary_join_element_wise(client, first_seen, "."),
            "event_name": EVENT_NAMES.take(pa.array(rng.integers(0, len(EVENT_NAMES), n))),
            "ga_session_id": ts_s - rng.integers(0, 1800, n),
            "page_location": pc.binary_join_element_wise("https://shop.example.com/product/SKU", sku, ""),
            "price": price,
            "items": pc.binary_join_element_wise(
                '[{"item_id": "SKU',
                sku,
                '", "price": ',
                pc.cast(price, pa.string()),
                ', "quantity": ',
                quantity,
                "}]",
                "",
            ),
        }
    )


def ga4_batches(rows: int, variant: int = 0) -> Iterator[pa.RecordBatch]:
    for start in range(0, rows, BATCH_ROWS):
        yield ga4_batch(start, min(start + BATCH_ROWS, rows), variant)


def every_nth(ids: pa.Array, n: int) -> pa.Array:
    return pc.equal(pc.subtract(ids, pc.multiply(pc.divide(ids, n), n)), 0)


def bad_batches(rows: int) -> Iterator[pa.RecordBatch]:
    """The same events with 1% of them carrying invalid JSON in the jsonb column."""
    for batch in ga4_batches(rows):
        bad = pc.equal(
            pc.subtract(batch.column("event_id"), pc.multiply(pc.divide(batch.column("event_id"), 100), 100)), 0
        )
        items = pc.if_else(bad, pa.scalar('[{"item_id": broken'), batch.column("items"))
        yield batch.set_column(batch.schema.get_field_index("items"), "items", items)


def libpq_url(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_url(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def dlt_url(url: str) -> str:
    """dlt insists on a host; for a Unix-socket URL (`?host=/dir`) libpq lets the query's host win over this one."""
    parsed = sa.make_url(libpq_url(url))
    return parsed.set(host=parsed.host or "localhost").render_as_string(hide_password=False)


def execute(url: str, statement: Query) -> list[tuple]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchall() if cur.description else []


def create_table(url: str, schema: str, name: str, *, primary_key: bool) -> None:
    """The loader's own DDL (via ensure_table), so every method writes into an identical table."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        ensure_table(conn, TableSpec(schema, name, COLUMNS, key=KEY if primary_key else ()))


def checkpoint(url: str) -> None:
    """Flush the previous method's dirty pages, so its checkpoint does not land inside the next method's timing."""
    try:
        execute(url, "CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        print("note: no privilege for CHECKPOINT; methods may pay for each other's checkpoints")


def count_rows(url: str, schema: str, name: str) -> int:
    return execute(url, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name)))[0][0]


def bench_loader(url: str, schema: str, rows: int) -> list[Timing]:
    """Three merges of the same keys: into an empty table, unchanged (all conflicts), changed (all updates)."""
    warehouse = WarehouseResource(url=url)
    spec = TableSpec(schema, "events", COLUMNS, key=KEY)
    runs = (
        ("loader merge, empty target", 0, (rows, 0)),
        ("loader merge again, unchanged", 0, (0, 0)),
        ("loader merge, all rows changed", 1, (0, rows)),
    )
    timings = []
    for method, variant, expected in runs:
        checkpoint(url)
        started = time.perf_counter()
        result = warehouse.load(spec, ga4_batches(rows, variant), mode="merge")
        seconds = time.perf_counter() - started
        if (result.inserted, result.updated) != expected:
            raise RuntimeError(f"{method}: inserted/updated {result.inserted}/{result.updated}, expected {expected}")
        timings.append(
            Timing(method, result.rows_staged, seconds, f"inserted={result.inserted} updated={result.updated}")
        )
    return timings


def bench_quality(url: str, schema: str, rows: int) -> list[Timing]:
    """Merges into empty tables that exercise quarantine, a foreign key on every row, and tombstones."""
    warehouse = WarehouseResource(url=url)
    timings = []
    checkpoint(url)
    started = time.perf_counter()
    result = warehouse.load(TableSpec(schema, "bad", COLUMNS, key=KEY), bad_batches(rows), mode="merge")
    seconds = time.perf_counter() - started
    if (result.inserted, result.rejected) != (rows - rows // 100 - (rows % 100 > 0), rows // 100 + (rows % 100 > 0)):
        raise RuntimeError(f"1% bad: inserted/rejected {result.inserted}/{result.rejected}")
    timings.append(Timing("loader merge, 1% bad rows", rows, seconds, f"rejected={result.rejected}"))

    parent = TableSpec(
        schema,
        "event_names",
        (Column("tenant_id", "text", nullable=False), Column("event_name", "text", nullable=False)),
        key=("tenant_id", "event_name"),
    )
    names = [(t, e) for t in TENANTS.to_pylist() for e in EVENT_NAMES.to_pylist()]
    warehouse.load(
        parent, [pa.table({"tenant_id": [t for t, _ in names], "event_name": [e for _, e in names]})], mode="merge"
    )
    child = TableSpec(
        schema,
        "events_fk",
        COLUMNS,
        key=KEY,
        foreign_keys=(ForeignKey(("tenant_id", "event_name"), f"{schema}.event_names"),),
    )
    checkpoint(url)
    started = time.perf_counter()
    result = warehouse.load(child, ga4_batches(rows), mode="merge")
    seconds = time.perf_counter() - started
    if result.inserted != rows:
        raise RuntimeError(f"foreign key child: inserted {result.inserted}, rejected {result.rejected}")
    timings.append(Timing("loader merge, foreign key checked", rows, seconds, "every row checked against its parent"))

    tombstoned = TableSpec(
        schema, "events_del", (*COLUMNS, Column("deleted_at", "timestamptz")), key=KEY, tombstone="deleted_at"
    )
    warehouse.load(tombstoned, ga4_batches(rows), mode="merge")
    deleted = [
        pa.table({"tenant_id": b.column("tenant_id"), "event_id": b.column("event_id")}).filter(
            every_nth(b.column("event_id"), 10)
        )
        for b in ga4_batches(rows)
    ]
    n_deleted = sum(t.num_rows for t in deleted)
    checkpoint(url)
    started = time.perf_counter()
    result = warehouse.load(tombstoned, [], mode="merge", deleted_keys=deleted)
    seconds = time.perf_counter() - started
    if result.tombstoned != n_deleted:
        raise RuntimeError(f"deletes: tombstoned {result.tombstoned} of {n_deleted}")
    timings.append(Timing("loader deletes (tombstones), 10%", n_deleted, seconds, "deleted_at set on a loaded table"))
    return timings


def bench_to_sql(url: str, schema: str, rows: int) -> Timing:
    """pandas to_sql on a subset (it is too slow for the full input); rows/s is extrapolated from it."""
    create_table(url, schema, "events", primary_key=True)
    subset = min(rows, TO_SQL_ROWS)
    frame = pa.Table.from_batches([ga4_batch(0, subset)]).to_pandas()
    # A jsonb column takes Python objects through SQLAlchemy's JSONB type, which is how pandas users write one.
    frame["items"] = frame["items"].map(json.loads)
    engine = sa.create_engine(sqlalchemy_url(url))
    try:
        checkpoint(url)
        started = time.perf_counter()
        frame.to_sql(
            "events",
            engine,
            schema=schema,
            if_exists="append",
            index=False,
            method="multi",
            chunksize=TO_SQL_CHUNK,
            dtype={"items": JSONB},
        )
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    if count_rows(url, schema, "events") != subset:
        raise RuntimeError("to_sql did not write every row")
    return Timing("pandas to_sql multi", subset, seconds, f"{subset:,}-row subset, rows/s extrapolated")


def bench_dlt(url: str, schema: str, rows: int, work_dir: Path) -> Timing:
    """dlt's fastest documented Postgres path: Arrow tables normalised to CSV and loaded with COPY, then merged."""
    os.environ["DLT_DATA_DIR"] = str(work_dir)
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    # dlt warns once per batch that the `json` hint differs from the Arrow string type; that is the intent here.
    os.environ["RUNTIME__LOG_LEVEL"] = "ERROR"
    # Imported here, not at the top, so the --only-loader subprocess's peak RSS holds only what the loader needs.
    import dlt

    @dlt.resource(name="events", write_disposition="merge", primary_key=KEY, columns={"items": {"data_type": "json"}})
    def events() -> Iterator[pa.Table]:
        for batch in ga4_batches(rows):
            yield pa.Table.from_batches([batch])

    pipeline = dlt.pipeline(
        pipeline_name=schema,
        destination=dlt.destinations.postgres(credentials=dlt_url(url)),
        dataset_name=schema,
        pipelines_dir=str(work_dir / "pipelines"),
    )
    checkpoint(url)
    started = time.perf_counter()
    pipeline.run(events(), loader_file_format="csv")
    seconds = time.perf_counter() - started
    if count_rows(url, schema, "events") != rows:
        raise RuntimeError("dlt did not write every row")
    return Timing("dlt merge (arrow -> csv COPY)", rows, seconds, "dlt adds no primary key index to the target")


def copy_into(url: str, schema: str, name: str, chunks: Iterable[bytes]) -> float:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                sql.Identifier(schema, name), sql.SQL(", ").join(sql.Identifier(c.name) for c in COLUMNS)
            )
            with cur.copy(stmt) as copy:
                for chunk in chunks:
                    copy.write(chunk)
        return time.perf_counter() - started


def render_csv(rows: int) -> tuple[list[bytes], float, float]:
    """The input as CSV chunks for raw COPY, with the seconds spent generating the batches and rendering them."""
    started = time.perf_counter()
    batches = list(ga4_batches(rows))
    generated = time.perf_counter()
    chunks = []
    for batch in batches:
        buffer = io.BytesIO()
        pa_csv.write_csv(batch, buffer, CSV_OPTIONS)
        chunks.append(buffer.getvalue())
    return chunks, generated - started, time.perf_counter() - generated


def warm_up(url: str, schema: str, chunks: list[bytes]) -> None:
    """One untimed load, dropped again, before anything is timed.

    A fresh cluster creates its WAL segment files on first use, so whichever method ran first paid for them (measured:
    the same 1M-row loader run took 10.9 s on a fresh server, 8.4 s on the third run).
    """
    create_table(url, schema, "events", primary_key=True)
    copy_into(url, schema, "events", chunks)
    execute(url, sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def bench_copy(url: str, schema: str, chunks: list[bytes], rows: int) -> list[Timing]:
    """Raw COPY of pre-rendered CSV into a table with the primary key (the reference) and into one without."""
    timings = []
    for name, primary_key in (("with_pk", True), ("no_pk", False)):
        create_table(url, schema, name, primary_key=primary_key)
        checkpoint(url)
        seconds = copy_into(url, schema, name, chunks)
        label = "raw COPY csv, primary key" if primary_key else "raw COPY csv, no key"
        timings.append(Timing(label, rows, seconds, "CSV rendering excluded"))
    return timings


def peak_rss_mb() -> float:
    """This address space's high-water RSS (Linux VmHWM).

    Not `getrusage().ru_maxrss`: Linux carries it across fork and exec, so a child started by this (large) benchmark
    process would report the parent's peak instead of its own.
    """
    status = Path("/proc/self/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) / 1024


def only_loader(url: str, rows: int) -> None:
    """One merge into a fresh table in this process, printing a JSON line the parent reads."""
    baseline = peak_rss_mb()
    schema = f"bench_{uuid.uuid4().hex[:8]}_rss"
    try:
        started = time.perf_counter()
        result = WarehouseResource(url=url).load(
            TableSpec(schema, "events", COLUMNS, key=KEY), ga4_batches(rows), mode="merge"
        )
        seconds = time.perf_counter() - started
    finally:
        execute(url, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    print(
        json.dumps(
            {"rows": result.rows_staged, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "import_rss_mb": baseline}
        )
    )


def loader_rss(url: str, rows: int) -> dict[str, float]:
    args = [sys.executable, __file__, "--only-loader", "--rows", str(rows), "--url", url]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(timings: list[Timing], to_sql_rate: float, copy_rate: float) -> None:
    print(f"{'method':<34} {'rows':>10} {'seconds':>9} {'rows/s':>10} {'x to_sql':>9} {'x COPY':>7}  note")
    for t in timings:
        print(
            f"{t.method:<34} {t.rows:>10,} {t.seconds:>9.2f} {t.rows_per_s:>10,.0f} "
            f"{t.rows_per_s / to_sql_rate:>9.1f} {t.rows_per_s / copy_rate:>7.2f}  {t.note}"
        )


def run(url: str, rows: int) -> None:
    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    version = execute(url, "SHOW server_version")[0][0]
    print(f"PostgreSQL {version}; {rows:,} rows of {len(COLUMNS)} columns in batches of {BATCH_ROWS:,}")
    chunks, generate_s, render_s = render_csv(rows)
    try:
        warm_up(url, f"{prefix}_warm_up", chunks)
        loader = bench_loader(url, f"{prefix}_loader", rows)
        quality = bench_quality(url, f"{prefix}_quality", rows)
        to_sql = bench_to_sql(url, f"{prefix}_to_sql", rows)
        with tempfile.TemporaryDirectory(prefix="bench_dlt_") as work_dir:
            dlt_timing = bench_dlt(url, f"{prefix}_dlt", rows, Path(work_dir))
        copies = bench_copy(url, f"{prefix}_copy", chunks, rows)
    finally:
        schemas = execute(
            url, sql.SQL("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, {})").format(prefix)
        )
        for (schema,) in schemas:
            execute(url, sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    rss = {n: loader_rss(url, n) for n in (max(rows // 5, 1), rows)}

    copy_rate = copies[0].rows_per_s
    print()
    print_table([*loader, *quality, to_sql, dlt_timing, *copies], to_sql.rows_per_s, copy_rate)
    print()
    print(
        f"generating the Arrow batches takes {generate_s:.2f} s (inside the loader and dlt timings); "
        f"rendering them as CSV takes {render_s:.2f} s (excluded from raw COPY)"
    )
    for n, r in rss.items():
        print(
            f"loader alone in a subprocess, {n:>10,} rows: peak RSS {r['peak_rss_mb']:.0f} MB "
            f"({r['import_rss_mb']:.0f} MB after imports), {r['rows'] / r['seconds']:,.0f} rows/s"
        )
    loader_rate = loader[0].rows_per_s
    bad_rate, fk_rate, delete_rate = (t.rows_per_s for t in quality)
    for target, ratio, floor in (
        ("raw keyed COPY", loader_rate / copy_rate, 0.8),
        ("dlt merge", loader_rate / dlt_timing.rows_per_s, 3),
        ("the clean merge (1% bad rows)", bad_rate / loader_rate, 0.85),
    ):
        print(f"target: >= {floor}x {target}: {ratio:.2f}x {'PASS' if ratio >= floor else 'MISS'}")
    print(
        f"RESULT loader_rows_per_s={loader_rate:.0f} to_sql_rows_per_s={to_sql.rows_per_s:.0f} "
        f"dlt_rows_per_s={dlt_timing.rows_per_s:.0f} copy_rows_per_s={copy_rate:.0f} "
        f"loader_peak_rss_mb={rss[rows]['peak_rss_mb']:.0f} bad_rows_per_s={bad_rate:.0f} "
        f"fk_rows_per_s={fk_rate:.0f} delete_rows_per_s={delete_rate:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to load per method (default 1,000,000)")
    parser.add_argument("--url", default=os.environ.get("WAREHOUSE_URL"), help="PostgreSQL URL (default WAREHOUSE_URL)")
    parser.add_argument("--only-loader", action="store_true", help="run the loader alone and print its peak RSS")
    args = parser.parse_args()
    with scratch_postgres(args.url) as url:
        (only_loader if args.only_loader else run)(url, args.rows)


if __name__ == "__main__":
    main()
