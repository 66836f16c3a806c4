"""The ingest journal: a small instance is durable after one flush of one file, before Success.

Making a received instance durable the obvious way costs three flushes: its spool file, the
file's folder, and the database commit (each an ext4 journal commit, 0.1-0.9 ms on the disks
this node runs on). The journal makes it one: the instance is appended, with what its database
row needs, to a **segment** -- a file of ``dicom.journal_segment_bytes`` written with zeros and
fsynced when it was made, so that writing into it changes no file size or block map -- and
``fdatasync`` makes the record durable. Then C-STORE answers Success.

The spool file and the database row follow a moment later, for many instances at once
(``StoreService.flush``: one transaction, one commit; the files written without a flush of
their own). A segment is removed only once every record in it has its row committed and, after
one ``syncfs`` of the spool's filesystem, its file on disk. After a crash, the segments left
behind are read at start (``Journal.leftovers``) and their records applied again: applying is
idempotent (a row that exists is not made twice; its file is written again if it is missing),
and a record torn by the crash (never answered Success) fails its checksum and ends the segment.

Each SCP process writes its own segments and holds an ``flock`` on them while it lives, so
several nodes may share one spool: a node replays only segments no live process holds.

Segment layout: a header block (``SEGMENT_MAGIC``, the segment's random id), then records, each
``RECORD`` (magic, CRC-32 of everything after it, the segment id, the record's number from 0,
the body's length) and the body: the metadata as JSON, its length first, then the Part-10 bytes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import json
import logging
import os
import struct
import threading
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SEGMENT_MAGIC = b"MGJOURN1"
HEADER_BYTES = 4096
RECORD = struct.Struct("<4sI16sQI")  # magic, crc32, segment id, number, body length
RECORD_MAGIC = b"MGJR"
META_LENGTH = struct.Struct("<I")
ZEROS = b"\x00" * (1 << 20)
SUFFIX = ".seg"


class JournalError(OSError):
    """A record could not be made durable (the C-STORE is refused, nothing is lost)."""


def _load_syncfs() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_syncfs = _load_syncfs()


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the filesystem holding ``path`` (Linux ``syncfs``; elsewhere
    ``sync``): the spool files written since the last call are on disk after it."""
    if _syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), str(path))
    finally:
        os.close(fd)


@dataclass(eq=False)
class Segment:
    path: Path
    ident: bytes
    fd: int
    size: int
    offset: int = HEADER_BYTES  # where the next record goes
    records: int = 0  # appended
    applied: int = 0  # whose rows are committed (and files written)
    active: bool = True  # records are still appended to it

    @property
    def done(self) -> bool:
        return not self.active and self.applied >= self.records


@dataclass(eq=False)
class JournalRecord:
    """One received instance: its metadata (the calling and called AE titles, when it came)
    and its Part-10 bytes."""

    meta: dict[str, str]
    data: bytes
    segment: Segment | None = field(default=None, repr=False)  # None: read back at start


