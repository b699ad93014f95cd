"""The BrightData sandbox API, driven with plain httpx the way BrightData's own docs drive the real one."""

import json
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from typing import TypedDict

import httpx
import pytest

from ingestion_platform.sandbox.brightdata_api import (
    TOO_MANY_JOBS,
    BrightDataSandbox,
    BrightDataSandboxConfig,
    run_brightdata_api,
    snapshot_records,
)
from ingestion_platform.tenants import BRIGHTDATA_FACEBOOK_POSTS_DATASET as DATASET

PAGE = "https://www.facebook.com/GrowPLUScuaNutiFood/"
OTHER_PAGE = "https://www.facebook.com/DielacAlpha/"


class Fast(TypedDict):
    ready_after_polls: int
    building_responses: int


# A snapshot ready at once and served at the first download: the tests about polling set these themselves.
FAST: Fast = {"ready_after_polls": 0, "building_responses": 0}


def client(sandbox: BrightDataSandbox, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=sandbox.url, headers={"Authorization": f"Bearer {key or sandbox.api_key}"}, timeout=60)


def trigger(http: httpx.Client, inputs: list[dict], **params: str) -> httpx.Response:
    return http.post(
        "/datasets/v3/trigger", params={"dataset_id": DATASET, "include_errors": "true", **params}, json=inputs
    )


@pytest.fixture
def sandbox() -> Iterator[BrightDataSandbox]:
    with run_brightdata_api(BrightDataSandboxConfig(ready_after_polls=3, building_responses=2)) as server:
        yield server


def test_trigger_progress_building_then_ready(sandbox: BrightDataSandbox) -> None:
    with client(sandbox) as http:
        response = trigger(http, [{"url": PAGE, "num_of_posts": 30}, {"url": OTHER_PAGE, "num_of_posts": 20}])
        assert response.status_code == 200
        snapshot_id = response.json()["snapshot_id"]
        assert re.fullmatch(r"s_[0-9a-z]{17}", snapshot_id)

        early = http.get(f"/datasets/v3/snapshot/{snapshot_id}")
        assert early.status_code == 202 and early.json()["status"] == "starting"

        statuses = [http.get(f"/datasets/v3/progress/{snapshot_id}").json() for _ in range(4)]
        assert [s["status"] for s in statuses] == ["starting", "running", "collecting", "ready"]
        assert statuses[-1] == {"snapshot_id": snapshot_id, "dataset_id": DATASET, "status": "ready", "records": 50}

        building = [http.get(f"/datasets/v3/snapshot/{snapshot_id}", params={"format": "json"}) for _ in range(2)]
        assert [(r.status_code, r.json()["status"]) for r in building] == [(202, "building"), (202, "building")]
        assert "try again in 10s" in building[0].json()["message"]

        ready = http.get(f"/datasets/v3/snapshot/{snapshot_id}", params={"format": "json"})
    assert ready.status_code == 200
    assert ready.headers["content-type"] == "application/json; charset=utf-8"
    records = json.loads(ready.content.decode("utf-8"))
    assert len(records) == 50
    assert records == list(sandbox.records(snapshot_id))
    posts = [r for r in records if "error" not in r]
    assert {r["input"]["url"] for r in records} == {PAGE, OTHER_PAGE}
    assert sum(r["input"]["url"] == PAGE for r in records) == 30
    # Realistic Facebook-page posts: unicode and emoji text, hashtags, attachments, the page profile.
    assert any(re.search("[\U0001f300-\U0001faff]", r["content"]) for r in posts)
    assert any("ư" in r["content"] or "ệ" in r["content"] for r in posts)
    sample = next(r for r in posts if r.get("post_id") and r["attachments"])
    assert {"url", "post_id", "user_url", "page_name", "date_posted", "num_comments", "num_shares", "likes"} <= set(
        sample
    )
    assert {"id", "type", "url"} <= set(sample["attachments"][0])
    assert sample["date_posted"].endswith("Z") and isinstance(sample["hashtags"], list)


