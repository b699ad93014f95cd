"""The loader's merge does work linear in the rows merged: read from EXPLAIN (ANALYZE, BUFFERS), never timed.

Why: one BrightData snapshot merged whole was measured super-linear (40k posts 1.5 s, 80k 6 s in the transaction),
and the source worked around it with slices. Super-linear merges come from plan shapes (a nested loop whose inner
side scans the target or the stage once per row, a per-row subplan) or from per-row work that grows with the
table. So the statements the loader really runs are explained, with their real parameters, on a posts-shaped
table (text key, jsonb, version column, secondary indexes) at two sizes, and the test asserts the shape and that
rows examined and buffers touched per merged row stay flat when the input is four times larger.
"""

from collections.abc import Iterator
from typing import Any, ClassVar

import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa
from psycopg import sql

from ingestion_platform.warehouse import Column, TableSpec, load

POSTS = TableSpec(
    schema="social",
    name="posts",
    columns=(
        Column("tenant_id", "text", nullable=False),
        Column("post_id", "text", nullable=False),
        Column("snapshot_id", "text", nullable=False),
        Column("text", "text"),
        Column("likes", "bigint"),
        Column("media", "jsonb"),
        Column("hashtags", "jsonb"),
        Column("crawled_at", "timestamptz"),
    ),
    key=("tenant_id", "post_id"),
    indexes=(("tenant_id", "snapshot_id"),),
    version="crawled_at",
)
# The statements whose plans are checked: the merge itself, and the duplicate-key check and removal on the stage.
EXPLAINED = ("WITH written AS (MERGE", 'SELECT EXISTS (SELECT 1 FROM "_stage', 'DELETE FROM "_stage')


def posts(start: int, stop: int, snapshot: str, likes: int) -> pa.Table:
    ids = range(start, stop)
    return pa.table(
        {
            "tenant_id": pa.array(["t1"] * len(ids)),
            "post_id": pa.array([f"{i:015d}" for i in ids]),
            "snapshot_id": pa.array([snapshot] * len(ids)),
            "text": pa.array([f"post {i} with some text and an emoji \U0001f600" for i in ids]),
            "likes": pa.array([likes + i % 7 for i in ids], pa.int64()),
            "media": pa.array([f'[{{"id": "{i}", "type": "photo", "url": "https://x/{i}.jpg"}}]' for i in ids]),
            "hashtags": pa.array(['["sale", "new"]'] * len(ids)),
            "crawled_at": pa.array([1_763_600_000_000_000 + likes] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )


class ExplainingCursor(psycopg.Cursor[Any]):
    """Runs EXPLAIN (ANALYZE, BUFFERS) of the loader's own statements, rolled back, right before running them."""

    plans: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> "ExplainingCursor":
        text = query.as_string(self) if isinstance(query, sql.Composable) else str(query)
        if text.startswith(EXPLAINED):
            with self.connection.transaction():
                super().execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + sql.SQL(text), params)
                row = self.fetchone()
                assert row is not None
                self.plans.append((text, row[0][0]["Plan"]))
                raise psycopg.Rollback
        super().execute(query, params, **kwargs)
        return self


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def work(plan: dict[str, Any]) -> tuple[float, int]:
    """(rows examined by every scan, buffers touched): each scan's rows returned plus removed, times its loops."""
    examined = 0.0
    for node in nodes(plan):
        if "Scan" in node["Node Type"]:
            removed = node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
            examined += (node["Actual Rows"] + removed) * node["Actual Loops"]
    buffers = sum(plan.get(k, 0) for k in ("Shared Hit Blocks", "Shared Read Blocks", "Local Hit Blocks"))
    return examined, buffers + plan.get("Local Read Blocks", 0)


def merge_plans(url: str, rows: int) -> dict[str, list[dict[str, Any]]]:
    """Plans of a posts merge at `rows` rows: half new and half changed posts, then the same input again with every
    key repeated (the duplicate-key path)."""
    ExplainingCursor.plans = []
    with psycopg.connect(url, autocommit=True, cursor_factory=ExplainingCursor) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS social CASCADE"))
        assert load(conn, POSTS, [posts(0, rows, "s1", likes=1)], mode="merge").inserted == rows
        ExplainingCursor.plans = []
        changed = load(conn, POSTS, [posts(rows // 2, rows + rows // 2, "s2", likes=2)], mode="merge")
        assert (changed.inserted, changed.updated) == (rows // 2, rows // 2)
        again = posts(rows // 2, rows + rows // 2, "s3", likes=3)
        repeated = load(conn, POSTS, [again, again], mode="merge")
        assert (repeated.updated, repeated.duplicates_in_input) == (rows, rows)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for text, plan in ExplainingCursor.plans:
        by_kind.setdefault(next(p for p in EXPLAINED if text.startswith(p)), []).append(plan)
    return by_kind


@pytest.fixture
def libpq_url(warehouse_url: str) -> str:
    return sa.make_url(warehouse_url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_merge_plans_have_no_per_row_rescans_and_linear_work(libpq_url: str) -> None:
    small_rows, large_rows = 2_000, 8_000
    small, large = merge_plans(libpq_url, small_rows), merge_plans(libpq_url, large_rows)
    assert set(large) == set(EXPLAINED), f"not every statement was seen: {sorted(large)}"
    for kind, plans in large.items():
        for plan in plans:
            for node in nodes(plan):
                assert "Subplan Name" not in node or node.get("Actual Loops", 1) <= 1, (kind, node)
                if node["Node Type"] == "Nested Loop":
                    inner = node["Plans"][1]
                    # Probing an index once per outer row is linear; scanning a table once per outer row is not.
                    assert inner["Node Type"] not in ("Seq Scan", "Materialize", "Bitmap Heap Scan"), (kind, plan)
        for small_plan, large_plan in zip(small[kind], plans, strict=True):
            (small_examined, small_buffers), (large_examined, large_buffers) = work(small_plan), work(large_plan)
            # Four times the rows: four times the work, with slack for one more btree level.
            assert large_examined <= 4.5 * max(small_examined, 1), (kind, small_examined, large_examined)
            assert large_buffers <= 6 * max(small_buffers, 1), (kind, small_buffers, large_buffers)
            assert large_examined <= 8 * large_rows, (kind, large_examined)
