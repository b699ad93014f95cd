"""The six GA4 event types we load, their typed columns, and the warehouse tables they land in.

Each event type is data: a column list with the BigQuery expression that produces it. The query builder, the
table DDL and the asset factory all read this one declaration, so adding a field is a one-line change.
"""

from dataclasses import dataclass

from ingestion_platform.warehouse import Column, TableSpec

SCHEMA = "ga4"


def param(key: str, kind: str) -> str:
    """Read one event parameter with a typed coalesce.

    GA4 puts a parameter's value in exactly one of string/int/float/double_value, and the field used for a key can
    change over time (ga_session_id has arrived both as int and as string), so never trust a single field.
    """
    unnest = f"FROM UNNEST(event_params) AS p WHERE p.key = '{key}' LIMIT 1"
    if kind == "string":
        expr = (
            "COALESCE(p.value.string_value, CAST(p.value.int_value AS STRING), "
            "CAST(p.value.double_value AS STRING), CAST(p.value.float_value AS STRING))"
        )
    elif kind == "int":
        expr = (
            "COALESCE(p.value.int_value, SAFE_CAST(p.value.string_value AS INT64), "
            "SAFE_CAST(p.value.double_value AS INT64), SAFE_CAST(p.value.float_value AS INT64))"
        )
    elif kind == "float":
        expr = (
            "COALESCE(p.value.double_value, p.value.float_value, CAST(p.value.int_value AS FLOAT64), "
            "SAFE_CAST(p.value.string_value AS FLOAT64))"
        )
    else:
        raise ValueError(f"unknown parameter kind {kind!r}")
    return f"(SELECT {expr} {unnest})"


@dataclass(frozen=True)
class Field:
    """A warehouse column and the BigQuery expression computing it; `requires` names a top-level export field
    that some tables lack (intraday tables have no traffic_source), in which case the column is NULL."""

    column: Column
    expression: str
    requires: str | None = None


def _f(name: str, pg_type: str, expression: str, requires: str | None = None, nullable: bool = True) -> Field:
    return Field(Column(name, pg_type, nullable=nullable), expression, requires)


# tenant_id and provenance are added by the query builder (a parameter and a literal).
COMMON_FIELDS: tuple[Field, ...] = (
    _f("event_date", "date", "PARSE_DATE('%Y%m%d', event_date)", nullable=False),
    _f("event_timestamp", "timestamptz", "TIMESTAMP_MICROS(event_timestamp)", nullable=False),
    _f("event_name", "text", "event_name", nullable=False),
    _f("user_pseudo_id", "text", "user_pseudo_id"),
    _f("user_id", "text", "user_id"),
    _f("ga_session_id", "bigint", param("ga_session_id", "int")),
    _f("batch_event_index", "bigint", "batch_event_index", requires="batch_event_index"),
    _f("batch_ordering_id", "bigint", "batch_ordering_id", requires="batch_ordering_id"),
    _f("batch_page_id", "bigint", "batch_page_id", requires="batch_page_id"),
    _f("device_category", "text", "device.category", requires="device"),
    _f("geo_country", "text", "geo.country", requires="geo"),
    _f("geo_city", "text", "geo.city", requires="geo"),
    _f("traffic_source_name", "text", "traffic_source.name", requires="traffic_source"),
    _f("traffic_source_medium", "text", "traffic_source.medium", requires="traffic_source"),
    _f("traffic_source_source", "text", "traffic_source.source", requires="traffic_source"),
)

# The export has no primary key: these identify one event (the batch ids exist in newer exports only).
DEDUPE_COLUMNS = (
    "event_timestamp",
    "user_pseudo_id",
    "event_name",
    "ga_session_id",
    "batch_event_index",
    "batch_ordering_id",
    "batch_page_id",
)

_ITEM = "items[SAFE_OFFSET(0)]"
_ITEM_FIELDS = (
    _f("item_id", "text", f"{_ITEM}.item_id", requires="items"),
    _f("item_name", "text", f"{_ITEM}.item_name", requires="items"),
    _f("quantity", "bigint", f"{_ITEM}.quantity", requires="items"),
    _f("price", "double precision", f"{_ITEM}.price", requires="items"),
)
_SEARCH_FIELDS = (_f("search_term", "text", param("search_term", "string")),)


@dataclass(frozen=True)
class EventType:
    name: str
    fields: tuple[Field, ...]
    description: str

    @property
    def all_fields(self) -> tuple[Field, ...]:
        return COMMON_FIELDS + self.fields

    @property
    def table(self) -> TableSpec:
        return TableSpec(
            schema=SCHEMA,
            name=self.name,
            columns=(
                Column("tenant_id", "text", nullable=False),
                *(f.column for f in self.all_fields),
                Column("provenance", "text", nullable=False, description="daily or intraday export table"),
            ),
            indexes=(("tenant_id", "event_date"),),
        )


EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        "purchase",
        (
            _f("transaction_id", "text", f"COALESCE(ecommerce.transaction_id, {param('transaction_id', 'string')})"),
            _f(
                "purchase_revenue",
                "double precision",
                f"COALESCE(ecommerce.purchase_revenue, {param('value', 'float')})",
            ),
            _f("currency", "text", param("currency", "string")),
            _f("items", "jsonb", "TO_JSON_STRING(items)", requires="items"),
            _f("item_count", "integer", "ARRAY_LENGTH(items)", requires="items"),
        ),
        "Completed purchases with revenue and the purchased items.",
    ),
    EventType("add_to_cart", _ITEM_FIELDS, "Items added to a cart."),
    EventType(
        "page_view",
        (
            _f("page_title", "text", param("page_title", "string")),
            _f("page_location", "text", param("page_location", "string")),
            _f("page_referrer", "text", param("page_referrer", "string")),
        ),
        "Page views with title, URL and referrer.",
    ),
    EventType("view_item", _ITEM_FIELDS, "Item detail views."),
    EventType("view_search_results", _SEARCH_FIELDS, "Site searches that returned results."),
    EventType("no_search_results", _SEARCH_FIELDS, "Site searches that returned nothing."),
)

EVENT_TYPES_BY_NAME = {e.name: e for e in EVENT_TYPES}
