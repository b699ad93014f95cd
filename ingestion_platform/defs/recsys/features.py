"""User and item features and training samples, computed out of core over a tenant's accepted interaction uploads.

DuckDB does the work: it reads the Parquet files directly, runs every aggregate and join vectorised, and spills
joins, sorts and group-bys to a temp directory under one `memory_limit`; what it cannot spill (top-N aggregates,
the negative draws, the final sort) runs in slices of users sized from that limit. So 20M interactions fit in 2 GB
of RSS on one machine where the old pandas pipeline needed ~2 GB per million. DuckDB rather than Polars' streaming
engine: it was already in the lock file (the BigQuery emulator), and one engine with one memory limit covers the
SQL here, where Polars would add a package.

Interactions are deduplicated across uploads on (user_id, item_id, interaction_type, timestamp) first, so an
interaction uploaded twice in overlapping files counts once.

Definitions (the old service named these features without defining them; these are ours, and the tests pin them):
- user: total_interactions, unique_items, avg_rating (of the rated interactions), first/last_interaction,
  days_active (distinct UTC days with any interaction), interactions_per_day (total / days_active), num_<type> for
  each interaction type, conversion_rate (purchases / total), recent_items (up to 50 distinct items, most recently
  touched first; items touched at the same microsecond come in no defined order).
- item: total_interactions, unique_users, avg_rating, num_<type>, popularity_score (ln(1 + total) /
  ln(1 + the largest total of any item), in [0, 1]), engagement_score (mean interaction weight with view 1,
  click 2, add_to_cart 3, like 4, purchase 5, in [1, 5]), purchase_rate (purchases / total), click_through_rate
  (clicks / views; null for an item never viewed).
- training samples: a user or item with fewer than the minimum interactions (all types) is left out; positives are
  the distinct (user, item) pairs with a positive interaction type, at most `max_positives_per_user` per user (the
  most recent); each positive brings `negative_ratio` negatives drawn with probability proportional to the item's
  interaction count among kept items, distinct per user and never an item the user interacted with in any way.
  Draws come from a hash of (seed, user, draw number), not a random generator, so the same input and seed give
  the same samples regardless of thread scheduling.
"""

import itertools
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

INTERACTION_TYPES = ("view", "click", "purchase", "like", "add_to_cart")
ENGAGEMENT_WEIGHTS = {"view": 1, "click": 2, "add_to_cart": 3, "like": 4, "purchase": 5}
RECENT_ITEMS = 50
# Rounds of popularity draws for users still short of negatives; each round doubles the draws. A user whose
# unseen items run out gets fewer negatives, counted in `users_short_of_negatives`.
_MAX_ROUNDS = 12
# Popularity urn size: every kept interaction is one slot up to this many, beyond which counts are scaled (an item
# keeps at least one slot), so the urn stays small for 20M interactions.
_URN_SLOTS = 1 << 22

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class EngineSettings:
    """DuckDB's budget: RSS stays near `memory_limit` plus Python and Arrow overhead; the rest spills."""

    memory_limit: str = "1GB"
    threads: int | None = None
    temp_directory: PathLike | None = None


@dataclass(frozen=True)
class SamplingSettings:
    positive_types: tuple[str, ...] = ("click", "purchase", "like")
    negative_ratio: int = 4
    min_user_interactions: int = 5
    min_item_interactions: int = 5
    max_positives_per_user: int = 50
    seed: int = 0


@dataclass(frozen=True)
class FeatureStats:
    interactions: int  # after deduplication
    duplicates_dropped: int
    users: int
    items: int
    seconds: float


@dataclass(frozen=True)
class SampleStats:
    rows: int
    positives: int
    negatives: int
    users: int
    items: int
    interactions_kept: int  # after the minimum-count filters
    users_short_of_negatives: int
    rounds: int
    seconds: float

    @property
    def label_balance(self) -> float:
        """Share of positive labels."""
        return self.positives / self.rows if self.rows else 0.0


