"""The tenant registry: which tenants exist and each one's per-source settings (tenants.yaml).

One registry feeds everything tenant-shaped: the `tenant` dynamic partition dimension, and the settings the
GA4 and SFTP assets read for the tenant of the partition they run. Secrets are never written in the file: a
setting ending in `_env` names the environment variable that holds the secret.
"""

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from ingestion_platform.resources.netsuite_auth import realm_for, rest_base_url

TENANT_DIMENSION = "tenant"
TENANT_PARTITIONS = dg.DynamicPartitionsDefinition(name=TENANT_DIMENSION)
# Dagster's tags for a run over a range of partitions (a single-run backfill, or our schedule's lookback).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
# Every scheduled and sensor-requested run names its source, so the run queue can limit runs per source
# (tag_concurrency_limits: deploy/helm/values.yaml); asset tags alone never reach a run's tags.
SOURCE_TAG = "source"
# The first day of the daily partitions, YYYY-MM-DD, read when the definitions load.
PARTITIONS_START_ENV = "INGESTION_PARTITIONS_START"
DEFAULT_PARTITION_MONTHS = 3

# Tenant ids become partition keys (joined with "|" in multi-partition keys) and SQL values, so keep them plain.
_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class TenantConfigError(ValueError):
    """tenants.yaml is missing, malformed, or lacks a setting a source needs."""


@dataclass(frozen=True)
class GA4Settings:
    project: str
    dataset: str
    location: str | None = None
    credentials_env: str | None = None


@dataclass(frozen=True)
class SFTPSettings:
    """Where a tenant's daily report files are and how to trust the host.

    host_keys pins the server: each entry is an OpenSSH public key line (`ssh-ed25519 AAAA...`) or a
    `SHA256:...` fingerprint; several may be listed during a key rotation. Unknown keys are always rejected.
    """

    host: str
    username: str
    host_keys: tuple[str, ...]
    port: int = 22
    password_env: str | None = None
    private_key_env: str | None = None
    remote_dir: str = "/"
    users_pattern: str = "users_{YYYYMMDD}.csv"
    locations_pattern: str = "locations_{YYYYMMDD}.csv"
    completion: str = "stable"  # "stable": size and mtime unchanged since the previous sensor tick; "marker"
    marker_suffix: str = ".done"
    encoding: str = "utf-8-sig"

    def __post_init__(self) -> None:
        # One pin written as a plain YAML string must stay one pin, not become a tuple of characters.
        pins = (self.host_keys,) if isinstance(self.host_keys, str) else tuple(self.host_keys)
        object.__setattr__(self, "host_keys", pins)
        if not self.host_keys:
            raise TypeError("host_keys must pin at least one host key or SHA256 fingerprint")
        if self.completion not in {"stable", "marker"}:
            raise TypeError(f"completion must be 'stable' or 'marker', not {self.completion!r}")
        if not (self.password_env or self.private_key_env):
            raise TypeError("set password_env or private_key_env (the name of the env var holding the secret)")


