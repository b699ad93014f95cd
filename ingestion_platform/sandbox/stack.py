"""The local stand-ins as one unit: start them, seed them for the demo days, and describe them to the platform.

The platform learns about the stand-ins the way it learns about production: through environment variables
(BIGQUERY_EMULATOR_HOST, INGESTION_TENANTS_FILE) and a tenant registry, written here to
`INGESTION_HOME/sandbox/tenants.yaml`, so no code path knows it is talking to a sandbox.
"""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import yaml

from ingestion_platform.sandbox.bigquery import BigQueryEmulator, client_for, run_bigquery_emulator
from ingestion_platform.sandbox.ga4_export import seed_ga4_export

SANDBOX_PROJECT = "sandbox-analytics"
SANDBOX_TENANTS = ("acme", "globex")
DEMO_DAYS = 3
EVENTS_PER_DAY = 600


@dataclass(frozen=True)
class Sandbox:
    home: Path
    bigquery: BigQueryEmulator
    tenants_file: Path
    days: tuple[date, ...]

    def environment(self) -> dict[str, str]:
        """What a Dagster process needs in its environment to use these stand-ins."""
        return {
            "BIGQUERY_EMULATOR_HOST": self.bigquery.rest_url,
            "INGESTION_TENANTS_FILE": str(self.tenants_file),
            "INGESTION_HOME": str(self.home),
        }


def demo_days(today: date | None = None, n: int = DEMO_DAYS) -> tuple[date, ...]:
    """The last `n` complete days: what the daily schedule would load this morning."""
    today = today or datetime.now(UTC).date()
    return tuple(today - timedelta(days=i) for i in range(n, 0, -1))


def ga4_dataset(tenant: str) -> str:
    return f"analytics_{tenant}"


def write_tenants_file(path: Path) -> None:
    registry = {
        "tenants": {
            tenant: {"name": tenant.title(), "ga4": {"project": SANDBOX_PROJECT, "dataset": ga4_dataset(tenant)}}
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


@contextlib.contextmanager
def run_sandbox(home: Path, *, bigquery_port: int = 0, days: tuple[date, ...] | None = None) -> Iterator[Sandbox]:
    """Start every stand-in under `home/sandbox`, seed it, and stop it all when the block exits."""
    home = home.resolve()
    root = home / "sandbox"
    (root / "bigquery").mkdir(parents=True, exist_ok=True)
    days = days or demo_days()
    with run_bigquery_emulator(root / "bigquery", port=bigquery_port) as emulator:
        seed(emulator, days)
        tenants_file = root / "tenants.yaml"
        write_tenants_file(tenants_file)
        yield Sandbox(home=home, bigquery=emulator, tenants_file=tenants_file, days=days)


def apply_environment(sandbox: Sandbox) -> None:
    """Point this process (and the Dagster processes it starts) at the sandbox, keeping explicit user settings."""
    for name, value in sandbox.environment().items():
        if name == "INGESTION_TENANTS_FILE" and os.environ.get(name):
            continue
        os.environ[name] = value
