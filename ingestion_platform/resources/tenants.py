"""The tenant registry as a resource, so assets and sensors read tenants.yaml at run time, never at load time."""

import dagster as dg
from pydantic import Field

from ingestion_platform.tenants import TenantRegistry, load_registry


class TenantsResource(dg.ConfigurableResource):
    path: str = Field(default="tenants.yaml", description="INGESTION_TENANTS_FILE")

    def registry(self) -> TenantRegistry:
        return load_registry(self.path)
