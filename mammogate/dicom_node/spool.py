"""The spool: every received instance as a Part-10 file, durable before C-STORE answers Success.

Layout: ``<root>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``. A file is written to a temporary
name, fsynced, then hard-linked to its final name (which fails if the name exists, so a first
copy is never overwritten), and the directory is fsynced.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class SpoolError(Exception):
    """An instance could not be made durable."""


class InvalidUIDError(SpoolError):
    """A UID is not a valid DICOM UID (and so cannot name a file)."""


@dataclass(frozen=True)
class SpooledFile:
    path: Path
    size: int
    sha256: str
    created: bool  # False: a file of that name already existed and was kept


def check_uid(uid: str, what: str) -> str:
    if not uid or len(uid) > 64 or not _UID.match(uid):
        raise InvalidUIDError(f"{what} {uid!r} is not a valid DICOM UID")
    return uid


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, study_instance_uid: str, sop_instance_uid: str) -> Path:
        check_uid(study_instance_uid, "Study Instance UID")
        check_uid(sop_instance_uid, "SOP Instance UID")
        return self.root / study_instance_uid / f"{sop_instance_uid}.dcm"

    def store(
        self, data: bytes, study_instance_uid: str, sop_instance_uid: str, *, replace: bool = False
    ) -> SpooledFile:
        """Write ``data`` durably. Without ``replace`` an existing file is kept, not overwritten."""
        final = self.path_for(study_instance_uid, sop_instance_uid)
        digest = hashlib.sha256(data).hexdigest()
        try:
            new_dir = not final.parent.exists()
            final.parent.mkdir(parents=True, exist_ok=True)
            if new_dir:
                _fsync_dir(self.root)
            fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".incoming-", suffix=".tmp")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                if replace:
                    os.replace(tmp, final)
                    created = True
                else:
                    try:
                        os.link(tmp, final)
                        created = True
                    except FileExistsError:
                        created = False
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise SpoolError(f"cannot write {final.name} to the spool: {exc.strerror}") from exc
        return SpooledFile(final, len(data), digest, created)

    @staticmethod
    def sha256_of(path: Path) -> str:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
