"""Sample data shaped like the Google Analytics 4 BigQuery export, and seeding it into a BigQuery (emulator) dataset.

The generator reproduces the export's awkward parts on purpose, because the GA4 assets must survive them: the same
event parameter arriving under different value types, exact duplicate events, users without a user_id, events the
platform does not ingest, and the intraday table lacking `traffic_source`.
Schema reference: https://support.google.com/analytics/answer/7029846
"""

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from google.cloud import bigquery

INGESTED_EVENTS = ("purchase", "add_to_cart", "page_view", "view_item", "view_search_results", "no_search_results")
IGNORED_EVENTS = ("session_start", "first_visit", "scroll", "user_engagement")

MICROS_PER_SECOND = 1_000_000
DAY_MICROS = 86_400 * MICROS_PER_SECOND
HOSTNAME = "shop.example.com"
STREAM_ID = "4172853690"


def _key_value_field(name: str) -> bigquery.SchemaField:
    return bigquery.SchemaField(
        name,
        "RECORD",
        mode="REPEATED",
        fields=[
            bigquery.SchemaField("key", "STRING"),
            bigquery.SchemaField(
                "value",
                "RECORD",
                fields=[
                    bigquery.SchemaField("string_value", "STRING"),
                    bigquery.SchemaField("int_value", "INT64"),
                    bigquery.SchemaField("float_value", "FLOAT64"),
                    bigquery.SchemaField("double_value", "FLOAT64"),
                ],
            ),
        ],
    )


def _record(name: str, *fields: tuple[str, str] | bigquery.SchemaField) -> bigquery.SchemaField:
    return bigquery.SchemaField(
        name,
        "RECORD",
        fields=[f if isinstance(f, bigquery.SchemaField) else bigquery.SchemaField(*f) for f in fields],
    )


DAILY_SCHEMA: list[bigquery.SchemaField] = [
    bigquery.SchemaField("event_date", "STRING"),
    bigquery.SchemaField("event_timestamp", "INT64"),
    bigquery.SchemaField("event_name", "STRING"),
    _key_value_field("event_params"),
    bigquery.SchemaField("event_previous_timestamp", "INT64"),
    bigquery.SchemaField("event_value_in_usd", "FLOAT64"),
    bigquery.SchemaField("event_bundle_sequence_id", "INT64"),
    bigquery.SchemaField("user_id", "STRING"),
    bigquery.SchemaField("user_pseudo_id", "STRING"),
    _key_value_field("user_properties"),
    bigquery.SchemaField("user_first_touch_timestamp", "INT64"),
    _record(
        "device",
        ("category", "STRING"),
        ("mobile_brand_name", "STRING"),
        ("operating_system", "STRING"),
        ("language", "STRING"),
        _record("web_info", ("browser", "STRING"), ("hostname", "STRING")),
    ),
    _record("geo", ("continent", "STRING"), ("country", "STRING"), ("region", "STRING"), ("city", "STRING")),
    _record("traffic_source", ("name", "STRING"), ("medium", "STRING"), ("source", "STRING")),
    bigquery.SchemaField("stream_id", "STRING"),
    bigquery.SchemaField("platform", "STRING"),
    _record(
        "ecommerce",
        ("total_item_quantity", "INT64"),
        ("purchase_revenue_in_usd", "FLOAT64"),
        ("purchase_revenue", "FLOAT64"),
        ("shipping_value", "FLOAT64"),
        ("tax_value", "FLOAT64"),
        ("unique_items", "INT64"),
        ("transaction_id", "STRING"),
    ),
    bigquery.SchemaField(
        "items",
        "RECORD",
        mode="REPEATED",
        fields=[
            bigquery.SchemaField("item_id", "STRING"),
            bigquery.SchemaField("item_name", "STRING"),
            bigquery.SchemaField("item_brand", "STRING"),
            bigquery.SchemaField("item_variant", "STRING"),
            bigquery.SchemaField("item_category", "STRING"),
            bigquery.SchemaField("price_in_usd", "FLOAT64"),
            bigquery.SchemaField("price", "FLOAT64"),
            bigquery.SchemaField("quantity", "INT64"),
            bigquery.SchemaField("item_revenue", "FLOAT64"),
        ],
    ),
    bigquery.SchemaField("batch_event_index", "INT64"),
    bigquery.SchemaField("batch_page_id", "INT64"),
    bigquery.SchemaField("batch_ordering_id", "INT64"),
]
# The streaming (intraday) export fills traffic_source only when the daily table is written.
INTRADAY_SCHEMA: list[bigquery.SchemaField] = [f for f in DAILY_SCHEMA if f.name != "traffic_source"]

