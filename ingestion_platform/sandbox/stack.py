"""The local stand-ins as one unit: start them, seed them for the demo days, and describe them to the platform.

The platform learns about the stand-ins the way it learns about production: through environment variables
(BIGQUERY_EMULATOR_HOST, INGESTION_TENANTS_FILE) and a tenant registry, written here to
`INGESTION_HOME/sandbox/tenants.yaml`, so no code path knows it is talking to a sandbox.
"""

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import yaml

from ingestion_platform.defs.commerce.ingest import execute_plan, remote_state
from ingestion_platform.defs.commerce.upload import plan_upload, scan_local
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.sandbox.bigquery import BigQueryEmulator, client_for, run_bigquery_emulator
from ingestion_platform.sandbox.brightdata_api import BrightDataSandboxConfig, run_brightdata_api
from ingestion_platform.sandbox.commerce_data import GeneratedBatch, generate_commerce
from ingestion_platform.sandbox.crm_reports import locations_report, users_report
from ingestion_platform.sandbox.ga4_export import seed_ga4_export
from ingestion_platform.sandbox.netsuite_api import (
    SANDBOX_TBA_KEYS,
    NetSuiteSandbox,
    NetSuiteSandboxConfig,
    run_netsuite_api,
)
from ingestion_platform.sandbox.recsys_data import generate_recsys
from ingestion_platform.sandbox.sftp_server import SFTPServerInfo, run_sftp_server

SANDBOX_PROJECT = "sandbox-analytics"
SANDBOX_TENANTS = ("acme", "globex")
DEMO_DAYS = 3
EVENTS_PER_DAY = 600
SFTP_PASSWORD_ENV = "SANDBOX_SFTP_PASSWORD"
# A sandbox-only secret for a server bound to 127.0.0.1; production passwords come from the deployment's env.
SFTP_PASSWORD = "sandbox"
BRIGHTDATA_KEY_ENV = "SANDBOX_BRIGHTDATA_API_KEY"
BRIGHTDATA_KEY = "sandbox-brightdata-key"  # a sandbox-only key for a server bound to 127.0.0.1
# One page per demo tenant, with the labels its posts are filed under.
BRIGHTDATA_TARGETS = {
    "acme": ("nutifood", "growplus-nutifood", "sua-bot-tre-em", "https://www.facebook.com/GrowPLUScuaNutiFood/"),
    "globex": ("vinamilk", "optimum-gold", "sua-bot-tre-em", "https://www.facebook.com/VinamilkOptimumGold/"),
}
# Per tenant: big enough for features and samples to be worth a look, small enough to validate in seconds.
RECSYS_DEMO_SIZES = {"users": 2_000, "items": 500, "interactions": 20_000}
# The sandbox NetSuite accounts' TBA credentials, by the env vars the tenants file names (sandbox-only values).
NETSUITE_ENV = {name: f"SANDBOX_NETSUITE_{name.upper()}" for name in SANDBOX_TBA_KEYS}


@dataclass(frozen=True)
class Sandbox:
    home: Path
    bigquery: BigQueryEmulator
    sftp: SFTPServerInfo
    tenants_file: Path
    days: tuple[date, ...]
    brightdata_url: str | None = None
    netsuite: Mapping[str, NetSuiteSandbox] = field(default_factory=dict)  # tenant -> its sandbox account

    def environment(self) -> dict[str, str]:
        """What a Dagster process needs in its environment to use these stand-ins."""
        return {
            "BIGQUERY_EMULATOR_HOST": self.bigquery.rest_url,
            "INGESTION_TENANTS_FILE": str(self.tenants_file),
            "INGESTION_HOME": str(self.home),
            SFTP_PASSWORD_ENV: SFTP_PASSWORD,
            **(
                {"BRIGHTDATA_API_URL": self.brightdata_url, BRIGHTDATA_KEY_ENV: BRIGHTDATA_KEY}
                if self.brightdata_url
                else {}
            ),
            **({env: SANDBOX_TBA_KEYS[name] for name, env in NETSUITE_ENV.items()} if self.netsuite else {}),
        }


def demo_days(today: date | None = None, n: int = DEMO_DAYS) -> tuple[date, ...]:
    """The last `n` complete days: what the daily schedule would load this morning."""
    today = today or datetime.now(UTC).date()
    return tuple(today - timedelta(days=i) for i in range(n, 0, -1))


def ga4_dataset(tenant: str) -> str:
    return f"analytics_{tenant}"


def netsuite_settings(sandbox: NetSuiteSandbox, start: date) -> dict[str, object]:
    """A tenant's `netsuite:` block for a sandbox account: TBA, secrets by env var name, the sandbox's URL."""
    return {
        "account_id": sandbox.account_id,
        "auth": "tba",
        "start_date": start.isoformat(),
        "base_url": sandbox.base_url,
        **{f"{name}_env": env for name, env in NETSUITE_ENV.items()},
    }


