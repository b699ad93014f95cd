"""The recommender flow under a real `dagster-daemon` loading workspace.yaml: the landing sensor requests an upload
run, and the automation sensor then recomputes the uploading tenant's features and samples, and no one else's.
Nothing is switched on by hand: both sensors run by default."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import yaml

from ingestion_platform.resources.object_store import ObjectStoreResource

ROOT = Path(__file__).resolve().parents[3]
HAND = (
    "user_id,item_id,interaction_type,timestamp,rating\n"
    "u1,i1,click,2025-01-01T11:00:00Z,\n"
    "u1,i2,purchase,2025-01-02T09:00:00Z,4\n"
    "u2,i1,view,2025-01-01T12:00:00Z,\n"
)
DERIVED = ("user_features", "item_features", "training_samples")


def _latest(instance: dg.DagsterInstance, name: str, partition: str) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["recsys", name]), asset_partitions=[partition]), limit=1
    ).records
    return records[0] if records else None


def test_daemon_loads_an_upload_and_recomputes_only_that_tenant(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": {"acme": {}, "globex": {}}}))
    store = ObjectStoreResource(url=(tmp_path / "objects").as_uri())
    store.put("landing/acme/recsys/interactions/hand.csv", HAND.encode())
    store.put("landing/acme/recsys/interactions/hand.csv.done", b"")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex"])
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "INGESTION_HOME": str(tmp_path / "home"),
        "OBJECT_STORE_URL": store.location.url,
        "INGESTION_TENANTS_FILE": str(tenants),
    }
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 600  # each run starts its own processes; a loaded CI box needs minutes
            with dg.DagsterInstance.from_config(str(home)) as instance:
                while time.monotonic() < deadline and not all(_latest(instance, n, "acme") for n in DERIVED):
                    time.sleep(3)
                records = {n: _latest(instance, n, "acme") for n in DERIVED}
                assert all(records.values()), log_path.read_text()[-5000:]
                for record in records.values():
                    assert record is not None
                    run = instance.get_run_by_id(record.run_id)
                    assert run is not None and run.tags.get("dagster/sensor_name") == "automation"
                upload_runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/sensor_name": "recsys_landing"}))
                assert len(upload_runs) == 1
                assert upload_runs[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS
                # Another tick of each sensor: nothing more for acme, nothing ever for globex.
                time.sleep(40)
                assert all(_latest(instance, n, "globex") is None for n in DERIVED)
                assert len(instance.get_run_records(dg.RunsFilter(tags={"dagster/sensor_name": "recsys_landing"}))) == 1
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
    samples = pq.read_table(store.local_path("acme/training/training_samples.parquet"))
    assert samples.num_rows == 0  # defaults (5 interactions per user and item) leave this tiny dataset out
