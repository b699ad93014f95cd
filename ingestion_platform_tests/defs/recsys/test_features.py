import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestion_platform.defs.recsys.features import (
    EngineSettings,
    SamplingSettings,
    compute_features,
    training_samples,
)
from ingestion_platform.defs.recsys.validate import ACCEPTED_SCHEMA, validate_file

HAND = (
    "user_id,item_id,interaction_type,timestamp,rating\n"
    "u1,i1,view,2025-01-01T10:00:00Z,\n"
    "u1,i1,click,2025-01-01T11:00:00Z,\n"
    "u1,i2,purchase,2025-01-02T09:00:00Z,4\n"
    "u1,i3,like,2025-01-03T08:00:00Z,5\n"
    "u2,i1,view,2025-01-01T12:00:00Z,\n"
    "u2,i2,view,2025-01-01T13:00:00Z,\n"
    "u2,i2,add_to_cart,2025-01-01T15:00:00+01:00,\n"
    "u2,i2,purchase,2025-01-05T10:00:00Z,2\n"
)
ENGINE = EngineSettings(memory_limit="256MB", threads=2)


def _accepted(tmp_path: Path, csv: str, name: str = "hand.parquet") -> Path:
    result = validate_file(csv.encode(), "interactions")
    assert result.rows_rejected == 0
    path = tmp_path / name
    pq.write_table(result.accepted, path)
    return path


def _write(tmp_path: Path, frame: pd.DataFrame, name: str) -> Path:
    path = tmp_path / name
    pq.write_table(pa.Table.from_pandas(frame, schema=ACCEPTED_SCHEMA["interactions"], preserve_index=False), path)
    return path


def test_hand_checked_user_and_item_features(tmp_path: Path) -> None:
    source = _accepted(tmp_path, HAND)
    stats = compute_features([source], tmp_path / "u.parquet", tmp_path / "i.parquet", engine=ENGINE)
    assert (stats.interactions, stats.users, stats.items, stats.duplicates_dropped) == (8, 2, 3, 0)
    users = {r["user_id"]: r for r in pq.read_table(tmp_path / "u.parquet").to_pylist()}
    assert users["u1"] == {
        "user_id": "u1",
        "total_interactions": 4,
        "unique_items": 3,
        "avg_rating": 4.5,
        "first_interaction": datetime(2025, 1, 1, 10, tzinfo=UTC),
        "last_interaction": datetime(2025, 1, 3, 8, tzinfo=UTC),
        "days_active": 3,
        "interactions_per_day": pytest.approx(4 / 3),
        "num_views": 1,
        "num_clicks": 1,
        "num_purchases": 1,
        "num_likes": 1,
        "num_add_to_carts": 0,
        "conversion_rate": 0.25,
        "recent_items": ["i3", "i2", "i1"],
    }
    assert users["u2"] == {
        "user_id": "u2",
        "total_interactions": 4,
        "unique_items": 2,
        "avg_rating": 2.0,
        "first_interaction": datetime(2025, 1, 1, 12, tzinfo=UTC),
        "last_interaction": datetime(2025, 1, 5, 10, tzinfo=UTC),
        "days_active": 2,
        "interactions_per_day": 2.0,
        "num_views": 2,
        "num_clicks": 0,
        "num_purchases": 1,
        "num_likes": 0,
        "num_add_to_carts": 1,
        "conversion_rate": 0.25,
        "recent_items": ["i2", "i1"],
    }
    items = {r["item_id"]: r for r in pq.read_table(tmp_path / "i.parquet").to_pylist()}
    assert items["i1"] == {
        "item_id": "i1",
        "total_interactions": 3,
        "unique_users": 2,
        "avg_rating": None,
        "popularity_score": pytest.approx(math.log(4) / math.log(5)),
        "engagement_score": pytest.approx(4 / 3),
        "purchase_rate": 0.0,
        "click_through_rate": 0.5,
        "num_views": 2,
        "num_clicks": 1,
        "num_purchases": 0,
        "num_likes": 0,
        "num_add_to_carts": 0,
    }
    assert items["i2"] == {
        "item_id": "i2",
        "total_interactions": 4,
        "unique_users": 2,
        "avg_rating": 3.0,
        "popularity_score": 1.0,
        "engagement_score": 3.5,
        "purchase_rate": 0.5,
        "click_through_rate": 0.0,
        "num_views": 1,
        "num_clicks": 0,
        "num_purchases": 2,
        "num_likes": 0,
        "num_add_to_carts": 1,
    }
    assert items["i3"]["click_through_rate"] is None and items["i3"]["engagement_score"] == 4.0
    assert items["i3"]["popularity_score"] == pytest.approx(math.log(2) / math.log(5))