@contextmanager
def _connect(engine: EngineSettings) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory database whose tables and operators spill to a throw-away folder beyond `memory_limit`."""
    base = Path(engine.temp_directory) if engine.temp_directory else None
    if base:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recsys-duckdb-", dir=base) as work:
        con = duckdb.connect(":memory:")
        try:
            con.execute(f"SET memory_limit = '{engine.memory_limit}'")
            con.execute(f"SET temp_directory = '{Path(work) / 'spill'}'")
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET enable_progress_bar = false")
            if engine.threads:
                con.execute(f"SET threads = {int(engine.threads)}")
            yield con
        finally:
            con.close()


def _paths(paths: Sequence[PathLike]) -> str:
    if not paths:
        raise ValueError("no interaction files given")
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _load_interactions(con: duckdb.DuckDBPyConnection, paths: Sequence[PathLike]) -> tuple[int, int]:
    """Load `interactions(uidx, iidx, interaction_type, ts, rating)` with users and items as dense integers
    (numbered in id order, so integer order is id order) and times as epoch microseconds: grouping and joining on
    integers is several times faster than on strings, and zoned timestamps would go through ICU at every step.
    One file needs no deduplication: validation already dropped its duplicates."""
    source = f"read_parquet({_paths(paths)}, union_by_name = true)"
    con.execute(
        f"""
        CREATE TABLE users AS
        SELECT user_id, CAST(row_number() OVER (ORDER BY user_id) AS INTEGER) AS uidx
        FROM (SELECT DISTINCT user_id FROM {source})
        """
    )
    con.execute(
        f"""
        CREATE TABLE items AS
        SELECT item_id, CAST(row_number() OVER (ORDER BY item_id) AS INTEGER) AS iidx
        FROM (SELECT DISTINCT item_id FROM {source})
        """
    )
    types = ", ".join(f"'{t}'" for t in INTERACTION_TYPES)
    columns = (
        f"u.uidx, i.iidx, CAST(interaction_type AS ENUM({types})) AS interaction_type, "
        'epoch_us("timestamp") AS ts, CAST(rating AS DOUBLE) AS rating'
    )
    joined = f"{source} s JOIN users u USING (user_id) JOIN items i USING (item_id)"
    if len(paths) == 1:
        con.execute(f"CREATE TABLE interactions AS SELECT {columns} FROM {joined}")
        return int(_scalar(con, "SELECT count(*) FROM interactions")), 0
    con.execute(
        f"""
        CREATE TABLE interactions AS
        SELECT uidx, iidx, interaction_type, ts, max(rating) AS rating
        FROM (SELECT {columns} FROM {joined}) GROUP BY uidx, iidx, interaction_type, ts
        """
    )
    rows = int(_scalar(con, "SELECT count(*) FROM interactions"))
    raw_rows = int(_scalar(con, f"SELECT count(*) FROM {source}"))
    return rows, raw_rows - rows


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


def _counts(prefix: str = "num_") -> str:
    return ", ".join(
        f"count(*) FILTER (WHERE interaction_type = '{t}') AS {prefix}{t}{'' if t.endswith('s') else 's'}"
        for t in INTERACTION_TYPES
    )


_DAY_US = 86_400_000_000
# Top-N aggregates and the draws' join keep state that DuckDB cannot spill, so they run over a slice of the users
# at a time, sized from the memory limit (1 GB: 250k users, 4M draws); everything else spills.
_BYTES_PER_USER = 4096
_BYTES_PER_DRAW = 256
_BYTES_PER_SAMPLE = 100
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def _limit_bytes(limit: str) -> int:
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", limit)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"memory_limit {limit!r}: expected a size such as 1GB or 512MB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _user_item_tables(con: duckdb.DuckDBPyConnection, engine: EngineSettings) -> None:
    """`pairs` (one row per user and item touched), `days` (active days per user) and `recent` (unique items and
    the 50 most recent items per user), built without distinct or top-N aggregates over all users at once."""
    con.execute("CREATE TABLE pairs AS SELECT uidx, iidx, max(ts) AS ts FROM interactions GROUP BY uidx, iidx")
    con.execute(
        f"""
        CREATE TABLE days AS
        SELECT uidx, count(*) AS days_active FROM (SELECT DISTINCT uidx, ts // {_DAY_US} FROM interactions)
        GROUP BY uidx
        """
    )
    con.execute("CREATE TABLE recent (uidx INTEGER, unique_items BIGINT, recent INTEGER[])")
    per_pass = max(1, _limit_bytes(engine.memory_limit) // _BYTES_PER_USER)
    passes = int(_scalar(con, "SELECT count(*) FROM users")) // per_pass + 1
    for part in range(passes):
        con.execute(
            f"""
            INSERT INTO recent
            SELECT uidx, count(*), arg_max(iidx, ts, {RECENT_ITEMS}) FROM pairs
            WHERE uidx % {passes} = {part} GROUP BY uidx
            """
        )


USER_FEATURES_SQL = f"""
WITH per_user AS (
    SELECT uidx,
           count(*) AS total_interactions,
           avg(rating) AS avg_rating,
           min(ts) AS first_interaction,
           max(ts) AS last_interaction,
           {_counts()}
    FROM interactions GROUP BY uidx
), names AS (SELECT list(item_id ORDER BY iidx) AS names FROM items)
SELECT users.user_id, p.total_interactions, r.unique_items, p.avg_rating,
       CAST(make_timestamp(p.first_interaction) AS TIMESTAMPTZ) AS first_interaction,
       CAST(make_timestamp(p.last_interaction) AS TIMESTAMPTZ) AS last_interaction,
       d.days_active, p.total_interactions / d.days_active AS interactions_per_day,
       p.num_views, p.num_clicks, p.num_purchases, p.num_likes, p.num_add_to_carts,
       p.num_purchases / p.total_interactions AS conversion_rate,
       list_transform(r.recent, x -> names.names[x]) AS recent_items
FROM per_user p JOIN days d USING (uidx) JOIN recent r USING (uidx) JOIN users USING (uidx), names
"""

ITEM_FEATURES_SQL = f"""
WITH per_item AS (
    SELECT iidx,
           count(*) AS total_interactions,
           avg(rating) AS avg_rating,
           avg(CASE interaction_type {" ".join(f"WHEN '{t}' THEN {w}" for t, w in ENGAGEMENT_WEIGHTS.items())} END)
               AS engagement_score,
           {_counts()}
    FROM interactions GROUP BY iidx
), per_item_users AS (SELECT iidx, count(*) AS unique_users FROM pairs GROUP BY iidx)
SELECT items.item_id, total_interactions, unique_users, avg_rating,
       ln(1 + total_interactions) / ln(1 + max(total_interactions) OVER ()) AS popularity_score,
       engagement_score,
       num_purchases / total_interactions AS purchase_rate,
       CASE WHEN num_views > 0 THEN num_clicks / num_views END AS click_through_rate,
       num_views, num_clicks, num_purchases, num_likes, num_add_to_carts
FROM per_item JOIN per_item_users USING (iidx) JOIN items USING (iidx)
"""


def _copy(con: duckdb.DuckDBPyConnection, sql: str, out: PathLike) -> int:
    """Write a query's rows as Parquet; COPY answers with the row count, so the file is not read back."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return int(
        _scalar(con, f"COPY ({sql}) TO '{_quote(out)}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)")
    )


