"""Autoloaded Dagster definitions: one folder per source, plus `platform/` for what spans sources."""