# (item_id, item_name, item_brand, item_category, variants, price in USD)
type Product = tuple[str, str, str, str, tuple[str, ...], float]
CATALOG: tuple[Product, ...] = (
    ("SKU_1001", "Trail Running Shoe", "Northpeak", "Footwear", ("42", "43", "44"), 129.0),
    ("SKU_1002", "Merino Base Layer", "Northpeak", "Apparel", ("S", "M", "L"), 74.5),
    ("SKU_1003", "Insulated Bottle 750ml", "Hydra", "Accessories", ("blue", "black"), 32.0),
    ("SKU_1004", "Ultralight Tent 2P", "Skyline", "Camping", ("green",), 389.99),
    ("SKU_1005", "Headlamp 400lm", "Lumen", "Accessories", ("(not set)",), 45.9),
    ("SKU_1006", "Rain Shell Jacket", "Skyline", "Apparel", ("S", "M", "L", "XL"), 219.0),
    ("SKU_1007", "Trekking Poles", "Northpeak", "Camping", ("(not set)",), 89.0),
    ("SKU_1008", "Wool Hiking Socks", "Hydra", "Apparel", ("M", "L"), 19.95),
)
PAGES = (
    ("/", "Home | Example Shop"),
    ("/collections/apparel", "Apparel | Example Shop"),
    ("/collections/camping", "Camping | Example Shop"),
    ("/pages/shipping", "Shipping | Example Shop"),
    ("/blog/packing-list", "The ultimate packing list | Example Shop"),
)
SEARCH_TERMS = ("tent", "rain jacket", "socks", "headlamp", "bottle", "shoes")
EMPTY_SEARCH_TERMS = ("snowshoes", "kayak paddle", "ice axe")
# (continent, country, region, city, currency, USD per unit of currency, language)
GEOS = (
    ("Americas", "United States", "California", "San Francisco", "USD", 1.0, "en-us"),
    ("Americas", "United States", "New York", "New York", "USD", 1.0, "en-us"),
    ("Americas", "Canada", "Ontario", "Toronto", "USD", 1.0, "en-ca"),
    ("Europe", "Germany", "Bavaria", "Munich", "EUR", 1.08, "de-de"),
    ("Europe", "France", "Ile-de-France", "Paris", "EUR", 1.08, "fr-fr"),
    ("Europe", "United Kingdom", "England", "London", "GBP", 1.27, "en-gb"),
)
# (category, mobile_brand_name, operating_system, browser)
DEVICES = (
    ("desktop", "Microsoft", "Windows", "Chrome"),
    ("desktop", "Apple", "Macintosh", "Safari"),
    ("desktop", "Google", "Chrome OS", "Chrome"),
    ("mobile", "Apple", "iOS", "Safari"),
    ("mobile", "Samsung", "Android", "Samsung Internet"),
    ("mobile", "Google", "Android", "Chrome"),
    ("tablet", "Apple", "iOS", "Safari"),
)
# (name, medium, source): traffic_source is the user's first-touch acquisition, not the session's.
TRAFFIC_SOURCES = (
    ("(direct)", "(none)", "(direct)"),
    ("(organic)", "organic", "google"),
    ("(organic)", "organic", "bing"),
    ("spring_sale", "cpc", "google"),
    ("newsletter_week_12", "email", "newsletter"),
    ("(referral)", "referral", "facebook.com"),
)


@dataclass(frozen=True)
class _User:
    pseudo_id: str
    user_id: str | None
    first_touch: int
    is_new: bool
    geo: tuple[str, str, str, str, str, float, str]
    device: tuple[str, str, str, str]
    traffic_source: tuple[str, str, str]
    tier: str | None