# BrightData's "Facebook - Posts by profile URL" scraper: the dataset the replaced crawl service triggered.
BRIGHTDATA_FACEBOOK_POSTS_DATASET = "gd_lkaxegm826bjpoo9m5"
_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class CrawlTarget:
    """One page to crawl: the BrightData input (url, num_of_posts) plus the labels its posts are filed under.

    platform/competitor/brand/category are not sent to BrightData; they travel with the crawl into
    `social.crawl_metadata` and onto every post, as the replaced service's trigger request carried them.
    """

    platform: str
    competitor: str
    brand: str
    category: str
    url: str
    num_of_posts: int = 10
    include_profile_data: bool = True
    dataset_id: str | None = None  # overrides the tenant's default dataset for this target

    def __post_init__(self) -> None:
        for name in ("platform", "competitor", "brand", "category", "url"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise TypeError(f"crawl target {name} must be a non-empty string, got {value!r}")
        if not self.url.startswith(("https://", "http://")):
            raise TypeError(f"crawl target url must be an http(s) URL, got {self.url!r}")
        if isinstance(self.num_of_posts, bool) or not isinstance(self.num_of_posts, int) or self.num_of_posts < 1:
            raise TypeError(f"crawl target num_of_posts must be a positive integer, got {self.num_of_posts!r}")
        if not isinstance(self.include_profile_data, bool):
            raise TypeError(
                f"crawl target include_profile_data must be true or false, got {self.include_profile_data!r}"
            )


@dataclass(frozen=True)
class BrightDataSettings:
    """A tenant's BrightData account and the pages the daily schedule crawls for it.

    The key itself is never in tenants.yaml: `api_key_env` names the environment variable holding it, so two
    tenants can use two BrightData accounts from one deployment.
    """

    api_key_env: str
    dataset_id: str = BRIGHTDATA_FACEBOOK_POSTS_DATASET
    targets: tuple[CrawlTarget, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.api_key_env, str) or not _ENV_VAR_NAME.fullmatch(self.api_key_env):
            raise TypeError(f"api_key_env must name an environment variable, got {self.api_key_env!r}")
        if not isinstance(self.dataset_id, str) or not self.dataset_id.strip():
            raise TypeError(f"dataset_id must be a non-empty string, got {self.dataset_id!r}")
        if self.targets is None:
            raw_targets: list[Any] = []
        elif isinstance(self.targets, (list, tuple)):
            raw_targets = list(self.targets)
        else:
            raise TypeError(f"targets must be a list of crawl targets, got {type(self.targets).__name__}")
        targets = []
        for index, target in enumerate(raw_targets):
            if isinstance(target, CrawlTarget):
                targets.append(target)
            elif isinstance(target, dict):
                try:
                    targets.append(CrawlTarget(**target))
                except TypeError as exc:
                    raise TypeError(f"targets[{index}]: {exc}") from exc
            else:
                raise TypeError(f"targets[{index}] must be a mapping, got {target!r}")
        object.__setattr__(self, "targets", tuple(targets))

    def dataset_for(self, target: CrawlTarget) -> str:
        return target.dataset_id or self.dataset_id


NETSUITE_DEFAULT_TABLES = (
    "customer",
    "vendor",
    "employee",
    "item",
    "transaction",
    "transactionline",
    "account",
    "subsidiary",
)
_NETSUITE_ACCOUNT = re.compile(r"^[0-9A-Za-z]+(?:[_-][0-9A-Za-z]+)?$")
_NETSUITE_TABLE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class NetSuiteSettings:
    """A tenant's NetSuite account and what to extract from it.

    `auth` is `tba` (OAuth 1.0a token-based authentication: consumer key/secret and token id/secret) or `oauth2`
    (client credentials with a certificate-signed JWT: client id, certificate id and the private key). Every
    `*_env` names the environment variable that holds the value; the file never holds a secret. NetSuite accepts no
    new TBA integrations from release 2027.1, so new tenants should use `oauth2`.
    """

    account_id: str
    auth: str
    start_date: str
    tables: tuple[str, ...] = NETSUITE_DEFAULT_TABLES
    consumer_key_env: str | None = None
    consumer_secret_env: str | None = None
    token_id_env: str | None = None
    token_secret_env: str | None = None
    client_id_env: str | None = None
    certificate_id_env: str | None = None
    private_key_env: str | None = None
    jwt_algorithm: str = "PS256"
    base_url: str | None = None  # the sandbox, or a proxy; default: derived from account_id

    def __post_init__(self) -> None:
        account = str(self.account_id)
        object.__setattr__(self, "account_id", account)
        if not _NETSUITE_ACCOUNT.fullmatch(account):
            raise TypeError(f"account_id {account!r} is not a NetSuite account id (like 1234567 or 1234567_SB1)")
        tables = (self.tables,) if isinstance(self.tables, str) else tuple(self.tables)
        object.__setattr__(self, "tables", tables)
        bad = [t for t in tables if not isinstance(t, str) or not _NETSUITE_TABLE.fullmatch(t)]
        if bad or not tables:
            raise TypeError(f"tables must be a non-empty list of lower-case SuiteQL table names, not {bad or tables}")
        try:
            date.fromisoformat(str(self.start_date))
        except ValueError:
            raise TypeError(f"start_date {self.start_date!r} is not a YYYY-MM-DD date") from None
        object.__setattr__(self, "start_date", str(self.start_date))
        required = {
            "tba": ("consumer_key_env", "consumer_secret_env", "token_id_env", "token_secret_env"),
            "oauth2": ("client_id_env", "certificate_id_env", "private_key_env"),
        }
        if self.auth not in required:
            raise TypeError(f"auth must be 'tba' or 'oauth2', not {self.auth!r}")
        missing = [name for name in required[self.auth] if not getattr(self, name)]
        if missing:
            raise TypeError(f"auth {self.auth!r} needs {', '.join(missing)} (names of the env vars holding secrets)")

    @property
    def realm(self) -> str:
        """The OAuth realm: upper case with `_` (`1234567_SB1`)."""
        return realm_for(self.account_id)

    @property
    def rest_base_url(self) -> str:
        """`https://<account id lower-cased, _ as ->.suitetalk.api.netsuite.com`, unless base_url overrides it."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return rest_base_url(self.account_id)


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ga4(self) -> GA4Settings:
        return _settings(self, "ga4", GA4Settings)

    def sftp(self) -> SFTPSettings:
        return _settings(self, "sftp", SFTPSettings)

    def brightdata(self) -> BrightDataSettings:
        return _settings(self, "brightdata", BrightDataSettings)

    def netsuite(self) -> NetSuiteSettings:
        return _settings(self, "netsuite", NetSuiteSettings)


def _settings[S](tenant: Tenant, source: str, cls: type[S]) -> S:
    raw = tenant.sources.get(source)
    if raw is None:
        raise TenantConfigError(f"tenant {tenant.id!r} has no {source!r} settings in the tenant registry")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise TenantConfigError(f"tenant {tenant.id!r}: invalid {source!r} settings: {exc}") from exc


@dataclass(frozen=True)
class TenantRegistry:
    tenants: dict[str, Tenant]

    @property
    def ids(self) -> list[str]:
        return sorted(self.tenants)

    def get(self, tenant_id: str) -> Tenant:
        try:
            return self.tenants[tenant_id]
        except KeyError:
            raise TenantConfigError(
                f"tenant {tenant_id!r} is not in the tenant registry (known: {', '.join(self.ids) or 'none'})"
            ) from None

    def with_source(self, source: str) -> list[Tenant]:
        return [self.tenants[t] for t in self.ids if source in self.tenants[t].sources]


def parse_registry(document: Any) -> TenantRegistry:
    if not isinstance(document, dict) or not isinstance(document.get("tenants"), dict):
        raise TenantConfigError(
            "the tenant registry must be a mapping with a 'tenants' mapping of tenant id -> settings"
        )
    tenants: dict[str, Tenant] = {}
    for tenant_id, body in document["tenants"].items():
        if not isinstance(tenant_id, str) or not _TENANT_ID.fullmatch(tenant_id):
            raise TenantConfigError(f"invalid tenant id {tenant_id!r}: use lower-case letters, digits, '-' and '_'")
        body = body or {}
        sources = {k: v for k, v in body.items() if k != "name"}
        for source, settings in sources.items():
            if not isinstance(settings, dict):
                raise TenantConfigError(f"tenant {tenant_id!r}: settings of {source!r} must be a mapping")
        tenants[tenant_id] = Tenant(id=tenant_id, name=body.get("name", tenant_id), sources=sources)
    return TenantRegistry(tenants)


def load_registry(path: str | Path) -> TenantRegistry:
    path = Path(path)
    if not path.is_file():
        raise TenantConfigError(f"tenant registry {path.resolve()} does not exist (set INGESTION_TENANTS_FILE)")
    return parse_registry(yaml.safe_load(path.read_text(encoding="utf-8")))


def sync_tenant_partitions(instance: dg.DagsterInstance, registry: TenantRegistry) -> tuple[list[str], list[str]]:
    """Make the `tenant` partition set equal to the registry; return (added, removed)."""
    current = set(instance.get_dynamic_partitions(TENANT_DIMENSION))
    added, removed = tenant_partition_changes(current, registry)
    if added:
        instance.add_dynamic_partitions(TENANT_DIMENSION, added)
    for key in removed:
        instance.delete_dynamic_partition(TENANT_DIMENSION, key)
    return added, removed


def tenant_partition_changes(current: set[str], registry: TenantRegistry) -> tuple[list[str], list[str]]:
    wanted = set(registry.ids)
    return sorted(wanted - current), sorted(current - wanted)


def partitions_start(today: date | None = None) -> str:
    """INGESTION_PARTITIONS_START, or by default the first of the month three months back.

    The UI shows every partition from the start date; years of empty days (thousands of partitions at 0%) hide
    the days that matter. The default moves forward once a month; a deployment that backfills further back sets
    the variable to its first day, and materializations before the start stay in the history.
    """
    value = os.environ.get(PARTITIONS_START_ENV)
    if value:
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError(f"{PARTITIONS_START_ENV} must be a date as YYYY-MM-DD, not {value!r}") from None
    today = today or datetime.now(UTC).date()
    month = today.year * 12 + today.month - 1 - DEFAULT_PARTITION_MONTHS
    return date(month // 12, month % 12 + 1, 1).isoformat()


def daily_by_tenant(start_date: str | None = None, end_offset: int = 0) -> dg.MultiPartitionsDefinition:
    """Day x tenant partitions; keys read `{date}|{tenant}` because Dagster orders dimensions by name.

    `start_date` defaults to `partitions_start()`. `end_offset=1` includes today, for sources whose files for a
    day arrive during that day.
    """
    return dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date=start_date or partitions_start(), end_offset=end_offset),
            TENANT_DIMENSION: TENANT_PARTITIONS,
        }
    )


def tenant_days(partition_keys: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """Group a run's `{date}|{tenant}` keys by tenant: a backfill run may hold a date range, or several tenants."""
    grouped: dict[str, list[str]] = {}
    for key in partition_keys:
        day, tenant = key.split("|")
        grouped.setdefault(tenant, []).append(day)
    return {tenant: sorted(days) for tenant, days in sorted(grouped.items())}
