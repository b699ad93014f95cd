"""One table's profile run as the `netsuite/profile` asset performs it: profile, compare with history, record,
report; and the asset's three checks judged across every table it profiled (`combined_check_results`).

History is read before the run is recorded and without the run's own id, so a retried step compares against the
same history as the first attempt.
"""

from collections.abc import Mapping, Sequence
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


def combined_check_results(outcomes: Mapping[str, ProfileOutcome]) -> list[dg.AssetCheckResult]:
    """The three checks over several tables' outcomes (keyed by table): a check fails when any table fails it, and
    says which tables and why, so one asset's checks stand for every table it profiled. Severities stay those of
    the per-table results (drift and anomalies WARN, key ERROR)."""
    results = []
    for name in CHECK_NAMES:
        per_table = {table: _by_name(outcome.check_results(), name) for table, outcome in outcomes.items()}
        failing = {table: result for table, result in per_table.items() if not result.passed}
        shown = failing or per_table
        metadata: dict[str, Any] = {
            "tables_checked": dg.MetadataValue.json(sorted(per_table)),
            "failing_tables": dg.MetadataValue.json(sorted(failing)),
            "reasons": dg.MetadataValue.json({table: result.description for table, result in failing.items()}),
            "by_table": dg.MetadataValue.json(
                {table: {k: v.value for k, v in result.metadata.items()} for table, result in per_table.items()}
            ),
        }
        if name == KEY_CHECK:
            metadata["duplicate_keys"] = dg.MetadataValue.int(
                sum(o.key_check.duplicate_keys for o in outcomes.values())
            )
            metadata["rows_with_null_key"] = dg.MetadataValue.int(
                sum(o.key_check.rows_with_null_key for o in outcomes.values())
            )
        severity = next(iter(per_table.values())).severity if per_table else dg.AssetCheckSeverity.ERROR
        results.append(
            dg.AssetCheckResult(
                check_name=name,
                passed=not failing,
                severity=severity,
                description="; ".join(f"{table}: {result.description}" for table, result in shown.items())
                or "no table profiled",
                metadata=metadata,
            )
        )
    return results


def _by_name(results: Sequence[dg.AssetCheckResult], name: str) -> dg.AssetCheckResult:
    return next(r for r in results if r.check_name == name)
