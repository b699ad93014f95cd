"""The tenant registry: parsing, clear errors, and partition keys grouped per tenant."""

from datetime import date
from pathlib import Path

import pytest

from ingestion_platform.tenants import (
    PARTITIONS_START_ENV,
    TenantConfigError,
    daily_by_tenant,
    load_registry,
    parse_registry,
    partitions_start,
    tenant_days,
)


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


def test_partitions_start_is_a_setting_with_a_recent_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PARTITIONS_START_ENV, raising=False)
    assert partitions_start(date(2026, 11, 23)) == "2026-08-01"
    assert partitions_start(date(2026, 2, 28)) == "2025-11-01"  # across a year boundary
    monkeypatch.setenv(PARTITIONS_START_ENV, "2023-05-01")
    assert partitions_start(date(2026, 11, 23)) == "2023-05-01"
    days = next(d for d in daily_by_tenant().partitions_defs if d.name == "date").partitions_def
    assert days.get_first_partition_key() == "2023-05-01"
    monkeypatch.setenv(PARTITIONS_START_ENV, "05/01/2023")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        partitions_start()


def test_example_registry_shows_every_source_block() -> None:
    acme = load_registry(Path(__file__).resolve().parents[1] / "tenants.example.yaml").get("acme")
    assert acme.ga4().dataset and acme.sftp().host_keys
