"""Per tenant, event type and day: how many events the last load of that day wrote (`ga4.daily_counts`).

Each event load writes its days' counts beside the events, counted from the batches as they stream past, so
`ga4/availability` summarises a small table instead of regrouping every event row after every partition: a
year's backfill would otherwise rescan the whole history once per partition.
"""

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import date

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ingestion_platform.defs.ga4.events import SCHEMA
from ingestion_platform.warehouse import Column, TableSpec

DAILY_COUNTS = TableSpec(
    schema=SCHEMA,
    name="daily_counts",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("event_name", "text", nullable=False),
        Column("event_date", "date", nullable=False),
        Column("rows", "bigint", nullable=False, description="events loaded for the day (0: loaded, none that day)"),
    ),
    key=("tenant_id", "event_name", "event_date"),
)


class DayCounter:
    """Counts rows per `event_date` of the batches it passes through; every requested day gets a row, even 0."""

    def __init__(self, days: Iterable[date]) -> None:
        self.counts: Counter[date] = Counter(dict.fromkeys(days, 0))

    def count(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                for entry in pc.value_counts(batch.column("event_date")).to_pylist():
                    self.counts[entry["values"]] += entry["counts"]
            yield batch

    def frame(self, tenant_id: str, event_name: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "tenant_id": tenant_id,
                "event_name": event_name,
                "event_date": list(self.counts),
                "rows": [int(n) for n in self.counts.values()],
            },
            columns=DAILY_COUNTS.column_names,
        )
