"""When a file in a landing folder (an SFTP folder, an object-store prefix) is complete enough to load.

A file still being uploaded looks like any other file in a listing, so the default rule is that its size and
mtime are unchanged since the previous look (the previous sensor tick); an uploader that writes a marker file
(`users_20240301.csv.done`) can have the marker decide instead. Temporary upload names (`*.part`, `*.filepart`,
`*.tmp`) and dot-files are never data. Every source with a landing folder uses these rules, so a file that one
source would treat as complete is complete for all of them.
"""

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

Completion = Literal["stable", "marker"]

TEMPORARY_NAME = re.compile(r"(^\.)|(\.(part|filepart|tmp)$)", re.IGNORECASE)
DEFAULT_MARKER_SUFFIX = ".done"


@dataclass(frozen=True)
class Listed:
    name: str
    size: int
    mtime: int


def is_temporary(name: str) -> bool:
    """An upload in progress or a hidden file, judged by the file's own name (not its folders)."""
    return bool(TEMPORARY_NAME.search(name.rsplit("/", 1)[-1]))


def is_marker(name: str, marker_suffix: str = DEFAULT_MARKER_SUFFIX) -> bool:
    return bool(marker_suffix) and name.endswith(marker_suffix)


def unchanged(listed: Listed, seen: Sequence[int | bool | str | None] | None) -> bool:
    """`seen` is what the previous look recorded for this name, starting with [size, mtime, ...]."""
    return seen is not None and len(seen) >= 2 and seen[0] == listed.size and seen[1] == listed.mtime


def is_complete(
    listed: Listed,
    seen: Sequence[int | bool | str | None] | None,
    names: Collection[str],
    *,
    completion: Completion | str = "stable",
    marker_suffix: str = DEFAULT_MARKER_SUFFIX,
) -> bool:
    """Complete when its marker `<name><marker_suffix>` is among `names` (completion "marker"), or when it is
    unchanged since the previous look (completion "stable"). Temporary names are never complete."""
    if is_temporary(listed.name):
        return False
    if completion == "marker":
        return f"{listed.name}{marker_suffix}" in names
    return unchanged(listed, seen)
