-- Run once by the postgres image, on first start of an empty volume, as POSTGRES_USER (the owner of the new
-- database). The warehouse gets its own database beside Dagster's, so the platform's schemas and tables can be
-- backed up, restored or moved to another server without touching run history, and the reverse.
CREATE DATABASE warehouse;
