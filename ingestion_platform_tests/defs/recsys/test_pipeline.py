"""The recommender source end to end on real object stores (local files and the moto S3 server): landing sensor,
upload assets, per-tenant features and samples, and automation recomputing only the uploading tenant."""

import gzip
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ingestion_platform.defs.recsys.derived import (
    ITEM_FEATURES,
    TRAINING_SAMPLES,
    USER_FEATURES,
    feature_keys,
    recsys_features,
    recsys_training_samples,
)
from ingestion_platform.defs.recsys.partitions import UPLOADS, upload_id, upload_partition_key
from ingestion_platform.defs.recsys.sensors import recsys_landing_sensor
from ingestion_platform.defs.recsys.uploads import FILE_USABLE, LANDING_KEY_TAG, upload_assets
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform_tests.fixtures.object_store import S3Server

HAND = (
    "user_id,item_id,interaction_type,timestamp,rating\n"
    "u1,i1,view,2025-01-01T10:00:00Z,\n"
    "u1,i1,click,2025-01-01T11:00:00Z,\n"
    "u1,i2,purchase,2025-01-02T09:00:00Z,4\n"
    "u1,i3,like,2025-01-03T08:00:00Z,5\n"
    "u2,i1,view,2025-01-01T12:00:00Z,\n"
    "u2,i2,view,2025-01-01T13:00:00Z,\n"
    "u2,i2,add_to_cart,2025-01-01T15:00:00+01:00,\n"
    "u2,i2,purchase,2025-01-05T10:00:00Z,2\n"
)
ITEMS_V1 = "item_id,title,category,price\ni1,Old Lamp,Home,10\ni2,Kettle,Kitchen,20\ni3,Novel,Books,8\n"
ITEMS_V2 = '[{"item_id": "i1", "title": "New Lamp", "category": "Home", "price": 12.5}]'
MIXED = (
    "user_id,item_id,interaction_type,timestamp,rating\n"
    "u1,i1,view,2025-01-01T10:00:00Z,\n"
    "u1,i2,teleport,2025-01-01T11:00:00Z,\n"
    "u2,i2,click,yesterday,\n"
    "u2,i3,like,2025-01-02T10:00:00Z,9\n"
    "u2,i3,like,2025-01-02T10:00:00Z,\n"
    "u2,i3,like,2025-01-02T10:00:00Z,\n"
)
UPLOAD_ASSETS = {a.key.path[-1]: a for a in upload_assets}


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStoreResource:
    if request.param == "file":
        return ObjectStoreResource(url=(tmp_path / "objects").as_uri())
    s3: S3Server = request.getfixturevalue("s3_server")
    return ObjectStoreResource(url=f"s3://{s3.bucket}/r-{uuid.uuid4().hex[:10]}", aws_endpoint_url=s3.endpoint_url)


@pytest.fixture
def tenants(tmp_path: Path) -> TenantsResource:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  acme: {}\n  globex: {}\n")
    return TenantsResource(path=str(path))


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex"])
        yield instance


@dataclass
class Landing:
    """The sensor evaluated tick by tick, with its cursor and dynamic partition requests applied as the daemon
    would, and requested runs executed for real."""

    instance: dg.DagsterInstance
    store: ObjectStoreResource
    tenants: TenantsResource
    cursor: str | None = None
    runs: list[dg.ExecuteInProcessResult] = field(default_factory=list)

    def tick(self) -> list[dg.RunRequest]:
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={"object_store": self.store, "tenants": self.tenants},
        )
        result = recsys_landing_sensor(context)
        assert isinstance(result, dg.SensorResult)
        for request in result.dynamic_partitions_requests or []:
            assert isinstance(request, dg.AddDynamicPartitionsRequest)
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        self.cursor = result.cursor
        return list(result.run_requests or [])

    def run(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        data_type = request.tags["recsys/data_type"]
        result = dg.materialize(
            [UPLOAD_ASSETS[data_type]],
            instance=self.instance,
            partition_key=request.partition_key,
            tags=request.tags,
            resources={"object_store": self.store},
            raise_on_error=False,
        )
        self.runs.append(result)
        return result

    def settle(self) -> list[dg.ExecuteInProcessResult]:
        """Two ticks (the stability rule), then run whatever was requested."""
        requests = self.tick() + self.tick()
        return [self.run(r) for r in requests]


@pytest.fixture
def landing(instance: dg.DagsterInstance, store: ObjectStoreResource, tenants: TenantsResource) -> Landing:
    return Landing(instance, store, tenants)


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)


