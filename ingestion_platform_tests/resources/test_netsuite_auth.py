"""NetSuite authentication against the sandbox server, which verifies signatures and assertions as NetSuite does."""

import asyncio
import logging
import re
from collections.abc import Generator, Iterator
from datetime import date

import httpx
import pytest

from ingestion_platform.defs.netsuite.suiteql import count_query, day_window, parse_count, parse_error, parse_page
from ingestion_platform.resources.netsuite_auth import (
    NetSuiteAuthError,
    NetSuiteM2M,
    NetSuiteTBA,
    realm_for,
    rest_base_url,
)
from ingestion_platform.sandbox.netsuite_api import (
    SANDBOX_TBA_KEYS,
    SUITEQL_PATH,
    M2MClient,
    NetSuiteSandbox,
    NetSuiteSandboxConfig,
    generate_m2m_key,
    run_netsuite_api,
)

CLIENT_ID = "m2m-client-id-0123456789"
CERTIFICATE_ID = "cert-abc123"
QUERY = {"q": count_query("customer", day_window(date(2026, 1, 3)))}


@pytest.fixture(scope="module")
def es256_key() -> tuple[str, str]:
    return generate_m2m_key("ES256")


@pytest.fixture(scope="module")
def sandbox(es256_key: tuple[str, str]) -> Iterator[NetSuiteSandbox]:
    config = NetSuiteSandboxConfig(
        rows={"customer": 50}, m2m=M2MClient(CLIENT_ID, CERTIFICATE_ID, es256_key[1]), token_lifetime_s=3600
    )
    with run_netsuite_api(config) as server:
        yield server


def tba(account_id: str, **overrides: str) -> NetSuiteTBA:
    return NetSuiteTBA(account_id, **{**SANDBOX_TBA_KEYS, **overrides})


def suiteql(base_url: str, auth: httpx.Auth, params: dict[str, int] | None = None) -> httpx.Response:
    with httpx.Client(base_url=base_url, auth=auth, headers={"Prefer": "transient"}) as client:
        return client.post(SUITEQL_PATH, params=params or {"limit": 10, "offset": 0}, json=QUERY)


