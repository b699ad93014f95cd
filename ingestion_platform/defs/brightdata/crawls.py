"""Crawls as rows of `social.crawl_metadata`: triggering one, and reading the ones the sensor and assets work on."""

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from ingestion_platform import crawl_state
from ingestion_platform.defs.brightdata.posts import CrawlLabels
from ingestion_platform.defs.brightdata.tables import CRAWL_METADATA
from ingestion_platform.resources.brightdata import BrightDataClient
from ingestion_platform.resources.warehouse import WarehouseResource


@dataclass(frozen=True)
class CrawlRequest:
    """One page to crawl for one tenant, as BrightData gets it plus the labels its posts are filed under."""

    tenant_id: str
    dataset_id: str
    platform: str
    competitor: str
    brand: str
    category: str
    url: str
    num_of_posts: int = 10
    include_profile_data: bool = True
    start_date: str | None = None
    end_date: str | None = None

    def brightdata_input(self) -> dict[str, Any]:
        item: dict[str, Any] = {"url": self.url, "num_of_posts": self.num_of_posts}
        item["include_profile_data"] = self.include_profile_data
        if self.start_date:
            item["start_date"] = self.start_date
        if self.end_date:
            item["end_date"] = self.end_date
        return item


@dataclass(frozen=True)
class Crawl:
    tenant_id: str
    crawl_id: str
    snapshot_id: str | None
    dataset_id: str
    platform: str
    competitor: str
    brand: str
    category: str
    url: str
    params: dict[str, Any]
    status: str
    triggered_at: datetime
    completed_at: datetime | None

    def labels(self) -> CrawlLabels:
        if self.snapshot_id is None:
            raise ValueError(f"crawl {self.crawl_id} has no snapshot yet")
        return CrawlLabels(self.tenant_id, self.snapshot_id, self.platform, self.competitor, self.brand, self.category)

    def request(self) -> CrawlRequest:
        return CrawlRequest(**self.params["request"])


def trigger(client: BrightDataClient, warehouse: WarehouseResource, request: CrawlRequest) -> Crawl:
    """Trigger one crawl and record it; a 429 records it `queued`, to be triggered again by the progress sensor.

    The row is written after BrightData answers: a trigger that fails outright (bad dataset, bad key) raises, and
    the run's failure says why; nothing half-made is left to poll."""
    now = datetime.now(UTC)
    result = client.trigger(request.dataset_id, [request.brightdata_input()])
    crawl = Crawl(
        tenant_id=request.tenant_id,
        crawl_id=str(uuid.uuid4()),
        snapshot_id=result.snapshot_id,
        dataset_id=request.dataset_id,
        platform=request.platform,
        competitor=request.competitor,
        brand=request.brand,
        category=request.category,
        url=request.url,
        params={"request": asdict(request), "inputs": [request.brightdata_input()]},
        status="triggered" if result.snapshot_id else "queued",
        triggered_at=now,
        completed_at=None,
    )
    row = {**asdict(crawl), "params": json.dumps(crawl.params), "updated_at": now}
    row |= {"stage": None if result.snapshot_id else "trigger", "error": result.refusal}
    warehouse.load(CRAWL_METADATA, [pd.DataFrame([row], columns=CRAWL_METADATA.column_names)], mode="merge")
    return crawl


_COLUMNS = (
    "tenant_id, crawl_id, snapshot_id, dataset_id, platform, competitor, brand, category, url, params, status, "
    "triggered_at, completed_at"
)


def _crawls(warehouse: WarehouseResource, where: str, params: dict[str, Any]) -> list[Crawl]:
    if not crawl_state.table_exists(warehouse.engine):
        return []
    frame = warehouse.query(f"SELECT {_COLUMNS} FROM {CRAWL_METADATA.qualified_name} WHERE {where}", params)
    crawls = []
    for record in frame.to_dict("records"):
        record = {k: (None if v is pd.NaT or (isinstance(v, float) and pd.isna(v)) else v) for k, v in record.items()}
        for name in ("triggered_at", "completed_at"):
            if record[name] is not None:
                record[name] = pd.Timestamp(record[name]).to_pydatetime()
        crawls.append(Crawl(**record))
    return crawls


def pending(warehouse: WarehouseResource) -> list[Crawl]:
    return _crawls(warehouse, "status IN ('queued', 'triggered') ORDER BY triggered_at", {})


def ready_not_downloaded(warehouse: WarehouseResource, within: timedelta) -> list[Crawl]:
    """Ready snapshots still to download, within BrightData's retention: their runs are requested again each tick
    (the run key makes that a no-op once requested), so a tick lost between update and request loses nothing."""
    since = datetime.now(UTC) - within
    return _crawls(warehouse, "status = 'ready' AND completed_at >= :since", {"since": since})


def stuck_downloads(warehouse: WarehouseResource, older_than: timedelta) -> list[Crawl]:
    """Snapshots BrightData finished more than `older_than` ago that never reached the object store."""
    before = datetime.now(UTC) - older_than
    return _crawls(
        warehouse,
        "snapshot_id IS NOT NULL AND completed_at < :before "
        "AND (status = 'ready' OR (status = 'failed' AND stage = 'download')) ORDER BY completed_at",
        {"before": before},
    )


def for_snapshot(warehouse: WarehouseResource, snapshot_id: str) -> Crawl | None:
    found = _crawls(warehouse, "snapshot_id = :s ORDER BY triggered_at DESC LIMIT 1", {"s": snapshot_id})
    return found[0] if found else None
