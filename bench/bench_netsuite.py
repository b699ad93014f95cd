"""Benchmark NetSuite extraction: our key-set extraction into the warehouse against offset paging + pandas `to_sql`.

Why: the replaced service and the peers' connectors page SuiteQL by offset and write with pandas; NetSuite stops
offset paging at 100,000 rows, so they silently load a fifth of a 500,000-row table. Ours pages by key, streams
pages into the loader (COPY, merge) and must load every row at a useful rate with memory bounded by a few pages.

The sandbox SuiteQL API serves `transactionline` (500,000 rows by default, last-modified over 10 days) from its own
process, so its DuckDB and its JSON rendering count neither against our process's RSS nor against our CPU share
(each process has its own GIL). Ours runs the same code as the `netsuite/transactionline` asset (`extract_window`
over one range window, TBA-signed requests through `NetSuiteResource`), without Dagster around it. The share of
wall time spent waiting on HTTP is the time the page iterator blocked on a request; parsing and loading overlap with
it (the loader encodes one page ahead in a thread), so `1 - http_wait_share` is time spent only on our side.

Run: `env -u PYTHONDONTWRITEBYTECODE uv run python bench/bench_netsuite.py [--rows 500000] [--url postgresql://...]`.
Without `--url` an embedded PostgreSQL is started in a temporary directory. The last line is
`RESULT netsuite_rows_per_s=N http_wait_share=N peak_rss_mb=N`.
"""

import argparse
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import sqlalchemy as sa

from ingestion_platform.defs.netsuite.extract import extract_window
from ingestion_platform.defs.netsuite.suiteql import range_window, select_query
from ingestion_platform.resources.netsuite import NetSuiteResource
from ingestion_platform.resources.netsuite_auth import NetSuiteTBA
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.netsuite_api import SANDBOX_TBA_KEYS, SUITEQL_PATH, NetSuiteSandboxConfig
from ingestion_platform.tenants import NetSuiteSettings
from ingestion_platform.warehouse.embedded import scratch_postgres

START = date(2026, 1, 1)
DAYS = 10
TABLE = "transactionline"
ENV = {name: f"BENCH_NS_{name.upper()}" for name in SANDBOX_TBA_KEYS}