def test_overlapping_uploads_count_each_interaction_once(tmp_path: Path) -> None:
    lines = HAND.splitlines(keepends=True)
    first = _accepted(tmp_path, "".join(lines[:6]), "a.parquet")
    second = _accepted(tmp_path, lines[0] + "".join(lines[4:]), "b.parquet")  # rows 4-5 in both
    stats = compute_features([first, second], tmp_path / "u.parquet", tmp_path / "i.parquet", engine=ENGINE)
    assert (stats.interactions, stats.duplicates_dropped) == (8, 2)
    totals = {r["user_id"]: r["total_interactions"] for r in pq.read_table(tmp_path / "u.parquet").to_pylist()}
    assert totals == {"u1": 4, "u2": 4}


def _synthetic(rows: int = 6000, users: int = 120, items: int = 300, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, items + 1) ** 1.1
    frame = pd.DataFrame(
        {
            "user_id": [f"u{n:03d}" for n in rng.integers(0, users, rows)],
            "item_id": [f"i{n:03d}" for n in rng.choice(items, rows, p=weights / weights.sum())],
            "interaction_type": rng.choice(["view", "click", "purchase", "like", "add_to_cart"], rows),
            "timestamp": pd.Timestamp("2025-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 90 * 86400, rows), unit="s"),
            "rating": np.where(rng.random(rows) < 0.2, 4.0, np.nan),
        }
    )
    return frame.drop_duplicates(subset=["user_id", "item_id", "interaction_type", "timestamp"])


def test_training_samples_rules(tmp_path: Path) -> None:
    frame = _synthetic()
    # A light user and a rare item, to be left out by the minimum counts.
    extra = pd.DataFrame(
        {
            "user_id": ["light"] * 4 + ["u000"],
            "item_id": ["i000"] * 4 + ["rare"],
            "interaction_type": ["click"] * 5,
            "timestamp": pd.date_range("2025-02-01", periods=5, freq="h", tz="UTC"),
            "rating": [np.nan] * 5,
        }
    )
    frame = pd.concat([frame, extra], ignore_index=True)
    source = _write(tmp_path, frame, "x.parquet")
    settings = SamplingSettings(seed=11, max_positives_per_user=20)
    stats = training_samples([source], tmp_path / "s.parquet", settings, engine=ENGINE)
    samples = pq.read_table(tmp_path / "s.parquet").to_pandas()
    assert list(samples.columns) == ["user_id", "item_id", "label"]
    assert stats.rows == len(samples) == stats.positives + stats.negatives
    assert stats.label_balance == pytest.approx(stats.positives / stats.rows)

    user_counts = frame.groupby("user_id").size()
    item_counts = frame.groupby("item_id").size()
    assert "light" not in set(samples.user_id) and "rare" not in set(samples.item_id)
    assert user_counts[samples.user_id].min() >= 5 and item_counts[samples.item_id].min() >= 5
    kept = frame[frame.user_id.map(user_counts).ge(5) & frame.item_id.map(item_counts).ge(5)]
    assert stats.interactions_kept == len(kept)

    # Positives: the 20 most recently touched positive items per user, exactly.
    positive = kept[kept.interaction_type.isin(["click", "purchase", "like"])]
    last = positive.groupby(["user_id", "item_id"]).timestamp.max().reset_index()
    last = last.sort_values(["user_id", "timestamp", "item_id"], ascending=[True, False, True])
    expected = set(map(tuple, last.groupby("user_id").head(20)[["user_id", "item_id"]].to_numpy()))
    pos = samples[samples.label == 1.0]
    assert set(map(tuple, pos[["user_id", "item_id"]].to_numpy())) == expected
    assert pos.groupby("user_id").size().max() == 20

    # Negatives: never an item the user touched in any way, distinct per user, exactly 4 per positive.
    neg = samples[samples.label == 0.0]
    seen = set(map(tuple, frame[["user_id", "item_id"]].to_numpy()))
    assert not any(pair in seen for pair in map(tuple, neg[["user_id", "item_id"]].to_numpy()))
    assert not neg.duplicated(["user_id", "item_id"]).any()
    ratio = neg.groupby("user_id").size() / pos.groupby("user_id").size()
    assert (ratio == 4).all() and stats.users_short_of_negatives == 0

    # Drawn by popularity: per user who could get it, a popular item is picked far more often than a rare one.
    picked = neg.item_id.value_counts()
    sample_users = set(pos.user_id)
    seen_by = frame[frame.user_id.isin(sample_users)].drop_duplicates(["user_id", "item_id"]).item_id.value_counts()
    popularity = kept.item_id.value_counts()
    rate = picked.reindex(popularity.index).fillna(0) / (
        len(sample_users) - seen_by.reindex(popularity.index).fillna(0)
    )
    assert rate.iloc[10:30].mean() > 3 * rate.iloc[-50:].mean()

    # Sorted, so the file is stable.
    assert samples.equals(
        samples.sort_values(["user_id", "label", "item_id"], ascending=[True, False, True]).reset_index(drop=True)
    )


def test_seeded_and_reproducible(tmp_path: Path) -> None:
    source = _write(tmp_path, _synthetic(), "x.parquet")
    runs = []
    for n, seed in enumerate([5, 5, 6]):
        training_samples([source], tmp_path / f"{n}.parquet", SamplingSettings(seed=seed), engine=ENGINE)
        runs.append(pq.read_table(tmp_path / f"{n}.parquet"))
    assert runs[0].equals(runs[1])
    assert not runs[0].equals(runs[2])
    assert runs[0].num_rows == runs[2].num_rows  # the seed changes which negatives, not how many


def test_scarce_items_cap_negatives(tmp_path: Path) -> None:
    # Six items; u1 touched five, so only one item is left to be its negative whatever the ratio.
    rows = [("u1", f"i{n}", "click") for n in range(5)] + [
        (f"u{k}", f"i{n}", "view") for k in range(2, 7) for n in range(6)
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "interaction_type"])
    frame["timestamp"] = pd.date_range("2025-01-01", periods=len(frame), freq="min", tz="UTC")
    frame["rating"] = np.nan
    source = _write(tmp_path, frame, "x.parquet")
    stats = training_samples([source], tmp_path / "s.parquet", SamplingSettings(min_item_interactions=1), engine=ENGINE)
    samples = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert [r["item_id"] for r in samples if r["label"] == 0.0] == ["i5"]
    assert stats.positives == 5 and stats.negatives == 1 and stats.users_short_of_negatives == 0


