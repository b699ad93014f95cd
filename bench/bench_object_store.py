"""Benchmark the object store's put/get against the clients users would otherwise call: boto3 and google-cloud-storage.

Why: every source stores its raw and derived objects through ObjectStoreResource (pyarrow.fs underneath, with a
hidden temporary key moved into place so no write is seen half done). This prints what that costs next to a plain
boto3 `put_object`/`get_object` and a google-cloud-storage `upload_from_file`/`download_as_bytes` of the same bytes,
against the same local servers the tests use (moto for S3, gcp-storage-emulator for GCS), and for local files next
to a plain `open().write()`. The emulators are single-threaded Python, so absolute figures say more about them than
about S3/GCS; the ratios are the point. Each measurement runs `--repeats` times and the best counts.

Run: `uv run --extra dev python bench/bench_object_store.py [--size-mb 64] [--repeats 3]`. The last line is
`RESULT file_put_mb_s=N file_get_mb_s=N s3_put_mb_s=N s3_get_mb_s=N boto3_put_mb_s=N boto3_get_mb_s=N
gs_put_mb_s=N gs_get_mb_s=N gcs_client_put_mb_s=N gcs_client_get_mb_s=N` (one line).
"""

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform_tests.fixtures.object_store import run_gcs_server, run_s3_server


def _best_mb_s(fn: Callable[[], object], size: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return size / 1e6 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = os.urandom(args.size_mb * 2**20)
    size, repeats = len(data), args.repeats
    results: dict[str, float] = {}

    def check(got: bytes) -> None:
        if got != data:
            raise AssertionError("read back different bytes")

    with tempfile.TemporaryDirectory() as tmp:
        store = ObjectStoreResource(url=Path(tmp, "objects").as_uri())
        results["file_put"] = _best_mb_s(lambda: store.put("bench/x.bin", data), size, repeats)
        results["file_get"] = _best_mb_s(lambda: check(store.get("bench/x.bin")), size, repeats)
        plain = Path(tmp, "plain.bin")
        results["plain_file_put"] = _best_mb_s(lambda: plain.write_bytes(data), size, repeats)
        results["plain_file_get"] = _best_mb_s(lambda: check(plain.read_bytes()), size, repeats)

    with run_s3_server() as s3:
        store = ObjectStoreResource(url=f"s3://{s3.bucket}/bench", aws_endpoint_url=s3.endpoint_url)
        results["s3_put"] = _best_mb_s(lambda: store.put("x.bin", data), size, repeats)
        results["s3_get"] = _best_mb_s(lambda: check(store.get("x.bin")), size, repeats)
        client = boto3.client("s3", endpoint_url=s3.endpoint_url)
        results["boto3_put"] = _best_mb_s(
            lambda: client.put_object(Bucket=s3.bucket, Key="bench/boto3.bin", Body=data), size, repeats
        )
        results["boto3_get"] = _best_mb_s(
            lambda: check(client.get_object(Bucket=s3.bucket, Key="bench/boto3.bin")["Body"].read()), size, repeats
        )

    with run_gcs_server() as gs:
        store = ObjectStoreResource(url=f"gs://{gs.bucket}/bench", storage_emulator_host=gs.host)
        results["gs_put"] = _best_mb_s(lambda: store.put("x.bin", data), size, repeats)
        results["gs_get"] = _best_mb_s(lambda: check(store.get("x.bin")), size, repeats)
        blob = (
            gcs.Client(project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": gs.host})
            .bucket(gs.bucket)
            .blob("bench/client.bin")
        )
        results["gcs_client_put"] = _best_mb_s(lambda: blob.upload_from_file(io.BytesIO(data)), size, repeats)
        results["gcs_client_get"] = _best_mb_s(lambda: check(blob.download_as_bytes()), size, repeats)

    print(f"{args.size_mb} MiB object, best of {repeats}, MB/s (10^6 bytes/s):")
    for ours, theirs in [
        ("file_put", "plain_file_put"),
        ("file_get", "plain_file_get"),
        ("s3_put", "boto3_put"),
        ("s3_get", "boto3_get"),
        ("gs_put", "gcs_client_put"),
        ("gs_get", "gcs_client_get"),
    ]:
        ratio = results[ours] / results[theirs]
        print(f"  {ours:8} ours {results[ours]:8.1f}   {theirs:15} {results[theirs]:8.1f}   ratio {ratio:5.2f}")
    keys = ["file_put", "file_get", "s3_put", "s3_get", "boto3_put", "boto3_get", "gs_put", "gs_get"]
    keys += ["gcs_client_put", "gcs_client_get"]
    print("RESULT " + " ".join(f"{k}_mb_s={results[k]:.1f}" for k in keys))


if __name__ == "__main__":
    main()
