"""NetSuite's two authentication methods as `httpx.Auth`, so any httpx client (the shared API client included) can
talk to SuiteTalk REST by being handed one of these.

- `NetSuiteTBA`: OAuth 1.0a token-based authentication, HMAC-SHA256, realm = account id. NetSuite accepts no new TBA
  integrations from release 2027.1, but existing ones keep working, so both methods are supported.
- `NetSuiteM2M`: OAuth 2.0 client credentials with a certificate-signed JWT assertion (RFC 7523). The access token
  is cached until shortly before it expires, so a run of thousands of SuiteQL pages asks for one token.

Signing is done by libraries (oauthlib for OAuth 1.0a, whose HMAC-SHA256 method NetSuite requires; joserfc for the
JWT): hand-written signatures are where subtle interop bugs live. Secrets are held as values and never appear in
reprs, logs or error messages.
"""

import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import Any

import httpx
from joserfc import jwk, jwt
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256
from oauthlib.oauth1 import Client as OAuth1Client

TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# NetSuite's list (The Request Token Structure): RSA-PSS or ECDSA; PKCS#1 v1.5 (RS256) is refused.
ASSERTION_ALGORITHMS = ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
# NetSuite rejects an assertion whose exp is 60 minutes or more after its iat.
ASSERTION_LIFETIME_S = 300


class NetSuiteAuthError(Exception):
    """The token endpoint refused the client's credentials; the message carries NetSuite's code, never a secret."""


def realm_for(account_id: str) -> str:
    """The OAuth realm: the account id as NetSuite spells it in realms, upper case with `_` (`1234567_SB1`)."""
    return account_id.strip().upper().replace("-", "_")


def rest_base_url(account_id: str) -> str:
    """The account's SuiteTalk REST host: the account id lower-cased with `-` (`https://1234567-sb1.suitetalk...`)."""
    return f"https://{account_id.strip().lower().replace('_', '-')}.suitetalk.api.netsuite.com"


class NetSuiteTBA(httpx.Auth):
    """Signs each request with OAuth 1.0a (HMAC-SHA256), a fresh nonce and timestamp per request.

    The JSON body of a SuiteQL POST is not part of the signature (it is not form-encoded), but the query string
    (`limit`, `offset`) is, so the request must be signed with the exact URL that is sent: httpx.Auth sees it.
    """

    def __init__(
        self, account_id: str, consumer_key: str, consumer_secret: str, token_id: str, token_secret: str
    ) -> None:
        for name, value in (
            ("account_id", account_id),
            ("consumer_key", consumer_key),
            ("consumer_secret", consumer_secret),
            ("token_id", token_id),
            ("token_secret", token_secret),
        ):
            if not value:
                raise ValueError(f"NetSuite token-based authentication needs a non-empty {name}")
        self.realm = realm_for(account_id)
        self._consumer_key = consumer_key
        self._consumer_secret = consumer_secret
        self._token_id = token_id
        self._token_secret = token_secret

    def __repr__(self) -> str:
        return f"NetSuiteTBA(realm={self.realm!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        client = OAuth1Client(
            self._consumer_key,
            client_secret=self._consumer_secret,
            resource_owner_key=self._token_id,
            resource_owner_secret=self._token_secret,
            signature_method=SIGNATURE_HMAC_SHA256,
            realm=self.realm,
        )
        _, headers, _ = client.sign(str(request.url), http_method=request.method)
        request.headers["Authorization"] = headers["Authorization"]
        yield request


