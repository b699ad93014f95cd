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

import dagster as dg

STEP_EXECUTOR = dg.multiprocess_executor.configured(
    {
        "start_method": {
            "forkserver": {"preload_modules": ["ingestion_platform.defs.resources", "ingestion_platform.assets"]}
        }
    },
    name="forkserver_multiprocess",
)


@dg.definitions
def defs() -> dg.Definitions:
    tree = dg.ComponentTree.for_project(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(
        tree.build_defs(tree.defs_module_path),
        dg.Definitions(executor=STEP_EXECUTOR, component_tree=tree),
    )