def test_with_features_and_settings_checked(tmp_path: Path) -> None:
    source = _write(tmp_path, _synthetic(), "x.parquet")
    compute_features([source], tmp_path / "u.parquet", tmp_path / "i.parquet", engine=ENGINE)
    stats = training_samples(
        [source],
        tmp_path / "s.parquet",
        SamplingSettings(positive_types=("purchase",), negative_ratio=2),
        user_features=tmp_path / "u.parquet",
        item_features=tmp_path / "i.parquet",
        engine=ENGINE,
    )
    table = pq.read_table(tmp_path / "s.parquet")
    assert {
        "user_total_interactions",
        "user_conversion_rate",
        "item_popularity_score",
        "item_click_through_rate",
    } <= set(table.column_names)
    assert "user_recent_items" not in table.column_names
    assert table.column("user_total_interactions").null_count == 0
    assert stats.negatives == 2 * stats.positives
    with pytest.raises(ValueError, match="positive_types"):
        training_samples([source], tmp_path / "t.parquet", SamplingSettings(positive_types=("bogus",)))
    with pytest.raises(ValueError, match="no interaction files"):
        compute_features([], tmp_path / "u2.parquet", tmp_path / "i2.parquet")


def test_memory_limit_splits_the_work_not_the_result(tmp_path: Path) -> None:
    # 48 MB makes the sliced paths run: draws in passes of users, samples written in slices and concatenated;
    # the file must be the one a single pass writes.
    source = _write(tmp_path, _synthetic(rows=500_000, users=12_000, items=2_000, seed=7), "x.parquet")
    settings = SamplingSettings(seed=3)
    small = training_samples(
        [source], tmp_path / "small.parquet", settings, engine=EngineSettings(memory_limit="48MB", threads=2)
    )
    large = training_samples([source], tmp_path / "large.parquet", settings, engine=ENGINE)
    assert small.rows * 100 > 2 * 48_000_000  # three slices
    assert (small.rows, small.positives, small.negatives) == (large.rows, large.positives, large.negatives)
    assert pq.read_table(tmp_path / "small.parquet").equals(pq.read_table(tmp_path / "large.parquet"))
    assert pq.ParquetFile(tmp_path / "small.parquet").metadata.num_row_groups > 1
