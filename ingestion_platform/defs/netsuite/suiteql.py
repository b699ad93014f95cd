"""SuiteQL for incremental extraction, as pure functions: the queries, the paging, and reading NetSuite's answers.

Facts about SuiteQL over REST that shape this module:
- A query returns at most 1,000 rows a page and 100,000 rows in all by offset paging; tools that page by offset
  silently truncate large tables there. Every page here is its own key-set query (`id > last ORDER BY id`, offset
  0), so any table size loads completely; and since the key is unique (`uniquekey` on transactionline, whose `id`
  is the line number) the order is total, so no page repeats or skips a row. Key-set paging also survives rows
  leaving the window mid-extraction (modified again meanwhile), which would shift every later offset and skip rows.
- The last-modified column differs per table: `linelastmodifieddate` on transactionline, `lastmodified` on custom
  records, `lastmodifieddate` elsewhere.
- Date literals follow the account's date format preference, so timestamps are written with an explicit
  `TO_TIMESTAMP(..., 'YYYY-MM-DD HH24:MI:SS')`, and read back through `TO_CHAR` with the same format: a bare date
  column comes back in the user's format (`1/15/2024`), without the time.
- `SELECT *` on `transaction` expands to hundreds of virtual columns and times out: select discovered columns.
- Null fields are omitted from result items, so the columns of a page are the union of its items' keys.
- Errors come as `o:errorDetails[].o:errorCode` + `detail`.
"""

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

PAGE_SIZE = 1000
ID_COLUMN = "id"
TIMESTAMP_FORMAT = "YYYY-MM-DD HH24:MI:SS"
_PY_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Tables whose plain `SELECT *` NetSuite cannot serve in time.
NO_SELECT_STAR = frozenset({"transaction"})
DELETED_RECORD_TABLE = "deletedrecord"
# deletedrecord.type values (record type ids) per SuiteQL table; ids are unique within each group (entities share
# one id space, transactions another), which keeps `ORDER BY recordid` a total order.
DELETED_RECORD_TYPES: Mapping[str, tuple[str, ...]] = {
    "customer": ("customer",),
    "vendor": ("vendor",),
    "employee": ("employee",),
    "item": ("inventoryitem", "noninventoryitem", "serviceitem", "kititem"),
    "transaction": ("salesorder", "invoice", "purchaseorder", "vendorbill", "journalentry", "customerpayment"),
    "account": ("account",),
    "subsidiary": ("subsidiary",),
}


def key_column(table: str) -> str:
    """The table's unique key for key-set paging: transactionline's `id` is the line number within its
    transaction, so its unique key is `uniquekey`."""
    return "uniquekey" if _identifier(table).lower() == "transactionline" else ID_COLUMN


def last_modified_column(table: str) -> str:
    table = _identifier(table).lower()
    if table == "transactionline":
        return "linelastmodifieddate"
    if table.startswith("customrecord"):
        return "lastmodified"
    return "lastmodifieddate"


def timestamp_literal(moment: datetime) -> str:
    """A SuiteQL timestamp that does not depend on the account's date format preference."""
    return f"TO_TIMESTAMP('{moment.strftime(_PY_TIMESTAMP_FORMAT)}', '{TIMESTAMP_FORMAT}')"


def parse_timestamp(value: str) -> datetime:
    """Read a value selected through `TO_CHAR(col, 'YYYY-MM-DD HH24:MI:SS')` (the account's time zone)."""
    return datetime.strptime(value, _PY_TIMESTAMP_FORMAT)


