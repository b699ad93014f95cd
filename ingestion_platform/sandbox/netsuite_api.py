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
expressions and run on an in-memory SQLite database; anything else is answered with NetSuite's 400 for an invalid
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
import json
import random
import re
import secrets
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlencode

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

# Column name -> SQLite storage kind; kinds: int, float, text, bool, date, timestamp.
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
        "recordtype": "text",
        "name": "text",
        "deleteddate": "timestamp",
        "context": "text",
    },
}
KEY_COLUMNS = {"transactionline": "uniquekey", "deletedrecord": "recordid"}
MODIFIED_COLUMNS = {"transactionline": "linelastmodifieddate", "deletedrecord": "deleteddate"}
NEW_COLUMNS = {"customer": "custentity_loyalty_tier", "transaction": "custbody_channel"}
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
    db: sqlite3.Connection

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
        """Read the sandbox's own tables with SQLite SQL, for tests to state what a correct extraction returns."""
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

_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim", "Hedy", "Linus")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Lee")
_WORDS = ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Tyrell", "Cyberdyne", "Soylent", "Hooli")
_SUFFIX = ("Inc", "LLC", "GmbH", "Ltd", "SA", "BV")


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def generate_tables(config: NetSuiteSandboxConfig) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, deterministic for `config.seed`: the same config always serves the same account."""
    rng = random.Random(f"{config.seed}")
    origin = datetime.combine(config.start, datetime.min.time())
    span = config.days * 86400
    midway = config.new_column_from
    tables: dict[str, list[tuple[Any, ...]]] = {}
    deleted: list[tuple[Any, ...]] = []

    def modified() -> datetime:
        return origin + timedelta(seconds=rng.randrange(span))

    def counts(table: str) -> int:
        return int(config.rows.get(table, 0))

    n_sub = max(counts("subsidiary"), 1 if any(config.rows.values()) else 0)
    n_entities = {t: counts(t) for t in ("customer", "vendor", "employee")}
    tables["subsidiary"] = [
        (
            i,
            f"{_WORDS[i % len(_WORDS)]} {('US', 'UK', 'DE', 'FR', 'JP')[i % 5]}",
            ("US", "GB", "DE", "FR", "JP")[i % 5],
            1 + i % 5,
            i == n_sub and n_sub > 2,
            _ts(modified()),
        )
        for i in range(1, counts("subsidiary") + 1)
    ]
    types = ("Bank", "AcctRec", "AcctPay", "Income", "Expense", "COGS", "Equity", "OthCurrAsset")
    tables["account"] = [
        (
            i,
            f"{1000 + i * 10}",
            f"{1000 + i * 10} {types[i % len(types)]} {i}",
            types[i % len(types)],
            1 + i % n_sub,
            rng.random() < 0.05,
            _ts(modified()),
        )
        for i in range(1, counts("account") + 1)
    ]

    # Entities share one id space (as in NetSuite); a share of the ids is deleted and lives only in deletedrecord.
    next_id = 1
    for table in ("customer", "vendor", "employee"):
        rows: list[tuple[Any, ...]] = []
        while len(rows) < n_entities[table]:
            entity_id, next_id = next_id, next_id + 1
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            company = f"{rng.choice(_WORDS)} {last} {rng.choice(_SUFFIX)}"
            changed = modified()
            if rng.random() < config.deleted_share:
                deleted.append(
                    (
                        entity_id,
                        table,
                        company if table != "employee" else f"{first} {last}",
                        _ts(changed + timedelta(seconds=rng.randrange(1, 3600))),
                        "webservices",
                    )
                )
                continue
            email = f"{first}.{last}{entity_id}@example.com".lower() if rng.random() > 0.1 else None
            phone = f"+1 555 {rng.randrange(100, 999)} {rng.randrange(1000, 9999)}" if rng.random() > 0.3 else None
            sub = 1 + rng.randrange(n_sub) if n_sub else None
            if table == "customer":
                tier = rng.choice(("bronze", "silver", "gold")) if changed >= midway else None
                created = changed - timedelta(days=rng.randrange(0, 900))
                rows.append(
                    (
                        entity_id,
                        f"CUST{entity_id}",
                        company,
                        email,
                        phone,
                        sub,
                        round(rng.uniform(0, 50000), 2),
                        _ts(created),
                        rng.random() < 0.05,
                        _ts(changed),
                        tier,
                    )
                )
            elif table == "vendor":
                rows.append(
                    (entity_id, f"VEND{entity_id}", company, email, phone, sub, rng.random() < 0.05, _ts(changed))
                )
            else:
                rows.append((entity_id, f"EMP{entity_id}", first, last, email, sub, rng.random() < 0.05, _ts(changed)))
        tables[table] = rows

    item_types = ("InvtPart", "Service", "NonInvtPart", "Kit")
    items: list[tuple[Any, ...]] = []
    item_id = 0
    while len(items) < counts("item"):
        item_id += 1
        changed = modified()
        if rng.random() < config.deleted_share:
            deleted.append(
                (
                    item_id,
                    rng.choice(DELETED_TYPES["item"]),
                    f"ITEM-{item_id}",
                    _ts(changed + timedelta(seconds=rng.randrange(1, 3600))),
                    "userinterface",
                )
            )
            continue
        items.append(
            (
                item_id,
                f"ITEM-{item_id}",
                f"{rng.choice(_WORDS)} widget {item_id}",
                item_types[item_id % len(item_types)],
                round(rng.uniform(1, 900), 2),
                rng.random() < 0.03,
                _ts(changed),
            )
        )
    tables["item"] = items

    customers = [r[0] for r in tables["customer"]] or [0]
    vendors = [r[0] for r in tables["vendor"]] or [0]
    item_ids = [r[0] for r in items] or [0]
    transactions: list[tuple[Any, ...]] = []
    tran_id = 0
    statuses = {
        "SalesOrd": ("Pending Fulfillment", "Billed"),
        "CustInvc": ("Open", "Paid In Full"),
        "VendBill": ("Open", "Paid In Full"),
    }
    while len(transactions) < counts("transaction"):
        tran_id += 1
        changed = modified()
        kind = rng.choice(("SalesOrd", "CustInvc", "VendBill"))
        if rng.random() < config.deleted_share:
            record_type = {"SalesOrd": "salesorder", "CustInvc": "invoice", "VendBill": "vendorbill"}[kind]
            deleted.append(
                (
                    tran_id,
                    record_type,
                    f"{kind}{tran_id}",
                    _ts(changed + timedelta(seconds=rng.randrange(1, 3600))),
                    "csvimport",
                )
            )
            continue
        entity = rng.choice(vendors if kind == "VendBill" else customers)
        channel = rng.choice(("web", "phone", "partner")) if changed >= midway else None
        transactions.append(
            (
                tran_id,
                f"{kind[:2].upper()}{tran_id:07d}",
                kind,
                (changed - timedelta(days=rng.randrange(0, 30))).date().isoformat(),
                entity,
                1 + rng.randrange(n_sub) if n_sub else None,
                rng.choice(statuses[kind]),
                1,
                round(rng.uniform(10, 20000), 2),
                None if rng.random() < 0.6 else f"memo {tran_id}",
                _ts(changed),
                channel,
            )
        )
    tables["transaction"] = transactions

    lines: list[tuple[Any, ...]] = []
    n_lines = counts("transactionline")
    tran_rows = transactions or [(0, None, None, None, None, None, None, None, None, None, _ts(origin), None)]
    unique = 0
    while len(lines) < n_lines:
        tran = tran_rows[len(lines) % len(tran_rows)]
        line_no = len(lines) // len(tran_rows)
        unique += 1
        quantity = float(rng.randrange(1, 20))
        rate = round(rng.uniform(1, 500), 2)
        # A line changes with its transaction, or later on its own.
        changed = datetime.strptime(tran[10], "%Y-%m-%d %H:%M:%S")
        if rng.random() < 0.2:
            changed = min(changed + timedelta(seconds=rng.randrange(1, 86400)), origin + timedelta(seconds=span - 1))
        lines.append(
            (unique, line_no, tran[0], rng.choice(item_ids), quantity, rate, round(quantity * rate, 2), _ts(changed))
        )
    tables["transactionline"] = lines
    for table in tables:
        if not config.rows.get(table):
            tables[table] = []
    tables["deletedrecord"] = [row for row in deleted if config.rows.get(_deleted_table(row[1]), 0)]
    return tables


def _deleted_table(record_type: str) -> str:
    return next((t for t, types in DELETED_TYPES.items() if record_type in types), record_type)


def build_database(config: NetSuiteSandboxConfig) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    for table, rows in generate_tables(config).items():
        schema = SCHEMAS[table]
        columns = ", ".join(f'"{c}"' for c in schema)
        db.execute(f'CREATE TABLE "{table}" ({columns}, PRIMARY KEY ("{KEY_COLUMNS.get(table, "id")}"))')
        db.executemany(f'INSERT INTO "{table}" VALUES ({", ".join("?" for _ in schema)})', rows)
        modified = MODIFIED_COLUMNS.get(table, "lastmodifieddate")
        db.execute(f'CREATE INDEX "{table}_modified" ON "{table}" ("{modified}")')
    db.commit()
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
    params: tuple[Any, ...]
    order_by: str | None


def parse_suiteql(query: str) -> ParsedQuery:
    """The documented subset, translated to SQLite with parameters; anything else raises QueryError."""
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

    clauses: list[str] = []
    params: list[Any] = []
    if match["where"]:
        for cond in re.split(r"\s+AND\s+", match["where"].strip(), flags=re.IGNORECASE):
            if m := _COMPARE.match(cond.strip()):
                op = "<>" if m[2] == "!=" else m[2]
                clauses.append(f'"{column(m[1])}" {op} ?')
                if m[3] is not None:
                    params.append(_timestamp_param(m[3]))
                elif m[4] is not None:
                    params.append(int(m[4]))
                else:
                    params.append(m[5])
            elif m := _IN.match(cond.strip()):
                values = re.findall(r"'([^']*)'", m[2])
                clauses.append(f'"{column(m[1])}" IN ({", ".join("?" for _ in values)})')
                params.extend(values)
            else:
                raise QueryError(f"unsupported condition {cond.strip()!r}")
    order_by = column(match["order"]) if match["order"] else None
    return ParsedQuery(
        table=table,
        projections=tuple(projections),
        count_alias=count_alias,
        where_sql=" AND ".join(clauses) or "1 = 1",
        params=tuple(params),
        order_by=order_by,
    )


def _split_select(cols: str) -> list[str]:
    """Split the select list on top-level commas (TO_CHAR's arguments hold commas)."""
    parts, depth, current = [], 0, []
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


def _timestamp_param(value: str) -> str:
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise QueryError(f"'{value}' does not match the format {TIMESTAMP_FORMAT}") from None


def _render(kind: str, value: Any, as_timestamp: bool) -> str:
    """One value as SuiteQL over REST returns it: a string, in the account's date format unless TO_CHAR'd."""
    if kind == "bool":
        return "T" if value else "F"
    if kind in ("timestamp", "date"):
        moment = datetime.fromisoformat(value)
        if as_timestamp:
            return moment.strftime("%Y-%m-%d %H:%M:%S")
        return f"{moment.month}/{moment.day}/{moment.year}"
    if kind == "float":
        return repr(float(value))
    return str(value)


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
    def __init__(self, config: NetSuiteSandboxConfig, db: sqlite3.Connection, stats: SandboxStats) -> None:
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
        self.tokens[access_token] = time.time() + self.config.token_lifetime_s
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
            count_sql = f"SELECT COUNT(*) FROM {table} WHERE {parsed.where_sql}"
            total = self.db.execute(count_sql, parsed.params).fetchone()[0]
            if parsed.count_alias:
                return [{"links": [], parsed.count_alias: str(total)}], 1
            columns = ", ".join(f'"{p.source}"' for p in parsed.projections)
            order = f' ORDER BY "{parsed.order_by}"' if parsed.order_by else ""
            rows = self.db.execute(
                f"SELECT {columns} FROM {table} WHERE {parsed.where_sql}{order} LIMIT ? OFFSET ?",
                (*parsed.params, limit, offset),
            ).fetchall()
        schema = SCHEMAS[parsed.table]
        items = []
        for row in rows:
            item: dict[str, Any] = {"links": []}
            for projection, value in zip(parsed.projections, row, strict=True):
                if value is not None:  # NetSuite leaves null fields out of the item
                    item[projection.alias] = _render(schema[projection.source], value, projection.as_timestamp)
            items.append(item)
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