def _value(
    string: str | None = None, int_: int | None = None, float_: float | None = None, double: float | None = None
) -> dict[str, Any]:
    return {"string_value": string, "int_value": int_, "float_value": float_, "double_value": double}


def _param(key: str, **value: Any) -> dict[str, Any]:
    return {"key": key, "value": _value(**value)}


def _loose_number(rng: random.Random, key: str, amount: float) -> dict[str, Any]:
    """A numeric parameter the way tags send it: usually a double, but whole numbers or float32 now and then."""
    roll = rng.random()
    if roll < 0.08:
        return _param(key, int_=round(amount))
    if roll < 0.12:
        return _param(key, float_=amount)
    return _param(key, double=amount)


def _session_id_param(rng: random.Random, session_id: int) -> dict[str, Any]:
    """ga_session_id is an int, except from some tag setups that send it as a string."""
    if rng.random() < 0.05:
        return _param("ga_session_id", string=str(session_id))
    return _param("ga_session_id", int_=session_id)


def _make_user(rng: random.Random, day_start: int) -> _User:
    is_new = rng.random() < 0.35
    first_touch = day_start if is_new else day_start - rng.randrange(1, 400) * DAY_MICROS
    signed_in = rng.random() < 0.55
    return _User(
        pseudo_id=f"{rng.randrange(10**9, 10**10)}.{first_touch // MICROS_PER_SECOND}",
        user_id=f"U{rng.randrange(10**6, 10**7)}" if signed_in else None,
        first_touch=first_touch,
        is_new=is_new,
        geo=rng.choice(GEOS),
        device=rng.choice(DEVICES),
        traffic_source=rng.choice(TRAFFIC_SOURCES),
        tier=rng.choice(("bronze", "silver", "gold")) if signed_in else None,
    )


def _item(rng: random.Random, product: Product, usd_rate: float, *, sold: bool) -> dict[str, Any]:
    item_id, name, brand, category, variants, price_usd = product
    quantity = rng.choice((1, 1, 1, 2, 3)) if sold else 1
    price = round(price_usd / usd_rate, 2)
    return {
        "item_id": item_id,
        "item_name": name,
        "item_brand": brand,
        "item_variant": rng.choice(variants),
        "item_category": category,
        "price_in_usd": price_usd,
        "price": price,
        "quantity": quantity,
        # The export fills item_revenue on purchases only.
        "item_revenue": round(price * quantity, 2) if sold else None,
    }


