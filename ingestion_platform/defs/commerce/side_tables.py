"""`commerce.loaded_files` and the `commerce.rejects` view belong to no asset; declaring them here lets
`ingestion-platform migrate` create them."""

import dagster as dg

from ingestion_platform.defs.commerce.tables import LOADED_FILES_TABLE, REJECTS_VIEW, SCHEMA, rejects_view_sql
from ingestion_platform.metadata import table_spec_metadata, view_metadata


@dg.definitions
def commerce_side_tables() -> dg.Definitions:
    return dg.Definitions(
        metadata={
            **table_spec_metadata(LOADED_FILES_TABLE),
            **view_metadata(f"{SCHEMA}.{REJECTS_VIEW}", rejects_view_sql().as_string(None)),
        }
    )
