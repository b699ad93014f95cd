"""Sample recommender data: an item catalog in 12 e-commerce categories and interactions with Zipf popularity.

The old service's generator made the demo data and the benchmarks' input; this one keeps its shape (Zipf item
popularity so about a fifth of the items get most interactions, users of very different activity, 90 days of
timestamps) and is vectorised with numpy and written by pyarrow, so 20M interactions take seconds, not hours.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], float]] = {
    # category: (nouns, brands, median price)
    "Electronics": (("Headphones", "Speaker", "Charger", "Camera", "Tablet"), ("Sony", "Samsung", "Anker"), 120.0),
    "Computers": (("Laptop", "Monitor", "Keyboard", "Mouse", "SSD"), ("Dell", "Lenovo", "Logitech"), 250.0),
    "Wearables": (("Smart Watch", "Fitness Band", "Ring"), ("Apple", "Garmin", "Fitbit"), 180.0),
    "Home": (("Lamp", "Blender", "Kettle", "Vacuum"), ("Philips", "Dyson", "Bosch"), 80.0),
    "Kitchen": (("Pan", "Knife Set", "Coffee Maker", "Toaster"), ("Tefal", "Zwilling", "Breville"), 60.0),
    "Fashion": (("Jacket", "Sneakers", "Dress", "Jeans"), ("Nike", "Zara", "Levi's"), 70.0),
    "Beauty": (("Serum", "Shampoo", "Perfume", "Lipstick"), ("L'Oreal", "Nivea", "Dior"), 30.0),
    "Sports": (("Yoga Mat", "Dumbbells", "Bike Helmet", "Tent"), ("Adidas", "Decathlon", "Wilson"), 45.0),
    "Toys": (("Puzzle", "Building Set", "Doll", "Board Game"), ("Lego", "Hasbro", "Mattel"), 35.0),
    "Books": (("Novel", "Cookbook", "Biography", "Guide"), ("Penguin", "O'Reilly", "HarperCollins"), 18.0),
    "Garden": (("Hose", "Planter", "Lawn Mower", "Grill"), ("Gardena", "Weber", "Husqvarna"), 90.0),
    "Automotive": (("Dash Cam", "Car Charger", "Tire Inflator", "Seat Cover"), ("Bosch", "Garmin", "Michelin"), 55.0),
}
ADJECTIVES = ("Classic", "Pro", "Compact", "Wireless", "Premium", "Eco", "Ultra", "Smart", "Essential", "Deluxe")
INTERACTION_TYPES = np.array(["view", "click", "add_to_cart", "like", "purchase"])
TYPE_SHARES = np.array([0.60, 0.20, 0.08, 0.07, 0.05])
DAYS = 90


STARS = np.array([1.0, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0])
STAR_SHARES = np.array([0.04, 0.06, 0.12, 0.1, 0.3, 0.18, 0.2])
_CHUNK = 1_000_000  # rows generated at a time, so 20M interactions never sit in memory at once
_CSV_OPTIONS = pacsv.WriteOptions(quoting_style="needed")
_INTERACTIONS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("interaction_type", pa.string()),
        ("timestamp", pa.string()),
        ("rating", pa.float64()),
    ]
)


@dataclass(frozen=True)
class GeneratedRecsys:
    interactions_paths: tuple[Path, ...]
    items_path: Path
    users: int
    items: int
    interactions: int

    @property
    def interactions_path(self) -> Path:
        return self.interactions_paths[0]


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, text, "")


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Weights 1 / rank^exponent over a random permutation, so item and user numbers carry no popularity."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return rng.permutation(weights) / weights.sum()


def generate_recsys(
    users: int,
    items: int,
    interactions: int,
    out_dir: str | Path,
    seed: int = 0,
    *,
    items_format: Literal["csv", "ndjson"] = "csv",
    end: datetime | None = None,
    rows_per_file: int | None = None,
) -> GeneratedRecsys:
    """Write `interactions.csv` and `items.csv` (or `items.ndjson`) to `out_dir`; `end` (default: today 00:00 UTC)
    closes the 90-day window, so a fixed `end` and seed give byte-identical files. With `rows_per_file`, the
    interactions are split into `interactions-0001.csv`, ... as a tenant's successive uploads would be."""
    if users < 1 or items < 1 or interactions < 0:
        raise ValueError("users and items must be >= 1 and interactions >= 0")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    end = end or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    names = list(CATEGORIES)
    category = rng.integers(0, len(names), size=items)
    noun_pick = rng.integers(0, 5, size=items)
    brand_pick = rng.integers(0, 3, size=items)
    adjective = rng.integers(0, len(ADJECTIVES), size=items)
    median = np.array([CATEGORIES[c][2] for c in names])[category]
    price = np.round(median * rng.lognormal(0.0, 0.6, size=items), 2)
    nouns = np.array([CATEGORIES[c][0][i % len(CATEGORIES[c][0])] for c in names for i in range(5)]).reshape(12, 5)
    brands = np.array([CATEGORIES[c][1][i] for c in names for i in range(3)]).reshape(12, 3)
    noun = nouns[category, noun_pick]
    brand = brands[category, brand_pick]
    title = np.char.add(np.char.add(np.array(ADJECTIVES)[adjective], " "), noun)
    items_table = pa.table(
        {
            "item_id": _ids("item_", np.arange(1, items + 1), 6),
            "title": pa.array(title),
            "category": pa.array(np.array(names)[category]),
            "price": pa.array(price),
            "brand": pa.array(brand),
            "description": pa.array(np.char.add(np.char.add(brand, " "), np.char.lower(title))),
        }
    )

    item_p = _zipf_weights(items, 1.05, rng)
    user_p = _zipf_weights(users, 0.7, rng)
    start = np.datetime64((end - timedelta(days=DAYS)).replace(tzinfo=None), "s")
    per_file = rows_per_file or max(interactions, 1)
    paths: list[Path] = []
    writer: pacsv.CSVWriter | None = None
    written_in_file = 0
    done = 0
    try:
        while done < interactions:
            n = min(_CHUNK, interactions - done, per_file - written_in_file)
            if writer is None:
                name = "interactions.csv" if rows_per_file is None else f"interactions-{len(paths) + 1:04d}.csv"
                paths.append(out / name)
                writer = pacsv.CSVWriter(paths[-1], _INTERACTIONS_SCHEMA, write_options=_CSV_OPTIONS)
            writer.write_table(_interactions(rng, n, user_p, item_p, start))
            done += n
            written_in_file += n
            if written_in_file == per_file:
                writer.close()
                writer, written_in_file = None, 0
    finally:
        if writer is not None:
            writer.close()
    if not paths:
        paths.append(out / "interactions.csv")
        pacsv.write_csv(_INTERACTIONS_SCHEMA.empty_table(), paths[0], _CSV_OPTIONS)
    if items_format == "csv":
        items_path = out / "items.csv"
        pacsv.write_csv(items_table, items_path, _CSV_OPTIONS)
    else:
        items_path = out / "items.ndjson"
        items_table.to_pandas().to_json(items_path, orient="records", lines=True, force_ascii=False)
    return GeneratedRecsys(tuple(paths), items_path, users, items, interactions)


