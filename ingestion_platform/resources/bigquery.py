"""BigQuery through dagster-gcp's resource, with an endpoint switch for the emulator and per-tenant credentials."""

import json
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from dagster_gcp import BigQueryResource
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.oauth2 import service_account
from pydantic import Field

from ingestion_platform.tenants import GA4Settings


class TenantBigQueryResource(BigQueryResource):
    """dagster-gcp's BigQueryResource, able to reach the local-bigquery emulator and to act as a tenant.

    Each tenant's GA4 export usually lives in the tenant's own GCP project, readable by a service account the
    tenant granted; the registry names the env var holding that key. With `emulator_host` set (the client
    library's own BIGQUERY_EMULATOR_HOST) the client talks to the emulator with anonymous credentials.
    """

    emulator_host: str | None = Field(default=None, description="BIGQUERY_EMULATOR_HOST, e.g. http://127.0.0.1:9050")

    @contextmanager
    def get_tenant_client(self, settings: GA4Settings) -> Iterator[bigquery.Client]:
        """A client acting in the tenant's project, with jobs in its dataset's location when the registry sets one."""
        project, credentials_env, location = (
            settings.project,
            settings.credentials_env,
            settings.location or self.location,
        )
        if not self.emulator_host and not credentials_env:
            # The deployment's own identity (gcp_credentials or application default credentials).
            with self.get_client() as client:
                yield client
            return
        if self.emulator_host:
            endpoint = self.emulator_host if "://" in self.emulator_host else f"http://{self.emulator_host}"
            client = bigquery.Client(
                project=project,
                location=location,
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": endpoint},
            )
        else:
            info = json.loads(dg.EnvVar(str(credentials_env)).get_value() or "{}")
            if not info:
                raise dg.Failure(f"environment variable {credentials_env} (tenant BigQuery key) is empty or unset")
            credentials = service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
            client = bigquery.Client(project=project, location=location, credentials=credentials)
        try:
            yield client
        finally:
            client.close()
