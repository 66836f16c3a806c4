"""Free disk space: the SCP refuses images, and the worker holds back results, while the
filesystem under the data directory runs low (``[storage]`` settings).

The SCP's limit (``storage.min_free_bytes``, ``storage.min_free_percent``) is above the
worker's (``storage.results_min_free_bytes``), so images stop coming in while there is still
room for the results of the studies already taken: an instance answered Success is never lost
for want of space, and a study never waits for a result that cannot be written.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MIB = 2**20


class DiskSpaceLow(Exception):
    """A write was not attempted: the disk is below a ``[storage]`` minimum (the message says
    which, and how much is free)."""


@dataclass(frozen=True)
class DiskSpace:
    free_bytes: int  # available to this (unprivileged) process
    total_bytes: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free_bytes / self.total_bytes if self.total_bytes else 0.0


def disk_space(path: Path) -> DiskSpace:
    """The space of the filesystem holding ``path`` (its nearest existing ancestor)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    return DiskSpace(free_bytes=st.f_bavail * st.f_frsize, total_bytes=st.f_blocks * st.f_frsize)


def format_mib(size: int) -> str:
    mib = size / MIB
    return f"{mib:.1f} MiB" if mib < 10 else f"{mib:.0f} MiB"


def shortage(
    space: DiskSpace, what: str, *, min_free_bytes: int, min_free_percent: float = 0.0,
    bytes_key: str = "storage.min_free_bytes", percent_key: str = "storage.min_free_percent",
) -> str | None:
    """Why ``space`` is too little, or None. Short enough for a DICOM Error Comment (64
    characters) with ``what`` of up to 8 characters."""
    if min_free_bytes and space.free_bytes < min_free_bytes:
        return f"{what} disk has {format_mib(space.free_bytes)} free, below {bytes_key}"
    if min_free_percent and space.free_percent < min_free_percent:
        return f"{what} disk has {space.free_percent:.1f}% free, below {percent_key}"
    return None


def describe_os_error(exc: OSError, doing: str) -> str:
    """An OSError of a write as a reason a person can act on: a full disk says so."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{doing}: the disk is full ({exc.strerror}); free space under node.data_dir "
                "(storage.retention_days removes delivered studies' images)")
    return f"{doing}: {exc}"


class FreeSpaceGuard:
    """Whether the disk at ``path`` is below its minimums, read at most every ``check_seconds``
    (statvfs is cheap, but a storm of C-STOREs need not call it for each), and the bookkeeping
    of a rate-limited report of the refusals that follow. Thread-safe."""

    def __init__(
        self, path: Path, what: str, *, min_free_bytes: int, min_free_percent: float = 0.0,
        bytes_key: str = "storage.min_free_bytes", percent_key: str = "storage.min_free_percent",
        check_seconds: float = 1.0, report_seconds: float = 60.0,
        measure: Callable[[Path], DiskSpace] = disk_space,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = path
        self.what = what
        self.min_free_bytes = min_free_bytes
        self.min_free_percent = min_free_percent
        self.bytes_key = bytes_key
        self.percent_key = percent_key
        self.check_seconds = check_seconds
        self.report_seconds = report_seconds
        self.measure = measure
        self.clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._reason: str | None = None
        self._space: DiskSpace | None = None
        self._reported_at: float | None = None
        self._unreported = 0

    @property
    def enabled(self) -> bool:
        return bool(self.min_free_bytes or self.min_free_percent)

    @property
    def last_space(self) -> DiskSpace | None:
        return self._space

    def shortage(self) -> str | None:
        """Why the disk is too full now, or None (also when the guard is off)."""
        if not self.enabled:
            return None
        with self._lock:
            now = self.clock()
            if self._checked_at is None or now - self._checked_at >= self.check_seconds:
                try:
                    self._space = self.measure(self.path)
                except OSError as exc:
                    # a filesystem that cannot say how full it is: refuse nothing for it (the
                    # write itself then fails or not, and says why)
                    log.warning("cannot read the free space of %s: %s", self.path, exc)
                    self._space = None
                reason = None if self._space is None else shortage(
                    self._space, self.what, min_free_bytes=self.min_free_bytes,
                    min_free_percent=self.min_free_percent, bytes_key=self.bytes_key,
                    percent_key=self.percent_key)
                if reason is None and self._reason is not None:
                    log.warning("%s disk at %s has space again (%s free): writing again",
                                self.what, self.path, format_mib(self._space.free_bytes)
                                if self._space else "unknown")
                    self._reported_at = None
                    self._unreported = 0
                self._reason = reason
                self._checked_at = now
            return self._reason

    def refused(self) -> int | None:
        """Count one refusal. Returns how many refusals to report now (this one included) when
        a report is due (the first refusal, then at most one per ``report_seconds``), else
        None."""
        with self._lock:
            self._unreported += 1
            now = self.clock()
            if self._reported_at is not None and now - self._reported_at < self.report_seconds:
                return None
            count, self._unreported, self._reported_at = self._unreported, 0, now
            return count


def fsync_directory(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_dicom_atomically(ds: Any, target: Path) -> Path:
    """Write a pydicom Dataset as a Part 10 file atomically: a temporary file beside the target,
    fsync, rename, fsync the folder. A reader never sees a partial file; after return the file
    survives a crash. Raises OSError (the temporary file removed)."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
        fsync_directory(target.parent)
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return target