def test_error_records_and_missing_ids_are_served_only_with_include_errors() -> None:
    config = BrightDataSandboxConfig(error_rate=0.2, missing_id_rate=0.1, **FAST)
    with run_brightdata_api(config) as sandbox, client(sandbox) as http:
        with_errors = trigger(http, [{"url": PAGE, "num_of_posts": 300}]).json()["snapshot_id"]
        without = trigger(http, [{"url": PAGE, "num_of_posts": 300}], include_errors="false").json()["snapshot_id"]
        dead = trigger(http, [{"url": "https://www.facebook.com/dead-page-404/", "num_of_posts": 3}])
        first = http.get(f"/datasets/v3/snapshot/{with_errors}").json()
        second = http.get(f"/datasets/v3/snapshot/{without}").json()
        dead_records = http.get(f"/datasets/v3/snapshot/{dead.json()['snapshot_id']}").json()
    errors = [r for r in first if "error" in r]
    assert 20 < len(errors) < 100
    assert all(r["error_code"] and r["input"]["url"] == PAGE and "post_id" not in r for r in errors)
    missing = [r for r in first if "error" not in r and not r.get("post_id")]
    assert missing and any("post_id" not in r for r in missing) and any(r.get("post_id", 1) is None for r in missing)
    assert not any("error" in r for r in second) and 200 < len(second) < 300
    assert [r["error_code"] for r in dead_records] == ["dead_page"] * 3


def test_parts_split_the_snapshot_and_join_back_to_it() -> None:
    with (
        run_brightdata_api(BrightDataSandboxConfig(posts_per_snapshot=2500, **FAST)) as sandbox,
        client(sandbox) as http,
    ):
        snapshot_id = trigger(http, [{"url": PAGE}, {"url": OTHER_PAGE}]).json()["snapshot_id"]
        assert http.get(f"/datasets/v3/progress/{snapshot_id}").json()["records"] == 2500
        parts = http.get(f"/datasets/v3/snapshot/{snapshot_id}/parts", params={"format": "json", "batch_size": 1000})
        assert parts.json() == {"parts": 3}
        joined = []
        for part in (1, 2, 3):
            response = http.get(
                f"/datasets/v3/snapshot/{snapshot_id}", params={"format": "json", "batch_size": 1000, "part": part}
            )
            assert response.status_code == 200
            joined.extend(response.json())
        assert [len(joined[:1000]), len(joined[1000:2000]), len(joined[2000:])] == [1000, 1000, 500]
        assert joined == http.get(f"/datasets/v3/snapshot/{snapshot_id}").json()
        ndjson = http.get(f"/datasets/v3/snapshot/{snapshot_id}", params={"format": "ndjson"})
        assert ndjson.headers["content-type"].startswith("application/x-ndjson")
        assert [json.loads(line) for line in ndjson.text.splitlines()] == joined

        beyond = http.get(f"/datasets/v3/snapshot/{snapshot_id}", params={"batch_size": 1000, "part": 4})
        too_small = http.get(f"/datasets/v3/snapshot/{snapshot_id}/parts", params={"batch_size": 10})
    assert beyond.status_code == 400 and "between 1 and 3" in beyond.text
    assert too_small.status_code == 400 and "batch_size must be >= 1000" in too_small.text


def test_wrong_or_missing_key_is_401_and_triggers_nothing(sandbox: BrightDataSandbox) -> None:
    with client(sandbox, key="not-the-key") as http:
        wrong = trigger(http, [{"url": PAGE}])
    missing = httpx.post(f"{sandbox.url}/datasets/v3/trigger", params={"dataset_id": DATASET}, json=[{"url": PAGE}])
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert "Unauthorized" in wrong.json()["error"]
    assert sandbox.snapshot_ids == []
    assert [(r.path, r.status) for r in sandbox.requests] == [("/datasets/v3/trigger", 401)] * 2