def _interactions(
    rng: np.random.Generator, n: int, user_p: np.ndarray, item_p: np.ndarray, start: np.datetime64
) -> pa.Table:
    item_idx = rng.choice(len(item_p), size=n, p=item_p)
    user_idx = rng.choice(len(user_p), size=n, p=user_p)
    kind = rng.choice(len(INTERACTION_TYPES), size=n, p=TYPE_SHARES)
    seconds = rng.integers(0, DAYS * 86400, size=n)
    stamps = np.char.add(np.datetime_as_string(start + seconds.astype("timedelta64[s]"), unit="s"), "Z")
    # Ratings: most purchases and a third of likes are rated, skewed towards 4 and 5 as real ratings are.
    rated = ((kind == 4) & (rng.random(n) < 0.7)) | ((kind == 3) & (rng.random(n) < 0.33))
    stars = rng.choice(STARS, size=n, p=STAR_SHARES)
    return pa.table(
        {
            "user_id": _ids("user_", user_idx + 1, 7),
            "item_id": _ids("item_", item_idx + 1, 6),
            "interaction_type": pa.array(INTERACTION_TYPES[kind]),
            "timestamp": pa.array(stamps),
            "rating": pa.array(stars, mask=~rated),
        },
        schema=_INTERACTIONS_SCHEMA,
    )