def _partitions_name(partitions: dg.DynamicPartitionsDefinition) -> str:
    assert partitions.name is not None, partitions
    return partitions.name


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    assert error is not None, failure
    return error.message


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey | None = None) -> dict:
    materializations = result.get_asset_materialization_events()
    event = next(e for e in materializations if key is None or e.asset_key == key)
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_sensor_requests_each_complete_upload_once(landing: Landing, store: ObjectStoreResource) -> None:
    key = "landing/acme/recsys/interactions/2025-01.csv"
    store.put(key, HAND.encode())
    store.put("landing/acme/recsys/interactions/next.csv.part", b"user_id,")  # still uploading
    store.put("landing/acme/recsys/interactions-old/x.csv", HAND.encode())  # not the landing folder
    store.put("landing/initech/recsys/interactions/x.csv", HAND.encode())  # not a registered tenant
    assert landing.tick() == []  # seen once: may still be growing
    requests = landing.tick()
    upload = upload_id(HAND.encode())
    assert [(r.partition_key, r.run_key, r.tags[LANDING_KEY_TAG]) for r in requests] == [
        (f"acme|{upload}", f"acme:interactions:{upload}", key)
    ]
    assert landing.instance.get_dynamic_partitions(_partitions_name(UPLOADS["interactions"])) == [upload]
    assert landing.run(requests[0]).success
    assert landing.tick() == []

    # Same bytes under another name, gzipped names aside: recognised by hash, not loaded twice.
    store.put("landing/acme/recsys/interactions/copy-of-2025-01.csv", HAND.encode())
    assert landing.settle() == []
    # A fresh cursor (sensor reset) remembers through the instance's runs.
    landing.cursor = None
    assert landing.settle() == []
    # The same content from another tenant is that tenant's upload.
    store.put("landing/globex/recsys/interactions/a.csv", HAND.encode())
    (globex,) = landing.settle()
    assert globex.success and globex.dagster_run.tags["dagster/partition"] == f"globex|{upload}"


def test_marker_file_makes_an_upload_complete_at_once(landing: Landing, store: ObjectStoreResource) -> None:
    store.put("landing/acme/recsys/items/catalog.csv", ITEMS_V1.encode())
    store.put("landing/acme/recsys/items/catalog.csv.done", b"")
    (request,) = landing.tick()
    assert request.tags["recsys/data_type"] == "items"
    assert request.partition_key == upload_partition_key("acme", upload_id(ITEMS_V1.encode()))


def test_changed_file_is_loaded_again(landing: Landing, store: ObjectStoreResource) -> None:
    key = "landing/acme/recsys/interactions/daily.csv"
    store.put(key, HAND.encode())
    (first,) = landing.settle()
    changed = HAND + "u3,i1,view,2025-01-06T10:00:00Z,\n"
    store.put(key, changed.encode())
    (second,) = landing.settle()
    assert second.success
    assert second.dagster_run.tags["dagster/partition"] == f"acme|{upload_id(changed.encode())}"
    assert _metadata(first)["rows_accepted"] == 8 and _metadata(second)["rows_accepted"] == 9


