"""The one skeleton of a tenant-partitioned asset: a source supplies how one tenant's days are fetched, parsed and
loaded; everything around that is here, written once.

Around the source's body the skeleton owns: the decorator arguments every source repeats (group and key prefix,
owners, kinds, pool, retry policy, table metadata), the per-tenant loop (`retry.per_tenant`, so one tenant's
failure neither hides nor stops the others'), the timer, the accumulation of load results, counters, lists and
previews across tenants, and the checks evaluated in the asset's own step (no extra subprocess per check).

    @tenant_partitioned_asset(key=["ga4", "purchase"], table=..., partitions_def=..., resources=["bigquery"], ...)
    def purchase(run: TenantRun, tenant: Tenant, days: list[date]) -> None:
        batches = fetch(run.resource("bigquery", TenantBigQueryResource), tenant.ga4(), days)
        run.loaded(run.warehouse.load(table, batches, mode="replace", slice_=...))
        run.check("no_duplicate_events", passed=..., duplicates=...)
"""

import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import dagster as dg

from ingestion_platform.metadata import definition_metadata, load_metadata, preview_md
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource
from ingestion_platform.retry import STEP_RETRY, per_tenant
from ingestion_platform.tenants import Tenant, tenant_days
from ingestion_platform.warehouse import LoadResult, TableSpec

OWNERS = ("team:data-platform",)


@dataclass(frozen=True)
class Check:
    """An asset check evaluated in the asset's step, from what the body reports per tenant via `TenantRun.check`."""

    name: str
    description: str
    blocking: bool = False
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR


class TenantRun:
    """What the body of a tenant-partitioned asset sees: resources, the log, and where to report what it loaded.

    Reports accumulate over every tenant of the run (a backfill run may hold several) into one materialization.
    """

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        resources: Mapping[str, dg.ConfigurableResource],
        checks: Sequence[Check],
    ) -> None:
        self.context = context
        self._resources = resources
        self.tenant_id = ""
        self._loads: list[LoadResult] = []
        self._counts: dict[str, int | float] = {}
        self._lists: dict[str, list[Any]] = {}
        self._previews: dict[str, list[dict[str, Any]]] = {}
        self._checks = {c.name: c for c in checks}
        self._check_results: dict[str, dict[str, dict[str, Any]]] = {c.name: {} for c in checks}

    @property
    def log(self) -> dg.DagsterLogManager:
        return self.context.log

    @property
    def warehouse(self) -> WarehouseResource:
        return self.resource("warehouse", WarehouseResource)

    def resource[R](self, name: str, cls: type[R]) -> R:
        value = self._resources[name]
        if not isinstance(value, cls):
            raise TypeError(f"resource {name!r} is a {type(value).__name__}, expected {cls.__name__}")
        return value

    def loaded(self, *results: LoadResult) -> None:
        """Loads into the asset's own table: their counts become the row count and load metadata."""
        self._loads.extend(results)

    def count(self, **amounts: int | float) -> None:
        """Counters summed over tenants, each a metadata entry (`bytes_scanned=...`, `rows_rejected=...`)."""
        for name, amount in amounts.items():
            self._counts[name] = self._counts.get(name, 0) + amount

    def collect(self, name: str, items: Iterable[Any], *, unique: bool = False) -> None:
        """A JSON list entry extended over tenants (`source_tables`, `files`); `unique` keeps it a sorted set."""
        merged = self._lists.setdefault(name, [])
        merged.extend(items)
        if unique:
            self._lists[name] = sorted(set(merged))

    def preview(self, rows: Sequence[dict[str, Any]], name: str = "preview") -> None:
        """The first non-empty rows reported under `name` become a markdown preview."""
        if not self._previews.get(name):
            self._previews[name] = list(rows[:5])

    def check(self, name: str, *, passed: bool, **metadata: Any) -> None:
        """This tenant's outcome of a declared check; the check passes when every tenant's does."""
        if name not in self._checks:
            raise KeyError(f"check {name!r} is not declared on {self.context.asset_key.to_user_string()}")
        self._check_results[name][self.tenant_id] = {"passed": passed, **metadata}

    def result(self, seconds: float) -> dg.MaterializeResult:
        metadata: dict[str, Any] = {**load_metadata(self._loads)} if self._loads else {}
        for name, amount in self._counts.items():
            metadata[name] = dg.MetadataValue.int(amount) if isinstance(amount, int) else dg.MetadataValue.float(amount)
        metadata.update({name: dg.MetadataValue.json(items) for name, items in self._lists.items()})
        metadata["duration_seconds"] = dg.MetadataValue.float(round(seconds, 3))
        metadata.update({name: preview_md(rows) for name, rows in self._previews.items()})
        return dg.MaterializeResult(metadata=metadata, check_results=self._evaluated_checks())

    def _evaluated_checks(self) -> list[dg.AssetCheckResult]:
        results = []
        for name, by_tenant in self._check_results.items():
            if not by_tenant:
                raise RuntimeError(f"check {name!r} was declared but no tenant reported it")
            results.append(
                dg.AssetCheckResult(
                    check_name=name,
                    passed=all(outcome["passed"] for outcome in by_tenant.values()),
                    severity=self._checks[name].severity,
                    metadata={"by_tenant": dg.MetadataValue.json(by_tenant)},
                )
            )
        return results


