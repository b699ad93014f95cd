"""Which files the SFTP sensors request, tick after tick (pure)."""

from datetime import date

import pytest

from ingestion_platform.defs.sftp.discovery import Listed, evaluate_folder, file_name, pattern_regex, report_day

TODAY = date(2024, 3, 10)


def tick(listing, previous, completion="stable", lookback_days=7):
    return evaluate_folder(
        listing,
        previous,
        pattern="users_{YYYYMMDD}.csv",
        completion=completion,
        marker_suffix=".done",
        today=TODAY,
        lookback_days=lookback_days,
    )


def test_a_file_is_requested_once_its_size_and_mtime_stop_changing() -> None:
    ready, state = tick([Listed("users_20240309.csv", 100, 1)], {})
    assert ready == []  # first sight: could still be growing
    ready, state = tick([Listed("users_20240309.csv", 250, 2)], state)
    assert ready == []  # grew since the last tick
    ready, state = tick([Listed("users_20240309.csv", 250, 2)], state)
    assert [r.name for r in ready] == ["users_20240309.csv"]
    ready, state = tick([Listed("users_20240309.csv", 250, 2)], state)
    assert ready == []  # requested already


def test_a_changed_file_is_requested_again_after_it_settles() -> None:
    state = {"users_20240309.csv": [250, 2, True]}
    ready, state = tick([Listed("users_20240309.csv", 300, 5)], state)
    assert ready == []
    ready, state = tick([Listed("users_20240309.csv", 300, 5)], state)
    assert [(r.size, r.mtime) for r in ready] == [(300, 5)]
    assert ready[0].run_key == "users_20240309.csv:300:5"


@pytest.mark.parametrize(
    "name",
    [
        "users_20240309.csv.part",
        "users_20240309.csv.filepart",
        "users_20240309.csv.tmp",
        ".users_20240309.csv",
        "users_2024030.csv",
        "users_20241399.csv",
        "locations_20240309.csv",
        "users_20240309.csv.done",
    ],
)
def test_temporary_and_foreign_names_are_never_requested(name: str) -> None:
    listing = [Listed(name, 10, 1)]
    _, state = tick(listing, {})
    ready, state = tick(listing, state)
    assert ready == [] and state == {}


def test_marker_mode_requests_as_soon_as_the_marker_exists() -> None:
    ready, _ = tick([Listed("users_20240309.csv", 10, 1)], {}, completion="marker")
    assert ready == []
    ready, _ = tick([Listed("users_20240309.csv", 10, 1), Listed("users_20240309.csv.done", 0, 1)], {}, "marker")
    assert [r.day for r in ready] == [date(2024, 3, 9)]


def test_state_only_keeps_files_inside_the_lookback_window() -> None:
    listing = [Listed(f"users_202402{d:02d}.csv", 1, 1) for d in range(1, 29)] + [Listed("users_20240309.csv", 1, 1)]
    _, state = tick(listing, {}, lookback_days=7)
    assert list(state) == ["users_20240309.csv"]
    assert [r.name for r in tick(listing, state, lookback_days=7)[0]] == ["users_20240309.csv"]


def test_patterns() -> None:
    regex = pattern_regex("exports/u.{YYYYMMDD}.csv")
    assert report_day(regex, "exports/u.20240301.csv") == date(2024, 3, 1)
    assert report_day(regex, "exports/uX20240301.csv") is None  # the dot is literal
    assert file_name("users_{YYYYMMDD}.csv", date(2024, 3, 1)) == "users_20240301.csv"
    with pytest.raises(ValueError, match="exactly once"):
        pattern_regex("users.csv")
