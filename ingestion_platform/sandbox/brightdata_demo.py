"""The demo's BrightData leg, as the daemon would run it: trigger every tenant's targets, tick the progress sensor
until the snapshots are ready, then download each and load its posts (what automation does after a download)."""

import time
from collections.abc import Sequence
from typing import Any

import dagster as dg

from ingestion_platform.defs.brightdata import crawls
from ingestion_platform.defs.brightdata.assets import POSTS_KEY, RAW_SNAPSHOT_KEY


def run_demo_crawls(
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    tenants: Sequence[str],
    run_config: dict[str, Any],
    *,
    max_wait_seconds: float = 120.0,
) -> list[str]:
    """Returns the ids of failed runs; prints one line per run as the rest of the demo does."""
    failed: list[str] = []
    trigger = definitions.resolve_job_def("brightdata_trigger")
    for tenant in tenants:
        config = {**run_config, "ops": {"trigger_crawls": {"config": {"tenant": tenant}}}}
        result = trigger.execute_in_process(instance=instance, run_config=config, raise_on_error=False)
        print(f"  brightdata_trigger {tenant}: {'ok' if result.success else 'FAILED'} (run {result.run_id})")
        if not result.success:
            failed.append(result.run_id)

    sensor = definitions.resolve_sensor_def("brightdata_progress")
    requests: dict[str, dg.RunRequest] = {}
    deadline = time.monotonic() + max_wait_seconds
    # Only the sensor's own resources: building every resource would also build BigQuery's, which looks for cloud
    # credentials outside a run.
    needed = {key: (definitions.resources or {})[key] for key in sensor.required_resource_keys}
    with dg.build_resources(needed) as built:
        resources = built._asdict()
        while time.monotonic() < deadline:
            tick = sensor(dg.build_sensor_context(instance=instance, resources=resources))
            if isinstance(tick, dg.SensorResult):
                for add in tick.dynamic_partitions_requests or []:
                    instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
                requests |= {r.partition_key: r for r in tick.run_requests or [] if r.partition_key}
            if not crawls.pending(resources["warehouse"]):
                break
            time.sleep(1.0)

    job = definitions.resolve_implicit_global_asset_job_def()
    download = job.get_subset(asset_selection={RAW_SNAPSHOT_KEY})
    load = job.get_subset(asset_selection={POSTS_KEY})
    for snapshot_id, request in sorted(requests.items()):
        for name, subset in (("raw_snapshot", download), ("posts", load)):
            result = subset.execute_in_process(
                instance=instance,
                partition_key=snapshot_id,
                tags=request.tags,
                run_config=run_config,
                raise_on_error=False,
            )
            print(
                f"  brightdata/{name} {request.tags['tenant']} {snapshot_id}: "
                f"{'ok' if result.success else 'FAILED'} (run {result.run_id})"
            )
            if not result.success:
                failed.append(result.run_id)
                break
    return failed
