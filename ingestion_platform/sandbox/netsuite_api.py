"""A NetSuite SuiteTalk REST stand-in: SuiteQL over HTTP with NetSuite's authentication, paging, limits and errors.

What it serves, as NetSuite does:
- `POST /services/rest/query/v1/suiteql` (`Prefer: transient`, body `{"q": ...}`, `limit` <= 1,000 and `offset` a
  multiple of it) answering `items`, `hasMore`, `totalResults`, `count`, `offset`, `links`; offset paging stops at
  `offset_cap` rows (100,000) with a 400 `INVALID_PARAMETER`. Values come back as strings, null fields are left out
  of items, booleans are `T`/`F`, and date columns read in the account's format (`M/D/YYYY`) unless selected
  through `TO_CHAR(col, 'YYYY-MM-DD HH24:MI:SS')`.
- OAuth 1.0a TBA (HMAC-SHA256, realm = account id), verified by oauthlib's resource endpoint with nonce and
  timestamp checks; OAuth 2.0 client credentials at `POST /services/rest/auth/oauth2/v1/token`, verifying the JWT
  assertion (kid, iss, aud, exp <= iat + 60 min, PS/ES algorithms) against the configured public key with joserfc,
  then bearer tokens that expire. Bad credentials get 401 with `o:errorDetails` `INVALID_LOGIN`.
- The account's concurrency limit: requests beyond `max_concurrency` in flight get 429 `CONCURRENCY_LIMIT_EXCEEDED`.
- `GET /services/rest/record/v1/metadata-catalog/{record}` (`Accept: application/schema+json`): the columns.

The SuiteQL it understands is the subset `ingestion_platform.defs.netsuite.suiteql` writes, parsed with regular
expressions and run on an in-memory DuckDB database; anything else is answered with NetSuite's 400 for an invalid
query, so a client that drifts from the subset fails loudly:

    SELECT <* | COUNT(*) AS count | col | TO_CHAR(col, 'YYYY-MM-DD HH24:MI:SS') AS col, ...> FROM <table>
    [WHERE <cond> [AND <cond>]...] [ORDER BY <col>]
    cond: col <op> TO_TIMESTAMP('YYYY-MM-DD HH:MM:SS', 'YYYY-MM-DD HH24:MI:SS') | col <op> <integer> |
          col <op> '<text>' | col IN ('<text>', ...)        op: = <> != < <= > >=

The data is deterministic for a seed: customer, vendor, employee, item, transaction, transactionline, account and
subsidiary with last-modified times spread over `days` days from `start`, deleted records listed in `deletedrecord`,
and a custom field (`custentity_loyalty_tier` on customer, `custbody_channel` on transaction) that exists only on
rows modified from `new_column_from_day` on, as when an administrator adds a field midway.

    python -m ingestion_platform.sandbox.netsuite_api --port 9070
"""

import argparse
import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlencode

import duckdb
import numpy as np
import pandas as pd
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwk, jwt
from joserfc.errors import JoseError
from oauthlib.oauth1 import RequestValidator, ResourceEndpoint
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingestion_platform.resources.netsuite_auth import ASSERTION_ALGORITHMS, JWT_BEARER, TOKEN_PATH, realm_for

SUITEQL_PATH = "/services/rest/query/v1/suiteql"
CATALOG_PATH = "/services/rest/record/v1/metadata-catalog"
TIMESTAMP_FORMAT = "YYYY-MM-DD HH24:MI:SS"

# Sandbox-only credentials for a server bound to 127.0.0.1; production secrets come from the deployment's env.
SANDBOX_TBA_KEYS = {
    "consumer_key": "c0nsumerkey" + "0" * 53,
    "consumer_secret": "c0nsumersecret" + "1" * 50,
    "token_id": "t0kenid" + "2" * 57,
    "token_secret": "t0kensecret" + "3" * 53,
}

DEFAULT_ROWS: Mapping[str, int] = {
    "subsidiary": 5,
    "account": 60,
    "customer": 400,
    "vendor": 120,
    "employee": 80,
    "item": 200,
    "transaction": 1000,
    "transactionline": 3000,
}