def write_tenants_file(
    path: Path, sftp: SFTPServerInfo, netsuite: Mapping[str, dict[str, object]] | None = None
) -> None:
    registry = {
        "tenants": {
            tenant: {
                "name": tenant.title(),
                **({"netsuite": netsuite[tenant]} if netsuite and tenant in netsuite else {}),
                "ga4": {"project": SANDBOX_PROJECT, "dataset": ga4_dataset(tenant)},
                "sftp": {
                    "host": sftp.host,
                    "port": sftp.port,
                    "username": tenant,
                    "password_env": SFTP_PASSWORD_ENV,
                    "host_keys": [sftp.host_key_line],
                    "remote_dir": f"/{tenant}/reports",
                },
                "brightdata": {"api_key_env": BRIGHTDATA_KEY_ENV, "targets": [_brightdata_target(tenant)]},
            }
            for tenant in SANDBOX_TENANTS
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by the sandbox; do not edit.\n" + yaml.safe_dump(registry, sort_keys=False))


def _brightdata_target(tenant: str) -> dict[str, object]:
    competitor, brand, category, url = BRIGHTDATA_TARGETS[tenant]
    return {"platform": "facebook", "competitor": competitor, "brand": brand, "category": category, "url": url}


def seed(emulator: BigQueryEmulator, days: tuple[date, ...]) -> dict[str, int]:
    """Daily tables for `days` and today's intraday table for every sandbox tenant (idempotent)."""
    client = client_for(emulator.rest_url, SANDBOX_PROJECT)
    today = days[-1] + timedelta(days=1)
    counts: dict[str, int] = {}
    try:
        for tenant in SANDBOX_TENANTS:
            loaded = seed_ga4_export(
                client,
                SANDBOX_PROJECT,
                ga4_dataset(tenant),
                days,
                seed=tenant,
                n_events=EVENTS_PER_DAY,
                intraday_days=[today],
            )
            counts.update({f"{tenant}.{table}": n for table, n in loaded.items()})
    finally:
        client.close()
    return counts


def write_reports(root: Path, days: tuple[date, ...]) -> None:
    """Each tenant's daily users and locations files, as its CRM export would drop them (idempotent)."""
    for tenant in SANDBOX_TENANTS:
        folder = root / tenant / "reports"
        folder.mkdir(parents=True, exist_ok=True)
        for day in days:
            (folder / f"users_{day:%Y%m%d}.csv").write_bytes(users_report(day, seed=tenant))
            (folder / f"locations_{day:%Y%m%d}.csv").write_bytes(locations_report(day, seed=tenant))


def land_commerce_batches(store: ObjectStoreResource, root: Path) -> list[GeneratedBatch]:
    """Each demo tenant's commerce export as `ingest commerce` would land it: b0001 with a few orphans whose parents
    arrive in b0002 (idempotent: content already landed is skipped)."""
    batches = generate_commerce(SANDBOX_TENANTS, 200, 50, 400, root, seed="demo", orphans=True)
    for tenant in SANDBOX_TENANTS:
        execute_plan(store, plan_upload(tenant, scan_local(root, tenant), remote_state(store, tenant)))
    return batches


@contextlib.contextmanager
def run_sandbox(
    home: Path,
    *,
    bigquery_port: int = 0,
    sftp_port: int = 0,
    days: tuple[date, ...] | None = None,
    brightdata_port: int = 0,
    bigquery: BigQueryEmulator | None = None,
) -> Iterator[Sandbox]:
    """Start every stand-in under `home/sandbox`, seed it, and stop it all when the block exits.

    `bigquery`: an emulator this process already serves (the emulator keeps module-level state, so a process can
    serve only one); the sandbox seeds its own project into it instead of starting another."""
    home = home.resolve()
    root = home / "sandbox"
    (root / "bigquery").mkdir(parents=True, exist_ok=True)
    days = days or demo_days()
    users = dict.fromkeys(SANDBOX_TENANTS, SFTP_PASSWORD)
    with (
        (
            contextlib.nullcontext(bigquery)
            if bigquery is not None
            else run_bigquery_emulator(root / "bigquery", port=bigquery_port)
        ) as emulator,
        run_sftp_server(root / "sftp", users, root / "sftp_host_key", port=sftp_port) as sftp,
        run_brightdata_api(BrightDataSandboxConfig(api_key=BRIGHTDATA_KEY, seed="demo"), port=brightdata_port) as bd,
        contextlib.ExitStack() as stack,
    ):
        # One NetSuite account per tenant, its records modified over the demo days (seeded by tenant).
        netsuite = {
            tenant: stack.enter_context(
                run_netsuite_api(NetSuiteSandboxConfig(seed=tenant, start=days[0], days=len(days)))
            )
            for tenant in SANDBOX_TENANTS
        }
        seed(emulator, days)
        write_reports(root / "sftp", days)
        tenants_file = root / "tenants.yaml"
        write_tenants_file(
            tenants_file, sftp, {tenant: netsuite_settings(ns, days[0]) for tenant, ns in netsuite.items()}
        )
        (root / "known_hosts").write_text(sftp.known_hosts_line + "\n")
        yield Sandbox(
            home=home,
            bigquery=emulator,
            sftp=sftp,
            tenants_file=tenants_file,
            days=days,
            brightdata_url=bd.url,
            netsuite=netsuite,
        )


def land_recsys_uploads(store: ObjectStoreResource, work: Path) -> list[str]:
    """Each sandbox tenant's generated catalog and interactions, dropped into its landing zone with a `.done`
    marker as an uploader would; the same day's data is byte-identical, so a second demo loads nothing twice."""
    keys = []
    for seed, tenant in enumerate(SANDBOX_TENANTS):
        made = generate_recsys(
            RECSYS_DEMO_SIZES["users"],
            RECSYS_DEMO_SIZES["items"],
            RECSYS_DEMO_SIZES["interactions"],
            work / tenant,
            seed=seed,
        )
        for data_type, path in (("items", made.items_path), ("interactions", made.interactions_path)):
            key = f"landing/{tenant}/recsys/{data_type}/{path.name}"
            store.put_file(key, path, content_type="text/csv")
            store.put(f"{key}.done", b"")
            keys.append(key)
    return keys


def apply_environment(sandbox: Sandbox) -> None:
    """Point this process (and the Dagster processes it starts) at the sandbox, keeping explicit user settings."""
    for name, value in sandbox.environment().items():
        if name == "INGESTION_TENANTS_FILE" and os.environ.get(name):
            continue
        os.environ[name] = value
