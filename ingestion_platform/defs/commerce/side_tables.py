"""`commerce.loaded_files` belongs to no asset; declaring it here lets `ingestion-platform migrate` create it."""

import dagster as dg

from ingestion_platform.defs.commerce.tables import LOADED_FILES_TABLE
from ingestion_platform.metadata import table_spec_metadata


@dg.definitions
def commerce_side_tables() -> dg.Definitions:
    return dg.Definitions(metadata=table_spec_metadata(LOADED_FILES_TABLE))
