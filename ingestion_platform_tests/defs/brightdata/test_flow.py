"""The BrightData flow end to end against the sandbox API, real object stores and a real PostgreSQL.

Trigger job -> progress sensor ticks (a real DagsterInstance) -> snapshot partition -> raw object -> declarative
automation requests posts -> posts in `social.posts`, plus every way a crawl can go wrong on the way.
"""

import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from ingestion_platform.defs.brightdata.assets import (
    POSTS_KEY,
    RAW_SNAPSHOT_KEY,
    posts,
    raw_snapshot,
    raw_snapshot_key,
)
from ingestion_platform.defs.brightdata.checks import STUCK_CHECK, downloads_not_stuck
from ingestion_platform.defs.brightdata.jobs import brightdata_trigger
from ingestion_platform.defs.brightdata.sensors import brightdata_progress
from ingestion_platform.defs.platform.run_failures import record_run_failures
from ingestion_platform.resources.brightdata import SNAPSHOT_CONTENT_TYPE, BrightDataResource
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.sandbox.brightdata_api import BrightDataSandbox, BrightDataSandboxConfig, run_brightdata_api
from ingestion_platform.sandbox.brightdata_demo import run_demo_crawls

KEY_ENV = "TEST_BRIGHTDATA_KEY"
KEY = "bd-test-key-7f3a9c1e5d"
PAGE = "https://www.facebook.com/GrowPLUScuaNutiFood/"
TARGET = {
    "platform": "facebook",
    "competitor": "nutifood",
    "brand": "growplus-nutifood",
    "category": "sua-bot-tre-em",
    "url": PAGE,
    "num_of_posts": 300,
}


@dataclass
class Flow:
    sandbox: BrightDataSandbox
    instance: dg.DagsterInstance
    resources: dict[str, Any]
    warehouse: WarehouseResource
    store: ObjectStoreResource
    cursor: str | None = None

    def trigger(self, **config: Any) -> dg.ExecuteInProcessResult:
        return brightdata_trigger.execute_in_process(
            run_config={"ops": {"trigger_crawls": {"config": {"tenant": "acme", **config}}}},
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
        )

    def tick(self) -> dg.SensorResult | dg.SkipReason:
        context = dg.build_sensor_context(instance=self.instance, resources=self.resources, cursor=self.cursor)
        result = brightdata_progress(context)
        assert isinstance(result, dg.SensorResult | dg.SkipReason), result
        if isinstance(result, dg.SensorResult):
            self.cursor = result.cursor
            for request in result.dynamic_partitions_requests or []:
                self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            for event in result.asset_events:
                if isinstance(event, dg.AssetCheckEvaluation):
                    self.instance.report_runless_asset_event(event)
        return result

    def tick_until_requested(self, ticks: int = 6) -> list[dg.RunRequest]:
        for _ in range(ticks):
            result = self.tick()
            if isinstance(result, dg.SensorResult) and result.run_requests:
                return list(result.run_requests)
        raise AssertionError(f"no run requested after {ticks} ticks: {self.crawls()}")

    def materialize(self, asset: dg.AssetsDefinition, snapshot_id: str) -> dg.ExecuteInProcessResult:
        extra = [downloads_not_stuck] if asset is raw_snapshot else []
        return dg.materialize(
            [asset, *extra],
            partition_key=snapshot_id,
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
        )

    def crawls(self) -> list[dict[str, Any]]:
        return self.warehouse.query("SELECT * FROM social.crawl_metadata ORDER BY triggered_at").to_dict("records")


@contextmanager
def flow_env(
    tmp_path: Path,
    warehouse: WarehouseResource,
    store: ObjectStoreResource,
    monkeypatch: pytest.MonkeyPatch,
    config: BrightDataSandboxConfig | None = None,
    **resource: Any,
) -> Iterator[Flow]:
    monkeypatch.setenv(KEY_ENV, KEY)
    registry = {"tenants": {"acme": {"brightdata": {"api_key_env": KEY_ENV, "targets": [TARGET]}}}}
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump(registry))
    with run_brightdata_api(config or BrightDataSandboxConfig(api_key=KEY)) as sandbox:
        resources = {
            "brightdata": BrightDataResource(api_url=sandbox.url, timeout_seconds=10, **resource),
            "warehouse": warehouse,
            "object_store": store,
            "tenants": TenantsResource(path=str(tenants_file)),
        }
        yield Flow(sandbox, dg.DagsterInstance.ephemeral(), resources, warehouse, store)


