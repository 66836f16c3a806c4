"""The spool: every received instance as a Part-10 file, durable before C-STORE answers Success.

Layout: ``<root>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``. A file is written to a unique
temporary name and fsynced (``write``), or, a large dataset written there as it arrived
(``<root>/.receiving``, ``dicom_node.receive``), fsynced and taken over (``adopt``); the SCP then
inserts the instance's row, and only while it holds that row (unique on the SOP Instance UID)
moves the file into place and fsyncs the folder (``commit``) before the row commits. So a first
copy is never overwritten by a second association, and no committed row points at a missing
file. Temporary files a crash left (``.incoming-*.tmp``, in a study folder or the receiving
folder) are removed by ``sweep_incoming``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from mammogate.storage import fsync_directory

RECEIVING_FOLDER = ".receiving"  # large datasets as they arrive (dicom_node.receive)

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class SpoolError(Exception):
    """An instance could not be made durable."""


class InvalidUIDError(SpoolError):
    """A UID is not a valid DICOM UID (and so cannot name a file)."""


@dataclass(frozen=True)
class SpooledFile:
    """A received instance written and fsynced under a temporary name, not yet in place."""

    temporary: Path
    path: Path  # where commit() puts it
    size: int
    sha256: str


def check_uid(uid: str, what: str) -> str:
    if not uid or len(uid) > 64 or not _UID.match(uid):
        raise InvalidUIDError(f"{what} {uid!r} is not a valid DICOM UID")
    return uid


class Spool:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # study folders whose entry in the root is known to be on disk (fsynced by this process)
        self._durable_folders: set[str] = set()

    def _durable(self, folder: str) -> None:
        if len(self._durable_folders) >= 10_000:  # a bound: forgetting costs one fsync each
            self._durable_folders.clear()
        self._durable_folders.add(folder)

    def path_for(self, study_instance_uid: str, sop_instance_uid: str) -> Path:
        check_uid(study_instance_uid, "Study Instance UID")
        check_uid(sop_instance_uid, "SOP Instance UID")
        return self.root / study_instance_uid / f"{sop_instance_uid}.dcm"

    def _folder(self, final: Path, durable: bool = True) -> None:
        """Make the study's folder (and, when new and ``durable``, its entry in the root
        durable)."""
        new_dir = not final.parent.exists()
        final.parent.mkdir(parents=True, exist_ok=True)
        if new_dir and durable:
            fsync_directory(self.root)
            self._durable(final.parent.name)

    def _create_temporary(self, final: Path, durable: bool = True) -> tuple[int, Path]:
        """A new, empty file with a unique temporary name beside ``final`` (open for writing).
        The study folder is looked for only when the open finds none (a new study, or one
        whose folder retention removed)."""
        name = final.parent / f".incoming-{uuid.uuid4().hex}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            return os.open(name, flags, 0o600), name
        except FileNotFoundError:
            self._folder(final, durable)
            return os.open(name, flags, 0o600), name

    def write(self, data: bytes, study_instance_uid: str, sop_instance_uid: str) -> SpooledFile:
        """Write ``data`` under a unique temporary name beside its final place, fsynced."""
        final = self.path_for(study_instance_uid, sop_instance_uid)
        try:
            fd, tmp_name = self._create_temporary(final)
        except OSError as exc:
            raise SpoolError(f"cannot write {final.name} to the spool: {exc.strerror}") from exc
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            tmp_name.unlink(missing_ok=True)  # a full disk keeps no half-written file
            raise SpoolError(f"cannot write {final.name} to the spool: {exc.strerror}") from exc
        return SpooledFile(tmp_name, final, len(data), hashlib.sha256(data).hexdigest())

    def place(self, data: bytes, final: Path) -> None:
        """Write ``data`` to ``final`` WITHOUT flushing it: for an instance the ingest journal
        holds until a ``syncfs`` has put this file on disk (``dicom_node.journal``), and whose
        row is not committed yet (so no reader sees the file before it is whole). Created in
        place; a file already there (one a rolled-back batch or a crash left) is replaced
        through a temporary name and a rename."""
        if self.create(data, final):
            return
        try:
            fd, written = self._create_temporary(final, durable=False)
            try:
                try:
                    _write_all(fd, data)
                finally:
                    os.close(fd)
                os.replace(written, final)
            except OSError:
                written.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise SpoolError(f"cannot write {final.name} to the spool: {exc.strerror}") from exc

    def create(self, data: bytes, final: Path) -> bool:
        """Write ``data`` to ``final`` WITHOUT flushing it, only if no file is there (then
        False, nothing written): an instance the ingest journal holds, written before its row
        (``StoreService.prepare``), which leaves any file it finds to the flush. Raises
        SpoolError."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            try:
                fd = os.open(final, flags, 0o600)
            except FileNotFoundError:
                self._folder(final, durable=False)
                fd = os.open(final, flags, 0o600)
        except FileExistsError:
            return False
        except OSError as exc:
            raise SpoolError(f"cannot write {final.name} to the spool: {exc.strerror}") from exc
        try:
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            final.unlink(missing_ok=True)
            raise SpoolError(f"cannot write {final.name} to the spool: {exc.strerror}") from exc
        return True

    def receiving_folder(self) -> Path:
        """Where a large dataset is written as it arrives (``dicom_node.receive``), before its
        study is known; on the spool's filesystem, so that it moves into place by a rename."""
        return self.root / RECEIVING_FOLDER

    def adopt(self, received: Path, size: int, sha256: str, study_instance_uid: str,
              sop_instance_uid: str) -> SpooledFile:
        """Take over a file written (and fsynced) as it arrived, under the receiving folder:
        ``commit`` moves it to its final place as it does a file of ``write``."""
        final = self.path_for(study_instance_uid, sop_instance_uid)
        try:
            self._folder(final)
        except OSError as exc:
            received.unlink(missing_ok=True)
            raise SpoolError(f"cannot write {final.name} to the spool: {exc.strerror}") from exc
        return SpooledFile(received, final, size, sha256)

    def commit(self, spooled: SpooledFile) -> Path:
        """Move the file into place (replacing an orphan a crash may have left) and fsync the folder.

        Call it only while holding the instance's database row, so two copies never race here.
        """
        try:
            os.replace(spooled.temporary, spooled.path)
            fsync_directory(spooled.path.parent)
            # The study's folder entry too, once: the thread that created the folder may not
            # have fsynced the root yet when another association's file lands in it.
            folder = spooled.path.parent.name
            if folder not in self._durable_folders:
                fsync_directory(self.root)
                self._durable(folder)
        except OSError as exc:
            raise SpoolError(f"cannot place {spooled.path.name} in the spool: {exc.strerror}") from exc
        return spooled.path

    def discard(self, spooled: SpooledFile) -> None:
        spooled.temporary.unlink(missing_ok=True)

    def sweep_incoming(self, older_than_seconds: float) -> int:
        """Remove the temporary files of C-STOREs a crash interrupted (never answered Success,
        so the sender still has the image), once older than ``older_than_seconds``."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for leftover in self.root.glob("*/.incoming-*.tmp"):
            try:
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # another node sharing the spool took it first
        return removed


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
