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

from ingestion_platform.sandbox.bigquery import BigQueryEmulator, client_for, run_bigquery_emulator
from ingestion_platform.sandbox.crm_reports import locations_report, users_report
from ingestion_platform.sandbox.ga4_export import seed_ga4_export
from ingestion_platform.sandbox.netsuite_api import (
    SANDBOX_TBA_KEYS,
    NetSuiteSandbox,
    NetSuiteSandboxConfig,
    run_netsuite_api,
)
from ingestion_platform.sandbox.sftp_server import SFTPServerInfo, run_sftp_server

SANDBOX_PROJECT = "sandbox-analytics"
SANDBOX_TENANTS = ("acme", "globex")
DEMO_DAYS = 3
EVENTS_PER_DAY = 600
SFTP_PASSWORD_ENV = "SANDBOX_SFTP_PASSWORD"
# A sandbox-only secret for a server bound to 127.0.0.1; production passwords come from the deployment's env.
SFTP_PASSWORD = "sandbox"
# The sandbox NetSuite accounts' TBA credentials, by the env vars the tenants file names (sandbox-only values).
NETSUITE_ENV = {name: f"SANDBOX_NETSUITE_{name.upper()}" for name in SANDBOX_TBA_KEYS}


@dataclass(frozen=True)
class Sandbox:
    home: Path
    bigquery: BigQueryEmulator
    sftp: SFTPServerInfo
    tenants_file: Path
    days: tuple[date, ...]
    netsuite: Mapping[str, NetSuiteSandbox] = field(default_factory=dict)  # tenant -> its sandbox account

    def environment(self) -> dict[str, str]:
        """What a Dagster process needs in its environment to use these stand-ins."""
        return {
            "BIGQUERY_EMULATOR_HOST": self.bigquery.rest_url,
            "INGESTION_TENANTS_FILE": str(self.tenants_file),
            "INGESTION_HOME": str(self.home),
            SFTP_PASSWORD_ENV: SFTP_PASSWORD,
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
            }
            for tenant in SANDBOX_TENANTS
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by the sandbox; do not edit.\n" + yaml.safe_dump(registry, sort_keys=False))


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


@contextlib.contextmanager
def run_sandbox(
    home: Path, *, bigquery_port: int = 0, sftp_port: int = 0, days: tuple[date, ...] | None = None
) -> Iterator[Sandbox]:
    """Start every stand-in under `home/sandbox`, seed it, and stop it all when the block exits."""
    home = home.resolve()
    root = home / "sandbox"
    (root / "bigquery").mkdir(parents=True, exist_ok=True)
    days = days or demo_days()
    users = dict.fromkeys(SANDBOX_TENANTS, SFTP_PASSWORD)
    with (
        run_bigquery_emulator(root / "bigquery", port=bigquery_port) as emulator,
        run_sftp_server(root / "sftp", users, root / "sftp_host_key", port=sftp_port) as sftp,
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
        yield Sandbox(home=home, bigquery=emulator, sftp=sftp, tenants_file=tenants_file, days=days, netsuite=netsuite)


def apply_environment(sandbox: Sandbox) -> None:
    """Point this process (and the Dagster processes it starts) at the sandbox, keeping explicit user settings."""
    for name, value in sandbox.environment().items():
        if name == "INGESTION_TENANTS_FILE" and os.environ.get(name):
            continue
        os.environ[name] = value
