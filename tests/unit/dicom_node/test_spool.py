from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path

import pytest

from mammogate.dicom_node.spool import InvalidUIDError, Spool, SpoolError


def test_write_then_commit_puts_a_durable_file_named_by_its_uids(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spooled = spool.write(b"DICM-payload", "1.2.3", "1.2.3.4")
    assert spooled.path == tmp_path / "spool" / "1.2.3" / "1.2.3.4.dcm"
    assert not spooled.path.exists() and spooled.temporary.read_bytes() == b"DICM-payload"
    assert spooled.sha256 == hashlib.sha256(b"DICM-payload").hexdigest()
    assert spooled.size == len(b"DICM-payload")
    assert spool.commit(spooled).read_bytes() == b"DICM-payload"
    assert [p.name for p in spooled.path.parent.iterdir()] == ["1.2.3.4.dcm"]  # no temp left


def test_concurrent_writes_of_one_uid_do_not_touch_each_other_until_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    first = spool.write(b"first", "1.2", "1.2.9")
    second = spool.write(b"second", "1.2", "1.2.9")
    assert first.temporary != second.temporary
    spool.commit(first)
    spool.discard(second)
    assert first.path.read_bytes() == b"first"
    assert [p.name for p in first.path.parent.iterdir()] == ["1.2.9.dcm"]


def test_commit_replaces_a_file_no_row_names(tmp_path: Path) -> None:
    """A file left in place by an association whose row did not commit is an orphan: the next
    copy of the instance takes its place."""
    spool = Spool(tmp_path)
    orphan = spool.write(b"orphan", "1.2", "1.2.7")
    spool.commit(orphan)
    resent = spool.write(b"resent", "1.2", "1.2.7")
    assert spool.commit(resent).read_bytes() == b"resent"
    assert [p.name for p in resent.path.parent.iterdir()] == ["1.2.7.dcm"]


def test_a_write_that_fails_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fsync(_fd: int) -> None:  # the disk answers EIO
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    spool = Spool(tmp_path)
    spool.commit(spool.write(b"first", "1.2", "1.2.6"))  # the study folder exists already
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(SpoolError, match="cannot write 1.2.8.dcm to the spool: Input/output error"):
        spool.write(b"data", "1.2", "1.2.8")
    assert [p.name for p in (tmp_path / "1.2").iterdir()] == ["1.2.6.dcm"]


@pytest.mark.parametrize("uid", ["../../etc/passwd", "1.2/3", "", "1..2", "1.2.a", "1" * 65])
def test_uids_that_could_escape_the_spool_are_refused(tmp_path: Path, uid: str) -> None:
    with pytest.raises(InvalidUIDError):
        Spool(tmp_path).write(b"x", uid, "1.2.3")
    with pytest.raises(InvalidUIDError):
        Spool(tmp_path).write(b"x", "1.2.3", uid)


def test_unwritable_spool_raises_spool_error(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    (tmp_path / "1.2").write_bytes(b"a file where the study folder must go")
    with pytest.raises(SpoolError, match="cannot write"):
        spool.write(b"x", "1.2", "1.2.3")


def test_sweep_removes_only_half_received_files_older_than_the_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    kept = spool.commit(spool.write(b"stored", "1.2", "1.2.1"))
    old = spool.write(b"a crash interrupted me", "1.2", "1.2.2").temporary
    in_flight = spool.write(b"still arriving", "1.3", "1.3.1").temporary
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(kept, (two_hours_ago, two_hours_ago))  # stored files are never swept, however old
    assert spool.sweep_incoming(3600) == 1
    assert not old.exists() and in_flight.exists() and kept.read_bytes() == b"stored"
    assert spool.sweep_incoming(3600) == 0


def test_sweep_removes_a_large_dataset_a_crash_left_half_received(tmp_path: Path) -> None:
    """A dataset written to the receiving folder as it arrived (dicom_node.receive) and never
    answered: swept like any other half-received file."""
    spool = Spool(tmp_path)
    folder = spool.receiving_folder()
    folder.mkdir()
    left = folder / ".incoming-0123.tmp"
    left.write_bytes(b"the first megabytes of an image")
    two_hours_ago = time.time() - 7200
    os.utime(left, (two_hours_ago, two_hours_ago))
    arriving = folder / ".incoming-4567.tmp"
    arriving.write_bytes(b"still arriving")
    assert spool.sweep_incoming(3600) == 1
    assert not left.exists() and arriving.exists()


def test_an_adopted_file_moves_into_place_on_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    folder = spool.receiving_folder()
    folder.mkdir()
    received = folder / ".incoming-89ab.tmp"
    received.write_bytes(b"DICM-large")
    spooled = spool.adopt(received, 10, hashlib.sha256(b"DICM-large").hexdigest(), "1.2", "1.2.5")
    assert spooled.path == tmp_path / "1.2" / "1.2.5.dcm" and spooled.temporary == received
    assert spool.commit(spooled).read_bytes() == b"DICM-large"
    assert list(folder.iterdir()) == []


def test_create_writes_only_where_no_file_is(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    final = spool.path_for("1.2.3", "1.2.3.4")
    assert spool.create(b"first", final) is True  # the study folder made on the way
    assert spool.create(b"second", final) is False  # a file is there: left as it is
    assert final.read_bytes() == b"first"
    spool.place(b"second", final)  # place replaces it (through a temporary name)
    assert final.read_bytes() == b"second"
    assert sorted(p.name for p in final.parent.iterdir()) == ["1.2.3.4.dcm"]
