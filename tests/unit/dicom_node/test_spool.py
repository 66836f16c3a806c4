from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mammogate.dicom_node.spool import InvalidUIDError, Spool, SpoolError


def test_store_is_durable_named_by_uids_and_hashed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spooled = spool.store(b"DICM-payload", "1.2.3", "1.2.3.4")
    assert spooled.path == tmp_path / "spool" / "1.2.3" / "1.2.3.4.dcm"
    assert spooled.path.read_bytes() == b"DICM-payload"
    assert spooled.sha256 == hashlib.sha256(b"DICM-payload").hexdigest()
    assert spooled.created and spooled.size == len(b"DICM-payload")
    assert [p.name for p in spooled.path.parent.iterdir()] == ["1.2.3.4.dcm"]  # no temp left


def test_first_copy_is_never_overwritten_unless_asked(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.store(b"first", "1.2", "1.2.9")
    second = spool.store(b"second", "1.2", "1.2.9")
    assert not second.created and second.path.read_bytes() == b"first"
    replaced = spool.store(b"third", "1.2", "1.2.9", replace=True)
    assert replaced.created and replaced.path.read_bytes() == b"third"


@pytest.mark.parametrize("uid", ["../../etc/passwd", "1.2/3", "", "1..2", "1.2.a", "1" * 65])
def test_uids_that_could_escape_the_spool_are_refused(tmp_path: Path, uid: str) -> None:
    with pytest.raises(InvalidUIDError):
        Spool(tmp_path).store(b"x", uid, "1.2.3")
    with pytest.raises(InvalidUIDError):
        Spool(tmp_path).store(b"x", "1.2.3", uid)


def test_unwritable_spool_raises_spool_error(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    (tmp_path / "1.2").write_bytes(b"a file where the study folder must go")
    with pytest.raises(SpoolError, match="cannot write"):
        spool.store(b"x", "1.2", "1.2.3")