class _Session:
    """One visit by one user: emits events in time order with the bookkeeping GA4 attaches to each."""

    def __init__(self, rng: random.Random, user: _User, event_date: str, start: int, number: int) -> None:
        self.rng = rng
        self.user = user
        self.event_date = event_date
        self.now = start
        self.session_id = start // MICROS_PER_SECOND
        self.number = number
        self.page = PAGES[0]
        self.referrer = "https://www.google.com/" if user.traffic_source[1] == "organic" else ""
        self.batch_page_id = start // 1000
        self.batch_ordering_id = 0
        self.events: list[dict[str, Any]] = []

    def emit(
        self,
        name: str,
        params: Sequence[dict[str, Any]] = (),
        *,
        items: Sequence[dict[str, Any]] = (),
        ecommerce: dict[str, Any] | None = None,
        value_in_usd: float | None = None,
    ) -> None:
        self.now += self.rng.randrange(200_000, 45 * MICROS_PER_SECOND)
        self.batch_ordering_id += 1
        path, title = self.page
        user = self.user
        continent, country, region, city, _, _, language = user.geo
        category, brand, operating_system, browser = user.device
        self.events.append(
            {
                "event_date": self.event_date,
                "event_timestamp": self.now,
                "event_name": name,
                "event_params": [
                    _session_id_param(self.rng, self.session_id),
                    _param("ga_session_number", int_=self.number),
                    _param("page_location", string=f"https://{HOSTNAME}{path}"),
                    _param("page_title", string=title),
                    _param("page_referrer", string=self.referrer),
                    *params,
                ],
                "event_previous_timestamp": None,
                "event_value_in_usd": value_in_usd,
                "event_bundle_sequence_id": self.rng.randrange(1, 10**6),
                "user_id": user.user_id,
                "user_pseudo_id": user.pseudo_id,
                "user_properties": [_param("customer_tier", string=user.tier)] if user.tier else [],
                "user_first_touch_timestamp": user.first_touch,
                "device": {
                    "category": category,
                    "mobile_brand_name": brand,
                    "operating_system": operating_system,
                    "language": language,
                    "web_info": {"browser": browser, "hostname": HOSTNAME},
                },
                "geo": {"continent": continent, "country": country, "region": region, "city": city},
                "traffic_source": dict(zip(("name", "medium", "source"), user.traffic_source, strict=True)),
                "stream_id": STREAM_ID,
                "platform": "WEB",
                "ecommerce": ecommerce,
                "items": list(items),
                "batch_event_index": 0,
                "batch_page_id": self.batch_page_id,
                "batch_ordering_id": self.batch_ordering_id,
            }
        )

    def navigate(self, page: tuple[str, str]) -> None:
        self.referrer = f"https://{HOSTNAME}{self.page[0]}"
        self.page = page
        self.batch_page_id = self.now // 1000
        self.batch_ordering_id = 0
        self.emit("page_view")

    def engage(self) -> None:
        if self.rng.random() < 0.4:
            self.emit("scroll", [_param("percent_scrolled", int_=90)])
        if self.rng.random() < 0.5:
            self.emit("user_engagement", [_param("engagement_time_msec", int_=self.rng.randrange(500, 60_000))])

    def search(self) -> None:
        if self.rng.random() < 0.3:
            self.emit("no_search_results", [_param("search_term", string=self.rng.choice(EMPTY_SEARCH_TERMS))])
        else:
            self.emit("view_search_results", [_param("search_term", string=self.rng.choice(SEARCH_TERMS))])

    def product_event(self, name: str, product: Product) -> None:
        currency, usd_rate = self.user.geo[4:6]
        item = _item(self.rng, product, usd_rate, sold=False)
        amount = round(item["price"] * item["quantity"], 2)
        self.emit(
            name,
            [_param("currency", string=currency), _loose_number(self.rng, "value", amount)],
            items=[item],
            ecommerce={
                "total_item_quantity": item["quantity"],
                "purchase_revenue_in_usd": None,
                "purchase_revenue": None,
                "shipping_value": None,
                "tax_value": None,
                "unique_items": 1,
                "transaction_id": "(not set)",
            },
        )

    def purchase(self, cart: list[Product]) -> None:
        currency, usd_rate = self.user.geo[4:6]
        items = [_item(self.rng, product, usd_rate, sold=True) for product in cart]
        revenue = round(sum(item["item_revenue"] for item in items), 2)
        transaction_id = f"T{self.rng.randrange(10**7, 10**8)}"
        self.emit(
            "purchase",
            [
                _param("currency", string=currency),
                _loose_number(self.rng, "value", revenue),
                _param("transaction_id", string=transaction_id),
            ],
            items=items,
            ecommerce={
                "total_item_quantity": sum(item["quantity"] for item in items),
                "purchase_revenue_in_usd": round(revenue * usd_rate, 2),
                "purchase_revenue": revenue,
                "shipping_value": 0.0 if revenue > 100 else 4.95,
                "tax_value": round(revenue * 0.08, 2),
                "unique_items": len(items),
                "transaction_id": transaction_id,
            },
            value_in_usd=round(revenue * usd_rate, 2),
        )

    def play(self) -> None:
        """A plausible funnel: land, browse, maybe search, look at products, maybe add to cart and buy."""
        rng = self.rng
        if self.user.is_new and self.number == 1:
            self.emit("first_visit")
        self.emit("session_start")
        self.navigate(rng.choice(PAGES))
        self.engage()
        for _ in range(rng.randrange(0, 3)):
            self.navigate(rng.choice(PAGES))
            self.engage()
        if rng.random() < 0.45:
            self.search()
        cart: list[Product] = []
        for product in rng.sample(CATALOG, rng.randrange(0, 5)):
            self.navigate((f"/products/{product[0].lower()}", f"{product[1]} | Example Shop"))
            self.product_event("view_item", product)
            self.engage()
            if rng.random() < 0.5:
                self.product_event("add_to_cart", product)
                cart.append(product)
        if cart and rng.random() < 0.7:
            self.navigate(("/checkout/thank-you", "Thank you | Example Shop"))
            self.purchase(cart)


