"""Deciding, from two listings of a tenant's folder, which report files are complete and not yet requested.

Completeness follows the platform's landing rules (`ingestion_platform.landing`): size and mtime unchanged since
the previous sensor tick, or a marker file for tenants whose uploader writes one; temporary names never count.

The state kept between ticks (the sensor cursor) holds only files dated within the lookback window, so it stays
small however many files accumulate on the server; older days are loaded by backfilling their partitions.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from ingestion_platform.landing import Listed, is_complete, is_temporary, unchanged

# name -> [size, mtime, requested]
FolderState = dict[str, list[int | bool]]

# The materialization metadata entry in which `sftp/<kind>` records the files it loaded: a JSON list of
# {"name": str, "size": int, "mtime": int}, size and mtime as the SFTP server listed them (st_size, st_mtime).
# The sensors read it so that a file already loaded, unchanged, is never requested again, whatever the cursor.
LOADED_FILES_METADATA_KEY = "loaded_files"


@dataclass(frozen=True)
class Ready:
    name: str
    size: int
    mtime: int
    day: date

    @property
    def run_key(self) -> str:
        return f"{self.name}:{self.size}:{self.mtime}"


def loaded_file_entry(name: str, size: int, mtime: int) -> dict[str, str | int]:
    """One entry of the `loaded_files` metadata list."""
    return {"name": name, "size": int(size), "mtime": int(mtime)}


def loaded_files(metadata: Mapping[str, Any]) -> set[tuple[str, int, int]]:
    """(name, size, mtime) of each file a materialization recorded; empty when it recorded none (older runs)."""
    entry = metadata.get(LOADED_FILES_METADATA_KEY)
    value = getattr(entry, "value", entry)
    if not isinstance(value, list):
        return set()
    found = set()
    for item in value:
        if isinstance(item, dict) and {"name", "size", "mtime"} <= item.keys():
            found.add((str(item["name"]), int(item["size"]), int(item["mtime"])))
    return found


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """`users_{YYYYMMDD}.csv` -> a regex capturing the date; the rest of the pattern is literal."""
    if pattern.count("{YYYYMMDD}") != 1:
        raise ValueError(f"file pattern {pattern!r} must contain {{YYYYMMDD}} exactly once")
    before, after = pattern.split("{YYYYMMDD}")
    return re.compile(f"^{re.escape(before)}(?P<day>\\d{{8}}){re.escape(after)}$")


def file_name(pattern: str, day: date) -> str:
    return pattern.replace("{YYYYMMDD}", day.strftime("%Y%m%d"))


def report_day(regex: re.Pattern[str], name: str) -> date | None:
    match = regex.fullmatch(name)
    if not match:
        return None
    try:
        return datetime.strptime(match.group("day"), "%Y%m%d").date()
    except ValueError:
        return None


def evaluate_folder(
    listing: list[Listed],
    previous: FolderState,
    *,
    pattern: str,
    completion: str,
    marker_suffix: str,
    today: date,
    lookback_days: int,
) -> tuple[list[Ready], FolderState]:
    """Files to request now, and the state to remember for the next tick."""
    regex = pattern_regex(pattern)
    names = {f.name for f in listing}
    oldest = today - timedelta(days=lookback_days)
    ready: list[Ready] = []
    state: FolderState = {}
    for f in sorted(listing, key=lambda f: f.name):
        if is_temporary(f.name):
            continue
        day = report_day(regex, f.name)
        if day is None or not oldest <= day <= today:
            continue
        seen = previous.get(f.name)
        already_requested = unchanged(f, seen) and bool(seen[2]) if seen else False
        complete = is_complete(f, seen, names, completion=completion, marker_suffix=marker_suffix)
        requested = already_requested
        if complete and not already_requested:
            ready.append(Ready(f.name, f.size, f.mtime, day))
            requested = True
        state[f.name] = [f.size, f.mtime, requested]
    return ready, state
