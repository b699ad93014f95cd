"""A BigQuery emulator (local-bigquery) that the real google-cloud-bigquery client talks to over REST.

Run in-process for tests, or as its own process for `ingestion-platform dev`:

    python -m ingestion_platform.sandbox.bigquery --data-dir .ingestion/bigquery --port 9050
"""

import argparse
import contextlib
import functools
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import duckdb_extensions
import uvicorn
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from sqlglot import exp

# The emulator stores tables in DuckLake and parses with these; they ship as wheels because DuckDB cannot download
# extensions on machines without internet access.
DUCKDB_EXTENSIONS = ("icu", "ducklake", "spatial", "json", "parquet")


@functools.cache
def load_duckdb_extensions() -> None:
    """Install the wheel-packaged DuckDB extensions so the emulator's connections autoload them offline."""
    for name in DUCKDB_EXTENSIONS:
        duckdb_extensions.import_extension(name)


@dataclass(frozen=True)
class BigQueryEmulator:
    rest_url: str
    grpc_address: str
    project_id: str


_started_data_dir: Path | None = None


def _wildcard_table_union_all(node: exp.Expression, context: object) -> exp.Expression:
    from local_bigquery.sql.rules import tables

    rewritten = tables.wildcard_table(node, context)
    if rewritten is not node:
        for union in rewritten.find_all(exp.Union):
            union.set("distinct", False)
    return rewritten


def _keep_duplicate_rows_in_wildcard_queries() -> None:
    """Make `FROM dataset.events_*` keep exact duplicate rows, as BigQuery does.

    local-bigquery 0.3.2 expands a wildcard table into a UNION (DISTINCT) of the matching tables, so rows that are
    exact copies, which the GA4 export contains, silently vanish whenever two or more tables match, and
    de-duplication code would pass locally without ever seeing a duplicate. Its rewrite rules form a module-level
    list, so swapping in a UNION ALL version of the rule fixes every query the emulator translates.
    """
    from local_bigquery.sql import rules
    from local_bigquery.sql.rules import tables

    if tables.wildcard_table in rules.NODE_RULES:
        rules.NODE_RULES[rules.NODE_RULES.index(tables.wildcard_table)] = _wildcard_table_union_all


@contextlib.contextmanager
def run_bigquery_emulator(
    data_dir: Path, host: str = "127.0.0.1", port: int = 0, grpc_port: int = 0
) -> Iterator[BigQueryEmulator]:
    """Serve the emulator's REST and gRPC (Storage API) endpoints on a daemon thread until the block exits.

    local_bigquery keeps its settings and DuckDB connection in module globals, so a process can serve one data
    directory only; starting it again on another directory would silently keep using the first one.
    """
    global _started_data_dir
    data_dir = data_dir.resolve()
    if _started_data_dir not in (None, data_dir):
        raise RuntimeError(f"this process already served a BigQuery emulator from {_started_data_dir}")
    _started_data_dir = data_dir
    load_duckdb_extensions()
    _keep_duplicate_rows_in_wildcard_queries()
    # Imported here: the emulator takes over a second to import, and callers of client_for never need it.
    from local_bigquery import app
    from local_bigquery.grpc import server
    from local_bigquery.settings import settings

    settings.data_dir = data_dir
    storage, bound_grpc_port = server.start(host, grpc_port)
    try:
        rest = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        thread = threading.Thread(target=rest.run, name="bigquery-emulator", daemon=True)
        thread.start()
        while not rest.started and thread.is_alive():
            thread.join(0.01)
        if not rest.started:
            raise RuntimeError(f"BigQuery emulator failed to listen on {host}:{port}")
        try:
            bound_port = rest.servers[0].sockets[0].getsockname()[1]
            yield BigQueryEmulator(
                rest_url=f"http://{host}:{bound_port}",
                grpc_address=f"{host}:{bound_grpc_port}",
                project_id=settings.default_project_id,
            )
        finally:
            rest.should_exit = True
            thread.join()
    finally:
        storage.stop(None)


def client_for(emulator_rest_url: str, project: str) -> bigquery.Client:
    """The production client pointed at the emulator; anonymous because the emulator checks no credentials."""
    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator_rest_url},
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Serve in the foreground until SIGTERM or SIGINT, so a supervisor (`ingestion-platform dev`) can stop it."""
    parser = argparse.ArgumentParser(prog="python -m ingestion_platform.sandbox.bigquery", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9050)
    parser.add_argument("--grpc-port", type=int, default=0, help="BigQuery Storage API port (0: any free port)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    with run_bigquery_emulator(args.data_dir, host=args.host, port=args.port, grpc_port=args.grpc_port) as emulator:
        print(f"bigquery emulator ready at {emulator.rest_url}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