def test_too_many_running_jobs_is_429_with_retry_after() -> None:
    config = BrightDataSandboxConfig(too_many_jobs=2, retry_after_seconds=7, **FAST)
    with run_brightdata_api(config) as sandbox, client(sandbox) as http:
        answers = [trigger(http, [{"url": PAGE, "num_of_posts": 2}]) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["retry-after"] == "7"
    assert answers[0].json()["error"] == TOO_MANY_JOBS and "too many running jobs" in TOO_MANY_JOBS
    assert len(sandbox.snapshot_ids) == 1


def test_trigger_validation_follows_brightdata_errors(sandbox: BrightDataSandbox) -> None:
    with client(sandbox) as http:
        no_dataset = http.post("/datasets/v3/trigger", json=[{"url": PAGE}])
        unknown = http.post("/datasets/v3/trigger", params={"dataset_id": "gd_nope"}, json=[{"url": PAGE}])
        empty = trigger(http, [])
        no_url = trigger(http, [{"num_of_posts": 3}])
        progress_404 = http.get("/datasets/v3/progress/s_doesnotexist00000")
        download_404 = http.get("/datasets/v3/snapshot/s_doesnotexist00000")
    assert (no_dataset.status_code, no_dataset.json()["error"]) == (400, "dataset missing")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "dataset does not exist")
    assert (empty.status_code, empty.json()["error"]) == (400, "No data to trigger")
    assert no_url.status_code == 400 and no_url.json()["validation_errors"][0]["errors"] == [["url", "Required field"]]
    assert (progress_404.status_code, progress_404.json()["error"]) == (404, "Snapshot does not exist")
    assert download_404.status_code == 404


def test_expired_and_empty_snapshots_are_400() -> None:
    with run_brightdata_api(BrightDataSandboxConfig(**FAST)) as sandbox, client(sandbox) as http:
        expired = trigger(http, [{"url": PAGE, "num_of_posts": 5}]).json()["snapshot_id"]
        empty = trigger(http, [{"url": PAGE, "num_of_posts": 0}]).json()["snapshot_id"]
        sandbox.expire(expired)
        expired_answer = http.get(f"/datasets/v3/snapshot/{expired}")
        empty_progress = http.get(f"/datasets/v3/progress/{empty}").json()
        empty_answer = http.get(f"/datasets/v3/snapshot/{empty}")
    assert (expired_answer.status_code, expired_answer.json()["error"]) == (400, "Snapshot is expired")
    assert empty_progress["status"] == "ready" and empty_progress["records"] == 0
    assert (empty_answer.status_code, empty_answer.json()["error"]) == (400, "Snapshot is empty")


def test_failed_snapshot_reports_brightdata_error_message() -> None:
    config = BrightDataSandboxConfig(failure="No data found in discovery", ready_after_polls=1, building_responses=0)
    with run_brightdata_api(config) as sandbox, client(sandbox) as http:
        snapshot_id = trigger(http, [{"url": PAGE}]).json()["snapshot_id"]
        progress = [http.get(f"/datasets/v3/progress/{snapshot_id}").json() for _ in range(2)]
        download = http.get(f"/datasets/v3/snapshot/{snapshot_id}")
    assert progress[0]["status"] == "starting"
    assert progress[1] == {
        "snapshot_id": snapshot_id,
        "dataset_id": DATASET,
        "status": "failed",
        "error_message": "No data found in discovery",
    }
    assert download.status_code == 400 and "No data found in discovery" in download.json()["error"]


def _first_snapshot_bytes(seed: str) -> tuple[str, bytes]:
    with run_brightdata_api(BrightDataSandboxConfig(seed=seed, **FAST)) as sandbox, client(sandbox) as http:
        snapshot_id = trigger(http, [{"url": PAGE, "num_of_posts": 40}]).json()["snapshot_id"]
        return snapshot_id, http.get(f"/datasets/v3/snapshot/{snapshot_id}").content


def test_data_is_deterministic_for_a_seed() -> None:
    first, again, other = _first_snapshot_bytes("acme"), _first_snapshot_bytes("acme"), _first_snapshot_bytes("globex")
    assert first == again
    assert other[0] != first[0] and other[1] != first[1]


def test_connection_dropped_midway_then_a_retry_gets_the_whole_snapshot() -> None:
    with (
        run_brightdata_api(BrightDataSandboxConfig(posts_per_snapshot=400, **FAST)) as sandbox,
        client(sandbox) as http,
    ):
        snapshot_id = trigger(http, [{"url": PAGE}]).json()["snapshot_id"]
        sandbox.faults.drop_next_download_after(100_000)
        received = bytearray()
        with (
            pytest.raises(httpx.RemoteProtocolError),
            http.stream("GET", f"/datasets/v3/snapshot/{snapshot_id}") as response,
        ):
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received.extend(chunk)
        retried = http.get(f"/datasets/v3/snapshot/{snapshot_id}")
    assert 0 < len(received) <= 100_000 < len(retried.content)
    assert retried.content.startswith(bytes(received))
    assert json.loads(retried.content) == list(sandbox.records(snapshot_id))
    assert [(d.bytes_sent, d.completed) for d in sandbox.downloads] == [
        (len(received), False),
        (len(retried.content), True),
    ]