@dataclass(frozen=True)
class Window:
    """A half-open last-modified window [start, end): inclusive at the cursor, so a row modified exactly at the
    boundary is read, and exclusive at the end, so consecutive windows never count a row twice."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"a last-modified window must end after it starts: {self.start} .. {self.end}")


def day_window(day: date, lag: timedelta = timedelta(0)) -> Window:
    """The window of one day partition, reaching `lag` back into the previous day.

    NetSuite stamps last-modified when a transaction starts but the row becomes visible when it commits, so a row
    stamped 23:59:58 may appear after yesterday's extraction ran; the lag re-reads the boundary. Loads upsert by
    id, so the overlap costs a few re-read rows, never duplicates.
    """
    start = datetime.combine(day, time.min)
    return Window(start - lag, start + timedelta(days=1))


def range_window(first_day: date, last_day: date, lag: timedelta = timedelta(0)) -> Window:
    """One window for a backfill range of day partitions: the initial load is one run per range, not per day."""
    return Window(datetime.combine(first_day, time.min) - lag, datetime.combine(last_day + timedelta(days=1), time.min))


def _identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a SuiteQL identifier: {name!r}")
    return name


def _window_clause(column: str, window: Window) -> str:
    return f"{column} >= {timestamp_literal(window.start)} AND {column} < {timestamp_literal(window.end)}"


def select_columns(table: str, columns: Sequence[str] | None, timestamp_columns: Collection[str] = ()) -> list[str]:
    """The select list: discovered columns, with the last-modified column and `timestamp_columns` (date and
    date-time columns from the metadata catalog) read back through TO_CHAR, so no value depends on the account's
    date format preference."""
    if columns is None:
        if table.lower() in NO_SELECT_STAR:
            raise ValueError(f"never SELECT * on {table!r}: it expands to hundreds of columns; pass the columns")
        return ["*"]
    if not columns:
        raise ValueError(f"no columns to select from {table!r}")
    as_text = {last_modified_column(table), *(c.lower() for c in timestamp_columns)}
    out: list[str] = []
    for column in dict.fromkeys(columns):
        column = _identifier(column)
        if column.lower() in as_text:
            out.append(f"TO_CHAR({column}, '{TIMESTAMP_FORMAT}') AS {column}")
        else:
            out.append(column)
    key = key_column(table)
    if key not in {c.lower() for c in columns}:
        out.insert(0, key)
    return out


def select_query(
    table: str,
    columns: Sequence[str] | None,
    window: Window,
    after_id: int | None = None,
    *,
    timestamp_columns: Collection[str] = (),
) -> str:
    """One key-set page: rows of `window` with a key above `after_id`, in key order (fetch with offset 0)."""
    table = _identifier(table)
    key = key_column(table)
    where = _window_clause(last_modified_column(table), window)
    if after_id is not None:
        where += f" AND {key} > {int(after_id)}"
    select = ", ".join(select_columns(table, columns, timestamp_columns))
    return f"SELECT {select} FROM {table} WHERE {where} ORDER BY {key}"


def count_query(table: str, window: Window) -> str:
    """How many rows the window holds, to reconcile an extraction against."""
    table = _identifier(table)
    return f"SELECT COUNT(*) AS count FROM {table} WHERE {_window_clause(last_modified_column(table), window)}"


def deleted_records_query(table: str, window: Window, after_id: int | None = None) -> str:
    """Records of `table` deleted within `window` (NetSuite's deletedrecord), one key-set page by recordid."""
    types = DELETED_RECORD_TYPES.get(_identifier(table).lower(), (table.lower(),))
    type_list = ", ".join(f"'{_identifier(t)}'" for t in types)
    where = f"{_window_clause('deleteddate', window)} AND type IN ({type_list})"
    if after_id is not None:
        where += f" AND recordid > {int(after_id)}"
    return (
        f"SELECT recordid, type, name, TO_CHAR(deleteddate, '{TIMESTAMP_FORMAT}') AS deleteddate "
        f"FROM {DELETED_RECORD_TABLE} WHERE {where} ORDER BY recordid"
    )


# transactionline's column holding its transaction's id, and how many ids one `IN (...)` list carries.
LINE_PARENT = "transaction"
IN_LIST_MAX = 500


def modified_ids_query(table: str, window: Window, after_id: int | None = None) -> str:
    """The keys and last-modified times of `table`'s rows modified within `window`, one key-set page."""
    table = _identifier(table)
    key, modified = key_column(table), last_modified_column(table)
    where = _window_clause(modified, window)
    if after_id is not None:
        where += f" AND {key} > {int(after_id)}"
    return (
        f"SELECT {key}, TO_CHAR({modified}, '{TIMESTAMP_FORMAT}') AS {modified} FROM {table} "
        f"WHERE {where} ORDER BY {key}"
    )


def line_keys_query(transaction_ids: Sequence[int], after_id: int | None = None) -> str:
    """Every current line key of the given transactions, one key-set page by `uniquekey`."""
    if not 1 <= len(transaction_ids) <= IN_LIST_MAX:
        raise ValueError(f"line_keys_query takes 1 to {IN_LIST_MAX} transaction ids, not {len(transaction_ids)}")
    ids = ", ".join(f"'{int(i)}'" for i in transaction_ids)
    key = key_column("transactionline")
    where = f"{LINE_PARENT} IN ({ids})"
    if after_id is not None:
        where += f" AND {key} > {int(after_id)}"
    return f"SELECT {key}, {LINE_PARENT} FROM transactionline WHERE {where} ORDER BY {key}"


@dataclass(frozen=True)
class SuiteQLPage:
    items: list[dict[str, Any]]
    has_more: bool
    total_results: int
    count: int
    offset: int
    links: dict[str, str] = field(default_factory=dict)


class SuiteQLResponseError(ValueError):
    """A 200 response that is not a SuiteQL result: a proxy page, or an API change."""


def parse_page(body: Any) -> SuiteQLPage:
    """Read a SuiteQL response body; each item's own `links` (always empty for SuiteQL) is dropped."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise SuiteQLResponseError(f"not a SuiteQL result (no 'items' list): {str(body)[:200]}")
    items = [{k: v for k, v in item.items() if k != "links"} for item in body["items"]]
    links = {link["rel"]: link["href"] for link in body.get("links") or [] if "rel" in link and "href" in link}
    return SuiteQLPage(
        items=items,
        has_more=bool(body.get("hasMore", False)),
        total_results=int(body.get("totalResults", len(items))),
        count=int(body.get("count", len(items))),
        offset=int(body.get("offset", 0)),
        links=links,
    )


def parse_count(page: SuiteQLPage) -> int:
    if len(page.items) != 1 or "count" not in page.items[0]:
        raise SuiteQLResponseError(f"a COUNT(*) query returned {page.items[:2]!r}")
    return int(page.items[0]["count"])


@dataclass(frozen=True)
class NetSuiteErrorDetail:
    code: str
    detail: str


class NetSuiteError(Exception):
    """An error answer from SuiteTalk REST, surfaced by NetSuite's code and message."""

    def __init__(self, status: int, details: Sequence[NetSuiteErrorDetail], title: str = "") -> None:
        self.status = status
        self.details = tuple(details)
        self.title = title
        text = "; ".join(f"{d.code}: {d.detail}" for d in self.details) or title or "no error details"
        super().__init__(f"NetSuite {status}: {text}")

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(d.code for d in self.details)

    @property
    def is_concurrency_limit(self) -> bool:
        """The account's shared concurrency limit: wait and retry, unlike every other 4xx."""
        return self.status == 429 or any(c in CONCURRENCY_CODES for c in self.codes)


# REST answers CONCURRENCY_LIMIT_EXCEEDED with 429; RESTlets and SOAP report the same limit by these codes.
CONCURRENCY_CODES = frozenset(
    {"CONCURRENCY_LIMIT_EXCEEDED", "SSS_REQUEST_LIMIT_EXCEEDED", "WS_REQUEST_BLOCKED", "WS_CONCUR_SESSION_DISALLWD"}
)


def parse_error(status: int, body: Any) -> NetSuiteError:
    """NetSuite's error shape (`title`, `status`, `o:errorDetails[].o:errorCode` + `detail`), or what there is."""
    if isinstance(body, dict):
        details = [
            NetSuiteErrorDetail(code=str(d.get("o:errorCode", "UNKNOWN")), detail=str(d.get("detail", "")))
            for d in body.get("o:errorDetails") or []
            if isinstance(d, dict)
        ]
        return NetSuiteError(status, details, title=str(body.get("title", "")))
    return NetSuiteError(status, [], title=str(body)[:200] if body else "")


def discover_columns(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """Columns in order of first appearance; NetSuite omits null fields, so a column may show up only late."""
    seen: dict[str, None] = {}
    for item in items:
        for key in item:
            if key != "links":
                seen.setdefault(key, None)
    return list(seen)


def parse_metadata_catalog(schema: Mapping[str, Any]) -> dict[str, str]:
    """Column name -> JSON schema type (`format` where given, e.g. `date-time`) from a metadata-catalog record
    schema (`Accept: application/schema+json`); `date_columns` picks the ones to select through TO_CHAR."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        raise SuiteQLResponseError("metadata catalog schema has no 'properties'")
    return {name: str(spec.get("format") or spec.get("type") or "string") for name, spec in properties.items()}


def date_columns(catalog: Mapping[str, str]) -> list[str]:
    return [name for name, kind in catalog.items() if kind in ("date", "date-time")]


# (query, limit, offset) -> the response body of one SuiteQL POST; the caller owns auth, retries and the pool.
PostQuery = Callable[[str, int, int], Any]


def keyset_pages(
    post: PostQuery,
    make_query: Callable[[int | None], str],
    *,
    page_size: int = PAGE_SIZE,
    key: str = ID_COLUMN,
) -> Iterator[SuiteQLPage]:
    """Every page of a key-set query, each fetched at offset 0 with `id` above the previous page's last id.

    `make_query(after_id)` builds the page's query, e.g. `lambda after: select_query(table, cols, window, after)`,
    and `key` names its key column (`key_column(table)`, or `recordid` for `deleted_records_query`).
    Stops when a page says `hasMore: false`; a page whose ids do not increase is an error, not a silent loop.
    """
    if not 1 <= page_size <= PAGE_SIZE:
        raise ValueError(f"SuiteQL pages hold 1 to {PAGE_SIZE} rows, not {page_size}")
    after: int | None = None
    while True:
        page = parse_page(post(make_query(after), page_size, 0))
        if page.items:
            first, last = int(page.items[0][key]), int(page.items[-1][key])
            if (after is not None and first <= after) or last < first:
                raise SuiteQLResponseError(
                    f"key-set paging did not advance past {key}={after} (page {first}..{last}): is ORDER BY unique?"
                )
            after = last
        yield page
        if not page.has_more or not page.items:
            return
