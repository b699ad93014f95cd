"""`ui_stack`: one running UI stack (code server, webserver, daemon, PostgreSQL, stand-ins) for the whole session.

Starting it costs tens of seconds, so every end-to-end and browser test shares it: tests must not assume a clean
instance (filter runs by the tags or partitions they created) and must leave the stack running.

Use it as `def test_x(ui_stack: UIStack)`; see `UIStack` in `stack.py` for the attributes (`webserver_url`,
`graphql_url`, `client`, `warehouse_url`, `object_store_root`, `sandbox`, `days`, `tenants`, `home`, `logs`) and the
helpers (`start_sensor`/`stop_sensor`, `start_schedule`/`stop_schedule`, `launch_job`, `materialize`,
`launch_backfill`, `wait_for_run`, `wait_for_backfill`, `runs`, `wait_for_runs`, `run_messages`, `log_tails`).
"""

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion_platform_tests.e2e.stack import UIStack, run_ui_stack


@pytest.fixture(scope="session")
def ui_stack() -> Iterator[UIStack]:
    # Not under pytest's basetemp, which a concurrent pytest session of the same user may prune while this runs;
    # short, too: the SFTP server and PostgreSQL put unix sockets and keys under it.
    with tempfile.TemporaryDirectory(prefix="ui-stack-") as home, run_ui_stack(Path(home)) as stack:
        yield stack
