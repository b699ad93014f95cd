"""Benchmark table profiling in the warehouse against what users would otherwise do: pull the table into pandas.

Why: the replaced NetSuite service profiled samples in pandas; issue 11 asks for exact profiles of million-row
tables computed in the warehouse. This script builds one table of `--rows` rows (ids, a self-referencing parent,
amounts, unique e-mails, a three-value status, timestamps) with generate_series, then profiles it twice:
`profile_table` (SQL, exact, with key and foreign-key candidates) and the pandas route (read_sql, then isna,
nunique, min/max/mean, value_counts and the same e-mail regex), and prints both timings and the ratio.

Run: `uv run python bench/bench_profiling.py [--rows 1000000] [--url postgresql://...]`. Without `--url` or
WAREHOUSE_URL an embedded PostgreSQL is started in a temporary directory and stopped at the end; with a URL the table
goes into a fresh `bench_<id>` schema that is dropped at the end. The last line is
`RESULT profile_seconds=N pandas_seconds=N speedup=N profile_rows_per_s=N`.
"""

import argparse
import os
import time
import uuid

from ingestion_platform.defs.netsuite.profiling import PATTERNS, profile_table
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.warehouse.embedded import scratch_postgres


def pandas_profile(warehouse: WarehouseResource, schema: str) -> dict[str, object]:
    """What a profile in pandas costs: the whole table over the wire, then the same statistics column by column."""
    frame = warehouse.query(f"SELECT * FROM {schema}.account WHERE tenant_id = :tenant", {"tenant": "acme"})
    stats: dict[str, object] = {"rows": len(frame)}
    for name in frame.columns:
        col = frame[name]
        stats[name] = {
            "nulls": int(col.isna().sum()),
            "distinct": int(col.nunique()),
            "top": col.value_counts().head(5).to_dict(),
            **({"min": col.min(), "max": col.max(), "mean": col.mean()} if col.dtype.kind in "iufM" else {}),
        }
    stats["email_share"] = float(frame["email"].str.match(PATTERNS["email"], case=False).mean())
    return stats


def run(url: str, rows: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    warehouse = WarehouseResource(url=url)
    try:
        with warehouse.raw_connection() as conn:
            version = conn.execute("SHOW server_version").fetchone()
            print(f"PostgreSQL {version[0] if version else '?'}; {rows:,} rows of 7 columns")
            conn.execute(
                f"CREATE SCHEMA {schema};"
                f"CREATE TABLE {schema}.account (tenant_id text NOT NULL, id bigint NOT NULL, parent bigint, "
                "amount numeric, email text, status text, modified timestamptz);"
                f"INSERT INTO {schema}.account SELECT 'acme', g, CASE WHEN g % 10 = 0 THEN NULL ELSE (g + 1) / 2 END, "
                "g % 1000, 'user' || g || '@example.com', (ARRAY['open', 'closed', 'pending'])[g % 3 + 1], "
                f"timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' FROM generate_series(1, {rows}) g;"
                f"ANALYZE {schema}.account"
            )
        started = time.perf_counter()
        profile = profile_table(warehouse, schema, "account", tenant_id="acme")
        profile_s = time.perf_counter() - started
        started = time.perf_counter()
        stats = pandas_profile(warehouse, schema)
        pandas_s = time.perf_counter() - started
    finally:
        with warehouse.raw_connection() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    assert profile.row_count == stats["rows"] == rows
    print(f"{'method':<44} {'seconds':>9} {'rows/s':>12}")
    print(f"{'profile_table (SQL, + key and FK candidates)':<44} {profile_s:>9.2f} {rows / profile_s:>12,.0f}")
    print(f"{'pandas (read_sql + column statistics)':<44} {pandas_s:>9.2f} {rows / pandas_s:>12,.0f}")
    print(
        f"candidate keys {profile.candidate_keys}; "
        f"foreign keys {[f'{fk.column} -> {fk.ref_qualified_name}' for fk in profile.foreign_keys]}"
    )
    print(
        f"RESULT profile_seconds={profile_s:.2f} pandas_seconds={pandas_s:.2f} speedup={pandas_s / profile_s:.2f} "
        f"profile_rows_per_s={rows / profile_s:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the profiled table (default 1,000,000)")
    parser.add_argument("--url", default=os.environ.get("WAREHOUSE_URL"), help="PostgreSQL URL (default WAREHOUSE_URL)")
    args = parser.parse_args()
    with scratch_postgres(args.url) as url:
        run(url, args.rows)


if __name__ == "__main__":
    main()