def test_mixed_rows_load_the_good_ones_and_keep_the_rest(landing: Landing, store: ObjectStoreResource) -> None:
    compressed = gzip.compress(MIXED.encode(), mtime=0)
    store.put("landing/acme/recsys/interactions/mixed.csv.gz", compressed)
    (result,) = landing.settle()
    assert result.success
    meta = _metadata(result)
    assert (meta["rows_accepted"], meta["rows_rejected"], meta["duplicates_dropped"]) == (2, 3, 1)
    summary = {r.data["expectation"]: r.data["unexpected_count"] for r in meta["validation_summary"].records}
    assert summary["interaction_type_in_set"] == 1 and summary["timestamp_iso8601"] == 1
    assert summary["rating_between_1_and_5"] == 1 and summary["user_id_not_null"] == 0
    assert not _check(result, "interaction_type_in_set").passed
    assert _check(result, "user_id_not_null").passed
    assert _check(result, FILE_USABLE).passed
    assert [col.name for col in meta["dagster/column_schema"].columns] == [
        "user_id",
        "item_id",
        "interaction_type",
        "timestamp",
        "rating",
    ]
    upload = upload_id(compressed)
    raw = [o.key for o in store.list("acme/raw/interactions")]
    assert [k.rsplit("/", 1)[-1] for k in raw] == [f"{upload}.parquet", f"{upload}.rejects.parquet"]
    accepted = pq.read_table(store.path(raw[0]), filesystem=store.filesystem)
    assert sorted(accepted.column("user_id").to_pylist()) == ["u1", "u2"]
    rejects = pq.read_table(store.path(raw[1]), filesystem=store.filesystem).to_pylist()
    reasons = {r["row_number"]: r["failed_expectations"] for r in rejects}
    assert reasons == {
        2: "interaction_type is not one of view, click, purchase, like, add_to_cart",
        3: "timestamp is missing or not an ISO-8601 date-time",
        4: "rating is outside [1.0, 5.0]",
    }
    assert meta["parquet_path"] == store.uri(raw[0])


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"PK\x03\x04binary-zip-bytes", "binary"),
        (b"user_id;item_id;interaction_type;timestamp\nu1;i1;view;2025-01-01T10:00:00Z\n", "wrong_delimiter"),
        (b"u1,i1,view,2025-01-01T10:00:00Z\nu2,i1,view,2025-01-01T11:00:00Z\n", "no_header"),
        (b"", "empty"),
        (b"user_id,item_id,when,colour\nu1,i1,2025-01-01,red\n", "missing_columns"),
    ],
)
def test_unusable_file_fails_the_blocking_check_and_loads_nothing(
    landing: Landing, store: ObjectStoreResource, content: bytes, code: str
) -> None:
    store.put("landing/acme/recsys/interactions/bad.csv", content)
    (result,) = landing.settle()
    assert not result.success
    check = _check(result, FILE_USABLE)
    assert not check.passed and check.metadata["code"].value == code
    assert code in _failure_message(result)
    assert store.list("acme/raw") == []
    assert landing.tick() == [] and landing.tick() == []  # the same bad content is not retried


def test_landing_key_of_another_tenant_is_refused(instance: dg.DagsterInstance, store: ObjectStoreResource) -> None:
    store.put("landing/globex/recsys/interactions/a.csv", HAND.encode())
    upload = upload_id(HAND.encode())
    instance.add_dynamic_partitions(_partitions_name(UPLOADS["interactions"]), [upload])
    result = dg.materialize(
        [UPLOAD_ASSETS["interactions"]],
        instance=instance,
        partition_key=upload_partition_key("acme", upload),
        tags={LANDING_KEY_TAG: "landing/globex/recsys/interactions/a.csv"},
        resources={"object_store": store},
        raise_on_error=False,
    )
    assert not result.success
    assert "not tenant 'acme'" in _failure_message(result)
    assert store.list("acme") == []


def _derive(
    instance: dg.DagsterInstance, store: ObjectStoreResource, tenant: str, outputs: bool = True, **sampling: object
) -> tuple:
    result = dg.materialize(
        [recsys_features, recsys_training_samples],
        instance=instance,
        partition_key=tenant,
        resources={"object_store": store},
        run_config={"ops": {"recsys__training_samples": {"config": sampling}}},
    )
    if not outputs:
        return result, {}
    return result, {
        k: pq.read_table(store.path(v), filesystem=store.filesystem) for k, v in feature_keys(tenant).items()
    }