@pytest.fixture
def file_store(tmp_path: Path) -> ObjectStoreResource:
    return ObjectStoreResource(url=(tmp_path / "objects").as_uri())


def expected_posts(sandbox: BrightDataSandbox, snapshot_id: str) -> set[str]:
    return {
        str(r["post_id"])
        for r in sandbox.records(snapshot_id)
        if r.get("post_id") and "error" not in r and "error_code" not in r
    }


def failure(result: dg.ExecuteInProcessResult) -> str:
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        assert error is not None, event
        messages.append(error.to_string())
    return "\n".join(messages)


def snapshot_of(request: dg.RunRequest) -> str:
    """The snapshot a progress run request downloads: its partition key, which the sensor always sets."""
    assert request.partition_key is not None, request
    return request.partition_key


def text_metadata(metadata: Mapping[str, dg.MetadataValue], key: str) -> str:
    value = metadata[key].value
    assert isinstance(value, str), (key, value)
    return value


def json_list_metadata(metadata: Mapping[str, dg.MetadataValue], key: str) -> list[Any]:
    value = metadata[key].value
    assert isinstance(value, list), (key, value)
    return value


def test_trigger_to_posts_end_to_end_and_idempotent(
    tmp_path: Path, warehouse: WarehouseResource, object_store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    with flow_env(tmp_path, warehouse, object_store, monkeypatch) as flow:
        assert flow.trigger(start_date="2026-11-01", end_date="2026-11-20").success
        [crawl] = flow.crawls()
        assert crawl["status"] == "triggered" and crawl["competitor"] == "nutifood"
        assert crawl["params"]["inputs"] == [
            {"url": PAGE, "num_of_posts": 300, "include_profile_data": True}
            | {"start_date": "2026-11-01", "end_date": "2026-11-20"}
        ]
        snapshot_id = crawl["snapshot_id"]

        [request] = flow.tick_until_requested()
        assert snapshot_of(request) == snapshot_id and request.asset_selection == [RAW_SNAPSHOT_KEY]
        assert request.run_key == f"raw_snapshot:{snapshot_id}" and request.tags["tenant"] == "acme"
        assert flow.instance.get_dynamic_partitions("snapshot") == [snapshot_id]
        assert flow.crawls()[0]["status"] == "ready"

        automated = dg.Definitions(assets=[raw_snapshot, posts], resources=flow.resources)
        before = dg.evaluate_automation_conditions(defs=automated, instance=flow.instance)
        assert before.total_requested == 0  # nothing to parse until the raw snapshot lands

        raw = flow.materialize(raw_snapshot, snapshot_id)
        assert raw.success, failure(raw)
        key = raw_snapshot_key(snapshot_id, crawl["triggered_at"])
        assert key == f"raw_snapshots/{crawl['triggered_at']:%Y/%m/%d}/snapshot_{snapshot_id}.json"
        info = object_store.head(key)
        assert info.content_type == SNAPSHOT_CONTENT_TYPE
        body = object_store.get(key)
        records = json.loads(body.decode("utf-8"))
        assert records == list(flow.sandbox.records(snapshot_id))
        meta = raw.asset_materializations_for_node("brightdata__raw_snapshot")[0].metadata
        assert meta["path"].value == key and meta["bytes"].value == len(body) == info.size
        [row] = warehouse.query("SELECT * FROM social.raw_data_crawl_snapshots").to_dict("records")
        assert (row["file_path"], row["status"], row["bytes"]) == (key, "downloaded", len(body))
        assert {e.check_name: e.passed for e in raw.get_asset_check_evaluations()} == {STUCK_CHECK: True}

        after = dg.evaluate_automation_conditions(defs=automated, instance=flow.instance, cursor=before.cursor)
        assert after.get_requested_partitions(POSTS_KEY) == {snapshot_id}  # posts follow the landed snapshot

        loaded = flow.materialize(posts, snapshot_id)
        assert loaded.success, failure(loaded)
        expected = expected_posts(flow.sandbox, snapshot_id)
        stored = warehouse.query("SELECT * FROM social.posts ORDER BY post_id")
        assert set(stored["post_id"]) == expected and set(stored["brand"]) == {"growplus-nutifood"}
        rejects = warehouse.scalar("SELECT count(*) FROM social.posts_rejects WHERE source_file = :k", {"k": key})
        assert rejects == len(records) - len(expected) > 0
        post_meta = loaded.asset_materializations_for_node("brightdata__posts")[0].metadata
        assert post_meta["posts"].value == len(expected) and post_meta["rows_rejected"].value == rejects
        [row] = warehouse.query("SELECT * FROM social.raw_data_crawl_snapshots").to_dict("records")
        assert (row["status"], row["post_count"]) == ("parsed", len(expected))
        assert flow.crawls()[0]["status"] == "loaded" and flow.crawls()[0]["error"] is None

        # Re-materializing the partition: the same object, the same rows, nothing new.
        assert flow.materialize(raw_snapshot, snapshot_id).success
        assert flow.materialize(posts, snapshot_id).success
        assert object_store.get(key) == body and [o.key for o in object_store.list("raw_snapshots")] == [key]
        assert warehouse.query("SELECT * FROM social.posts ORDER BY post_id").equals(stored)
        assert warehouse.scalar("SELECT count(*) FROM social.posts_rejects") == rejects
        assert isinstance(flow.tick(), dg.SkipReason)  # loaded: nothing left to ask BrightData or download


def test_failed_crawl_is_recorded_with_brightdatas_message(
    tmp_path: Path, warehouse: WarehouseResource, file_store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BrightDataSandboxConfig(api_key=KEY, failure="Crawl failed: page blocked the collector")
    with flow_env(tmp_path, warehouse, file_store, monkeypatch, config) as flow:
        assert flow.trigger().success
        for _ in range(4):
            flow.tick()
        [crawl] = flow.crawls()
        assert (crawl["status"], crawl["stage"]) == ("failed", "crawl")
        assert crawl["error"] == "Crawl failed: page blocked the collector" and crawl["completed_at"] is not None
        assert flow.instance.get_dynamic_partitions("snapshot") == []
        assert isinstance(flow.tick(), dg.SkipReason)  # nothing pending any more


def test_crawl_running_past_the_limit_times_out(
    tmp_path: Path, warehouse: WarehouseResource, file_store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BrightDataSandboxConfig(api_key=KEY, ready_after_polls=1000)
    with flow_env(tmp_path, warehouse, file_store, monkeypatch, config, crawl_timeout_minutes=60) as flow:
        assert flow.trigger().success
        flow.tick()
        assert flow.crawls()[0]["status"] == "triggered"  # `collecting` etc. count as running
        warehouse.engine.dispose()
        with warehouse.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE social.crawl_metadata SET triggered_at = now() - interval '61 minutes'")
        flow.tick()
        [crawl] = flow.crawls()
        assert (crawl["status"], crawl["stage"]) == ("timed_out", "progress")
        assert "no result after 61 minutes (limit 60)" in crawl["error"] and "BrightData last said" in crawl["error"]


def test_429_keeps_the_crawl_queued_then_the_sensor_triggers_it(
    tmp_path: Path, warehouse: WarehouseResource, file_store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BrightDataSandboxConfig(api_key=KEY, too_many_jobs=2, retry_after_seconds=0)
    with flow_env(tmp_path, warehouse, file_store, monkeypatch, config, trigger_attempts=2) as flow:
        result = flow.trigger()
        assert result.success  # refused twice: queued, not failed
        [crawl] = flow.crawls()
        assert (crawl["status"], crawl["snapshot_id"], crawl["stage"]) == ("queued", None, "trigger")
        assert "too many running jobs" in crawl["error"]
        first_attempt = crawl["triggered_at"]
        flow.tick()  # the third trigger is accepted
        [crawl] = flow.crawls()
        assert crawl["status"] == "triggered" and crawl["snapshot_id"] and crawl["error"] is None
        assert crawl["triggered_at"] > first_attempt  # the crawl's time limit counts from BrightData's acceptance
        [request] = flow.tick_until_requested()
        assert snapshot_of(request) == crawl["snapshot_id"]
        assert flow.materialize(raw_snapshot, crawl["snapshot_id"]).success


def test_a_trigger_refused_past_the_crawl_timeout_is_timed_out_not_retried_forever(
    tmp_path: Path, warehouse: WarehouseResource, file_store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BrightDataSandboxConfig(api_key=KEY, too_many_jobs=1_000, retry_after_seconds=0)
    with flow_env(tmp_path, warehouse, file_store, monkeypatch, config, trigger_attempts=1) as flow:
        assert flow.trigger().success
        flow.tick()  # refused again: still queued
        [crawl] = flow.crawls()
        assert crawl["status"] == "queued"
        with warehouse.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE social.crawl_metadata SET triggered_at = now() - interval '61 minutes'")
        triggers_before = sum(r.path == "/datasets/v3/trigger" for r in flow.sandbox.requests)
        flow.tick()
        [crawl] = flow.crawls()
        assert (crawl["status"], crawl["stage"], crawl["snapshot_id"]) == ("timed_out", "trigger", None)
        assert "refused the trigger for 61 minutes (limit 60)" in crawl["error"]
        assert sum(r.path == "/datasets/v3/trigger" for r in flow.sandbox.requests) == triggers_before
        flow.tick()  # no longer pending: nothing asked
        assert sum(r.path == "/datasets/v3/trigger" for r in flow.sandbox.requests) == triggers_before


def test_wrong_key_fails_at_once_without_retry_and_never_shows_the_key(
    tmp_path: Path,
    warehouse: WarehouseResource,
    file_store: ObjectStoreResource,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = BrightDataSandboxConfig(api_key="the-right-key")
    caplog.set_level(logging.DEBUG)
    with flow_env(tmp_path, warehouse, file_store, monkeypatch, config) as flow:
        result = flow.trigger()
        assert not result.success
        message = failure(result)
        assert "401" in message and "invalid or missing API key" in message
        assert [r.path for r in flow.sandbox.requests] == ["/datasets/v3/trigger"]  # no retry
        logs = [e.message for e in flow.instance.all_logs(result.run_id)]
        assert logs and not any(KEY in text for text in logs)
        assert KEY not in caplog.text and KEY not in message


def test_download_dropped_midway_is_retried_to_the_same_object(
    tmp_path: Path, warehouse: WarehouseResource, object_store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    if object_store.location.scheme == "gs":
        pytest.skip("file and s3 cover the sink; the download's retry is the same")
    with flow_env(tmp_path, warehouse, object_store, monkeypatch) as flow:
        assert flow.trigger().success
        [request] = flow.tick_until_requested()
        flow.sandbox.faults.drop_next_download_after(40_000)
        raw = flow.materialize(raw_snapshot, snapshot_of(request))
        assert raw.success, failure(raw)
        meta = raw.asset_materializations_for_node("brightdata__raw_snapshot")[0].metadata
        assert meta["http_attempts"].value == 3  # 202 building, the dropped download, the complete one
        downloads = flow.sandbox.downloads
        assert [d.completed for d in downloads] == [False, True] and downloads[0].bytes_sent == 40_000
        key = text_metadata(meta, "path")
        assert json.loads(object_store.get(key)) == list(flow.sandbox.records(snapshot_of(request)))


def test_snapshot_in_several_parts_lands_as_one_array(
    tmp_path: Path, warehouse: WarehouseResource, object_store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    if object_store.location.scheme == "gs":
        pytest.skip("file and s3 cover the multi-part sink")
    with flow_env(tmp_path, warehouse, object_store, monkeypatch, part_size=1000) as flow:
        assert flow.trigger(**{k: v for k, v in TARGET.items() if k != "num_of_posts"}, num_of_posts=2500).success
        [request] = flow.tick_until_requested()
        raw = flow.materialize(raw_snapshot, snapshot_of(request))
        assert raw.success, failure(raw)
        meta = raw.asset_materializations_for_node("brightdata__raw_snapshot")[0].metadata
        assert meta["parts"].value == 3
        assert Counter(d.part for d in flow.sandbox.downloads if d.completed) == Counter([1, 2, 3])
        records = json.loads(object_store.get(text_metadata(meta, "path")))
        assert len(records) == 2500 and records == list(flow.sandbox.records(snapshot_of(request)))
        assert flow.materialize(posts, snapshot_of(request)).success
        assert warehouse.scalar("SELECT count(*) FROM social.posts") == len(
            expected_posts(flow.sandbox, snapshot_of(request))
        )


def test_expired_snapshot_fails_clearly_once_and_marks_the_crawl(
    tmp_path: Path, warehouse: WarehouseResource, file_store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    with flow_env(tmp_path, warehouse, file_store, monkeypatch) as flow:
        assert flow.trigger().success
        [request] = flow.tick_until_requested()
        flow.sandbox.expire(snapshot_of(request))
        raw = flow.materialize(raw_snapshot, snapshot_of(request))
        assert not raw.success
        assert f"snapshot {snapshot_of(request)} cannot be downloaded: Snapshot is expired" in failure(raw)
        snapshot_calls = [r for r in flow.sandbox.requests if r.path.startswith("/datasets/v3/snapshot/")]
        assert [r.status for r in snapshot_calls] == [200, 400]  # the parts, then one download: not retried
        [crawl] = flow.crawls()
        assert (crawl["status"], crawl["stage"]) == ("failed", "download")

        # The platform's run-failure recording writes the same crawl state for any failed brightdata run.
        with warehouse.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE social.crawl_metadata SET status = 'ready', error = NULL, stage = NULL")
        run = flow.instance.get_run_by_id(raw.run_id)
        assert run is not None
        [event] = flow.instance.all_logs(raw.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert event.dagster_event is not None
        context = dg.build_run_status_sensor_context(
            sensor_name="record_run_failures",
            dagster_event=event.dagster_event,
            dagster_instance=flow.instance,
            dagster_run=run,
        ).for_run_failure()
        record_run_failures(context, warehouse=warehouse)
        [crawl] = flow.crawls()
        assert (crawl["status"], crawl["stage"]) == ("failed", "download") and "Snapshot is expired" in crawl["error"]


def test_download_stuck_for_days_raises_a_warning(
    tmp_path: Path, warehouse: WarehouseResource, file_store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    with flow_env(tmp_path, warehouse, file_store, monkeypatch) as flow:
        assert flow.trigger().success
        [request] = flow.tick_until_requested()
        with warehouse.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE social.crawl_metadata SET completed_at = now() - interval '4 days'")
        result = flow.tick()
        assert isinstance(result, dg.SensorResult)
        [evaluation] = result.asset_events
        assert isinstance(evaluation, dg.AssetCheckEvaluation)
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert json_list_metadata(evaluation.metadata, "snapshots")[0]["snapshot_id"] == snapshot_of(request)
        again = flow.tick()
        assert isinstance(again, dg.SensorResult) and again.asset_events == []  # reported once per change
        checked = downloads_not_stuck(warehouse=flow.warehouse, brightdata=flow.resources["brightdata"])
        assert isinstance(checked, dg.AssetCheckResult)
        assert not checked.passed and checked.severity == dg.AssetCheckSeverity.WARN
        assert checked.metadata["stuck_snapshots"].value == 1


def test_launchpad_crawl_of_one_page_needs_its_labels(
    tmp_path: Path, warehouse: WarehouseResource, file_store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    with flow_env(tmp_path, warehouse, file_store, monkeypatch) as flow:
        result = flow.trigger(url="https://www.facebook.com/other/", competitor="x")
        assert not result.success
        assert "needs platform, brand, category" in failure(result)
        assert flow.sandbox.requests == []
        ok = flow.trigger(
            url="https://www.facebook.com/other/", platform="facebook", competitor="x", brand="y", category="z"
        )
        assert ok.success and [c["url"] for c in flow.crawls()] == ["https://www.facebook.com/other/"]
        assert flow.crawls()[0]["triggered_at"] <= datetime.now(UTC)


def test_demo_leg_loads_posts_for_every_tenant(
    tmp_path: Path, warehouse: WarehouseResource, file_store: ObjectStoreResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    second = {**TARGET, "competitor": "vinamilk", "url": "https://www.facebook.com/VinamilkOptimumGold/"}
    registry = {
        "tenants": {
            tenant: {"brightdata": {"api_key_env": KEY_ENV, "targets": [target]}}
            for tenant, target in (("acme", TARGET), ("globex", second))
        }
    }
    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump(registry))
    with run_brightdata_api(BrightDataSandboxConfig(api_key=KEY)) as sandbox:
        definitions = dg.Definitions(
            assets=[raw_snapshot, posts],
            jobs=[brightdata_trigger],
            sensors=[brightdata_progress],
            resources={
                "brightdata": BrightDataResource(api_url=sandbox.url),
                "warehouse": warehouse,
                "object_store": file_store,
                "tenants": TenantsResource(path=str(tmp_path / "tenants.yaml")),
            },
        )
        with dg.instance_for_test() as instance:
            failed = run_demo_crawls(definitions, instance, ["acme", "globex"], {})
    assert failed == []
    counts = warehouse.query("SELECT tenant_id, competitor, count(*) AS n FROM social.posts GROUP BY 1, 2 ORDER BY 1")
    assert counts[["tenant_id", "competitor"]].values.tolist() == [["acme", "nutifood"], ["globex", "vinamilk"]]
    assert (counts["n"] > 250).all()
    assert set(warehouse.query("SELECT status FROM social.crawl_metadata")["status"]) == {"loaded"}
