"""Benchmark the BrightData flow: one large snapshot from the sandbox API to rows in `social.posts`.

Why: the replaced service downloaded a snapshot whole into memory, re-encoded it for GCS and counted posts in Python;
its published figure is about 1,000 posts/s. Ours streams the download through a part file into the object store and
parses the stored object in windows straight into the loader's COPY, so memory must stay flat in snapshot size.

What runs is the real flow, through Dagster: the trigger job, progress-sensor ticks until the snapshot is ready, then
`brightdata/raw_snapshot` (download + storage) and `brightdata/posts` (parse + load), each materialized in process
against an ephemeral instance. The sandbox API runs in its own process (its CPU is not ours); the object store is
local files and the warehouse the embedded PostgreSQL (or WAREHOUSE_URL). posts/s counts loaded posts over the wall
time of the two materializations.

Run: `env -u PYTHONDONTWRITEBYTECODE uv run --extra bench python bench/bench_brightdata.py [--posts 200000]`.
The last line is `RESULT posts_per_s=N old_posts_per_s=1000 peak_rss_mb=N ...` (then seconds per stage and the
raw COPY floor: the same posts, pre-made CSV, COPYed into a copy of the table).
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import yaml

from ingestion_platform.defs.brightdata.assets import posts, raw_snapshot
from ingestion_platform.defs.brightdata.jobs import brightdata_trigger
from ingestion_platform.defs.brightdata.sensors import brightdata_progress
from ingestion_platform.resources.brightdata import BrightDataResource
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource

OLD_POSTS_PER_S = 1000
KEY_ENV = "BENCH_BRIGHTDATA_KEY"
KEY = "bench-brightdata-key"


def _number(metadata: Mapping[str, dg.MetadataValue], key: str) -> float:
    """A numeric metadata entry, narrowed from the union of every metadata value type."""
    value = metadata[key].value
    assert isinstance(value, int | float), (key, value)
    return value


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _start_sandbox(posts_per_snapshot: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingestion_platform.sandbox.brightdata_api",
            "--port",
            "0",
            "--api-key",
            KEY,
            "--ready-after-seconds",
            "0",
            "--posts-per-snapshot",
            str(posts_per_snapshot),
            # The vendor's "building" answers cost a fixed retry wait, not throughput: the flow tests cover them.
            "--building-responses",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("listening "):
        process.terminate()
        raise RuntimeError(f"the sandbox did not start: {line!r}")
    return process, line.removeprefix("listening ")


def _copy_floor(warehouse: WarehouseResource) -> float:
    """Seconds for PostgreSQL's own COPY of the loaded posts, already rendered as CSV, into an empty table like
    social.posts (same columns, indexes and constraints): what storing the rows costs with no download, parsing,
    validation or merge, measured after the flow on the same server."""
    with warehouse.raw_connection() as conn, conn.cursor() as cur:
        buffer = bytearray()
        with cur.copy("COPY social.posts TO STDOUT (FORMAT csv)") as out:
            for block in out:
                buffer += block
        cur.execute("CREATE TABLE social.bench_posts_floor (LIKE social.posts INCLUDING ALL)")
        started = time.perf_counter()
        with cur.copy("COPY social.bench_posts_floor FROM STDIN (FORMAT csv)") as copy:
            view = memoryview(buffer)
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start : start + (1 << 20)])
        seconds = time.perf_counter() - started
        cur.execute("DROP TABLE social.bench_posts_floor")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=200_000, help="records in the snapshot")
    args = parser.parse_args()
    os.environ[KEY_ENV] = KEY
    sandbox, url = _start_sandbox(args.posts)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-brightdata-") as tmp:
            home = Path(tmp)
            target = {
                "platform": "facebook",
                "competitor": "nutifood",
                "brand": "growplus-nutifood",
                "category": "sua-bot-tre-em",
                "url": "https://www.facebook.com/GrowPLUScuaNutiFood/",
            }
            tenants_file = home / "tenants.yaml"
            registry = {"tenants": {"bench": {"brightdata": {"api_key_env": KEY_ENV, "targets": [target]}}}}
            tenants_file.write_text(yaml.safe_dump(registry))
            warehouse = WarehouseResource(url=os.environ.get("WAREHOUSE_URL"), home=str(home / "warehouse"))
            store = ObjectStoreResource(url=(home / "objects").as_uri())
            resources = {
                "brightdata": BrightDataResource(api_url=url, timeout_seconds=120),
                "warehouse": warehouse,
                "object_store": store,
                "tenants": TenantsResource(path=str(tenants_file)),
            }
            instance = dg.DagsterInstance.ephemeral()
            trigger = brightdata_trigger.execute_in_process(
                run_config={"ops": {"trigger_crawls": {"config": {"tenant": "bench"}}}},
                resources=resources,
                instance=instance,
            )
            assert trigger.success
            snapshot_id = None
            for _ in range(240):  # the sandbox renders the snapshot before it says ready, as BrightData builds it
                result = brightdata_progress(dg.build_sensor_context(instance=instance, resources=resources))
                if isinstance(result, dg.SensorResult) and result.run_requests:
                    snapshot_id = result.run_requests[0].partition_key
                    break
                time.sleep(0.5)
            assert snapshot_id, "the snapshot never became ready"
            instance.add_dynamic_partitions("snapshot", [snapshot_id])
            rss_before = _peak_rss_mb()

            started = time.perf_counter()
            raw = dg.materialize([raw_snapshot], partition_key=snapshot_id, resources=resources, instance=instance)
            downloaded = time.perf_counter()
            parsed = dg.materialize([posts], partition_key=snapshot_id, resources=resources, instance=instance)
            finished = time.perf_counter()

            raw_meta = raw.asset_materializations_for_node("brightdata__raw_snapshot")[0].metadata
            post_meta = parsed.asset_materializations_for_node("brightdata__posts")[0].metadata
            loaded = warehouse.scalar("SELECT count(*) FROM social.posts")
            assert loaded == post_meta["posts"].value, (loaded, post_meta["posts"].value)
            seconds = finished - started
            rate = loaded / seconds
            peak = _peak_rss_mb()
            copy_seconds = _copy_floor(warehouse)  # after the peak: it holds the CSV in memory
            size_mb = _number(raw_meta, "bytes") / 1e6
            print(
                f"snapshot: {args.posts} records, {size_mb:.1f} MB, {loaded} posts loaded, "
                f"{post_meta['rows_rejected'].value} rejected"
            )
            print(f"download + store: {downloaded - started:.2f} s ({size_mb / (downloaded - started):.1f} MB/s)")
            print(
                f"parse + load:     {finished - downloaded:.2f} s (inside the loader's calls, which pull the parse: "
                f"{post_meta['load_seconds'].value:.2f} s in {post_meta['load_transactions'].value} transactions, "
                "of which "
                f"{post_meta['parse_seconds'].value:.2f} s parsing in the loader's encoding thread)"
            )
            print(
                f"ours: {rate:,.0f} posts/s   old service: ~{OLD_POSTS_PER_S:,} posts/s   "
                f"ratio: {rate / OLD_POSTS_PER_S:.0f}x"
            )
            print(f"peak RSS: {peak:.0f} MB (before the two materializations: {rss_before:.0f} MB)")
            print(
                f"floor: a raw COPY of the loaded posts (pre-made CSV) into a copy of social.posts with its indexes: "
                f"{copy_seconds:.2f} s = {loaded / copy_seconds:,.0f} posts/s, before any download or parsing; "
                f"50x the old service is {50 * OLD_POSTS_PER_S:,} posts/s"
            )
            print(
                f"RESULT posts_per_s={rate:.0f} old_posts_per_s={OLD_POSTS_PER_S} peak_rss_mb={peak:.0f} "
                f"download_store_s={downloaded - started:.2f} parse_load_s={finished - downloaded:.2f} "
                f"load_s={post_meta['load_seconds'].value:.2f} parse_s={post_meta['parse_seconds'].value:.2f} "
                f"snapshot_mb={size_mb:.0f} copy_posts_per_s={loaded / copy_seconds:.0f}"
            )
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)


if __name__ == "__main__":
    main()