class TenantBody(Protocol):
    """Fetch, parse and load one tenant's days of the run, reporting through `run`."""

    def __call__(self, run: TenantRun, tenant: Tenant, days: list[date]) -> None: ...


def tenant_partitioned_asset(
    *,
    key: Sequence[str],
    description: str,
    table: TableSpec,
    partitions_def: dg.PartitionsDefinition,
    kinds: set[str],
    pool: str,
    resources: Mapping[str, type[dg.ConfigurableResource]] | None = None,
    checks: Sequence[Check] = (),
    backfill_policy: dg.BackfillPolicy | None = None,
    automation_condition: dg.AutomationCondition | None = None,
    tags: Mapping[str, str] | None = None,
) -> Callable[[TenantBody], dg.AssetsDefinition]:
    """Make `body` a `{date}|{tenant}`-partitioned asset: group and `source` tag from the key's prefix, the table's
    schema as definition metadata, the shared step retry policy, and one materialization per run summing every
    tenant's reports. `resources` names what the body reads through `run.resource` beyond warehouse and tenants,
    with its class: Dagster injects resources by the asset function's annotated parameters, so the skeleton
    declares one parameter per resource."""
    needed: dict[str, type[dg.ConfigurableResource]] = {
        "warehouse": WarehouseResource,
        "tenants": TenantsResource,
        **(resources or {}),
    }
    asset_key = dg.AssetKey(list(key))
    source = asset_key.path[0]

    def decorate(body: TenantBody) -> dg.AssetsDefinition:
        def _asset(context: dg.AssetExecutionContext, **injected: dg.ConfigurableResource) -> dg.MaterializeResult:
            started = time.perf_counter()
            run = TenantRun(context, injected, checks)
            tenants = run.resource("tenants", TenantsResource).registry()

            def load_tenant(tenant_id: str, days: list[str]) -> None:
                run.tenant_id = tenant_id
                body(run, tenants.get(tenant_id), [date.fromisoformat(d) for d in days])

            per_tenant(tenant_days(context.partition_keys), load_tenant, context.log)
            return run.result(time.perf_counter() - started)

        parameters = [
            inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dg.AssetExecutionContext)
        ]
        parameters += [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=cls) for name, cls in needed.items()
        ]
        _asset.__signature__ = inspect.Signature(parameters, return_annotation=dg.MaterializeResult)  # type: ignore[attr-defined]
        return dg.asset(
            key=asset_key,
            description=description,
            group_name=source,
            partitions_def=partitions_def,
            backfill_policy=backfill_policy,
            automation_condition=automation_condition,
            retry_policy=STEP_RETRY,
            pool=pool,
            kinds=kinds,
            owners=list(OWNERS),
            tags={"source": source, **(tags or {})},
            metadata=definition_metadata(table),
            check_specs=[
                dg.AssetCheckSpec(
                    c.name,
                    asset=asset_key,
                    description=c.description,
                    blocking=c.blocking,
                    partitions_def=partitions_def,
                )
                for c in checks
            ],
        )(_asset)

    return decorate
