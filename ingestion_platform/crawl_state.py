"""The status of a BrightData crawl in `social.crawl_metadata`, shared by the BrightData source and the platform's
run-failure recording (which may not import `defs/brightdata`): one place spells the transitions.

Statuses: queued (BrightData answered 429) -> triggered -> ready -> downloaded -> loaded, or failed / timed_out with
the stage and the error. Updates are single statements by key; inserts of new crawls go through the loader.
"""

from datetime import datetime
from typing import Any

import sqlalchemy as sa

CRAWL_TABLE = "social.crawl_metadata"
FINAL_STATUSES = ("loaded", "failed", "timed_out")


def table_exists(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": CRAWL_TABLE}).scalar() is True


def set_status(
    engine: sa.Engine,
    *,
    tenant_id: str,
    crawl_id: str,
    status: str,
    stage: str | None = None,
    error: str | None = None,
    snapshot_id: str | None = None,
    completed_at: datetime | None = None,
    triggered_at: datetime | None = None,
) -> None:
    """Move one crawl to `status`; `stage` and `error` are cleared unless given, so a success after a failed attempt
    leaves no stale error behind."""
    sets = ["status = :status", "stage = :stage", "error = :error", "updated_at = now()"]
    params: dict[str, Any] = {"tenant_id": tenant_id, "crawl_id": crawl_id, "status": status}
    params |= {"stage": stage, "error": error}
    if snapshot_id is not None:
        sets.append("snapshot_id = :snapshot_id")
        params["snapshot_id"] = snapshot_id
    if completed_at is not None:
        sets.append("completed_at = :completed_at")
        params["completed_at"] = completed_at
    if triggered_at is not None:
        sets.append("triggered_at = :triggered_at")
        params["triggered_at"] = triggered_at
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {CRAWL_TABLE} SET {', '.join(sets)} WHERE tenant_id = :tenant_id AND crawl_id = :crawl_id"
            ),
            params,
        )


def mark_snapshot_failed(engine: sa.Engine, snapshot_id: str, *, stage: str, error: str | None) -> int:
    """Record a failed download or load of a snapshot on its crawl; returns the rows updated (0 for an unknown id).

    A crawl already loaded keeps its status: a failed re-run of a loaded snapshot does not unload its posts."""
    if not table_exists(engine):
        return 0
    with engine.begin() as conn:
        result = conn.execute(
            sa.text(
                f"UPDATE {CRAWL_TABLE} SET status = 'failed', stage = :stage, error = :error, updated_at = now() "
                "WHERE snapshot_id = :snapshot_id AND status <> 'loaded'"
            ),
            {"snapshot_id": snapshot_id, "stage": stage, "error": error},
        )
        return int(result.rowcount or 0)
