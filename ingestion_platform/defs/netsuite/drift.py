"""Schema drift, anomalies against profile history, and key uniqueness: what the NetSuite asset checks evaluate.

Anomaly rule (row counts and per-column null rates), chosen so a check neither cries wolf on a young or perfectly
steady history nor misses a collapse:
- at least `min_history` earlier profiles are needed; with fewer, nothing is judged (a new table has no normal yet);
- a value is anomalous when it lies more than `z_threshold` standard deviations from the mean of the last profiles
  AND differs from that mean by more than a minimum effect: `row_count_min_change` relative for row counts,
  `null_rate_min_change` absolute (percentage points) for null rates. The effect floor is what keeps a flat history
  (standard deviation 0, where any change has an infinite z-score) from flagging one extra row;
- a row count falling to zero from a non-zero history is always anomalous.
"""

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
from psycopg import sql

from ingestion_platform.defs.netsuite.metadata_repo import ProfileSnapshot
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.warehouse.schema import check_identifier


@dataclass(frozen=True)
class Retyped:
    column: str
    before: str
    after: str


@dataclass(frozen=True)
class SchemaDrift:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retyped: tuple[Retyped, ...] = ()
    # A text column whose values changed kind (all integers before, some words now): no DDL changed, but readers
    # that cast the column break all the same.
    reinferred: tuple[Retyped, ...] = ()

    @property
    def has_drift(self) -> bool:
        return bool(self.added or self.removed or self.retyped or self.reinferred)

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append(f"added {', '.join(self.added)}")
        if self.removed:
            parts.append(f"removed {', '.join(self.removed)}")
        if self.retyped:
            parts.append("retyped " + ", ".join(f"{r.column} {r.before} -> {r.after}" for r in self.retyped))
        if self.reinferred:
            parts.append("values now " + ", ".join(f"{r.column} {r.before} -> {r.after}" for r in self.reinferred))
        return "; ".join(parts) or "no schema drift"


def schema_drift(previous: ProfileSnapshot | None, current: ProfileSnapshot) -> SchemaDrift:
    """Columns added, removed, retyped (warehouse type) or re-inferred (value type) since `previous`."""
    if previous is None:
        return SchemaDrift()
    before, after = previous.columns, current.columns
    common = [name for name in after if name in before]
    return SchemaDrift(
        added=tuple(name for name in after if name not in before),
        removed=tuple(name for name in before if name not in after),
        retyped=tuple(
            Retyped(name, before[name].data_type, after[name].data_type)
            for name in common
            if before[name].data_type != after[name].data_type
        ),
        reinferred=tuple(
            Retyped(name, before[name].inferred_type or "", after[name].inferred_type or "")
            for name in common
            if before[name].data_type == after[name].data_type
            and before[name].inferred_type is not None
            and after[name].inferred_type is not None
            and before[name].inferred_type != after[name].inferred_type
        ),
    )


@dataclass(frozen=True)
class AnomalyThresholds:
    min_history: int = 3
    z_threshold: float = 3.0
    row_count_min_change: float = 0.2
    null_rate_min_change: float = 0.05


DEFAULT_THRESHOLDS = AnomalyThresholds()


@dataclass(frozen=True)
class Anomaly:
    metric: str  # row_count or null_rate
    column: str | None
    value: float
    mean: float
    stdev: float
    history: int

    @property
    def z_score(self) -> float:
        if self.stdev == 0:
            return math.inf if self.value != self.mean else 0.0
        return (self.value - self.mean) / self.stdev

    def describe(self) -> str:
        what = self.metric if self.column is None else f"{self.metric} of {self.column}"
        return (
            f"{what} is {self.value:g}, against a mean of {self.mean:g} (stdev {self.stdev:g}) "
            f"over the last {self.history} profiles"
        )


def _anomalous(value: float, history: Sequence[float], thresholds: AnomalyThresholds, min_change: float) -> bool:
    mean = statistics.fmean(history)
    if abs(value - mean) <= min_change:
        return False
    stdev = statistics.pstdev(history)
    return stdev == 0 or abs(value - mean) / stdev > thresholds.z_threshold


def detect_anomalies(
    history: Sequence[ProfileSnapshot],
    current: ProfileSnapshot,
    thresholds: AnomalyThresholds = DEFAULT_THRESHOLDS,
) -> list[Anomaly]:
    """Row-count and null-rate anomalies of `current` against `history` (earlier profiles, any order)."""
    if len(history) < thresholds.min_history:
        return []
    found = []
    counts = [float(h.row_count) for h in history]
    mean_count = statistics.fmean(counts)
    collapsed = current.row_count == 0 and mean_count > 0
    if collapsed or _anomalous(
        current.row_count, counts, thresholds, thresholds.row_count_min_change * max(mean_count, 1.0)
    ):
        found.append(
            Anomaly("row_count", None, float(current.row_count), mean_count, statistics.pstdev(counts), len(counts))
        )
    for name, col in current.columns.items():
        rates = [h.columns[name].null_rate for h in history if name in h.columns]
        if len(rates) < thresholds.min_history:
            continue
        if _anomalous(col.null_rate, rates, thresholds, thresholds.null_rate_min_change):
            found.append(
                Anomaly("null_rate", name, col.null_rate, statistics.fmean(rates), statistics.pstdev(rates), len(rates))
            )
    return found


