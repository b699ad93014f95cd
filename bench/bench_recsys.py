"""Benchmark the recommender pipeline against the old data-pipeline service's published figures.

Why: the old service parsed CSV at ~10K rows/s, validated at ~5K rows/s, computed features at ~100K
interactions/s, sampled ~50K training samples/s, and needed ~2 GB of memory per 1M interactions ("use PySpark for
>10M"). The issue asks for at least 50x on each and 20M interactions of one tenant within 2 GB on one machine.

What runs: `generate_recsys` writes the interactions as CSV uploads (1M rows a file, as a tenant's successive
uploads), then three phases, each in a fresh child process that reports its own peak RSS (ru_maxrss):
- ingest: parse + Great Expectations validation + accepted/rejected Parquet, per upload file, like the asset does;
  the one-time import of Great Expectations and building its context is timed apart (`gx_setup_s`);
- features: user and item features over all accepted Parquet files (DuckDB, `--memory-limit`);
- sampling: training samples (positives, 4 negatives each by popularity) over the same files.
- floor: DuckDB with the same settings only reading those files, and only grouping them by (user, item): the
  least work any features computation does, printed as the bound on this machine.
The old figures come from its README; it is not runnable here (Kafka, MinIO), so the ratios compare against them.

Run: `env -u PYTHONDONTWRITEBYTECODE uv run --frozen --extra dev python bench/bench_recsys.py
[--interactions 1000000] [--memory-limit 1GB] [--threads N]`. `--threads` defaults to DuckDB's own choice (every core);
on a machine whose cores are busy with other work, 1 thread can be faster, as DuckDB's parallel aggregates cost more
CPU in all. The last line is
`RESULT ingest_rows_per_s=N features_rows_per_s=N samples_per_s=N peak_rss_mb=N floor_read_rows_per_s=N
floor_group_rows_per_s=N` (one line).
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingestion_platform.defs.recsys.features import EngineSettings

OLD_PARSE_ROWS_S = 10_000
OLD_VALIDATE_ROWS_S = 5_000
OLD_FEATURES_ROWS_S = 100_000
OLD_SAMPLES_S = 50_000
OLD_MB_PER_MILLION = 2_000
ROWS_PER_UPLOAD = 1_000_000


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def phase_ingest(args: argparse.Namespace) -> dict[str, float]:
    import pyarrow.parquet as pq

    from ingestion_platform.defs.recsys.validate import ACCEPTED_ROW_GROUP_ROWS, _gx, validate_file

    started = time.perf_counter()
    _gx("interactions")
    setup = time.perf_counter() - started
    rows = rejected = 0
    started = time.perf_counter()
    for source in sorted(Path(args.work, "uploads").glob("interactions*.csv")):
        result = validate_file(source, "interactions")
        pq.write_table(
            result.accepted,
            Path(args.work, "accepted", source.stem + ".parquet"),
            compression="zstd",
            row_group_size=ACCEPTED_ROW_GROUP_ROWS,
        )
        pq.write_table(result.rejected, Path(args.work, "accepted", source.stem + ".rejects.parquet"))
        rows += result.rows_total
        rejected += result.rows_rejected
    seconds = time.perf_counter() - started
    return {"rows": rows, "rejected": rejected, "seconds": seconds, "gx_setup_s": setup, "rss_mb": _peak_rss_mb()}


def _engine(args: argparse.Namespace) -> "EngineSettings":
    from ingestion_platform.defs.recsys.features import EngineSettings

    return EngineSettings(memory_limit=args.memory_limit, threads=args.threads, temp_directory=Path(args.work, "spill"))


def _accepted(args: argparse.Namespace) -> list[Path]:
    return sorted(p for p in Path(args.work, "accepted").glob("*.parquet") if not p.name.endswith(".rejects.parquet"))


def phase_features(args: argparse.Namespace) -> dict[str, float]:
    from ingestion_platform.defs.recsys.features import compute_features

    out = Path(args.work, "features")
    stats = compute_features(
        _accepted(args), out / "user_features.parquet", out / "item_features.parquet", engine=_engine(args)
    )
    return {
        "rows": stats.interactions,
        "users": stats.users,
        "items": stats.items,
        "seconds": stats.seconds,
        "rss_mb": _peak_rss_mb(),
    }


def phase_sampling(args: argparse.Namespace) -> dict[str, float]:
    from ingestion_platform.defs.recsys.features import training_samples

    stats = training_samples(_accepted(args), Path(args.work, "training", "samples.parquet"), engine=_engine(args))
    return {
        "rows": stats.rows,
        "positives": stats.positives,
        "negatives": stats.negatives,
        "short": stats.users_short_of_negatives,
        "seconds": stats.seconds,
        "rss_mb": _peak_rss_mb(),
    }


def phase_floor(args: argparse.Namespace) -> dict[str, float]:
    """What DuckDB needs, with the same settings, just to read the accepted files and to group them by (user, item):
    work any features computation does, so it bounds what features/s can be on this machine."""
    from ingestion_platform.defs.recsys.features import _connect

    files = "[" + ", ".join(f"'{p}'" for p in _accepted(args)) + "]"
    timings: dict[str, float] = {}
    with _connect(_engine(args)) as con:
        started = time.perf_counter()
        con.execute(f"CREATE TABLE everything AS SELECT * FROM read_parquet({files})")
        timings["read_seconds"] = time.perf_counter() - started
        rows = con.execute("SELECT count(*) FROM everything").fetchone()
        started = time.perf_counter()
        con.execute(
            f"CREATE TABLE pairs AS SELECT user_id, item_id, count(*) AS n FROM read_parquet({files}) GROUP BY ALL"
        )
        timings["group_seconds"] = time.perf_counter() - started
    return {"rows": float(rows[0]) if rows else 0.0, **timings}


PHASES = {"ingest": phase_ingest, "features": phase_features, "sampling": phase_sampling, "floor": phase_floor}


def _child(phase: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--phase", phase, "--work", args.work, "--memory-limit", args.memory_limit]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB memory_limit for features and sampling")
    parser.add_argument("--threads", type=int, help="DuckDB threads for features and sampling (default: every core)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args)))
        return 0

    from ingestion_platform.sandbox.recsys_data import generate_recsys

    n = args.interactions
    work = Path(tempfile.mkdtemp(prefix="bench-recsys-"))
    args.work = str(work)
    try:
        for folder in ("uploads", "accepted", "features", "training"):
            (work / folder).mkdir()
        started = time.perf_counter()
        generate_recsys(
            max(n // 10, 100),
            max(n // 200, 100),
            n,
            work / "uploads",
            seed=42,
            end=datetime(2025, 6, 1, tzinfo=UTC),
            rows_per_file=ROWS_PER_UPLOAD,
        )
        print(f"generated {n:,} interactions in {time.perf_counter() - started:.1f} s ({work})")
        ingest = _child("ingest", args)
        features = _child("features", args)
        sampling = _child("sampling", args)
        floor = _child("floor", args)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ingest_rate = ingest["rows"] / ingest["seconds"]
    features_rate = features["rows"] / features["seconds"]
    samples_rate = sampling["rows"] / sampling["seconds"]
    old_ingest = 1 / (1 / OLD_PARSE_ROWS_S + 1 / OLD_VALIDATE_ROWS_S)
    old_mb = OLD_MB_PER_MILLION * n / 1_000_000
    peak = max(ingest["rss_mb"], features["rss_mb"], sampling["rss_mb"])
    print(
        f"ingest: {ingest['rows']:,} rows ({ingest['rejected']:,} rejected) in {ingest['seconds']:.2f} s, "
        f"GX import and context {ingest['gx_setup_s']:.1f} s apart"
    )
    print(f"features: {features['users']:,} users, {features['items']:,} items in {features['seconds']:.2f} s")
    print(
        f"sampling: {sampling['rows']:,} samples ({sampling['positives']:,} positive, "
        f"{sampling['negatives']:,} negative, {sampling['short']} users short) in {sampling['seconds']:.2f} s"
    )
    print()
    print(f"{'phase':<34}{'ours':>14}{'old service':>14}{'ratio':>9}{'peak RSS MB':>13}")
    rows = [
        ("parse+validate+Parquet rows/s", ingest_rate, old_ingest, ingest["rss_mb"]),
        ("  vs old CSV parse alone", ingest_rate, OLD_PARSE_ROWS_S, None),
        ("  vs old validation alone", ingest_rate, OLD_VALIDATE_ROWS_S, None),
        ("features interactions/s", features_rate, OLD_FEATURES_ROWS_S, features["rss_mb"]),
        ("negative sampling samples/s", samples_rate, OLD_SAMPLES_S, sampling["rss_mb"]),
    ]
    for label, ours, old, rss in rows:
        rss_text = f"{rss:>13.0f}" if rss is not None else ""
        print(f"{label:<34}{ours:>14,.0f}{old:>14,.0f}{ours / old:>8.1f}x{rss_text}")
    print(f"{'peak RSS MB (max of phases)':<34}{peak:>14,.0f}{old_mb:>14,.0f}{old_mb / peak:>8.1f}x less")
    print(
        f"floor on this machine (DuckDB, same settings): reading the accepted files "
        f"{floor['rows'] / floor['read_seconds']:,.0f} rows/s, one GROUP BY (user_id, item_id) over them "
        f"{floor['rows'] / floor['group_seconds']:,.0f} rows/s; 50x the old features figure is "
        f"{50 * OLD_FEATURES_ROWS_S:,} interactions/s"
    )
    print(
        f"RESULT ingest_rows_per_s={ingest_rate:.0f} features_rows_per_s={features_rate:.0f} "
        f"samples_per_s={samples_rate:.0f} peak_rss_mb={peak:.0f} "
        f"floor_read_rows_per_s={floor['rows'] / floor['read_seconds']:.0f} "
        f"floor_group_rows_per_s={floor['rows'] / floor['group_seconds']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