def assert_invalid_login(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert parse_error(response.status_code, response.json()).codes == ("INVALID_LOGIN",)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_account_id_spellings() -> None:
    assert realm_for("1234567-sb1") == "1234567_SB1"
    assert rest_base_url("1234567_SB1") == "https://1234567-sb1.suitetalk.api.netsuite.com"


def test_tba_signature_is_accepted(sandbox: NetSuiteSandbox) -> None:
    # The account id as written in tenants.yaml may use either spelling; the realm is normalized.
    response = suiteql(sandbox.base_url, tba("1234567-sb1"))
    assert response.status_code == 200, response.text
    assert parse_count(parse_page(response.json())) > 0
    assert re.match(r'OAuth realm="1234567_SB1", ', response.request.headers["Authorization"])
    assert 'oauth_signature_method="HMAC-SHA256"' in response.request.headers["Authorization"]


class Tampered(httpx.Auth):
    """Signs properly, then changes the query string, as a man in the middle would."""

    def __init__(self, inner: NetSuiteTBA) -> None:
        self.inner = inner

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        signed = next(self.inner.auth_flow(request))
        signed.url = signed.url.copy_set_param("limit", "1000")
        yield signed


def test_tampered_or_wrong_tba_credentials_are_rejected(sandbox: NetSuiteSandbox) -> None:
    assert_invalid_login(suiteql(sandbox.base_url, Tampered(tba(sandbox.account_id))))
    assert_invalid_login(suiteql(sandbox.base_url, tba(sandbox.account_id, token_secret="not-the-secret")))
    assert_invalid_login(suiteql(sandbox.base_url, tba(sandbox.account_id, consumer_key="unknown-consumer")))
    assert_invalid_login(suiteql(sandbox.base_url, tba("7654321")))  # another account's realm


def test_a_replayed_tba_request_is_rejected(sandbox: NetSuiteSandbox) -> None:
    first = suiteql(sandbox.base_url, tba(sandbox.account_id))
    assert first.status_code == 200
    replay = httpx.post(
        str(first.request.url), headers={**first.request.headers, "Prefer": "transient"}, content=first.request.content
    )
    assert_invalid_login(replay)


def test_oauth2_token_is_obtained_once_and_reused(sandbox: NetSuiteSandbox, es256_key: tuple[str, str]) -> None:
    auth = NetSuiteM2M(
        sandbox.account_id, CLIENT_ID, CERTIFICATE_ID, es256_key[0], token_url=sandbox.token_url, algorithm="ES256"
    )
    issued = sandbox.stats.tokens_issued
    with httpx.Client(base_url=sandbox.base_url, auth=auth, headers={"Prefer": "transient"}) as client:
        responses = [client.post(SUITEQL_PATH, params={"limit": 10}, json=QUERY) for _ in range(5)]
    assert [r.status_code for r in responses] == [200] * 5
    assert sandbox.stats.tokens_issued == issued + 1
    assert len({r.request.headers["Authorization"] for r in responses}) == 1


def test_oauth2_token_is_refreshed_before_it_expires(sandbox: NetSuiteSandbox, es256_key: tuple[str, str]) -> None:
    now = [1_000_000.0]
    auth = NetSuiteM2M(
        sandbox.account_id,
        CLIENT_ID,
        CERTIFICATE_ID,
        es256_key[0],
        token_url=sandbox.token_url,
        algorithm="ES256",
        refresh_margin_s=60,
        clock=lambda: now[0],
    )
    issued = sandbox.stats.tokens_issued
    with httpx.Client(base_url=sandbox.base_url, auth=auth, headers={"Prefer": "transient"}) as client:
        assert client.post(SUITEQL_PATH, json=QUERY).status_code == 200
        assert auth.token_expires_at == now[0] + 3600
        now[0] += 3600 - 61  # still outside the margin: reused
        assert client.post(SUITEQL_PATH, json=QUERY).status_code == 200
        assert sandbox.stats.tokens_issued == issued + 1
        now[0] += 2  # within a minute of expiry: refreshed
        assert client.post(SUITEQL_PATH, json=QUERY).status_code == 200
    assert sandbox.stats.tokens_issued == issued + 2


def test_a_token_the_server_expired_early_is_replaced_once(es256_key: tuple[str, str]) -> None:
    config = NetSuiteSandboxConfig(
        rows={"customer": 10}, m2m=M2MClient(CLIENT_ID, CERTIFICATE_ID, es256_key[1]), token_lifetime_s=0
    )
    with run_netsuite_api(config) as server:
        # Every token the server issues is dead on arrival, as after a revocation.
        auth = NetSuiteM2M(
            server.account_id, CLIENT_ID, CERTIFICATE_ID, es256_key[0], token_url=server.token_url, algorithm="ES256"
        )
        with httpx.Client(base_url=server.base_url, auth=auth, headers={"Prefer": "transient"}) as client:
            response = client.post(SUITEQL_PATH, json=QUERY)
        # One refresh after the 401, and no loop: the second 401 is returned to the caller.
        assert_invalid_login(response)
        assert server.stats.tokens_issued == 2


def test_ps256_assertions_from_an_rsa_certificate_work() -> None:
    private, public = generate_m2m_key("PS256")
    with run_netsuite_api(
        NetSuiteSandboxConfig(rows={"customer": 10}, m2m=M2MClient(CLIENT_ID, CERTIFICATE_ID, public))
    ) as server:
        auth = NetSuiteM2M(server.account_id, CLIENT_ID, CERTIFICATE_ID, private, token_url=server.token_url)
        assert suiteql(server.base_url, auth).status_code == 200


def test_bad_assertions_are_refused_with_the_oauth_error(sandbox: NetSuiteSandbox, es256_key: tuple[str, str]) -> None:
    other_private, _ = generate_m2m_key("ES256")
    cases = {
        "another key": NetSuiteM2M(
            sandbox.account_id, CLIENT_ID, CERTIFICATE_ID, other_private, token_url=sandbox.token_url, algorithm="ES256"
        ),
        "another certificate id": NetSuiteM2M(
            sandbox.account_id, CLIENT_ID, "cert-other", es256_key[0], token_url=sandbox.token_url, algorithm="ES256"
        ),
        "another client": NetSuiteM2M(
            sandbox.account_id,
            "someone-else",
            CERTIFICATE_ID,
            es256_key[0],
            token_url=sandbox.token_url,
            algorithm="ES256",
        ),
    }
    for name, auth in cases.items():
        with pytest.raises(NetSuiteAuthError, match=r"refused the client credentials \(400\): invalid_grant"):
            suiteql(sandbox.base_url, auth)
        assert auth.token_expires_at == 0, name
    with pytest.raises(ValueError, match="not a PEM EC private key"):
        NetSuiteM2M(sandbox.account_id, CLIENT_ID, CERTIFICATE_ID, "not a key", algorithm="ES256")
    with pytest.raises(ValueError, match="RS256"):
        NetSuiteM2M(sandbox.account_id, CLIENT_ID, CERTIFICATE_ID, es256_key[0], algorithm="RS256")


def test_no_request_without_credentials_gets_data(sandbox: NetSuiteSandbox) -> None:
    response = httpx.post(sandbox.suiteql_url, headers={"Prefer": "transient"}, json=QUERY)
    assert_invalid_login(response)
    response = httpx.post(
        sandbox.suiteql_url, headers={"Prefer": "transient", "Authorization": "Bearer made-up"}, json=QUERY
    )
    assert_invalid_login(response)


def test_secrets_never_reach_logs_reprs_or_errors(
    sandbox: NetSuiteSandbox, es256_key: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tba_auth = tba(sandbox.account_id)
    m2m = NetSuiteM2M(
        sandbox.account_id, CLIENT_ID, CERTIFICATE_ID, es256_key[0], token_url=sandbox.token_url, algorithm="ES256"
    )
    bad_m2m = NetSuiteM2M(
        sandbox.account_id, CLIENT_ID, "cert-other", es256_key[0], token_url=sandbox.token_url, algorithm="ES256"
    )
    assert suiteql(sandbox.base_url, tba_auth).status_code == 200
    assert_invalid_login(suiteql(sandbox.base_url, tba(sandbox.account_id, token_secret="wrong-token-secret-xyz")))
    ok = suiteql(sandbox.base_url, m2m)
    assert ok.status_code == 200
    access_token = ok.request.headers["Authorization"].removeprefix("Bearer ")
    with pytest.raises(NetSuiteAuthError) as refused:
        suiteql(sandbox.base_url, bad_m2m)
    logging.getLogger("test").info("auth objects: %r %r %r", tba_auth, m2m, bad_m2m)

    secrets = [
        SANDBOX_TBA_KEYS["consumer_secret"],
        SANDBOX_TBA_KEYS["token_secret"],
        "wrong-token-secret-xyz",
        access_token,
        *[line for line in es256_key[0].splitlines() if "PRIVATE KEY" not in line],
    ]
    assert caplog.records, "the requests were expected to log something (httpx logs each request)"
    published = caplog.text + repr(tba_auth) + repr(m2m) + str(refused.value)
    for secret in secrets:
        assert secret not in published


def test_oauth2_works_from_an_async_client(sandbox: NetSuiteSandbox, es256_key: tuple[str, str]) -> None:
    auth = NetSuiteM2M(
        sandbox.account_id, CLIENT_ID, CERTIFICATE_ID, es256_key[0], token_url=sandbox.token_url, algorithm="ES256"
    )
    issued = sandbox.stats.tokens_issued

    async def two_queries() -> tuple[int, int]:
        async with httpx.AsyncClient(base_url=sandbox.base_url, auth=auth, headers={"Prefer": "transient"}) as client:
            first = await client.post(SUITEQL_PATH, json=QUERY)
            second = await client.post(SUITEQL_PATH, json=QUERY)
        return first.status_code, second.status_code

    assert asyncio.run(two_queries()) == (200, 200)
    assert sandbox.stats.tokens_issued == issued + 1