def test_large_snapshots_stream_in_bounded_memory() -> None:
    """20,000 posts (~35 MB of JSON) pass through the server while Python's allocations stay a few MB."""
    with (
        run_brightdata_api(BrightDataSandboxConfig(posts_per_snapshot=20_000, **FAST)) as sandbox,
        client(sandbox) as http,
    ):
        snapshot_id = trigger(http, [{"url": PAGE}]).json()["snapshot_id"]
        received = 0
        tracemalloc.start()
        try:
            with http.stream("GET", f"/datasets/v3/snapshot/{snapshot_id}") as response:
                for chunk in response.iter_bytes():
                    received += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        last_part = http.get(f"/datasets/v3/snapshot/{snapshot_id}", params={"batch_size": 1000, "part": 20}).json()
    assert received > 20_000_000
    assert peak < 12_000_000, f"peak {peak / 1e6:.1f} MB while streaming {received / 1e6:.0f} MB"
    assert len(last_part) == 1000


@pytest.mark.parametrize("include_errors", ["true", "false"])
def test_a_snapshot_rendered_in_the_background_is_served_byte_for_byte_as_rendered_while_sent(
    include_errors: str,
) -> None:
    """Progress says ready only once the body is rendered; then the whole body and every part are the bytes the
    sandbox renders record by record (ndjson is still rendered while sent)."""
    config = BrightDataSandboxConfig(posts_per_snapshot=2_500, render_inline_records=0, **FAST)
    inputs = [{"url": PAGE}]
    with run_brightdata_api(config) as sandbox, client(sandbox) as http:
        snapshot_id = trigger(http, inputs, include_errors=include_errors).json()["snapshot_id"]
        statuses = [http.get(f"/datasets/v3/progress/{snapshot_id}").json()["status"]]
        while statuses[-1] != "ready":
            assert statuses[-1] in ("starting", "running", "collecting", "digesting"), statuses
            statuses.append(http.get(f"/datasets/v3/progress/{snapshot_id}").json()["status"])
        whole = http.get(f"/datasets/v3/snapshot/{snapshot_id}").content
        parts = [
            http.get(f"/datasets/v3/snapshot/{snapshot_id}", params={"batch_size": 1000, "part": part}).content
            for part in (1, 2, 3)
        ]
        ndjson = http.get(f"/datasets/v3/snapshot/{snapshot_id}", params={"format": "ndjson"}).content

    def rendered(start: int = 0, stop: int | None = None) -> list[str]:
        errors = include_errors == "true"
        return list(
            snapshot_records(config, snapshot_id, inputs, [2_500], include_errors=errors, start=start, stop=stop)
        )

    def array(texts: list[str]) -> bytes:
        return ("[\n" + ",\n".join(texts) + "\n]\n").encode()

    assert whole == array(rendered())
    assert parts == [array(rendered(0, 1000)), array(rendered(1000, 2000)), array(rendered(2000, 2500))]
    assert ndjson == "\n".join(rendered()).encode()
    assert len(json.loads(whole)) == (2_500 if include_errors == "true" else len(rendered()))


def test_runs_as_its_own_process_for_dev_and_benches() -> None:
    """`python -m ...brightdata_api` prints its URL, serves, and stops cleanly on SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ingestion_platform.sandbox.brightdata_api", "--port", "0", "--api-key", "k"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening http://127.0.0.1:")
        url = line.split()[1]
        headers = {"Authorization": "Bearer k"}
        snapshot = httpx.post(
            f"{url}/datasets/v3/trigger", params={"dataset_id": DATASET}, json=[{"url": PAGE}], headers=headers
        )
        assert snapshot.status_code == 200
        progress = httpx.get(f"{url}/datasets/v3/progress/{snapshot.json()['snapshot_id']}", headers=headers)
        assert progress.json()["status"] == "starting"
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
