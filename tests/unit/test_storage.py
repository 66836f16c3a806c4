"""The free-space guard: thresholds, the reasons it gives, its cache and its report rate."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from mammogate.config import ConfigError, load_settings
from mammogate.storage import DiskSpace, FreeSpaceGuard, describe_os_error, disk_space, shortage

MIB = 2**20


def test_below_bytes_or_percent_says_which_and_how_much() -> None:
    space = DiskSpace(free_bytes=12 * MIB, total_bytes=1000 * MIB)
    reason = shortage(space, "spool", min_free_bytes=100 * MIB)
    assert reason == "spool disk has 12 MiB free, below storage.min_free_bytes"
    assert len(reason) <= 64, "fits a DICOM Error Comment"
    reason = shortage(space, "spool", min_free_bytes=1 * MIB, min_free_percent=5)
    assert reason == "spool disk has 1.2% free, below storage.min_free_percent"
    assert shortage(space, "spool", min_free_bytes=12 * MIB, min_free_percent=1.2) is None
    assert shortage(space, "spool", min_free_bytes=0) is None, "0: no limit"
    tiny = DiskSpace(free_bytes=MIB // 2, total_bytes=1000 * MIB)
    assert "0.5 MiB free" in (shortage(tiny, "spool", min_free_bytes=MIB) or "")


class FakeDisk:
    """The measurement is the guard's input: a changing free size, counted reads."""

    def __init__(self, free: int):
        self.free = free
        self.reads = 0

    def __call__(self, path: Path) -> DiskSpace:
        self.reads += 1
        return DiskSpace(self.free, 1000 * MIB)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_guard_reads_at_most_every_check_seconds_and_recovers() -> None:
    disk, clock = FakeDisk(50 * MIB), Clock()
    guard = FreeSpaceGuard(Path("/x"), "spool", min_free_bytes=100 * MIB, check_seconds=2,
                           measure=disk, clock=clock)
    assert guard.shortage() is not None and disk.reads == 1
    disk.free = 500 * MIB
    assert guard.shortage() is not None and disk.reads == 1, "cached within check_seconds"
    clock.now += 2
    assert guard.shortage() is None and disk.reads == 2
    assert guard.last_space == DiskSpace(500 * MIB, 1000 * MIB)


def test_guard_with_no_minimum_never_reads() -> None:
    disk = FakeDisk(0)
    guard = FreeSpaceGuard(Path("/x"), "spool", min_free_bytes=0, measure=disk)
    assert guard.shortage() is None and disk.reads == 0


def test_refusals_are_reported_at_most_once_per_report_seconds_with_their_count() -> None:
    clock = Clock()
    guard = FreeSpaceGuard(Path("/x"), "spool", min_free_bytes=MIB, report_seconds=60,
                           measure=FakeDisk(0), clock=clock)
    assert guard.refused() == 1, "the first refusal is reported at once"
    assert [guard.refused() for _ in range(500)] == [None] * 500
    clock.now += 60
    assert guard.refused() == 501, "then one report for all refused since"
    assert guard.refused() is None


def test_real_disk_space_of_a_missing_folder_is_its_parents(tmp_path: Path) -> None:
    space = disk_space(tmp_path / "not" / "yet")
    assert space.total_bytes > 0 and 0 < space.free_bytes <= space.total_bytes


def test_a_full_disk_error_says_what_to_do() -> None:
    text = describe_os_error(OSError(errno.ENOSPC, "No space left on device"), "cannot write x")
    assert text.startswith("cannot write x: the disk is full") and "retention_days" in text
    assert describe_os_error(OSError(errno.EACCES, "Permission denied"), "w") == (
        "w: [Errno 13] Permission denied")


def test_results_minimum_must_stay_below_the_images_minimum() -> None:
    with pytest.raises(ConfigError, match="storage.results_min_free_bytes"):
        load_settings(None, storage={"min_free_bytes": 10 * MIB, "results_min_free_bytes": 20 * MIB})
    lowered = load_settings(None, storage={"min_free_bytes": 10 * MIB})
    assert lowered.storage.results_min_free_bytes == 5 * MIB, "follows min_free_bytes down"
    off = load_settings(None, storage={"min_free_bytes": 0})
    assert off.storage.results_min_free_bytes == 256 * MIB
    with pytest.raises(ConfigError, match="storage.retention_days"):
        load_settings(None, storage={"retention_days": -1})