def generate_events(day: date, *, seed: str, n_events: int) -> list[dict[str, Any]]:
    """Exactly n_events export rows for one day (UTC), as JSON-ready dicts; same arguments, same rows.

    Visits are simulated whole and the list is cut at n_events, so a funnel may be truncated, as in a real day's
    export. About 2% of rows are exact copies of another row, as the export delivers some events twice.
    """
    rng = random.Random(f"{seed}:{day.isoformat()}")
    day_start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * MICROS_PER_SECOND
    event_date = day.strftime("%Y%m%d")
    n_duplicates = n_events // 50
    users = [_make_user(rng, day_start) for _ in range(max(1, n_events // 12))]
    sessions_by_user: dict[str, int] = {}
    events: list[dict[str, Any]] = []
    while len(events) < n_events - n_duplicates:
        user = rng.choice(users)
        sessions_by_user[user.pseudo_id] = sessions_by_user.get(user.pseudo_id, 0) + 1
        # Start early enough that the longest visit (about 40 events, 45 s apart at most) ends within the day.
        start = day_start + rng.randrange(0, DAY_MICROS - 40 * 45 * MICROS_PER_SECOND)
        session = _Session(rng, user, event_date, start, sessions_by_user[user.pseudo_id])
        session.play()
        events.extend(session.events)
    events = sorted(events[: n_events - n_duplicates], key=lambda event: event["event_timestamp"])
    previous: dict[tuple[str, str], int] = {}
    for event in events:
        key = (event["user_pseudo_id"], event["event_name"])
        event["event_previous_timestamp"] = previous.get(key)
        previous[key] = event["event_timestamp"]
    events.extend(copy.deepcopy(rng.choice(events)) for _ in range(n_duplicates))
    events.sort(key=lambda event: (event["event_timestamp"], event["user_pseudo_id"], event["event_name"]))
    return events


def seed_ga4_export(
    client: bigquery.Client,
    project: str,
    dataset: str,
    days: Sequence[date],
    *,
    seed: str,
    n_events: int = 400,
    intraday_days: Sequence[date] = (),
    fresh_days: Sequence[date] = (),
) -> dict[str, int]:
    """Write an export dataset the way GA4 lays it out: one daily table per day, plus intraday and fresh tables.

    Every table is replaced (WRITE_TRUNCATE), so seeding twice leaves the same rows. Intraday and fresh tables get
    their own seed so that a query reading them by mistake returns rows the daily tables do not have.
    Returns the loaded row count per table name.
    """
    client.create_dataset(bigquery.Dataset(f"{project}.{dataset}"), exists_ok=True)
    # Loaded as JSON because the rows are already JSON-shaped dicts and the emulator loads nested repeated
    # records from newline-delimited JSON faithfully.
    tables = [(f"events_{day:%Y%m%d}", day, "", DAILY_SCHEMA) for day in days]
    tables += [(f"events_intraday_{day:%Y%m%d}", day, ":intraday", INTRADAY_SCHEMA) for day in intraday_days]
    tables += [(f"events_fresh_{day:%Y%m%d}", day, ":fresh", DAILY_SCHEMA) for day in fresh_days]
    jobs: dict[str, bigquery.LoadJob] = {}
    for table_name, day, seed_suffix, schema in tables:
        columns = {field.name for field in schema}
        rows = [
            {column: value for column, value in event.items() if column in columns}
            for event in generate_events(day, seed=seed + seed_suffix, n_events=n_events)
        ]
        jobs[table_name] = client.load_table_from_json(
            rows,
            f"{project}.{dataset}.{table_name}",
            job_config=bigquery.LoadJobConfig(
                schema=schema, write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE
            ),
        )
    for job in jobs.values():
        job.result()
    return {table_name: int(job.output_rows or 0) for table_name, job in jobs.items()}
