"""One profile run as a `netsuite/profile` asset performs it: profile, compare with history, record, report.

The asset stays thin: it calls `run_profile` and returns `MaterializeResult(metadata=outcome.metadata(),
check_results=outcome.check_results())` with `check_specs` named by CHECK_NAMES. History is read before the run is
recorded and without the run's own id, so a retried step compares against the same history as the first attempt.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from ingestion_platform.defs.netsuite.drift import (
    DEFAULT_THRESHOLDS,
    Anomaly,
    AnomalyThresholds,
    KeyCheck,
    SchemaDrift,
    anomaly_check_result,
    detect_anomalies,
    drift_check_result,
    key_check_result,
    key_uniqueness,
    schema_drift,
)
from ingestion_platform.defs.netsuite.metadata_repo import (
    DataSource,
    ProfileSnapshot,
    RecordedProfile,
    profile_history,
    profile_run_id,
    record_profile,
    snapshot_of,
)
from ingestion_platform.defs.netsuite.profiling import TableProfile, profile_metadata, profile_table
from ingestion_platform.resources.warehouse import WarehouseResource

SCHEMA_DRIFT_CHECK = "schema_drift"
ANOMALY_CHECK = "profile_anomalies"
KEY_CHECK = "primary_key_unique"
CHECK_NAMES = (SCHEMA_DRIFT_CHECK, ANOMALY_CHECK, KEY_CHECK)


@dataclass(frozen=True)
class ProfileOutcome:
    profile: TableProfile
    recorded: RecordedProfile
    history: tuple[ProfileSnapshot, ...]
    drift: SchemaDrift
    anomalies: tuple[Anomaly, ...]
    key_check: KeyCheck

    def metadata(self) -> dict[str, Any]:
        return {
            **profile_metadata(self.profile),
            "profile_run_id": self.recorded.profile_run_id,
            "history_profiles": dg.MetadataValue.int(len(self.history)),
            "schema_drift": self.drift.describe(),
        }

    def check_results(self) -> list[dg.AssetCheckResult]:
        return [
            drift_check_result(self.drift, check_name=SCHEMA_DRIFT_CHECK),
            anomaly_check_result(self.anomalies, len(self.history), check_name=ANOMALY_CHECK),
            key_check_result(self.key_check, check_name=KEY_CHECK),
        ]


def run_profile(
    warehouse: WarehouseResource,
    source: DataSource,
    schema: str,
    table: str,
    *,
    run_id: str,
    key: Sequence[str],
    tenant_id: str | None = None,
    references: Sequence[TableProfile] = (),
    history_limit: int = 10,
    thresholds: AnomalyThresholds = DEFAULT_THRESHOLDS,
) -> ProfileOutcome:
    """Profile `schema.table` for `tenant_id`, judge it against the last `history_limit` recorded profiles, check
    `key` is unique in the loaded rows, and record the profile as run `run_id`."""
    profile = profile_table(warehouse, schema, table, tenant_id=tenant_id, references=references)
    history = profile_history(
        warehouse,
        source.data_source_id,
        schema,
        table,
        limit=history_limit,
        exclude_run_id=profile_run_id(run_id, source, profile),
    )
    current = snapshot_of(profile)
    drift = schema_drift(history[0] if history else None, current)
    anomalies = detect_anomalies(history, current, thresholds)
    key_check = key_uniqueness(warehouse, schema, table, key, tenant_id=tenant_id)
    recorded = record_profile(warehouse, source, profile, run_id=run_id)
    return ProfileOutcome(profile, recorded, tuple(history), drift, tuple(anomalies), key_check)
