"""The stack itself: the shipped instance settings are the ones running, and every process is up."""

import httpx

from ingestion_platform_tests.e2e.stack import DOCKER_INSTANCE, UIStack


def test_the_servers_run_on_the_shipped_instance_settings(ui_stack: UIStack) -> None:
    assert (ui_stack.dagster_home / "dagster.yaml").read_bytes() == DOCKER_INSTANCE.read_bytes()
    with ui_stack.instance() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_monitoring_enabled
        assert instance.run_retries_max_retries == 1
    info = httpx.get(f"{ui_stack.webserver_url}/server_info", timeout=30).json()
    assert info["dagster_webserver_version"]
    data = ui_stack.graphql("{ instance { runQueuingSupported runLauncher { name } } }")["instance"]
    assert data["runQueuingSupported"] is True
    assert data["runLauncher"]["name"] == "DefaultRunLauncher"
