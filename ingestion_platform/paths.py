"""Where local state lives: one folder (INGESTION_HOME) for the embedded warehouse, object store and sandbox."""

import os
from pathlib import Path

DEFAULT_HOME = ".ingestion"


def ingestion_home() -> Path:
    return Path(os.environ.get("INGESTION_HOME", DEFAULT_HOME)).expanduser().resolve()


def deployment() -> str:
    value = os.environ.get("INGESTION_DEPLOYMENT", "local")
    if value not in {"local", "prod"}:
        raise ValueError(f"INGESTION_DEPLOYMENT must be 'local' or 'prod', not {value!r}")
    return value
