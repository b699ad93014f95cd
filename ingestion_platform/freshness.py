"""Freshness per tenant: one `freshness` asset check per source asset, evaluated by the daemon and after loads.

Why not Dagster's own freshness APIs (checked against 1.13.27):
- `dg.FreshnessPolicy.time_window` / `.cron` on an asset spec is evaluated by the daemon's FreshnessDaemon from
  the asset's latest materialization of ANY partition (`freshness_evaluator.py`: `asset_entry.last_materialization`).
  On a `{date}|{tenant}` asset, one tenant's load, or a backfill of last year, makes the asset "fresh" while another
  tenant's yesterday is missing: the answer operators need is per tenant and per day.
- `build_last_update_freshness_checks` has the same any-partition semantics; `build_time_partition_freshness_checks`
  requires a `TimeWindowPartitionsDefinition` and fails at run time on our `MultiPartitionsDefinition`. Both, and
  `build_sensor_for_freshness_checks`, are superseded and warn on every definitions load.

So each source declares its rules here (`DayLoadedBy`, `UpdatedWithin`) and gets, from `freshness_definitions`:
- a `multi_asset_check` with one `freshness` check per asset (visible on the asset's Checks tab, runnable from the
  UI). Asset jobs include the checks of their assets, so a load re-evaluates freshness in its own run and a late
  day turns the check green as soon as it lands;
- a sensor `<source>_freshness`, RUNNING by default, that evaluates a check in the sensor itself and records the
  result as a runless `AssetCheckEvaluation` when it is due: never evaluated, or past the `next_evaluation`
  instant the previous result stored (the next deadline, or the moment the oldest tenant's window runs out). No run
  is launched for it, so a quiet deployment costs one small query per check and tick.

A check fails naming the stale tenants and what was expected of each; its metadata holds a per-tenant table.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from ingestion_platform.asset_events import DEFAULT_RECORD_LIMIT, latest_updates_by_tenant, partition_update
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.tenants import TENANT_DIMENSION, TenantConfigError, TenantRegistry

if TYPE_CHECKING:
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecord

CHECK_NAME = "freshness"
NEXT_EVALUATION_KEY = "next_evaluation_timestamp"
FRESH_UNTIL_KEY = "dagster/fresh_until_timestamp"
# A check whose run started but never reported (a crashed run) is evaluated again after this long.
PLANNED_GRACE = timedelta(hours=1)
# A window rule without a deadline re-checks a failing asset at least this often (loads re-check it anyway).
FAILING_RECHECK = timedelta(hours=1)

ExpectedTenants = Callable[[TenantRegistry, dg.AssetKey], Iterable[str]]


def last_deadline(now: datetime, at: time) -> datetime:
    """The latest instant at or before `now` whose UTC time of day is `at`."""
    today = datetime.combine(now.astimezone(UTC).date(), at, tzinfo=UTC)
    return today if today <= now else today - timedelta(days=1)


@dataclass(frozen=True)
class TenantState:
    tenant_id: str
    expected: str
    last_update: float | None
    fresh: bool


@dataclass(frozen=True)
class Outcome:
    asset_key: dg.AssetKey
    passed: bool
    description: str
    tenants: tuple[TenantState, ...]
    next_evaluation: float
    fresh_until: float | None
    extra: Mapping[str, dg.MetadataValue]

    @property
    def stale(self) -> list[str]:
        return [t.tenant_id for t in self.tenants if not t.fresh]

    def metadata(self) -> dict[str, dg.MetadataValue]:
        rows = [
            dg.TableRecord(
                {
                    "tenant": t.tenant_id,
                    "expected": t.expected,
                    "last_update": datetime.fromtimestamp(t.last_update, UTC).isoformat(timespec="seconds")
                    if t.last_update
                    else "never",
                    "fresh": t.fresh,
                }
            )
            for t in self.tenants
        ]
        schema = dg.TableSchema(
            columns=[
                dg.TableColumn("tenant", "string"),
                dg.TableColumn("expected", "string"),
                dg.TableColumn("last_update", "string"),
                dg.TableColumn("fresh", "bool"),
            ]
        )
        metadata: dict[str, dg.MetadataValue] = {
            "tenants": dg.MetadataValue.table(rows, schema=schema),
            "stale_tenants": dg.MetadataValue.json(self.stale),
            NEXT_EVALUATION_KEY: dg.MetadataValue.timestamp(self.next_evaluation),
            **self.extra,
        }
        if self.fresh_until is not None:
            metadata[FRESH_UNTIL_KEY] = dg.MetadataValue.timestamp(self.fresh_until)
        return metadata

    def check_result(self) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            asset_key=self.asset_key,
            check_name=CHECK_NAME,
            passed=self.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=self.description,
            metadata=self.metadata(),
        )

    def evaluation(self) -> dg.AssetCheckEvaluation:
        return dg.AssetCheckEvaluation(
            asset_key=self.asset_key,
            check_name=CHECK_NAME,
            passed=self.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=self.description,
            metadata=self.metadata(),
        )


def _describe(passed: bool, tenants: Sequence[TenantState], what: str) -> str:
    if not tenants:
        return f"no tenant is expected to have {what} yet"
    if passed:
        return f"every tenant ({len(tenants)}) has {what}"
    stale = [t for t in tenants if not t.fresh]
    return f"{len(stale)} of {len(tenants)} tenants lack {what}: " + "; ".join(
        f"{t.tenant_id} (expected {t.expected})" for t in stale
    )


@dataclass(frozen=True)
class DayLoadedBy:
    """A `{date}|{tenant}` asset's day is loaded by a UTC time: once `deadline` has passed on day D, the partition of
    day D - `day_lag` must be materialized for every expected tenant. Before the deadline the previous day's
    expectation still holds. A partition loaded late passes from the moment it lands (and says when it landed)."""

    deadline: time
    day_lag: int = 1

    def evaluate(
        self, instance: dg.DagsterInstance, asset_key: dg.AssetKey, tenants: Sequence[str], now: datetime
    ) -> Outcome:
        deadline = last_deadline(now, self.deadline)
        day: date = deadline.date() - timedelta(days=self.day_lag)
        states = []
        for tenant in sorted(tenants):
            key = dg.MultiPartitionKey({"date": day.isoformat(), TENANT_DIMENSION: tenant})
            update = partition_update(instance, asset_key, str(key))
            expected = f"{key} by {deadline.isoformat(timespec='minutes')}"
            states.append(TenantState(tenant, expected, update.timestamp if update else None, update is not None))
        passed = all(s.fresh for s in states)
        next_deadline = (deadline + timedelta(days=1)).timestamp()
        return Outcome(
            asset_key,
            passed,
            _describe(passed, states, f"day {day} loaded"),
            tuple(states),
            next_evaluation=next_deadline,
            fresh_until=next_deadline if passed else None,
            extra={"expected_day": dg.MetadataValue.text(day.isoformat())},
        )


@dataclass(frozen=True)
class UpdatedWithin:
    """Every expected tenant has materialized the asset within `window`.

    With `deadline`, the window is the one ending at the last deadline (a crawl that must land between 03:00 and
    05:00 UTC); without, it ends now (a landing-driven source: the newest upload is no older than `window`).
    `tenants_seen_within` makes the tenants expected from the instance itself, for landing-driven sources that
    tenants.yaml does not list: a tenant that loaded within that span and then stopped is stale; one silent for
    longer has left the source.
    """

    window: timedelta
    deadline: time | None = None
    tenants_seen_within: timedelta | None = None
    limit: int = DEFAULT_RECORD_LIMIT

    def evaluate(
        self,
        instance: dg.DagsterInstance,
        asset_key: dg.AssetKey,
        partitions_def: dg.PartitionsDefinition | None,
        tenants: Sequence[str] | None,
        now: datetime,
    ) -> Outcome:
        end = last_deadline(now, self.deadline) if self.deadline else now
        lower = end - self.window
        since = min(lower, now - self.tenants_seen_within) if self.tenants_seen_within else lower
        found = latest_updates_by_tenant(
            instance, asset_key, partitions_def, after_timestamp=since.timestamp(), limit=self.limit
        )
        expected = sorted(set(tenants or ()) | (set(found.by_tenant) if self.tenants_seen_within else set()))
        states = []
        for tenant in expected:
            update = found.by_tenant.get(tenant)
            fresh = update is not None and update.timestamp >= lower.timestamp()
            expected_update = f"an update after {lower.isoformat(timespec='minutes')}"
            states.append(TenantState(tenant, expected_update, update.timestamp if update else None, fresh))
        passed = all(s.fresh for s in states)
        if self.deadline:
            next_evaluation = (end + timedelta(days=1)).timestamp()
            fresh_until = next_evaluation if passed else None
        else:
            updates = [s.last_update for s in states if s.fresh and s.last_update]
            fresh_until = min(updates) + self.window.total_seconds() if passed and updates else None
            next_evaluation = fresh_until or (now + FAILING_RECHECK).timestamp()
        return Outcome(
            asset_key,
            passed,
            _describe(passed, states, f"an update within {self.window}"),
            tuple(states),
            next_evaluation=next_evaluation,
            fresh_until=fresh_until,
            extra={
                "window_start": dg.MetadataValue.timestamp(lower.timestamp()),
                "records_read": dg.MetadataValue.int(found.records_read),
                "records_truncated": dg.MetadataValue.bool(found.truncated),
            },
        )


Rule = DayLoadedBy | UpdatedWithin


def tenants_with_source(source: str) -> ExpectedTenants:
    """Tenants that list `source` in tenants.yaml: the ones its schedule or sensor loads."""

    def expected(registry: TenantRegistry, asset_key: dg.AssetKey) -> list[str]:
        return [t.id for t in registry.with_source(source)]

    return expected


@dataclass(frozen=True)
class FreshnessTarget:
    """One asset under a rule. `expected` says which tenants must be fresh; None leaves it to the rule alone
    (`UpdatedWithin(tenants_seen_within=...)`)."""

    asset: dg.AssetsDefinition
    key: dg.AssetKey
    rule: Rule
    expected: ExpectedTenants | None

    def evaluate(self, instance: dg.DagsterInstance, registry: TenantRegistry | None, now: datetime) -> Outcome:
        tenants: list[str] | None = None
        if self.expected is not None:
            if registry is None:
                raise TenantConfigError(f"{self.key.to_user_string()}: freshness needs the tenant registry")
            tenants = list(self.expected(registry, self.key))
        if isinstance(self.rule, DayLoadedBy):
            return self.rule.evaluate(instance, self.key, tenants or [], now)
        partitions_def = self.asset.specs_by_key[self.key].partitions_def
        return self.rule.evaluate(instance, self.key, partitions_def, tenants, now)


def _due(record: "AssetCheckExecutionRecord | None", now: float) -> bool:
    """Whether the last evaluation of a check has expired (or a run planned it and never reported)."""
    if record is None:
        return True
    if record.status.value == "PLANNED":
        return now - record.create_timestamp > PLANNED_GRACE.total_seconds()
    event = record.event
    evaluation = event.asset_check_evaluation if event is not None and event.dagster_event else None
    if evaluation is None:
        return True
    next_evaluation = evaluation.metadata.get(NEXT_EVALUATION_KEY)
    if not isinstance(next_evaluation, dg.TimestampMetadataValue):
        return True
    return now >= next_evaluation.value


def due_check_keys(
    instance: dg.DagsterInstance, keys: Iterable[dg.AssetCheckKey], now: float
) -> list[dg.AssetCheckKey]:
    return [key for key in keys if _due(instance.get_latest_asset_check_evaluation_record(key), now)]


def freshness_definitions(
    source: str,
    targets: Sequence[FreshnessTarget],
    *,
    description: str,
    minimum_interval_seconds: int = 120,
) -> dg.Definitions:
    """The `freshness` checks of one source's assets and the RUNNING sensor that evaluates them when due."""
    by_key = {t.key: t for t in targets}
    specs = [
        dg.AssetCheckSpec(CHECK_NAME, asset=t.key, description=f"{description} ({_rule_text(t.rule)})") for t in targets
    ]
    check_keys = [dg.AssetCheckKey(t.key, CHECK_NAME) for t in targets]
    needs_registry = any(t.expected is not None for t in targets)

    @dg.multi_asset_check(name=f"{source}_freshness", specs=specs, can_subset=True, description=description)
    def freshness_checks(
        context: dg.AssetCheckExecutionContext, tenants: TenantsResource
    ) -> Iterable[dg.AssetCheckResult]:
        registry = tenants.registry() if needs_registry else None
        now = datetime.now(UTC)
        for check_key in sorted(context.selected_asset_check_keys, key=lambda k: k.to_user_string()):
            yield by_key[check_key.asset_key].evaluate(context.instance, registry, now).check_result()

    @dg.sensor(
        name=f"{source}_freshness",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Evaluates the `freshness` checks of {source} assets when due and records the results.",
    )
    def freshness_sensor(context: dg.SensorEvaluationContext, tenants: TenantsResource) -> dg.SensorResult:
        due = due_check_keys(context.instance, check_keys, datetime.now(UTC).timestamp())
        if not due:
            return dg.SensorResult(skip_reason=dg.SkipReason("no freshness check is due"))
        registry = tenants.registry() if needs_registry else None
        now = datetime.now(UTC)
        outcomes = [by_key[key.asset_key].evaluate(context.instance, registry, now) for key in due]
        for outcome in outcomes:
            context.log.info(f"{outcome.asset_key.to_user_string()}: {outcome.description}")
        return dg.SensorResult(asset_events=[o.evaluation() for o in outcomes])

    return dg.Definitions(asset_checks=[freshness_checks], sensors=[freshness_sensor])


def _rule_text(rule: Rule) -> str:
    if isinstance(rule, DayLoadedBy):
        return f"day D-{rule.day_lag} loaded by {rule.deadline.strftime('%H:%M')} UTC"
    ending = f" ending {rule.deadline.strftime('%H:%M')} UTC" if rule.deadline else ""
    return f"updated within {rule.window}{ending}"


def targets_for(
    assets: Iterable[dg.AssetsDefinition], rule: Rule, expected: ExpectedTenants | None
) -> list[FreshnessTarget]:
    """One target per asset key of `assets` (a multi-asset contributes each of its keys)."""
    return [FreshnessTarget(a, key, rule, expected) for a in assets for key in sorted(a.keys, key=str)]
