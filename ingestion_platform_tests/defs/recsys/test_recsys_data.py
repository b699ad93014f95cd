from datetime import UTC, datetime
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.json as pajson

from ingestion_platform.defs.recsys.validate import validate_file
from ingestion_platform.sandbox.recsys_data import CATEGORIES, generate_recsys

END = datetime(2025, 6, 1, tzinfo=UTC)


def test_shape_and_validity(tmp_path: Path) -> None:
    generated = generate_recsys(500, 200, 20_000, tmp_path, seed=4, end=END)
    interactions = pacsv.read_csv(generated.interactions_path).to_pandas()
    items = pacsv.read_csv(generated.items_path).to_pandas()
    assert len(interactions) == 20_000 and len(items) == 200
    assert list(interactions.columns) == ["user_id", "item_id", "interaction_type", "timestamp", "rating"]
    assert list(items.columns) == ["item_id", "title", "category", "price", "brand", "description"]
    assert set(items.category) == set(CATEGORIES) and len(CATEGORIES) == 12
    assert items.item_id.is_unique and (items.price > 0).all()
    assert interactions.user_id.nunique() <= 500 and set(interactions.item_id) <= set(items.item_id)
    stamps = interactions.timestamp
    assert stamps.min() >= datetime(2025, 3, 3, tzinfo=UTC) and stamps.max() < END
    assert stamps.max() - stamps.min() > (END - datetime(2025, 3, 5, tzinfo=UTC))  # spans the 90 days
    # Zipf popularity: the top fifth of the items take most of the interactions.
    counts = interactions.item_id.value_counts()
    assert counts.iloc[:40].sum() > 0.6 * len(interactions)
    rated = interactions.rating.notna()
    assert set(interactions.interaction_type[rated]) <= {"purchase", "like"}
    assert interactions.rating[rated].between(1, 5).all()
    # Every generated row passes validation.
    assert validate_file(generated.interactions_path, "interactions").rows_rejected == 0
    assert validate_file(generated.items_path, "items").rows_accepted == 200


def test_reproducible_and_ndjson_items(tmp_path: Path) -> None:
    a = generate_recsys(50, 30, 1000, tmp_path / "a", seed=9, end=END)
    b = generate_recsys(50, 30, 1000, tmp_path / "b", seed=9, end=END, items_format="ndjson")
    c = generate_recsys(50, 30, 1000, tmp_path / "c", seed=10, end=END)
    assert a.interactions_path.read_bytes() == b.interactions_path.read_bytes()
    assert a.interactions_path.read_bytes() != c.interactions_path.read_bytes()
    assert b.items_path.suffix == ".ndjson"
    assert pajson.read_json(b.items_path).num_rows == 30
    result = validate_file(b.items_path, "items")
    assert result.format == "ndjson" and result.rows_accepted == 30
