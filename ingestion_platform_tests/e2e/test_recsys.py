"""An upload with its `.done` marker becomes one run per file, then automation recomputes the tenant's features."""

import pyarrow.parquet as pq
import pytest

from ingestion_platform_tests.e2e.conftest import Landed
from ingestion_platform_tests.e2e.stack import UIStack

pytestmark = pytest.mark.timeout(900)  # the sensors tick every 30 to 60 s; a loaded CI machine runs slowly


def test_the_landing_sensor_loads_an_upload_and_automation_follows(ui_stack: UIStack, landed: Landed) -> None:
    runs = ui_stack.wait_for_runs({"dagster/sensor_name": "recsys_landing", "tenant": "acme"}, count=2, timeout=600)
    assert {r["tags"]["recsys/landing_key"] for r in runs} >= set(landed.recsys_keys), runs
    for run in runs:
        assert run["status"] == "SUCCESS", ui_stack.run_errors(run["runId"])

    store = ui_stack.object_store()
    interactions = [o.key for o in store.list("acme/raw/interactions/") if o.key.endswith(".parquet")]
    items = [o.key for o in store.list("acme/raw/items/") if o.key.endswith(".parquet")]
    assert interactions and items
    accepted = sum(pq.read_metadata(ui_stack.object_store_root / key).num_rows for key in interactions)
    assert 0 < accepted <= landed.recsys.interactions

    # The automation sensor starts the derived assets once both uploads are in.
    features = ui_stack.wait_until(
        lambda: ui_stack.runs(
            {"dagster/from_automation_condition": "true", "dagster/partition": "acme"}, statuses=["SUCCESS"]
        ),
        600,
        "recsys features recomputed by automation",
    )
    assert features
    ui_stack.wait_until(
        lambda: (ui_stack.object_store_root / "acme" / "training" / "training_samples.parquet").exists(),
        600,
        "acme/training/training_samples.parquet",
    )
    samples = pq.read_table(ui_stack.object_store_root / "acme" / "training" / "training_samples.parquet")
    assert samples.num_rows > 0
