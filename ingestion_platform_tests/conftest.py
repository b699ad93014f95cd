"""Real servers shared by the suite: embedded PostgreSQL, the BigQuery emulator, S3 (moto) and GCS emulators."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import bigquery

from ingestion_platform.sandbox.bigquery import BigQueryEmulator, client_for, run_bigquery_emulator
from ingestion_platform_tests.fixtures.object_store import gcs_server, object_store, s3_server
from ingestion_platform_tests.fixtures.postgres import postgres_server_url, warehouse, warehouse_url
from ingestion_platform_tests.fixtures.ui_stack import ui_stack

__all__ = ["gcs_server", "object_store", "postgres_server_url", "s3_server", "ui_stack", "warehouse", "warehouse_url"]

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# The tests load fixed days of 2024 (a fixed clock); the partitions must reach back to them.
os.environ.setdefault("INGESTION_PARTITIONS_START", "2024-01-01")


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    """One emulator per test session: it keeps its state in process globals, so a process can only run one."""
    data_dir: Path = tmp_path_factory.mktemp("bigquery")
    with run_bigquery_emulator(data_dir) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def bigquery_client(bigquery_emulator: BigQueryEmulator) -> Iterator[bigquery.Client]:
    client = client_for(bigquery_emulator.rest_url, bigquery_emulator.project_id)
    yield client
    client.close()
