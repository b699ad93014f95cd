"""Benchmark commerce NDJSON ingestion (parse + validate so far) against the old system's published throughput.

Why: the replaced service states ~1,000-5,000 rows/s for its comprehensive NDJSON ingestion, and the issue sets the
bar at >= 50x the upper figure end to end. This script generates one batch (default 1,000,000 order items with about
250,000 orders, 50,000 customers and 10,000 products), then parses and validates every file in foreign-key order in a
child process, so the peak RSS it reports is the pipeline's own and not the generator's. Loading in FK order and the
raw COPY comparison are added once the loader's foreign-key support lands.

Run: `env -u PYTHONDONTWRITEBYTECODE uv run python bench/bench_commerce.py [--orders 250000] [--gzip]`.
The last line is
`RESULT commerce_parse_validate_rows_per_s=N commerce_rows_per_cpu_s=N old_rows_per_s=5000 peak_rss_mb=N`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ingestion_platform.defs.commerce.batches import MANIFEST_NAME, batch_state
from ingestion_platform.defs.commerce.ndjson import ENTITIES, DuplicateTracker, Source
from ingestion_platform.defs.commerce.validate import FileResult, read_file
from ingestion_platform.sandbox.commerce_data import generate_commerce

OLD_ROWS_PER_S = 5_000  # the upper end of the replaced service's published 1,000-5,000 rows/s


def peak_rss_mb() -> float:
    """This address space's high-water RSS (Linux VmHWM); getrusage would carry the parent's peak across exec."""
    status = Path("/proc/self/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) / 1024


def parse_and_validate(folder: Path, tenant_id: str) -> None:
    """Parse and validate one batch folder in this process; print one JSON line of figures for the parent."""
    baseline = peak_rss_mb()
    listing = {p.name: p.stat().st_size for p in folder.iterdir()}
    state = batch_state(listing, (folder / MANIFEST_NAME).read_bytes())
    figures: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    cpu_started = time.process_time()
    for table, files in state.by_entity().items():
        entity = ENTITIES[table]
        duplicates = DuplicateTracker(entity.id_field)
        table_started = time.perf_counter()
        valid = rejected = slow = 0
        for f in files:
            result = FileResult(f.name)
            with (folder / f.name).open("rb") as handle:
                for _ in read_file(
                    handle, entity, Source(tenant_id, folder.name, f.name), duplicates=duplicates, result=result
                ):
                    pass
            valid += result.rows_valid
            rejected += result.rows_rejected
            slow += result.blocks_on_slow_path
        figures[table] = {
            "rows_valid": valid,
            "rows_rejected": rejected,
            "duplicates": duplicates.duplicates(),
            "slow_blocks": slow,
            "seconds": time.perf_counter() - table_started,
        }
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    print(
        json.dumps(
            {
                "tables": figures,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_rss_mb": peak_rss_mb(),
                "import_rss_mb": baseline,
            }
        )
    )


def run(orders: int, customers: int, products: int, gzip: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_commerce_") as tmp:
        started = time.perf_counter()
        (batch,) = generate_commerce(["bench"], customers, products, orders, Path(tmp), seed=7, compress=gzip)
        generated = time.perf_counter() - started
        size = sum(p.stat().st_size for p in batch.path.iterdir())
        print(f"generated {sum(batch.rows.values()):,} lines ({size / 1e6:,.0f} MB on disk) in {generated:.1f} s")
        args = [sys.executable, __file__, "--child", str(batch.path)]
        child = subprocess.run(args, capture_output=True, text=True, check=True)
        figures = json.loads(child.stdout.strip().splitlines()[-1])
    rows = sum(t["rows_valid"] + t["rows_rejected"] for t in figures["tables"].values())
    rate = rows / figures["seconds"]
    print(f"{'table':<12} {'rows':>10} {'rejected':>9} {'slow blocks':>11} {'seconds':>8} {'rows/s':>11}")
    for table, t in figures["tables"].items():
        n = t["rows_valid"] + t["rows_rejected"]
        print(
            f"{table:<12} {n:>10,} {t['rows_rejected']:>9,} {t['slow_blocks']:>11} {t['seconds']:>8.2f} "
            f"{n / t['seconds']:>11,.0f}"
        )
    print(
        f"parse + validate: {rows:,} rows in {figures['seconds']:.2f} s = {rate:,.0f} rows/s; "
        f"old system (published): 1,000-{OLD_ROWS_PER_S:,} rows/s -> {rate / OLD_ROWS_PER_S:,.0f}x its upper figure"
    )
    # On a shared machine wall time depends on the neighbours; CPU time (all threads) is the steadier figure.
    print(
        f"CPU time {figures['cpu_seconds']:.2f} s = {rows / figures['cpu_seconds']:,.0f} rows per CPU-second; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs during the run"
    )
    print(
        f"peak RSS of the parse+validate process: {figures['peak_rss_mb']:.0f} MB "
        f"({figures['import_rss_mb']:.0f} MB after imports)"
    )
    print(
        f"RESULT commerce_parse_validate_rows_per_s={rate:.0f} "
        f"commerce_rows_per_cpu_s={rows / figures['cpu_seconds']:.0f} old_rows_per_s={OLD_ROWS_PER_S} "
        f"peak_rss_mb={figures['peak_rss_mb']:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=250_000, help="orders (about 4 items each; default 250,000)")
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--gzip", action="store_true", help="write the files gzip-compressed")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        parse_and_validate(args.child, "bench")
    else:
        run(args.orders, args.customers, args.products, args.gzip)


if __name__ == "__main__":
    main()
