"""`ingestion-platform migrate`: every table the code location declares, created from the definitions alone."""

import pytest
import sqlalchemy as sa

from ingestion_platform import cli
from ingestion_platform.definitions import defs
from ingestion_platform.metadata import declared_tables, declared_views


def test_declared_tables_come_from_the_definitions_without_io() -> None:
    names = {spec.qualified_name for spec in declared_tables(defs())}
    assert {"crm.users", "crm.locations", "ga4.purchase", "ga4.page_view", "ga4.availability"} <= names
    views = declared_views(defs())
    assert views["commerce.rejects"].startswith('CREATE OR REPLACE VIEW "commerce"."rejects"')


def test_migrate_command_creates_then_has_nothing_to_do(
    warehouse_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", warehouse_url)
    assert cli.main(["migrate"]) == 0
    first = capsys.readouterr().out
    assert "crm.users: create table" in first and "crm.users_rejects: create table" in first
    engine = sa.create_engine(warehouse_url)
    with engine.connect() as conn:
        tables = {r[0] for r in conn.exec_driver_sql("SELECT schemaname || '.' || tablename FROM pg_tables")}
        rejects = conn.exec_driver_sql("SELECT count(*) FROM commerce.rejects").scalar()
    engine.dispose()
    assert {"crm.users", "crm.users_rejects", "ga4.purchase", "ga4.purchase_rejects"} <= tables
    assert rejects == 0  # the contract's view exists before any commerce load ran
    assert cli.main(["migrate"]) == 0
    assert capsys.readouterr().out.strip().endswith("0 changed")