def test_features_and_samples_on_the_hand_checked_dataset(landing: Landing, store: ObjectStoreResource) -> None:
    store.put("landing/acme/recsys/interactions/hand.csv", HAND.encode())
    store.put("landing/acme/recsys/items/v1.csv", ITEMS_V1.encode())
    assert all(r.success for r in landing.settle())
    store.put("landing/acme/recsys/items/v2.json", ITEMS_V2.encode())  # a later upload of i1 wins
    assert all(r.success for r in landing.settle())
    # Another tenant's data never reaches acme's features.
    store.put(
        "landing/globex/recsys/interactions/g.csv",
        b"user_id,item_id,interaction_type,timestamp\nz,i9,view,2025-01-01T00:00:00Z\n",
    )
    assert all(r.success for r in landing.settle())

    result, tables = _derive(
        landing.instance, store, "acme", min_user_interactions=1, min_item_interactions=1, negative_ratio=1
    )
    users = {r["user_id"]: r for r in tables["user_features"].to_pylist()}
    assert sorted(users) == ["u1", "u2"]
    assert (users["u1"]["total_interactions"], users["u1"]["unique_items"], users["u1"]["avg_rating"]) == (4, 3, 4.5)
    assert users["u1"]["recent_items"] == ["i3", "i2", "i1"]
    assert (users["u2"]["days_active"], users["u2"]["conversion_rate"]) == (2, 0.25)
    items = {r["item_id"]: r for r in tables["item_features"].to_pylist()}
    assert sorted(items) == ["i1", "i2", "i3"]
    assert (items["i1"]["title"], items["i1"]["price"]) == ("New Lamp", 12.5)
    assert (items["i2"]["title"], items["i2"]["unique_users"], items["i2"]["purchase_rate"]) == ("Kettle", 2, 0.5)
    assert items["i1"]["click_through_rate"] == 0.5
    # Positives: u1 clicked i1, bought i2, liked i3; u2 bought i2. u1 touched every item, so no negative exists
    # for u1; u2's only untouched item is i3.
    samples = tables["training_samples"].select(["user_id", "item_id", "label"]).to_pylist()
    assert samples == [
        {"user_id": "u1", "item_id": "i1", "label": 1.0},
        {"user_id": "u1", "item_id": "i2", "label": 1.0},
        {"user_id": "u1", "item_id": "i3", "label": 1.0},
        {"user_id": "u2", "item_id": "i2", "label": 1.0},
        {"user_id": "u2", "item_id": "i3", "label": 0.0},
    ]
    assert "user_total_interactions" in tables["training_samples"].column_names
    meta = _metadata(result, TRAINING_SAMPLES)
    assert (meta["positives"], meta["negatives"], meta["label_balance"], meta["users_short_of_negatives"]) == (
        4,
        1,
        0.8,
        0,  # u1 wants no more negatives than unseen items exist
    )
    assert _metadata(result, USER_FEATURES)["dagster/row_count"] == 2
    assert _metadata(result, ITEM_FEATURES)["dagster/row_count"] == 3


def test_automation_recomputes_only_the_uploading_tenant(landing: Landing, store: ObjectStoreResource) -> None:
    defs = dg.Definitions(
        assets=[*upload_assets, recsys_features, recsys_training_samples],
        resources={"object_store": store},
    )
    instance = landing.instance
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert result.total_requested == 0  # no uploads yet: nothing to compute for any tenant

    store.put("landing/acme/recsys/interactions/hand.csv", HAND.encode())
    (run,) = landing.settle()
    assert run.success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    requested = {
        (key.to_user_string(), partition)
        for key in (USER_FEATURES, ITEM_FEATURES, TRAINING_SAMPLES)
        for partition in result.get_requested_partitions(key)
    }
    assert requested == {
        ("recsys/user_features", "acme"),
        ("recsys/item_features", "acme"),
        ("recsys/training_samples", "acme"),
    }
    assert result.total_requested == 3

    # Once computed, nothing is requested again until acme uploads again.
    _derive(instance, store, "acme")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert result.total_requested == 0
    store.put("landing/globex/recsys/items/c.csv", ITEMS_V1.encode())
    (run,) = landing.settle()
    assert run.success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    # Items change globex's item features and, through them, its samples; acme is untouched.
    for key in (USER_FEATURES, ITEM_FEATURES, TRAINING_SAMPLES):
        assert result.get_requested_partitions(key) == {"globex"}
    # globex has no interactions yet: an empty result, not a failing run.
    derived, _ = _derive(instance, store, "globex", outputs=False)
    assert _metadata(derived, TRAINING_SAMPLES)["dagster/row_count"] == 0
    assert store.list("globex/features") == [] and store.list("globex/training") == []