# Column name -> kind (int, float, text, bool, date, timestamp); stored with the DuckDB types of _DUCKDB_TYPES.
SCHEMAS: Mapping[str, Mapping[str, str]] = {
    "subsidiary": {
        "id": "int",
        "name": "text",
        "country": "text",
        "currency": "int",
        "isinactive": "bool",
        "lastmodifieddate": "timestamp",
    },
    "account": {
        "id": "int",
        "acctnumber": "text",
        "accountsearchdisplayname": "text",
        "accttype": "text",
        "subsidiary": "int",
        "isinactive": "bool",
        "lastmodifieddate": "timestamp",
    },
    "customer": {
        "id": "int",
        "entityid": "text",
        "companyname": "text",
        "email": "text",
        "phone": "text",
        "subsidiary": "int",
        "balance": "float",
        "datecreated": "timestamp",
        "isinactive": "bool",
        "lastmodifieddate": "timestamp",
        "custentity_loyalty_tier": "text",
    },
    "vendor": {
        "id": "int",
        "entityid": "text",
        "companyname": "text",
        "email": "text",
        "phone": "text",
        "subsidiary": "int",
        "isinactive": "bool",
        "lastmodifieddate": "timestamp",
    },
    "employee": {
        "id": "int",
        "entityid": "text",
        "firstname": "text",
        "lastname": "text",
        "email": "text",
        "subsidiary": "int",
        "isinactive": "bool",
        "lastmodifieddate": "timestamp",
    },
    "item": {
        "id": "int",
        "itemid": "text",
        "displayname": "text",
        "itemtype": "text",
        "baseprice": "float",
        "isinactive": "bool",
        "lastmodifieddate": "timestamp",
    },
    "transaction": {
        "id": "int",
        "tranid": "text",
        "type": "text",
        "trandate": "date",
        "entity": "int",
        "subsidiary": "int",
        "status": "text",
        "currency": "int",
        "foreigntotal": "float",
        "memo": "text",
        "lastmodifieddate": "timestamp",
        "custbody_channel": "text",
    },
    "transactionline": {
        "uniquekey": "int",
        "id": "int",
        "transaction": "int",
        "item": "int",
        "quantity": "float",
        "rate": "float",
        "netamount": "float",
        "linelastmodifieddate": "timestamp",
    },
    "deletedrecord": {
        "recordid": "int",
        "type": "text",
        "name": "text",
        "deleteddate": "timestamp",
        "context": "text",
    },
}
KEY_COLUMNS = {"transactionline": "uniquekey"}
DELETED_TYPES = {
    "customer": ("customer",),
    "vendor": ("vendor",),
    "employee": ("employee",),
    "item": ("inventoryitem", "serviceitem"),
    "transaction": ("salesorder", "invoice", "vendorbill"),
}
_CATALOG_TYPES = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "text": {"type": "string"},
    "bool": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "timestamp": {"type": "string", "format": "date-time"},
}


@dataclass(frozen=True)
class TBACredentials:
    consumer_key: str
    consumer_secret: str
    token_id: str
    token_secret: str


@dataclass(frozen=True)
class M2MClient:
    """An integration record's client id mapped to a certificate (the public key NetSuite verifies with)."""

    client_id: str
    certificate_id: str
    public_key_pem: str


@dataclass(frozen=True)
class NetSuiteSandboxConfig:
    account_id: str = "1234567_SB1"
    seed: int | str = "netsuite"
    rows: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_ROWS))
    start: date = date(2026, 1, 1)
    days: int = 10
    deleted_share: float = 0.02
    new_column_from_day: int | None = None  # default: halfway through `days`
    tba: TBACredentials | None = field(default_factory=lambda: TBACredentials(**SANDBOX_TBA_KEYS))
    m2m: M2MClient | None = None
    token_lifetime_s: int = 3600
    max_concurrency: int = 15
    offset_cap: int = 100_000
    max_page_size: int = 1000
    latency_s: float = 0.0  # added to each SuiteQL request while it counts against the concurrency limit

    def __post_init__(self) -> None:
        unknown = set(self.rows) - (set(SCHEMAS) - {"deletedrecord"})
        if unknown:
            raise ValueError(f"the NetSuite sandbox serves no table(s) {sorted(unknown)}")
        if self.days < 1:
            raise ValueError("days must be at least 1")

    @property
    def new_column_from(self) -> datetime:
        day = self.days // 2 if self.new_column_from_day is None else self.new_column_from_day
        return datetime.combine(self.start + timedelta(days=day), datetime.min.time())


@dataclass
class SandboxStats:
    """What the server saw, for tests and benchmarks (counts only, never credentials)."""

    suiteql_requests: int = 0
    tokens_issued: int = 0
    rejected_auth: int = 0
    rejected_concurrency: int = 0
    max_in_flight: int = 0