class Journal:
    """This process's segments under ``folder``: ``append`` before Success, ``applied`` once
    the rows and files of records exist, ``close`` at a clean stop."""

    def __init__(self, folder: Path, spool_root: Path, segment_bytes: int) -> None:
        self.folder = folder
        self.spool_root = spool_root
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._active: Segment | None = None
        self._segments: list[Segment] = []

    # -- writing -------------------------------------------------------------------------

    def fits(self, size: int) -> bool:
        """Whether a Part-10 file of ``size`` bytes can be journalled (with room for its
        metadata) -- larger ones take the spool's own path."""
        return size + 4096 <= (self.segment_bytes - HEADER_BYTES) // 2

    def append(self, meta: dict[str, str], data: bytes) -> JournalRecord:
        """Write a record and make it durable (fdatasync). Raises JournalError."""
        encoded = json.dumps(meta, separators=(",", ":")).encode()
        body = META_LENGTH.pack(len(encoded)) + encoded + data
        try:
            with self._lock:
                segment = self._active
                if segment is None or segment.offset + RECORD.size + len(body) > segment.size:
                    segment = self._rotate()
                number = segment.records
                head = struct.pack("<16sQI", segment.ident, number, len(body))
                crc = zlib.crc32(body, zlib.crc32(head))
                record = RECORD.pack(RECORD_MAGIC, crc, segment.ident, number, len(body)) + body
                os.pwrite(segment.fd, record, segment.offset)
                segment.offset += len(record)
                segment.records += 1
            os.fdatasync(segment.fd)  # outside the lock: concurrent associations share flushes
        except OSError as exc:
            raise JournalError(exc.errno, f"cannot write the ingest journal: {exc.strerror}") from exc
        return JournalRecord(meta, data, segment)

    def applied(self, records: list[JournalRecord]) -> None:
        """The rows and files of ``records`` exist: segments wholly applied, and no longer
        written to, are removed (after their files are flushed to disk)."""
        with self._lock:
            for record in records:
                if record.segment is not None:
                    record.segment.applied += 1
            done = [segment for segment in self._segments if segment.done]
        if done:
            self._retire(done)

    def close(self) -> None:
        """A clean stop: the active segment is closed; every wholly applied one removed (what
        is not applied stays, for the next start to replay)."""
        with self._lock:
            if self._active is not None:
                self._active.active = False
                self._active = None
            done = [segment for segment in self._segments if segment.done]
            left = [segment for segment in self._segments if not segment.done]
        self._retire(done)
        for segment in left:
            log.warning("ingest journal %s keeps %d instance(s) not yet in the database: "
                        "replayed at the next start", segment.path.name,
                        segment.records - segment.applied)
            os.close(segment.fd)  # (its lock goes with it)
        with self._lock:
            self._segments = []

    # -- internals -----------------------------------------------------------------------

    def _rotate(self) -> Segment:
        """A new, preallocated segment (the lock is held)."""
        if self._active is not None:
            self._active.active = False
        self.folder.mkdir(parents=True, exist_ok=True)
        ident = uuid.uuid4().bytes
        path = self.folder / f"{ident.hex()}{SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            header = (SEGMENT_MAGIC + ident).ljust(HEADER_BYTES, b"\x00")
            os.write(fd, header)
            left = self.segment_bytes - HEADER_BYTES
            while left > 0:
                left -= os.write(fd, ZEROS[:min(left, len(ZEROS))])
            os.fsync(fd)
            dir_fd = os.open(self.folder, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        segment = Segment(path, ident, fd, self.segment_bytes)
        self._segments.append(segment)
        self._active = segment
        log.debug("ingest journal: new segment %s", path.name)
        # the previous segment may be wholly applied already
        return segment

    def _retire(self, segments: list[Segment]) -> None:
        try:
            sync_filesystem(self.spool_root)  # the spool files of their records are on disk
        except OSError as exc:
            log.error("ingest journal: cannot flush the spool (%s); segments kept", exc.strerror)
            return
        with self._lock:
            for segment in segments:
                if segment in self._segments:
                    self._segments.remove(segment)
                    segment.path.unlink(missing_ok=True)
                    os.close(segment.fd)

    # -- after a crash -------------------------------------------------------------------

    @staticmethod
    def leftovers(folder: Path) -> Iterator[tuple[Path, list[JournalRecord], Any]]:
        """Segments no live process holds: (path, their valid records, a release function to
        call once they are replayed -- it removes the segment)."""
        if not folder.is_dir():
            return
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # another node took it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live process's
            try:
                records = read_segment(fd)
            except OSError:
                os.close(fd)
                raise

            def release(path: Path = path, fd: int = fd) -> None:
                path.unlink(missing_ok=True)
                os.close(fd)

            yield path, records, release


def read_segment(fd: int) -> list[JournalRecord]:
    """The valid records of a segment, in order, up to the first torn or stale one."""
    header = os.pread(fd, HEADER_BYTES, 0)
    if not header.startswith(SEGMENT_MAGIC):
        return []
    ident = header[len(SEGMENT_MAGIC):len(SEGMENT_MAGIC) + 16]
    size = os.fstat(fd).st_size
    offset, number, records = HEADER_BYTES, 0, []
    while offset + RECORD.size <= size:
        magic, crc, seg, found, length = RECORD.unpack(os.pread(fd, RECORD.size, offset))
        if magic != RECORD_MAGIC or seg != ident or found != number \
                or offset + RECORD.size + length > size:
            break
        body = os.pread(fd, length, offset + RECORD.size)
        head = struct.pack("<16sQI", seg, found, length)
        if zlib.crc32(body, zlib.crc32(head)) != crc or length < META_LENGTH.size:
            break
        (meta_length,) = META_LENGTH.unpack_from(body)
        try:
            meta = json.loads(body[META_LENGTH.size:META_LENGTH.size + meta_length])
        except ValueError:
            break
        records.append(JournalRecord(meta, body[META_LENGTH.size + meta_length:]))
        offset += RECORD.size + length
        number += 1
    return records
