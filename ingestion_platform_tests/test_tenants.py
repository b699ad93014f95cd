"""The tenant registry: parsing, clear errors, and partition keys grouped per tenant."""

import pytest

from ingestion_platform.tenants import TenantConfigError, load_registry, parse_registry, tenant_days


def test_registry_parses_sources_and_settings(tmp_path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        "  acme:\n"
        "    name: Acme Corp\n"
        "    ga4: {project: acme-analytics, dataset: analytics_1, credentials_env: ACME_BQ_KEY}\n"
        "  globex: {}\n"
    )
    registry = load_registry(path)
    assert registry.ids == ["acme", "globex"]
    assert registry.get("acme").ga4().credentials_env == "ACME_BQ_KEY"
    assert [t.id for t in registry.with_source("ga4")] == ["acme"]
    with pytest.raises(TenantConfigError, match="tenant 'globex' has no 'ga4' settings"):
        registry.get("globex").ga4()
    with pytest.raises(TenantConfigError, match=r"tenant 'nope' is not in the tenant registry \(known: acme, globex\)"):
        registry.get("nope")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"tenant": {}}, "must be a mapping with a 'tenants' mapping"),
        ({"tenants": {"Bad|Id": {}}}, "invalid tenant id"),
        ({"tenants": {"acme": {"ga4": "x"}}}, "settings of 'ga4' must be a mapping"),
    ],
)
def test_registry_errors_are_clear(document: object, message: str) -> None:
    with pytest.raises(TenantConfigError, match=message):
        parse_registry(document)


def test_invalid_source_settings_name_the_tenant() -> None:
    registry = parse_registry({"tenants": {"acme": {"ga4": {"project": "p"}}}})
    with pytest.raises(TenantConfigError, match="tenant 'acme': invalid 'ga4' settings"):
        registry.get("acme").ga4()


def test_missing_file_names_the_variable(tmp_path) -> None:
    with pytest.raises(TenantConfigError, match="INGESTION_TENANTS_FILE"):
        load_registry(tmp_path / "nope.yaml")


def test_tenant_days_groups_a_runs_keys() -> None:
    keys = ["2024-01-02|b", "2024-01-01|a", "2024-01-01|b"]
    assert tenant_days(keys) == {"a": ["2024-01-01"], "b": ["2024-01-01", "2024-01-02"]}
