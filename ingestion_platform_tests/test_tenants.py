"""The tenant registry: parsing, clear errors, and partition keys grouped per tenant."""

from datetime import date
from pathlib import Path

import pytest

from ingestion_platform.tenants import (
    BRIGHTDATA_FACEBOOK_POSTS_DATASET,
    PARTITIONS_START_ENV,
    CrawlTarget,
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


def test_brightdata_settings_parse_targets() -> None:
    registry = parse_registry(
        {
            "tenants": {
                "acme": {
                    "brightdata": {
                        "api_key_env": "ACME_BRIGHTDATA_KEY",
                        "targets": [
                            {
                                "platform": "facebook",
                                "competitor": "nutifood",
                                "brand": "growplus-nutifood",
                                "category": "sua-bot-tre-em",
                                "url": "https://www.facebook.com/GrowPLUScuaNutiFood/",
                                "num_of_posts": 25,
                            },
                            {
                                "platform": "facebook",
                                "competitor": "vinamilk",
                                "brand": "dielac",
                                "category": "sua-bot-tre-em",
                                "url": "https://www.facebook.com/DielacAlpha/",
                                "include_profile_data": False,
                                "dataset_id": "gd_other",
                            },
                        ],
                    }
                },
                "globex": {"brightdata": {"api_key_env": "GLOBEX_KEY"}},
            }
        }
    )
    settings = registry.get("acme").brightdata()
    assert settings.api_key_env == "ACME_BRIGHTDATA_KEY"
    assert settings.dataset_id == BRIGHTDATA_FACEBOOK_POSTS_DATASET
    first, second = settings.targets
    assert isinstance(first, CrawlTarget)
    assert (first.competitor, first.brand, first.num_of_posts, first.include_profile_data) == (
        "nutifood",
        "growplus-nutifood",
        25,
        True,
    )
    assert second.num_of_posts == 10 and second.include_profile_data is False
    assert settings.dataset_for(first) == BRIGHTDATA_FACEBOOK_POSTS_DATASET
    assert settings.dataset_for(second) == "gd_other"
    assert registry.get("globex").brightdata().targets == ()
    assert [t.id for t in registry.with_source("brightdata")] == ["acme", "globex"]


_TARGET = {"platform": "facebook", "competitor": "c", "brand": "b", "category": "k", "url": "https://fb.com/p"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "api_key_env"),
        ({"api_key_env": "not a var"}, "api_key_env must name an environment variable"),
        ({"api_key_env": "K", "dataset_id": ""}, "dataset_id must be a non-empty string"),
        ({"api_key_env": "K", "targets": "https://fb.com/p"}, "targets must be a list"),
        ({"api_key_env": "K", "targets": ["https://fb.com/p"]}, r"targets\[0\] must be a mapping"),
        ({"api_key_env": "K", "targets": [{**_TARGET, "url": "fb.com/p"}]}, r"targets\[0\]: .*http\(s\) URL"),
        ({"api_key_env": "K", "targets": [{**_TARGET, "num_of_posts": 0}]}, "num_of_posts must be a positive"),
        ({"api_key_env": "K", "targets": [{**_TARGET, "num_of_posts": "5"}]}, "num_of_posts must be a positive"),
        ({"api_key_env": "K", "targets": [{**_TARGET, "brand": " "}]}, "brand must be a non-empty string"),
        ({"api_key_env": "K", "targets": [{**_TARGET, "include_profile_data": "yes"}]}, "include_profile_data"),
        ({"api_key_env": "K", "targets": [{**_TARGET, "colour": "red"}]}, "unexpected keyword argument 'colour'"),
    ],
)
def test_brightdata_settings_errors_name_the_tenant(settings: dict, message: str) -> None:
    registry = parse_registry({"tenants": {"acme": {"brightdata": settings}}})
    with pytest.raises(TenantConfigError, match=f"tenant 'acme': invalid 'brightdata' settings: .*{message}"):
        registry.get("acme").brightdata()


def test_netsuite_settings_default_tables_and_derived_url() -> None:
    registry = parse_registry(
        {
            "tenants": {
                "acme": {
                    "netsuite": {
                        "account_id": "1234567_SB1",
                        "auth": "oauth2",
                        "start_date": "2025-01-01",
                        "client_id_env": "ACME_NS_CLIENT_ID",
                        "certificate_id_env": "ACME_NS_CERT_ID",
                        "private_key_env": "ACME_NS_PRIVATE_KEY",
                    }
                },
                "globex": {
                    "netsuite": {
                        "account_id": 7654321,
                        "auth": "tba",
                        "start_date": "2025-06-01",
                        "tables": ["customer", "customrecord_shipment"],
                        "consumer_key_env": "G_CK",
                        "consumer_secret_env": "G_CS",
                        "token_id_env": "G_TI",
                        "token_secret_env": "G_TS",
                        "base_url": "http://127.0.0.1:9070/",
                    }
                },
            }
        }
    )
    acme = registry.get("acme").netsuite()
    assert acme.tables == (
        "customer",
        "vendor",
        "employee",
        "item",
        "transaction",
        "transactionline",
        "account",
        "subsidiary",
    )
    assert acme.rest_base_url == "https://1234567-sb1.suitetalk.api.netsuite.com"
    assert acme.realm == "1234567_SB1"
    assert acme.jwt_algorithm == "PS256"
    globex = registry.get("globex").netsuite()
    assert globex.account_id == "7654321"  # YAML reads a bare number; the id stays a string
    assert globex.tables == ("customer", "customrecord_shipment")
    assert globex.rest_base_url == "http://127.0.0.1:9070"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"auth": "password"}, "auth must be 'tba' or 'oauth2'"),
        ({"auth": "oauth2", "private_key_env": None}, "needs private_key_env"),
        ({"auth": "tba"}, "needs consumer_key_env, consumer_secret_env, token_id_env, token_secret_env"),
        ({"account_id": "acme.netsuite.com"}, "not a NetSuite account id"),
        ({"start_date": "01/02/2025"}, "not a YYYY-MM-DD date"),
        ({"tables": ["Customer; DROP"]}, "lower-case SuiteQL table names"),
        ({"tables": []}, "non-empty list"),
    ],
)
def test_netsuite_settings_errors_are_clear(settings: dict[str, object], message: str) -> None:
    base = {
        "account_id": "1234567",
        "auth": "oauth2",
        "start_date": "2025-01-01",
        "client_id_env": "A",
        "certificate_id_env": "B",
        "private_key_env": "C",
    }
    registry = parse_registry({"tenants": {"acme": {"netsuite": {**base, **settings}}}})
    with pytest.raises(TenantConfigError, match=rf"tenant 'acme': invalid 'netsuite' settings: .*{message}"):
        registry.get("acme").netsuite()


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
