"""The warehouse resource: a PostgreSQL reached through SQLAlchemy 2 + psycopg 3, embedded when no URL is set."""

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from psycopg import Connection
from pydantic import Field

from ingestion_platform.paths import DEFAULT_HOME
from ingestion_platform.warehouse import LoadResult, Reject, TableSpec, load, migrate
from ingestion_platform.warehouse.embedded import embedded_postgres_url
from ingestion_platform.warehouse.loader import Batch, Mode


@functools.cache
def _engine(url: str) -> sa.Engine:
    # One pool per process and URL: Dagster builds resources per step, and reconnecting per step would waste
    # the pool. pre_ping survives a warehouse restart between runs of a long-lived code server.
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)


def _normalise(url: str) -> str:
    """Accept the plain `postgresql://` URLs operators paste, and pin the psycopg 3 driver."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"WAREHOUSE_URL must be a PostgreSQL URL, got backend {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


class WarehouseResource(dg.ConfigurableResource):
    """PostgreSQL warehouse. `url` unset starts (or reuses) an embedded PostgreSQL under `home`."""

    url: str | None = Field(default=None, description="SQLAlchemy PostgreSQL URL (WAREHOUSE_URL)")
    home: str = Field(default=DEFAULT_HOME, description="INGESTION_HOME, where the embedded server keeps its data")

    @property
    def engine(self) -> sa.Engine:
        return _engine(_normalise(self.url) if self.url else embedded_postgres_url(self.home))

    @contextmanager
    def raw_connection(self) -> Iterator[Connection]:
        """A psycopg connection from the pool, for COPY; the loader opens its transactions explicitly."""
        pooled = self.engine.raw_connection()
        conn: Connection = pooled.driver_connection  # type: ignore[assignment]
        try:
            conn.autocommit = True
            yield conn
        finally:
            # Back to SQLAlchemy's expectation even after an error, or later pool users would autocommit.
            if not conn.closed:
                conn.autocommit = False
            pooled.close()

    def load(
        self,
        spec: TableSpec,
        batches: Iterable[Batch],
        *,
        mode: Mode,
        slice_: Mapping[str, Sequence[Any]] | None = None,
        source: str | None = None,
        deleted_keys: Iterable[Batch] | None = None,
        rejects: Iterable[Reject] = (),
    ) -> LoadResult:
        """`ingestion_platform.warehouse.loader.load` on a pooled autocommit connection (see its docstring)."""
        with self.raw_connection() as conn:
            return load(
                conn, spec, batches, mode=mode, slice_=slice_, source=source, deleted_keys=deleted_keys, rejects=rejects
            )

    def migrate(self, specs: Iterable[TableSpec]) -> dict[str, list[str]]:
        """Create and evolve every declared table; run by `ingestion-platform migrate` with an owner role."""
        with self.raw_connection() as conn:
            return migrate(conn, specs)

    def query(self, statement: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return pd.read_sql_query(sa.text(statement), conn, params=dict(params or {}))

    def scalar(self, statement: str, params: Mapping[str, Any] | None = None) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(statement), dict(params or {})).scalar()