class NetSuiteM2M(httpx.Auth):
    """OAuth 2.0 client credentials (machine to machine): a JWT signed with the certificate's private key buys an
    access token at the token endpoint; the token is reused until `refresh_margin_s` before it expires.

    The token request goes through the same httpx client as the API call (yielded from the auth flow), so it
    shares the client's transport, timeouts and proxies. A 401 on a cached token (revoked early) refreshes once.
    One instance may be shared by threads: the token is fetched under a lock, so concurrent pages ask for one.
    """

    def __init__(
        self,
        account_id: str,
        client_id: str,
        certificate_id: str,
        private_key_pem: str,
        *,
        token_url: str | None = None,
        algorithm: str = "PS256",
        scopes: Sequence[str] = ("rest_webservices",),
        refresh_margin_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if algorithm not in ASSERTION_ALGORITHMS:
            raise ValueError(f"NetSuite signs client assertions with one of {ASSERTION_ALGORITHMS}, not {algorithm!r}")
        for name, value in (("client_id", client_id), ("certificate_id", certificate_id)):
            if not value:
                raise ValueError(f"NetSuite OAuth 2.0 client credentials need a non-empty {name}")
        try:
            self._key = jwk.import_key(private_key_pem, "EC" if algorithm.startswith("ES") else "RSA")
        except Exception as exc:
            # The library's message could quote the key material: say what is wrong without it.
            raise ValueError(
                f"the NetSuite private key is not a PEM {'EC' if algorithm.startswith('ES') else 'RSA'} private key "
                f"usable with {algorithm} ({type(exc).__name__})"
            ) from None
        self.account_id = account_id
        self.token_url = token_url or rest_base_url(account_id) + TOKEN_PATH
        self.client_id = client_id
        self.certificate_id = certificate_id
        self.algorithm = algorithm
        self.scopes = tuple(scopes)
        self.refresh_margin_s = refresh_margin_s
        self._clock = clock
        self._lock = threading.Lock()
        self._access_token: str | None = None
        self._expires_at = 0.0

    def __repr__(self) -> str:
        return f"NetSuiteM2M(token_url={self.token_url!r}, client_id={self.client_id!r}, alg={self.algorithm!r})"

    @property
    def token_expires_at(self) -> float:
        """When the cached token expires on `clock`'s scale (0 if none): for metadata and tests, not a secret."""
        return self._expires_at

    def invalidate(self) -> None:
        with self._lock:
            self._access_token = None
            self._expires_at = 0.0

    def client_assertion(self) -> str:
        # Wall-clock time: NetSuite compares iat and exp with its own clock. Expiry of the cached access token is
        # judged on `clock` (monotonic), which a wall-clock step cannot fool.
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "scope": list(self.scopes),
            "aud": self.token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_S,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": self.algorithm, "typ": "JWT", "kid": self.certificate_id}
        return jwt.encode(header, claims, self._key, algorithms=[self.algorithm])

    def _token_request(self) -> httpx.Request:
        return httpx.Request(
            "POST",
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": JWT_BEARER,
                "client_assertion": self.client_assertion(),
            },
            headers={"Accept": "application/json"},
        )

    def _valid_token(self) -> str | None:
        if self._access_token and self._clock() < self._expires_at - self.refresh_margin_s:
            return self._access_token
        return None

    def _store(self, response: httpx.Response) -> str:
        if response.status_code != 200:
            raise NetSuiteAuthError(_token_error(response))
        try:
            body = response.json()
            token = str(body["access_token"])
            # NetSuite sends expires_in as a string ("3600").
            lifetime = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise NetSuiteAuthError(
                f"NetSuite token endpoint {self.token_url} answered 200 without an access_token and expires_in"
            ) from None
        self._access_token = token
        self._expires_at = self._clock() + lifetime
        return token

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        for attempt in range(2):
            with self._lock:
                token = self._valid_token()
                if token is None:
                    response = yield self._token_request()
                    response.read()
                    token = self._store(response)
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code != 401 or attempt:
                return
            self.invalidate()

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        # No lock across awaits here: at worst two coroutines fetch a token each, and both tokens are valid.
        for attempt in range(2):
            token = self._valid_token()
            if token is None:
                response = yield self._token_request()
                await response.aread()
                token = self._store(response)
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code != 401 or attempt:
                return
            self.invalidate()


def _token_error(response: httpx.Response) -> str:
    """OAuth errors (`error`, `error_description`) or NetSuite's `o:errorDetails`, whichever the endpoint sent."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    parts: list[str] = []
    if isinstance(body, dict):
        if body.get("error"):
            parts.append(str(body["error"]))
            if body.get("error_description"):
                parts.append(str(body["error_description"]))
        for detail in body.get("o:errorDetails") or []:
            parts.append(f"{detail.get('o:errorCode')}: {detail.get('detail')}")
    reason = "; ".join(parts) or response.reason_phrase
    return (
        f"NetSuite token endpoint {response.request.url} refused the client credentials "
        f"({response.status_code}): {reason}"
    )