def peak_rss_mb() -> float:
    """This process's high-water RSS (Linux VmHWM), not carried over from a parent as ru_maxrss is."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def _serve(config: NetSuiteSandboxConfig, port: int, ready: Any) -> None:
    from ingestion_platform.sandbox.netsuite_api import run_netsuite_api

    with run_netsuite_api(config, port=port):
        ready.set()
        while True:
            time.sleep(3600)


@contextmanager
def sandbox(rows: int) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = NetSuiteSandboxConfig(
        rows={"transaction": max(rows // 10, 1), TABLE: rows, "item": 500, "customer": 500, "vendor": 100},
        start=START,
        days=DAYS,
    )
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=_serve, args=(config, port, ready), daemon=True)
    process.start()
    if not ready.wait(300):
        process.kill()
        raise RuntimeError("the NetSuite sandbox did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.join()


def ours(base_url: str, url: str) -> dict[str, float]:
    for name, env in ENV.items():
        os.environ[env] = SANDBOX_TBA_KEYS[name]
    settings = NetSuiteSettings(
        account_id="1234567_SB1",
        auth="tba",
        start_date=START.isoformat(),
        base_url=base_url,
        consumer_key_env=ENV["consumer_key"],
        consumer_secret_env=ENV["consumer_secret"],
        token_id_env=ENV["token_id"],
        token_secret_env=ENV["token_secret"],
    )
    warehouse = WarehouseResource(url=url)
    window = range_window(START, START + timedelta(days=DAYS - 1))
    baseline = peak_rss_mb()
    started = time.perf_counter()
    with NetSuiteResource().client(settings) as client:
        extraction = extract_window(client, warehouse, table=TABLE, tenant_id="bench", window=window, page_size=1000)
    seconds = time.perf_counter() - started
    loaded = warehouse.scalar(f"SELECT count(*) FROM netsuite.{TABLE}")
    return {
        "rows": extraction.rows,
        "loaded": loaded,
        "source": extraction.source_count,
        "seconds": seconds,
        "http_seconds": extraction.http_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "requests": client.requests,
    }


def offset_paging_to_sql(base_url: str, url: str) -> dict[str, float]:
    """What users otherwise write: offset pages until NetSuite stops them, a DataFrame, `to_sql`."""
    auth = NetSuiteTBA("1234567_SB1", **SANDBOX_TBA_KEYS)
    window = range_window(START, START + timedelta(days=DAYS - 1))
    columns = ["uniquekey", "id", "transaction", "item", "quantity", "rate", "netamount", "linelastmodifieddate"]
    query = select_query(TABLE, columns, window)
    items: list[dict[str, Any]] = []
    stopped = ""
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, auth=auth, headers={"Prefer": "transient"}, timeout=900) as client:
        offset = 0
        while True:
            response = client.post(SUITEQL_PATH, params={"limit": 1000, "offset": offset}, json={"q": query})
            if response.status_code != 200:
                stopped = response.json()["o:errorDetails"][0]["o:errorCode"]
                break
            body = response.json()
            items.extend(body["items"])
            if not body["hasMore"]:
                break
            offset += 1000
    http_seconds = time.perf_counter() - started
    frame = pd.DataFrame(items).drop(columns=["links"], errors="ignore")
    engine = sa.create_engine(url)
    frame.to_sql("transactionline_to_sql", engine, schema="public", if_exists="replace", index=False, chunksize=10_000)
    engine.dispose()
    return {
        "rows": len(frame),
        "seconds": time.perf_counter() - started,
        "http_seconds": http_seconds,
        "stopped": stopped or "end",  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--url", default=os.environ.get("WAREHOUSE_URL"))
    args = parser.parse_args()
    print(f"NetSuite sandbox with {args.rows:,} {TABLE} rows over {DAYS} days; building it...", flush=True)
    with sandbox(args.rows) as base_url, scratch_postgres(args.url) as url:
        mine = ours(base_url, url)
        theirs = offset_paging_to_sql(base_url, url)
    rate = mine["rows"] / mine["seconds"]
    their_rate = theirs["rows"] / theirs["seconds"]
    share = mine["http_seconds"] / mine["seconds"]
    print(f"{'method':<40} {'rows':>9} {'seconds':>8} {'rows/s':>8} {'HTTP wait':>9}  note")
    print(
        f"{'ours: key-set pages -> loader (merge)':<40} {mine['rows']:>9,} {mine['seconds']:>8.1f} {rate:>8,.0f} "
        f"{share:>9.0%}  {mine['requests']} requests; warehouse holds {mine['loaded']:,} of {mine['source']:,}"
    )
    print(
        f"{'offset paging + pandas to_sql':<40} {theirs['rows']:>9,} {theirs['seconds']:>8.1f} {their_rate:>8,.0f} "
        f"{theirs['http_seconds'] / theirs['seconds']:>9.0%}  stopped by {theirs['stopped']}: "
        f"{theirs['rows'] / mine['source']:.0%} of the table"
    )
    print(
        f"ours vs offset+to_sql: {rate / their_rate:.2f}x rows/s, {mine['rows'] / max(theirs['rows'], 1):.1f}x rows "
        f"loaded; peak RSS {mine['peak_rss_mb']:.0f} MB (after imports {mine['baseline_rss_mb']:.0f} MB)"
    )
    if mine["loaded"] != mine["source"]:
        print(f"ERROR: loaded {mine['loaded']} rows, the source counted {mine['source']}", file=sys.stderr)
        sys.exit(1)
    print(f"RESULT netsuite_rows_per_s={rate:.0f} http_wait_share={share:.2f} peak_rss_mb={mine['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
