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
