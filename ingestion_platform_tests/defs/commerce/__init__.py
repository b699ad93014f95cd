"""Commerce NDJSON batches: parsing, validation, batch rules, upload plan (pure functions, no Dagster)."""