@dataclass(frozen=True)
class NetSuiteSandbox:
    base_url: str
    config: NetSuiteSandboxConfig
    stats: SandboxStats
    db: duckdb.DuckDBPyConnection

    @property
    def account_id(self) -> str:
        return self.config.account_id

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def suiteql_url(self) -> str:
        return self.base_url + SUITEQL_PATH

    def ground_truth(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read the sandbox's own tables with DuckDB SQL, for tests to state what a correct extraction returns."""
        with _DB_LOCK:
            return self.db.execute(sql, params).fetchall()


_DB_LOCK = threading.Lock()


def generate_m2m_key(algorithm: str = "ES256") -> tuple[str, str]:
    """A (private PEM, public PEM) pair for OAuth 2.0 client credentials: EC P-256 for ES256, RSA for PS*."""
    if algorithm.startswith("ES"):
        curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[algorithm]
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = ec.generate_private_key(curve)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _public_key(pem: str) -> jwk.ECKey | jwk.RSAKey:
    """The certificate's public key, its type stated so a key of another type can never verify an assertion."""
    loaded = serialization.load_pem_public_key(pem.encode())
    if isinstance(loaded, ec.EllipticCurvePublicKey):
        return jwk.ECKey.import_key(pem)
    if isinstance(loaded, rsa.RSAPublicKey):
        return jwk.RSAKey.import_key(pem)
    raise ValueError("the M2M certificate's public key must be RSA or EC")


# ---- data -------------------------------------------------------------------------------------------------------

_FIRST = np.array(["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim", "Hedy"])
_LAST = np.array(["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman"])
_WORDS = np.array(["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Tyrell", "Cyberdyne", "Hooli"])
_SUFFIX = np.array(["Inc", "LLC", "GmbH", "Ltd", "SA", "BV"])


class _Generator:
    """Vectorized (numpy) so the benchmark's 500,000 rows take a second or two to build, not half a minute."""

    def __init__(self, config: NetSuiteSandboxConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(list(hashlib.sha256(str(config.seed).encode()).digest()))
        self.origin = np.datetime64(datetime.combine(config.start, datetime.min.time()), "s")
        self.span = config.days * 86400
        self.midway = np.datetime64(config.new_column_from, "s")
        self.deleted: list[pd.DataFrame] = []

    def n(self, table: str) -> int:
        return int(self.config.rows.get(table, 0))

    def modified(self, n: int) -> np.ndarray:
        return self.origin + self.rng.integers(0, self.span, n).astype("timedelta64[s]")

    def pick(self, values: np.ndarray, n: int) -> np.ndarray:
        return values[self.rng.integers(0, len(values), n)]

    def nulls(self, values: np.ndarray, share: float) -> pd.Series:
        series = pd.Series(values, dtype=object)
        series[self.rng.random(len(values)) < share] = None
        return series

    def with_deletions(
        self, table: str, first_id: int, names: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[pd.DataFrame, int]:
        """`n` live records plus a share of deleted ones, which exist only in deletedrecord afterwards."""
        n = self.n(table)
        extra = int(self.rng.binomial(n, self.config.deleted_share)) if n else 0
        ids = np.arange(first_id, first_id + n + extra)
        modified = self.modified(len(ids))
        gone = np.zeros(len(ids), dtype=bool)
        gone[self.rng.choice(len(ids), extra, replace=False)] = True
        if extra:
            types = DELETED_TYPES[table]
            self.deleted.append(
                pd.DataFrame(
                    {
                        "recordid": ids[gone],
                        "type": self.pick(np.array(types), extra),
                        "name": names(ids[gone]),
                        "deleteddate": modified[gone] + self.rng.integers(1, 3600, extra).astype("timedelta64[s]"),
                        "context": self.pick(np.array(["webservices", "userinterface", "csvimport"]), extra),
                    }
                )
            )
        return pd.DataFrame({"id": ids[~gone], "lastmodifieddate": modified[~gone]}), first_id + len(ids)

    def entities(self, table: str, first_id: int) -> tuple[pd.DataFrame, int]:
        frame, next_id = self.with_deletions(
            table, first_id, lambda ids: np.char.add(f"{table.upper()} ", ids.astype(str))
        )
        n = len(frame)
        first, last = self.pick(_FIRST, n), self.pick(_LAST, n)
        ids = frame["id"].to_numpy().astype(str)
        prefix = {"customer": "CUST", "vendor": "VEND", "employee": "EMP"}[table]
        frame["entityid"] = np.char.add(prefix, ids)
        email = np.char.lower(np.char.add(np.char.add(np.char.add(first, "."), last), np.char.add(ids, "@example.com")))
        frame["email"] = self.nulls(email, 0.1)
        frame["subsidiary"] = self.rng.integers(1, max(self.n("subsidiary"), 1) + 1, n)
        frame["isinactive"] = self.rng.random(n) < 0.05
        if table == "employee":
            frame["firstname"], frame["lastname"] = first, last
            return frame, next_id
        company = np.char.add(np.char.add(self.pick(_WORDS, n), " "), np.char.add(last, " "))
        frame["companyname"] = np.char.add(company, self.pick(_SUFFIX, n))
        phone = np.char.add("+1 555 ", self.rng.integers(1_000_000, 9_999_999, n).astype(str))
        frame["phone"] = self.nulls(phone, 0.3)
        if table == "customer":
            frame["balance"] = np.round(self.rng.uniform(0, 50000, n), 2)
            frame["datecreated"] = frame["lastmodifieddate"].to_numpy() - self.rng.integers(0, 900 * 86400, n).astype(
                "timedelta64[s]"
            )
            tier = pd.Series(self.pick(np.array(["bronze", "silver", "gold"]), n), dtype=object)
            tier[frame["lastmodifieddate"].to_numpy() < self.midway] = None
            frame["custentity_loyalty_tier"] = tier
        return frame, next_id

    def tables(self) -> dict[str, pd.DataFrame]:
        rng = self.rng
        n_sub = max(self.n("subsidiary"), 1)
        out: dict[str, pd.DataFrame] = {}
        sub_ids = np.arange(1, self.n("subsidiary") + 1)
        countries = np.array(["US", "GB", "DE", "FR", "JP"])
        out["subsidiary"] = pd.DataFrame(
            {
                "id": sub_ids,
                "name": np.char.add(np.char.add(_WORDS[sub_ids % len(_WORDS)], " "), countries[sub_ids % 5]),
                "country": countries[sub_ids % 5],
                "currency": 1 + sub_ids % 5,
                "isinactive": sub_ids > 4,
                "lastmodifieddate": self.modified(len(sub_ids)),
            }
        )
        acct_ids = np.arange(1, self.n("account") + 1)
        acct_types = np.array(["Bank", "AcctRec", "AcctPay", "Income", "Expense", "COGS", "Equity", "OthCurrAsset"])
        number = (1000 + acct_ids * 10).astype(str)
        out["account"] = pd.DataFrame(
            {
                "id": acct_ids,
                "acctnumber": number,
                "accountsearchdisplayname": np.char.add(np.char.add(number, " "), acct_types[acct_ids % 8]),
                "accttype": acct_types[acct_ids % 8],
                "subsidiary": 1 + acct_ids % n_sub,
                "isinactive": rng.random(len(acct_ids)) < 0.05,
                "lastmodifieddate": self.modified(len(acct_ids)),
            }
        )
        # Entities share one id space, as in NetSuite; items and transactions have their own.
        next_id = 1
        for table in ("customer", "vendor", "employee"):
            out[table], next_id = self.entities(table, next_id)

        items, _ = self.with_deletions("item", 1, lambda ids: np.char.add("ITEM-", ids.astype(str)))
        n = len(items)
        ids = items["id"].to_numpy()
        items["itemid"] = np.char.add("ITEM-", ids.astype(str))
        items["displayname"] = np.char.add(np.char.add(self.pick(_WORDS, n), " widget "), ids.astype(str))
        items["itemtype"] = np.array(["InvtPart", "Service", "NonInvtPart", "Kit"])[ids % 4]
        items["baseprice"] = np.round(rng.uniform(1, 900, n), 2)
        items["isinactive"] = rng.random(n) < 0.03
        out["item"] = items

        kinds = np.array(["SalesOrd", "CustInvc", "VendBill"])
        trans, _ = self.with_deletions("transaction", 1, lambda ids: np.char.add("TRAN", ids.astype(str)))
        n = len(trans)
        ids = trans["id"].to_numpy()
        kind = self.pick(kinds, n)
        changed = trans["lastmodifieddate"].to_numpy()
        customers = out["customer"]["id"].to_numpy() if len(out["customer"]) else np.array([0])
        vendors = out["vendor"]["id"].to_numpy() if len(out["vendor"]) else np.array([0])
        trans["tranid"] = np.char.add(np.char.upper(kind.astype("<U2")), ids.astype(str))
        trans["type"] = kind
        trans["trandate"] = (changed - rng.integers(0, 30, n).astype("timedelta64[D]")).astype("datetime64[D]")
        trans["entity"] = np.where(kind == "VendBill", self.pick(vendors, n), self.pick(customers, n))
        trans["subsidiary"] = rng.integers(1, n_sub + 1, n)
        trans["status"] = np.where(rng.random(n) < 0.5, "Open", "Closed")
        trans["currency"] = 1
        trans["foreigntotal"] = np.round(rng.uniform(10, 20000, n), 2)
        trans["memo"] = self.nulls(np.char.add("memo ", ids.astype(str)), 0.6)
        channel = pd.Series(self.pick(np.array(["web", "phone", "partner"]), n), dtype=object)
        channel[changed < self.midway] = None
        trans["custbody_channel"] = channel
        out["transaction"] = trans

        n_lines = self.n("transactionline")
        if n_lines and n:
            parent = np.arange(n_lines) % n
            changed = trans["lastmodifieddate"].to_numpy()[parent]
            # A line changes with its transaction, or later on its own.
            later = rng.integers(0, 86400, n_lines) * (rng.random(n_lines) < 0.2)
            changed = np.minimum(
                changed + later.astype("timedelta64[s]"), self.origin + np.timedelta64(self.span - 1, "s")
            )
            quantity = rng.integers(1, 20, n_lines).astype(float)
            rate = np.round(rng.uniform(1, 500, n_lines), 2)
            out["transactionline"] = pd.DataFrame(
                {
                    "uniquekey": np.arange(1, n_lines + 1),
                    "id": np.arange(n_lines) // n,
                    "transaction": ids[parent],
                    "item": self.pick(out["item"]["id"].to_numpy() if len(out["item"]) else np.array([0]), n_lines),
                    "quantity": quantity,
                    "rate": rate,
                    "netamount": np.round(quantity * rate, 2),
                    "linelastmodifieddate": changed,
                }
            )
        else:
            out["transactionline"] = pd.DataFrame({c: [] for c in SCHEMAS["transactionline"]})
        for table in list(out):
            if not self.n(table):
                out[table] = out[table].iloc[0:0]
        deleted = [d for d in self.deleted if len(d)]
        out["deletedrecord"] = (
            pd.concat(deleted, ignore_index=True)
            if deleted
            else pd.DataFrame({c: [] for c in SCHEMAS["deletedrecord"]})
        )
        return {table: frame[list(SCHEMAS[table])] for table, frame in out.items()}


def generate_tables(config: NetSuiteSandboxConfig) -> dict[str, pd.DataFrame]:
    """Every table's rows, deterministic for `config.seed`: the same config always serves the same account."""
    return _Generator(config).tables()


_DUCKDB_TYPES = {
    "int": "BIGINT",
    "float": "DOUBLE",
    "text": "VARCHAR",
    "bool": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}


def build_database(config: NetSuiteSandboxConfig) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB, each table stored in key order so a key-set page skips earlier row groups."""
    db = duckdb.connect(":memory:")
    for table, frame in generate_tables(config).items():
        schema = SCHEMAS[table]
        columns = ", ".join(f'CAST("{c}" AS {_DUCKDB_TYPES[kind]}) AS "{c}"' for c, kind in schema.items())
        db.register("generated", frame)
        order = "type, recordid" if table == "deletedrecord" else f'"{KEY_COLUMNS.get(table, "id")}"'
        db.execute(f'CREATE TABLE "{table}" AS SELECT {columns} FROM generated ORDER BY {order}')
        db.unregister("generated")
    return db


# ---- SuiteQL subset -------------------------------------------------------------------------------------------


class QueryError(ValueError):
    pass


_SELECT = re.compile(
    r"^\s*SELECT\s+(?P<cols>.+?)\s+FROM\s+(?P<table>\w+)(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>\w+)(?:\s+ASC)?)?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_TO_CHAR = re.compile(rf"^TO_CHAR\(\s*(\w+)\s*,\s*'{TIMESTAMP_FORMAT}'\s*\)\s+AS\s+(\w+)$", re.IGNORECASE)
_COUNT = re.compile(r"^COUNT\(\s*\*\s*\)(?:\s+AS\s+(\w+))?$", re.IGNORECASE)
_VALUE = rf"TO_TIMESTAMP\(\s*'([^']*)'\s*,\s*'{TIMESTAMP_FORMAT}'\s*\)|(-?\d+)|'([^']*)'"
_COMPARE = re.compile(rf"^(\w+)\s*(>=|<=|<>|!=|=|<|>)\s*(?:{_VALUE})$", re.IGNORECASE)
_IN = re.compile(r"^(\w+)\s+IN\s*\(\s*('[^']*'(?:\s*,\s*'[^']*')*)\s*\)$", re.IGNORECASE)


@dataclass(frozen=True)
class Projection:
    source: str
    alias: str
    as_timestamp: bool = False


@dataclass(frozen=True)
class ParsedQuery:
    table: str
    projections: tuple[Projection, ...]
    count_alias: str | None
    where_sql: str
    order_by: str | None


def parse_suiteql(query: str) -> ParsedQuery:
    """The documented subset, translated to DuckDB SQL; anything else raises QueryError."""
    match = _SELECT.match(query)
    if not match:
        raise QueryError("the query is not SELECT ... FROM <table> [WHERE ...] [ORDER BY <column>]")
    table = match["table"].lower()
    if table not in SCHEMAS:
        raise QueryError(f"Record '{match['table']}' was not found.")
    schema = SCHEMAS[table]

    def column(name: str) -> str:
        if name.lower() not in schema:
            raise QueryError(f"Field '{name}' for record '{table}' was not found.")
        return name.lower()

    projections: list[Projection] = []
    count_alias = None
    for part in _split_select(match["cols"]):
        if part == "*":
            projections.extend(Projection(c, c) for c in schema)
        elif m := _COUNT.match(part):
            count_alias = (m[1] or "expr1").lower()
        elif m := _TO_CHAR.match(part):
            projections.append(Projection(column(m[1]), m[2].lower(), as_timestamp=True))
        elif re.fullmatch(r"\w+", part):
            projections.append(Projection(column(part), part.lower()))
        else:
            raise QueryError(f"unsupported select expression {part!r}")
    if count_alias and projections:
        raise QueryError("COUNT(*) cannot be mixed with columns without GROUP BY")

    # Values go into the SQL as literals, not parameters: DuckDB prunes row groups and stops a top-N early only for
    # literals (5x faster pages). They are safe to inline: the patterns admit only digits, a validated timestamp,
    # and quote-free strings.
    clauses: list[str] = []
    if match["where"]:
        for cond in re.split(r"\s+AND\s+", match["where"].strip(), flags=re.IGNORECASE):
            if m := _COMPARE.match(cond.strip()):
                op = "<>" if m[2] == "!=" else m[2]
                if m[3] is not None:
                    literal = f"TIMESTAMP '{_timestamp_param(m[3]):%Y-%m-%d %H:%M:%S}'"
                elif m[4] is not None:
                    literal = str(int(m[4]))
                else:
                    literal = f"'{m[5]}'"
                clauses.append(f'"{column(m[1])}" {op} {literal}')
            elif m := _IN.match(cond.strip()):
                clauses.append(f'"{column(m[1])}" IN ({", ".join(re.findall(r"'[^']*'", m[2]))})')
            else:
                raise QueryError(f"unsupported condition {cond.strip()!r}")
    order_by = column(match["order"]) if match["order"] else None
    return ParsedQuery(
        table=table,
        projections=tuple(projections),
        count_alias=count_alias,
        where_sql=" AND ".join(clauses) or "1 = 1",
        order_by=order_by,
    )


def _split_select(cols: str) -> list[str]:
    """Split the select list on top-level commas (TO_CHAR's arguments hold commas)."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in cols:
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        depth += char == "("
        depth -= char == ")"
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def _timestamp_param(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise QueryError(f"'{value}' does not match the format {TIMESTAMP_FORMAT}") from None


def _rendered(kind: str, column: str, as_timestamp: bool) -> str:
    """SQL that renders a value as SuiteQL over REST returns it: a string; dates in the account's format
    (`M/D/YYYY`, no time) unless selected through TO_CHAR; booleans as T/F."""
    quoted = f'"{column}"'
    if kind in ("timestamp", "date"):
        return f"strftime({quoted}, '{'%Y-%m-%d %H:%M:%S' if as_timestamp else '%-m/%-d/%Y'}')"
    if kind == "bool":
        return f"CASE WHEN {quoted} IS NULL THEN NULL WHEN {quoted} THEN 'T' ELSE 'F' END"
    return f"CAST({quoted} AS VARCHAR)"


# ---- HTTP -------------------------------------------------------------------------------------------------------


def _error(status: int, code: str, detail: str, **extra: str) -> JSONResponse:
    titles = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
    body: dict[str, Any] = {
        "type": f"https://www.rfc-editor.org/rfc/rfc9110.html#section-15.{5 if status < 500 else 6}.{status % 100 + 1}",
        "title": titles.get(status, "Error"),
        "status": status,
        "o:errorDetails": [{"detail": detail, "o:errorCode": code, **extra}],
    }
    return JSONResponse(body, status_code=status)


def _invalid_login(realm: str) -> JSONResponse:
    response = _error(
        401,
        "INVALID_LOGIN",
        "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at "
        "Setup > Users/Roles > User Management > View Login Audit Trail.",
    )
    response.headers["WWW-Authenticate"] = (
        f'Bearer realm="{realm}", error="invalid_token", error_description="Invalid login attempt."'
    )
    return response


class _TBAValidator(RequestValidator):
    """oauthlib's hooks for one integration record and one access token, as NetSuite holds them per account."""

    def __init__(self, credentials: TBACredentials, realm: str) -> None:
        super().__init__()
        self.credentials = credentials
        self.realm = realm
        self._nonces: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    enforce_ssl = False  # the sandbox serves plain HTTP on 127.0.0.1
    client_key_length = (1, 256)
    access_token_length = (1, 256)
    nonce_length = (6, 64)
    timestamp_lifetime = 300
    allowed_signature_methods = ("HMAC-SHA256",)
    dummy_client = "dummy-client-key"
    dummy_access_token = "dummy-access-token"

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return secrets.compare_digest(client_key, self.credentials.consumer_key)

    def validate_access_token(self, client_key: str, token: str, request: Any) -> bool:
        return secrets.compare_digest(token, self.credentials.token_id)

    def get_client_secret(self, client_key: str, request: Any) -> str:
        return self.credentials.consumer_secret if client_key == self.credentials.consumer_key else "dummy-secret"

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        return self.credentials.token_secret if token == self.credentials.token_id else "dummy-secret"

    def validate_realms(self, client_key: str, token: str, request: Any, uri: Any = None, realms: Any = None) -> bool:
        return request.realm == self.realm

    def validate_timestamp_and_nonce(
        self, client_key: str, timestamp: str, nonce: str, request: Any, **kwargs: Any
    ) -> bool:
        now = time.time()
        try:
            if abs(now - int(timestamp)) > self.timestamp_lifetime:
                return False
        except ValueError:
            return False
        with self._lock:
            self._nonces = {k: t for k, t in self._nonces.items() if now - t <= self.timestamp_lifetime}
            if (client_key, nonce) in self._nonces:
                return False
            self._nonces[(client_key, nonce)] = now
        return True


class _NetSuiteApp:
    def __init__(self, config: NetSuiteSandboxConfig, db: duckdb.DuckDBPyConnection, stats: SandboxStats) -> None:
        self.config = config
        self.db = db
        self.stats = stats
        self.realm = realm_for(config.account_id)
        self.tba = ResourceEndpoint(_TBAValidator(config.tba, self.realm)) if config.tba else None
        self.m2m_key = _public_key(config.m2m.public_key_pem) if config.m2m else None
        self.tokens: dict[str, float] = {}
        self.in_flight = 0
        self.app = Starlette(
            routes=[
                Route(SUITEQL_PATH, self.suiteql, methods=["POST"]),
                Route(TOKEN_PATH, self.token, methods=["POST"]),
                Route(CATALOG_PATH + "/{record}", self.catalog, methods=["GET"]),
            ]
        )

    def _authenticated(self, request: Request, body: bytes) -> bool:
        authorization = request.headers.get("authorization", "")
        if authorization.startswith("Bearer "):
            expires = self.tokens.get(authorization.removeprefix("Bearer ").strip())
            return expires is not None and time.time() < expires
        if authorization.startswith("OAuth ") and self.tba is not None:
            valid, _ = self.tba.validate_protected_resource_request(
                str(request.url), http_method=request.method, body=body, headers=dict(request.headers)
            )
            return bool(valid)
        return False

    async def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != "client_credentials" or form.get("client_assertion_type") != JWT_BEARER:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if self.config.m2m is None or self.m2m_key is None or not form.get("client_assertion"):
            self.stats.rejected_auth += 1
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        try:
            token = jwt.decode(form["client_assertion"], self.m2m_key, algorithms=list(ASSERTION_ALGORITHMS))
            now = int(time.time())
            iat, exp = int(token.claims["iat"]), int(token.claims["exp"])
            valid = (
                token.header.get("kid") == self.config.m2m.certificate_id
                and token.claims.get("iss") == self.config.m2m.client_id
                and token.claims.get("aud") == str(request.url)
                and iat - 300 <= now < exp
                and exp - iat < 3600
            )
        except (JoseError, KeyError, ValueError, TypeError):
            valid = False
        if not valid:
            self.stats.rejected_auth += 1
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access_token = secrets.token_urlsafe(48)
        issued_at = time.time()
        self.tokens = {t: expires for t, expires in self.tokens.items() if expires > issued_at}
        self.tokens[access_token] = issued_at + self.config.token_lifetime_s
        self.stats.tokens_issued += 1
        return JSONResponse(
            {"access_token": access_token, "expires_in": str(self.config.token_lifetime_s), "token_type": "Bearer"}
        )

    async def catalog(self, request: Request) -> Response:
        body = await request.body()
        if not self._authenticated(request, body):
            self.stats.rejected_auth += 1
            return _invalid_login(self.realm)
        record = request.path_params["record"].lower()
        if record not in SCHEMAS:
            return _error(404, "NONEXISTENT_ID", f"Record type '{record}' does not exist.")
        properties = {name: {"title": name, **_CATALOG_TYPES[kind]} for name, kind in SCHEMAS[record].items()}
        return JSONResponse(
            {"type": "object", "title": record, "properties": properties},
            media_type="application/schema+json",
        )

    async def suiteql(self, request: Request) -> Response:
        body = await request.body()
        if not self._authenticated(request, body):
            self.stats.rejected_auth += 1
            return _invalid_login(self.realm)
        if self.in_flight >= self.config.max_concurrency:
            self.stats.rejected_concurrency += 1
            return _error(429, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded. Request blocked.")
        self.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.in_flight)
        self.stats.suiteql_requests += 1
        try:
            response = self._run(request, body)
            if self.config.latency_s:
                await asyncio.sleep(self.config.latency_s)
            return response
        finally:
            self.in_flight -= 1

    def _run(self, request: Request, body: bytes) -> Response:
        if "transient" not in request.headers.get("prefer", ""):
            return _error(
                400,
                "INVALID_HEADER",
                "The request header 'Prefer: transient' is required.",
                **{"o:errorHeader": "Prefer"},
            )
        try:
            limit = int(request.query_params.get("limit", self.config.max_page_size))
            offset = int(request.query_params.get("offset", 0))
        except ValueError:
            return _error(400, "INVALID_PARAMETER", "Invalid 'limit' or 'offset' parameter value.")
        if not 1 <= limit <= self.config.max_page_size:
            return _error(
                400,
                "INVALID_PARAMETER",
                f"Invalid 'limit' parameter value. Use a value between 1 and {self.config.max_page_size}.",
                **{"o:errorQueryParam": "limit"},
            )
        if offset < 0 or offset % limit:
            return _error(
                400,
                "INVALID_PARAMETER",
                "Invalid 'offset' parameter value. The offset must be a multiple of limit.",
                **{"o:errorQueryParam": "offset"},
            )
        if offset + limit > self.config.offset_cap:
            return _error(
                400,
                "INVALID_PARAMETER",
                f"Invalid 'offset' parameter value. A query can page through at most {self.config.offset_cap} "
                "results; narrow the query.",
                **{"o:errorQueryParam": "offset"},
            )
        try:
            query = json.loads(body)["q"]
            parsed = parse_suiteql(query)
        except (ValueError, KeyError, TypeError) as exc:
            return _error(
                400,
                "INVALID_PARAMETER",
                f"Invalid search query. Detailed unprocessed description follows. Search error occurred: {exc}",
            )
        items, total = self._execute(parsed, limit, offset)
        has_more = offset + len(items) < total
        url = str(request.url.replace(query=""))

        def link(rel: str, at: int) -> dict[str, str]:
            return {"rel": rel, "href": f"{url}?{urlencode({'limit': limit, 'offset': at})}"}

        links = [link("self", offset), link("first", 0)]
        if has_more:
            links.append(link("next", offset + limit))
        if offset:
            links.append(link("previous", max(offset - limit, 0)))
        links.append(link("last", max((total - 1) // limit, 0) * limit))
        return JSONResponse(
            {
                "links": links,
                "count": len(items),
                "hasMore": has_more,
                "items": items,
                "offset": offset,
                "totalResults": total,
            }
        )

    def _execute(self, parsed: ParsedQuery, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        table = f'"{parsed.table}"'
        with _DB_LOCK:
            (total,) = self.db.execute(f"SELECT COUNT(*) FROM {table} WHERE {parsed.where_sql}").fetchall()[0]
            if parsed.count_alias:
                return [{"links": [], parsed.count_alias: str(total)}], 1
            schema = SCHEMAS[parsed.table]
            columns = ", ".join(_rendered(schema[p.source], p.source, p.as_timestamp) for p in parsed.projections)
            order = f' ORDER BY "{parsed.order_by}"' if parsed.order_by else ""
            window = f"FROM {table} WHERE {parsed.where_sql}{order} LIMIT {limit} OFFSET {offset}"
            page = f"SELECT * {window}"
            if parsed.order_by == KEY_COLUMNS.get(parsed.table, "id"):
                # Ordered by the unique key: find the page's key range first (narrow and fast), then render just
                # those rows; DuckDB would otherwise materialize every matching wide row before the LIMIT.
                key = f'"{parsed.order_by}"'
                keys = f"SELECT {key} {window}"
                low, high = self.db.execute(f"SELECT min({key}), max({key}) FROM ({keys})").fetchall()[0]
                if low is None:
                    return [], total
                page = f"SELECT * FROM {table} WHERE {key} >= {low} AND {key} <= {high} AND {parsed.where_sql}"
            rows = self.db.execute(f"SELECT {columns} FROM ({page}){order}").fetchall()
        aliases = [p.alias for p in parsed.projections]
        # NetSuite leaves null fields out of an item.
        items = [{"links": [], **{a: v for a, v in zip(aliases, row, strict=True) if v is not None}} for row in rows]
        return items, total


@contextlib.contextmanager
def run_netsuite_api(
    config: NetSuiteSandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> Iterator[NetSuiteSandbox]:
    """Serve the stand-in on a daemon thread until the block exits; `base_url` replaces the account's REST URL."""
    config = config or NetSuiteSandboxConfig()
    db = build_database(config)
    stats = SandboxStats()
    app = _NetSuiteApp(config, db, stats)
    server = uvicorn.Server(uvicorn.Config(app.app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="netsuite-sandbox", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        thread.join(0.01)
    if not server.started:
        raise RuntimeError(f"NetSuite sandbox failed to listen on {host}:{port}")
    try:
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield NetSuiteSandbox(base_url=f"http://{host}:{bound}", config=config, stats=stats, db=db)
    finally:
        server.should_exit = True
        thread.join()
        db.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve in the foreground until SIGTERM or SIGINT, so a supervisor (`ingestion-platform dev`) can stop it."""
    parser = argparse.ArgumentParser(prog="python -m ingestion_platform.sandbox.netsuite_api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9070)
    parser.add_argument("--seed", default="netsuite")
    parser.add_argument("--days", type=int, default=10)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    config = NetSuiteSandboxConfig(seed=args.seed, days=args.days)
    with run_netsuite_api(config, host=args.host, port=args.port) as sandbox:
        print(f"netsuite sandbox ready at {sandbox.base_url} (account {sandbox.account_id})", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