def compute_features(
    interactions: Sequence[PathLike],
    user_features_out: PathLike,
    item_features_out: PathLike,
    *,
    engine: EngineSettings | None = None,
) -> FeatureStats:
    """Write user and item features for all interactions in the given accepted-upload Parquet files."""
    started = time.perf_counter()
    engine = engine or EngineSettings()
    with _connect(engine) as con:
        rows, duplicates = _load_interactions(con, interactions)
        _user_item_tables(con, engine)
        # Integer order is id order: sorting on the integers sorts the files by user_id and item_id, cheaper.
        users = _copy(con, f"{USER_FEATURES_SQL} ORDER BY uidx", user_features_out)
        items = _copy(con, f"{ITEM_FEATURES_SQL} ORDER BY iidx", item_features_out)
    return FeatureStats(rows, duplicates, users, items, time.perf_counter() - started)


def training_samples(
    interactions: Sequence[PathLike],
    out: PathLike,
    settings: SamplingSettings | None = None,
    *,
    user_features: PathLike | None = None,
    item_features: PathLike | None = None,
    engine: EngineSettings | None = None,
) -> SampleStats:
    """Write (user_id, item_id, label) rows, label 1.0 for positives and 0.0 for negatives, sorted by user, label
    (positives first) and item; with feature files given, their columns are joined on as `user_*` and `item_*`."""
    s = settings or SamplingSettings()
    if s.negative_ratio < 0 or s.max_positives_per_user < 1:
        raise ValueError("negative_ratio must be >= 0 and max_positives_per_user >= 1")
    unknown = set(s.positive_types) - set(INTERACTION_TYPES)
    if unknown or not s.positive_types:
        raise ValueError(f"positive_types must be a non-empty subset of {INTERACTION_TYPES}; unknown: {unknown}")
    # Every value below that DuckDB sees is an int or a checked interaction type, inlined rather than bound:
    # with parameters DuckDB cannot size joins and picks far slower plans.
    types = ", ".join(f"'{t}'" for t in s.positive_types)
    started = time.perf_counter()
    engine = engine or EngineSettings()
    draws_per_pass = max(1, _limit_bytes(engine.memory_limit) // _BYTES_PER_DRAW)
    with (
        _connect(engine) as con,
        tempfile.TemporaryDirectory(prefix="recsys-samples-", dir=engine.temp_directory) as work,
    ):
        _load_interactions(con, interactions)
        # One pass over the interactions: per user and item touched, how often and when last with a positive type.
        # Minimum counts, positives, popularity and what each user has seen all follow from these pairs: the
        # minimums keep or drop whole users and items, so they keep or drop whole pairs.
        con.execute(
            f"""
            CREATE TABLE pairs AS
            SELECT uidx, iidx, count(*) AS n, max(ts) FILTER (WHERE interaction_type IN ({types})) AS positive_ts
            FROM interactions GROUP BY uidx, iidx
            """
        )
        # Tables of an in-memory database count against memory_limit, so each goes as soon as it is used up.
        con.execute("DROP TABLE interactions")
        con.execute(
            f"""
            CREATE TABLE kept AS
            WITH u AS (SELECT uidx FROM pairs GROUP BY uidx HAVING sum(n) >= {int(s.min_user_interactions)}),
                 i AS (SELECT iidx FROM pairs GROUP BY iidx HAVING sum(n) >= {int(s.min_item_interactions)})
            SELECT * FROM pairs SEMI JOIN u USING (uidx) SEMI JOIN i USING (iidx)
            """
        )
        con.execute(
            f"""
            CREATE TABLE positives AS
            SELECT uidx, iidx FROM kept WHERE positive_ts IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY uidx ORDER BY positive_ts DESC, iidx)
                <= {int(s.max_positives_per_user)}
            """
        )
        # The urn holds each kept item in proportion to its interaction count, so a uniform slot is a
        # popularity-weighted item and a draw is an equality join, not a range search.
        con.execute("CREATE TABLE popularity AS SELECT iidx, CAST(sum(n) AS BIGINT) AS n FROM kept GROUP BY iidx")
        con.execute("DROP TABLE kept")
        total = int(_scalar(con, "SELECT coalesce(sum(n), 0) FROM popularity"))
        kept = total
        con.execute(
            f"""
            CREATE TABLE urn AS
            SELECT CAST(start + unnest(range(width)) AS BIGINT) AS slot, iidx FROM (
                SELECT iidx, width, sum(width) OVER (ORDER BY iidx) - width AS start FROM (
                    SELECT iidx, CAST(greatest(1, round(n * {max(1, min(total, _URN_SLOTS))} / {max(total, 1)}))
                                      AS BIGINT) AS width
                    FROM popularity
                )
            )
            """
        )
        slots = max(1, int(_scalar(con, "SELECT count(*) FROM urn")))
        # Every item the user touched in any way, kept or not, so a negative is never something they interacted with.
        con.execute(
            """
            CREATE TABLE seen AS
            SELECT uidx, iidx FROM pairs SEMI JOIN (SELECT DISTINCT uidx FROM positives) USING (uidx)
            """
        )
        con.execute("DROP TABLE pairs")
        con.execute(
            f"""
            CREATE TABLE need AS
            WITH pos AS (SELECT uidx, count(*) AS n FROM positives GROUP BY uidx),
                 seen_n AS (SELECT uidx, count(*) AS n FROM seen SEMI JOIN popularity USING (iidx) GROUP BY uidx)
            SELECT pos.uidx,
                   least(pos.n * {int(s.negative_ratio)},
                         (SELECT count(*) FROM popularity) - coalesce(seen_n.n, 0)) AS wanted
            FROM pos LEFT JOIN seen_n USING (uidx)
            """
        )
        con.execute("CREATE TABLE negatives (uidx INTEGER, iidx INTEGER, draw BIGINT)")
        rounds = 0
        offset = 0
        while rounds < _MAX_ROUNDS:
            con.execute(
                """
                CREATE OR REPLACE TEMP TABLE deficit AS
                SELECT need.uidx, need.wanted - coalesce(got.n, 0) AS missing
                FROM need LEFT JOIN (SELECT uidx, count(*) AS n FROM negatives GROUP BY uidx) got USING (uidx)
                WHERE need.wanted > coalesce(got.n, 0)
                """
            )
            if _scalar(con, "SELECT count(*) FROM deficit") == 0:
                break
            multiplier = 2**rounds
            missing = int(_scalar(con, "SELECT sum(missing) FROM deficit"))
            passes = missing * 2 * multiplier // draws_per_pass + 1
            for part in range(passes):
                # Separate statements rather than one query with CTEs: DuckDB plans the combined query far worse.
                # The candidate draws are a table of their own so that the urn join knows their count and builds
                # its hash table on the urn, not on the draws.
                con.execute(
                    f"""
                    CREATE OR REPLACE TEMP TABLE draws AS
                    SELECT uidx, missing, draw, CAST(hash({int(s.seed)}, uidx, draw) % {slots} AS BIGINT) AS slot
                    FROM (
                        SELECT uidx, missing, {offset} + unnest(range(missing * {2 * multiplier} + 8)) AS draw
                        FROM deficit WHERE uidx % {passes} = {part}
                    )
                    """
                )
                con.execute(
                    """
                    CREATE OR REPLACE TEMP TABLE fresh AS
                    SELECT * FROM (
                        SELECT uidx, any_value(missing) AS missing, urn.iidx, min(draw) AS draw
                        FROM draws JOIN urn USING (slot) GROUP BY uidx, urn.iidx
                    ) ANTI JOIN seen USING (uidx, iidx) ANTI JOIN negatives USING (uidx, iidx)
                    """
                )
                con.execute(
                    """
                    INSERT INTO negatives
                    SELECT uidx, iidx, draw FROM fresh
                    QUALIFY row_number() OVER (PARTITION BY uidx ORDER BY draw) <= missing
                    """
                )
            offset += int(_scalar(con, "SELECT max(missing) FROM deficit")) * 2 * multiplier + 8
            rounds += 1
        short = int(
            _scalar(
                con,
                """
                SELECT count(*) FROM need
                LEFT JOIN (SELECT uidx, count(*) AS n FROM negatives GROUP BY uidx) got USING (uidx)
                WHERE need.wanted > coalesce(got.n, 0)
                """,
            )
        )
        for table in ("seen", "need", "urn", "deficit", "draws", "fresh"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        # Integer order is id order, so sorting on (uidx, label, iidx) sorts by (user_id, label, item_id).
        samples = """
            SELECT uidx, iidx, 1.0 AS label FROM positives
            UNION ALL
            SELECT uidx, iidx, 0.0 AS label FROM negatives
        """
        select = "SELECT users.user_id, items.item_id, s.label"
        joins = " JOIN users USING (uidx) JOIN items USING (iidx)"
        if user_features is not None:
            select += ", " + _prefixed(con, user_features, "uf", "user_", skip={"user_id", "recent_items"})
            joins += f" LEFT JOIN read_parquet('{_quote(user_features)}') uf ON uf.user_id = users.user_id"
        if item_features is not None:
            select += ", " + _prefixed(con, item_features, "itf", "item_", skip={"item_id"})
            joins += f" LEFT JOIN read_parquet('{_quote(item_features)}') itf ON itf.item_id = items.item_id"
        positives = int(_scalar(con, "SELECT count(*) FROM positives"))
        negatives = int(_scalar(con, "SELECT count(*) FROM negatives"))
        # A sort of all samples with their joins does not fit the memory limit at 20M interactions, so the file is
        # written in slices of consecutive users, each sorted by DuckDB, and the slices concatenated in order.
        slices = (positives + negatives) * _BYTES_PER_SAMPLE // _limit_bytes(engine.memory_limit) + 1
        order = "ORDER BY s.uidx, s.label DESC, s.iidx"
        if slices == 1:
            rows = _copy(con, f"{select} FROM ({samples}) s{joins} {order}", out)
        else:
            rows = _sliced_copy(con, f"{select} FROM ({samples}) s{joins}", order, slices, Path(work), out)
        users = int(_scalar(con, "SELECT count(DISTINCT uidx) FROM positives"))
        items = int(_scalar(con, "SELECT count(*) FROM popularity"))
    return SampleStats(
        rows=rows,
        positives=positives,
        negatives=negatives,
        users=users,
        items=items,
        interactions_kept=kept,
        users_short_of_negatives=short,
        rounds=rounds,
        seconds=time.perf_counter() - started,
    )


def _sliced_copy(con: duckdb.DuckDBPyConnection, query: str, order: str, slices: int, work: Path, out: PathLike) -> int:
    """Write the samples in slices of consecutive users, each sorted by DuckDB, then concatenate them in order."""
    user_count = int(_scalar(con, "SELECT count(*) FROM users"))
    bounds = [user_count * k // slices for k in range(slices + 1)]
    parts: list[Path] = []
    for k, (low, high) in enumerate(itertools.pairwise(bounds)):
        parts.append(work / f"samples-{k:05d}.parquet")
        _copy(con, f"{query} WHERE s.uidx > {low} AND s.uidx <= {high} {order}", parts[-1])
    return _concatenate(parts, out)


def _concatenate(parts: Sequence[Path], out: PathLike) -> int:
    """Stream the slices' row groups into one file; never more than one row group in memory."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    schema = pq.read_schema(parts[0])
    rows = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for part in parts:
            source = pq.ParquetFile(part)
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                writer.write_table(table)
                rows += table.num_rows
    return rows


def _quote(path: PathLike) -> str:
    return str(path).replace("'", "''")


def _prefixed(con: duckdb.DuckDBPyConnection, path: PathLike, alias: str, prefix: str, skip: set[str]) -> str:
    columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{_quote(path)}')").fetchall()]
    return ", ".join(f'{alias}."{c}" AS "{prefix}{c}"' for c in columns if c not in skip)
