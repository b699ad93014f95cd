"""The deployment switch: binds every resource key to its configuration from environment variables.

`local` (the default) needs nothing set: the warehouse is an embedded PostgreSQL under INGESTION_HOME. `prod`
requires WAREHOUSE_URL. Either way every endpoint can be pointed elsewhere by its environment variable, which is
how tests and the sandbox aim the real clients at local servers. Only the presence of optional variables is
looked at here; values are resolved by Dagster through `dg.EnvVar` when a run starts.
"""

import os

import dagster as dg

from ingestion_platform.paths import DEFAULT_HOME, deployment
from ingestion_platform.resources.bigquery import TenantBigQueryResource
from ingestion_platform.resources.brightdata import BrightDataResource
from ingestion_platform.resources.netsuite import NetSuiteResource
from ingestion_platform.resources.object_store import ObjectStoreResource
from ingestion_platform.resources.sftp import SFTPResource
from ingestion_platform.resources.tenants import TenantsResource
from ingestion_platform.resources.warehouse import WarehouseResource


def _optional(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def build_resources() -> dict[str, dg.ConfigurableResource]:
    if deployment() == "prod" and not os.environ.get("WAREHOUSE_URL"):
        raise ValueError("INGESTION_DEPLOYMENT=prod needs WAREHOUSE_URL (a PostgreSQL SQLAlchemy URL)")
    return {
        "warehouse": WarehouseResource(
            url=_optional("WAREHOUSE_URL"),
            home=_optional("INGESTION_HOME") or DEFAULT_HOME,
        ),
        "bigquery": TenantBigQueryResource(
            project=_optional("GOOGLE_CLOUD_PROJECT"),
            emulator_host=_optional("BIGQUERY_EMULATOR_HOST"),
        ),
        "sftp": SFTPResource(),
        # Accounts, auth and the env vars holding their secrets come from each tenant's `netsuite:` settings.
        "netsuite": NetSuiteResource(),
        # Unset OBJECT_STORE_URL: files under INGESTION_HOME/objects.
        "object_store": ObjectStoreResource(
            url=_optional("OBJECT_STORE_URL"),
            home=_optional("INGESTION_HOME") or DEFAULT_HOME,
            aws_endpoint_url=_optional("AWS_ENDPOINT_URL"),
            storage_emulator_host=_optional("STORAGE_EMULATOR_HOST"),
        ),
        # Per-tenant API keys are read at call time from the env var each tenant's settings name.
        "brightdata": BrightDataResource(api_url=_optional("BRIGHTDATA_API_URL") or "https://api.brightdata.com"),
        "tenants": TenantsResource(path=_optional("INGESTION_TENANTS_FILE") or "tenants.yaml"),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())
