"""The ingest journal: records durable in preallocated segments, read back after a crash up to
the first torn one, segments removed once applied, and never replayed while their process
lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mammogate.dicom_node.journal import HEADER_BYTES, RECORD, Journal, read_segment

SEGMENT = 4 << 20


def _journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "spool" / ".journal", tmp_path / "spool", SEGMENT)


def _segments(journal: Journal) -> list[Path]:
    return sorted(journal.folder.glob("*.seg"))


def _crash(journal: Journal) -> None:
    """What a killed process leaves: its descriptors (and locks) gone, its files as they are."""
    for segment in journal._segments:
        os.close(segment.fd)
    journal._segments = []
    journal._active = None


def test_records_are_read_back_in_order_with_their_metadata(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    for i in range(3):
        journal.append({"calling_ae": "MODALITY", "n": str(i)}, f"dataset {i}".encode() * 100)
    (path,) = _segments(journal)
    assert path.stat().st_size == SEGMENT  # preallocated: appends change no size or block map
    _crash(journal)
    ((found, records, release),) = list(Journal.leftovers(journal.folder))
    assert found == path
    assert [r.meta for r in records] == [{"calling_ae": "MODALITY", "n": str(i)} for i in range(3)]
    assert [r.data for r in records] == [f"dataset {i}".encode() * 100 for i in range(3)]
    release()
    assert not path.exists()


def test_a_torn_record_ends_the_segment(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.append({"n": "0"}, b"a" * 1000)
    journal.append({"n": "1"}, b"b" * 1000)
    (path,) = _segments(journal)
    _crash(journal)
    # the second record's last bytes never reached the disk
    second = HEADER_BYTES + RECORD.size + len(b'{"n":"0"}') + 4 + 1000
    with path.open("r+b") as fh:
        fh.seek(second + RECORD.size + 20)
        fh.write(b"\x00" * 8)
    fd = os.open(path, os.O_RDONLY)
    try:
        records = read_segment(fd)
    finally:
        os.close(fd)
    assert [r.meta["n"] for r in records] == ["0"]


def test_a_stale_record_of_a_reused_file_is_not_read(tmp_path: Path) -> None:
    """Bytes after the last record that look like a record of another segment (or zeros) end
    the segment: each record carries its segment's id and its number."""
    journal = _journal(tmp_path)
    journal.append({"n": "0"}, b"a" * 100)
    other = _journal(tmp_path / "other")
    other.append({"n": "x"}, b"x" * 100)
    other.append({"n": "y"}, b"y" * 100)
    (mine,), (theirs,) = _segments(journal), _segments(other)
    _crash(journal)
    _crash(other)
    first_length = RECORD.size + len(b'{"n":"0"}') + 4 + 100
    stale = theirs.read_bytes()[HEADER_BYTES + first_length:HEADER_BYTES + 2 * first_length]
    with mine.open("r+b") as fh:
        fh.seek(HEADER_BYTES + first_length)
        fh.write(stale)
    fd = os.open(mine, os.O_RDONLY)
    try:
        assert [r.meta["n"] for r in read_segment(fd)] == ["0"]
    finally:
        os.close(fd)


def test_a_live_process_s_segment_is_never_replayed(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.append({"n": "0"}, b"a" * 100)
    assert list(Journal.leftovers(journal.folder)) == []  # locked by this (live) journal
    _crash(journal)
    assert len(list(Journal.leftovers(journal.folder))) == 1


def test_a_full_segment_rotates_and_is_removed_once_applied(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    data = b"z" * (900 << 10)  # four fit in a 4 MiB segment
    records = [journal.append({"n": str(i)}, data) for i in range(6)]
    first, second = sorted(_segments(journal), key=lambda p: p.stat().st_mtime_ns)
    assert records[0].segment is not records[5].segment
    journal.applied(records[:3])
    assert len(_segments(journal)) == 2  # the first still has an unapplied record
    journal.applied(records[3:4])
    assert _segments(journal) == [second]  # wholly applied and no longer written: removed
    journal.applied(records[4:])
    assert _segments(journal) == [second]  # the active one stays while the process runs
    journal.close()
    assert _segments(journal) == []


def test_close_keeps_what_is_not_applied_for_the_next_start(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    done = journal.append({"n": "0"}, b"a")
    journal.append({"n": "1"}, b"b")
    journal.applied([done])
    journal.close()
    ((_, records, release),) = list(Journal.leftovers(journal.folder))
    # replayed whole (replay is idempotent: the applied one is found and skipped)
    assert [r.meta["n"] for r in records] == ["0", "1"]
    release()


def test_an_instance_too_large_for_a_segment_is_not_journalled(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    assert journal.fits(1 << 20)
    assert not journal.fits(SEGMENT)


def test_a_journal_that_cannot_be_written_raises_an_os_error(tmp_path: Path) -> None:
    blocker = tmp_path / "spool"
    blocker.write_bytes(b"not a folder")
    journal = Journal(blocker / ".journal", blocker, SEGMENT)
    with pytest.raises(OSError):
        journal.append({"n": "0"}, b"a")
