"""The code location's entry point (`ingestion_platform.definitions:defs`): everything under `defs/`.

Every step of a run loads this code location again, so loading is kept lean:
- only the `defs/` folder is built. `load_from_defs_folder` also scans every installed Dagster integration's
  entry points for component types (importing dagster-aws and friends, about 1 s) to describe them to the UI's
  component browser; this project defines no components, so that scan buys nothing.
- steps start from a forkserver that has already imported the heavy libraries (the resources module imports every
  client: BigQuery, PostgreSQL, SFTP; the asset skeleton imports the loader, pandas and pyarrow), so a step
  process pays for building the definitions, not for the imports.
"""

from pathlib import Path
from typing import Any

import dagster as dg

FORKSERVER = {"forkserver": {"preload_modules": ["ingestion_platform.defs.resources", "ingestion_platform.assets"]}}


def forkserver_by_default(config: dict[str, Any] | None) -> dict[str, Any]:
    """Run config may still choose `in_process` or tune `multiprocess`; the start method defaults to the forkserver."""
    config = dict(config or {})
    if "in_process" in config:
        return config
    multiprocess = dict(config.get("multiprocess") or {})
    multiprocess.setdefault("start_method", FORKSERVER)
    return {"multiprocess": multiprocess}


STEP_EXECUTOR = dg.multi_or_in_process_executor.configured(forkserver_by_default, name="multi_or_in_process")


@dg.definitions
def defs() -> dg.Definitions:
    tree = dg.ComponentTree.for_project(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(
        tree.build_defs(tree.defs_module_path),
        dg.Definitions(executor=STEP_EXECUTOR, component_tree=tree),
    )