@dataclass(frozen=True)
class KeyCheck:
    table: str
    key: tuple[str, ...]
    rows: int
    duplicate_keys: int
    rows_with_null_key: int
    sample_duplicates: tuple[tuple[str, ...], ...]

    @property
    def passed(self) -> bool:
        return self.duplicate_keys == 0 and self.rows_with_null_key == 0


def key_uniqueness(
    warehouse: WarehouseResource,
    schema: str,
    table: str,
    key: Sequence[str],
    *,
    tenant_id: str | None = None,
    tenant_column: str = "tenant_id",
    samples: int = 5,
) -> KeyCheck:
    """Count key values held by more than one row, and rows with a NULL in the key, in one pass over the table.

    The loaded tables declare their key as a primary key, so this can only fail if a table was created or altered
    outside the loader; it is the check that proves it rather than assumes it.
    """
    if not key:
        raise ValueError("key_uniqueness needs at least one key column")
    for name in (schema, table, *key):
        check_identifier(name)
    cols = sql.SQL(", ").join(map(sql.Identifier, key))
    scope = (
        sql.SQL("{} = %(tenant)s").format(sql.Identifier(check_identifier(tenant_column)))
        if tenant_id is not None
        else sql.SQL("TRUE")
    )
    null_key = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(k)) for k in key)
    statement = sql.SQL(
        "WITH g AS (SELECT {cols}, count(*) AS n, bool_or({null_key}) AS has_null FROM {table} WHERE {scope} "
        "GROUP BY {cols}) "
        "SELECT coalesce(sum(n), 0), count(*) FILTER (WHERE n > 1 AND NOT has_null), "
        "coalesce(sum(n) FILTER (WHERE has_null), 0), "
        "(SELECT coalesce(jsonb_agg(d.k), '[]'::jsonb) FROM (SELECT jsonb_build_array({cols}) AS k FROM g "
        "WHERE n > 1 AND NOT has_null ORDER BY n DESC LIMIT {samples}) d) FROM g"
    ).format(cols=cols, null_key=null_key, table=sql.Identifier(schema, table), scope=scope, samples=samples)
    with warehouse.raw_connection() as conn:
        row = conn.execute(statement, {"tenant": tenant_id}).fetchone()
    assert row is not None
    rows, duplicates, null_rows, sample = row
    return KeyCheck(
        table=f"{schema}.{table}",
        key=tuple(key),
        rows=int(rows),
        duplicate_keys=int(duplicates),
        rows_with_null_key=int(null_rows),
        sample_duplicates=tuple(tuple(str(v) for v in k) for k in sample),
    )


def drift_check_result(drift: SchemaDrift, *, check_name: str = "schema_drift") -> dg.AssetCheckResult:
    """Drift fails with severity WARN: a new NetSuite field is expected now and then and the load already
    evolved the table, but someone should look."""
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not drift.has_drift,
        severity=dg.AssetCheckSeverity.WARN,
        description=drift.describe(),
        metadata={
            "added": dg.MetadataValue.json(list(drift.added)),
            "removed": dg.MetadataValue.json(list(drift.removed)),
            "retyped": dg.MetadataValue.json([[r.column, r.before, r.after] for r in drift.retyped]),
            "reinferred": dg.MetadataValue.json([[r.column, r.before, r.after] for r in drift.reinferred]),
        },
    )


def anomaly_check_result(
    anomalies: Sequence[Anomaly], history: int, *, check_name: str = "profile_anomalies"
) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not anomalies,
        severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(a.describe() for a in anomalies) or f"no anomaly against {history} earlier profiles",
        metadata={
            "history_profiles": dg.MetadataValue.int(history),
            "anomalies": dg.MetadataValue.json(
                [
                    {"metric": a.metric, "column": a.column, "value": a.value, "mean": a.mean, "stdev": a.stdev}
                    for a in anomalies
                ]
            ),
        },
    )


def key_check_result(check: KeyCheck, *, check_name: str = "primary_key_unique") -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=check.passed,
        description=(
            f"({', '.join(check.key)}) unique and non-null over {check.rows} rows"
            if check.passed
            else f"{check.duplicate_keys} duplicated key values, {check.rows_with_null_key} rows with a NULL key"
        ),
        metadata={
            "rows": dg.MetadataValue.int(check.rows),
            "duplicate_keys": dg.MetadataValue.int(check.duplicate_keys),
            "rows_with_null_key": dg.MetadataValue.int(check.rows_with_null_key),
            "sample_duplicates": dg.MetadataValue.json([list(k) for k in check.sample_duplicates]),
        },
    )
