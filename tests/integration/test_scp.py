"""The SCP over real associations on 127.0.0.1: DCMTK's storescu/echoscu and pynetdicom as peers."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from sqlalchemy import select

from mammogate.app import open_database
from mammogate.config import load_settings
from mammogate.db import AuditEntry, Database, Instance, Study
from mammogate.dicom_node.scp import Scp
from mammogate.dicom_node.spool import Spool
from mammogate.training.synthetic import write_study
from tests.peers import ECHOSCU, STORESCU, free_port, postgres_database, require_tool
from tests.shared_data import shared_data_dir


class RunningScp:
    def __init__(self, root: Path, allowed: list[str], database_url: str = "", **dicom: object):
        self.port = free_port()
        self.settings = load_settings(
            None, node={"data_dir": str(root)}, database={"url": database_url},
            dicom={"port": self.port, "allowed_calling_ae_titles": allowed, "settle_seconds": 60, **dicom},
        )
        self.db: Database = open_database(self.settings)
        self.scp = Scp(self.settings, self.db, Spool(self.settings.spool_dir))
        self.scp.start()

    def storescu(self, *files: Path, calling: str = "MODALITY", options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        require_tool(STORESCU)
        return subprocess.run(
            [STORESCU, *options, "-aet", calling, "-aec", "MAMMOGATE", "127.0.0.1", str(self.port),
             *map(str, files)], capture_output=True, text=True, timeout=60,
        )

    def echoscu(self, calling: str = "MODALITY") -> subprocess.CompletedProcess[str]:
        require_tool(ECHOSCU)
        return subprocess.run(
            [ECHOSCU, "-aet", calling, "-aec", "MAMMOGATE", "127.0.0.1", str(self.port)],
            capture_output=True, text=True, timeout=30,
        )

    def instances(self) -> list[Instance]:
        with self.db.session() as session:
            return list(session.scalars(select(Instance).order_by(Instance.id)))

    def audit(self, action: str) -> list[AuditEntry]:
        with self.db.session() as session:
            return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


@pytest.fixture
def study_files(tmp_path: Path) -> list[Path]:
    study = write_study(tmp_path / "study", seed=77, lesion=False)
    return [image.path for image in study.images if image.path is not None]


def _status_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def test_storescu_study_is_durable_and_recorded_before_success(scp: RunningScp, study_files: list[Path]) -> None:
    result = scp.storescu(*study_files)
    assert result.returncode == 0, _status_of(result)
    rows = scp.instances()
    assert len(rows) == 4
    for row, source in zip(sorted(rows, key=lambda r: r.sop_instance_uid),
                           sorted(study_files, key=lambda p: pydicom.dcmread(p).SOPInstanceUID), strict=True):
        stored = Path(row.path)
        assert stored.is_file() and stored.is_relative_to(scp.settings.spool_dir)
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == row.sha256
        assert pydicom.dcmread(stored).SOPInstanceUID == pydicom.dcmread(source).SOPInstanceUID
    with scp.db.session() as session:
        study = session.scalars(select(Study)).one()
        assert study.instance_count == 4 and study.state == "receiving"
        assert study.calling_ae_title == "MODALITY"


def test_echo_succeeds(scp: RunningScp) -> None:
    assert scp.echoscu().returncode == 0


def test_store_rejects_unknown_calling_ae(tmp_path: Path, study_files: list[Path]) -> None:
    running = RunningScp(tmp_path / "strict", allowed=["MODALITY"])
    try:
        refused = running.storescu(*study_files, calling="INTRUDER")
        assert refused.returncode != 0
        assert "Association Rejected" in _status_of(refused)
        assert "Calling AE Title Not Recognized" in _status_of(refused)
        assert running.instances() == []
        (audited,) = running.audit("association-rejected")  # who, from where, why
        assert audited.actor == "dicom:INTRUDER" and audited.target == "127.0.0.1"
        assert "calling" in audited.detail.lower()
        accepted = running.storescu(study_files[0], calling="MODALITY")
        assert accepted.returncode == 0, _status_of(accepted)
        assert len(running.instances()) == 1
    finally:
        running.scp.stop()
        running.db.dispose()


def _dataset(sop_class_uid: str, modality: str, *, pixels: bool = True) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "Test^Refused"
    ds.PatientID = "REFUSED-1"
    if pixels:
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(8 * 8 * 2)
    return ds


def _send(scp: RunningScp, ds_or_path: Dataset | Path, sop_class_uid: str) -> Dataset:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(sop_class_uid, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MAMMOGATE")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds_or_path)
    finally:
        assoc.release()
    return status


SC = "1.2.840.10008.5.1.4.1.1.7"
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
CT = "1.2.840.10008.5.1.4.1.1.2"


def test_secondary_capture_that_is_not_mg_fails_with_a_reason(scp: RunningScp) -> None:
    status = _send(scp, _dataset(SC, "OT"), SC)
    assert status.Status == 0xA900
    assert "not MG" in status.ErrorComment
    assert scp.instances() == []
    refused = scp.audit("c-store-refused")
    assert len(refused) == 1 and "not MG" in refused[0].detail
    assert scp.echoscu().returncode == 0, "the node keeps serving"


def test_image_without_pixel_data_fails_with_a_reason(scp: RunningScp) -> None:
    status = _send(scp, _dataset(MG_FOR_PRESENTATION, "MG", pixels=False), MG_FOR_PRESENTATION)
    assert status.Status == 0xA900
    assert "no Pixel Data" in status.ErrorComment
    assert scp.instances() == []


def test_dataset_that_does_not_parse_fails_and_node_goes_on(scp: RunningScp, tmp_path: Path, study_files: list[Path]) -> None:
    good = pydicom.dcmread(study_files[0])
    broken = tmp_path / "broken.dcm"
    good.save_as(broken, enforce_file_format=True)
    data = bytearray(broken.read_bytes())
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")  # preamble, DICM, group length
    # Garble the dataset after the file meta: an element with an absurd length.
    data[meta_end + 200: meta_end + 216] = b"\x10\x00\x10\x00PN\xff\xff\xff\xff\xff\xff\xff\x7f"
    broken.write_bytes(bytes(data))
    status = _send(scp, broken, MG_FOR_PRESENTATION)
    assert status.Status in (0xC000, 0xA900)
    assert status.ErrorComment
    assert scp.instances() == []
    ok = scp.storescu(*study_files)
    assert ok.returncode == 0 and len(scp.instances()) == 4


def test_sop_class_we_do_not_take_is_refused_at_association(scp: RunningScp) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    ae.add_requested_context(MG_FOR_PRESENTATION, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MAMMOGATE")
    try:
        assert assoc.is_established
        (context,) = assoc.rejected_contexts
        assert context.abstract_syntax == CT
        assert [c.abstract_syntax for c in assoc.accepted_contexts] == [MG_FOR_PRESENTATION]
    finally:
        assoc.release()


def test_duplicate_instance_is_stored_once_and_first_copy_kept(scp: RunningScp, study_files: list[Path], tmp_path: Path) -> None:
    first = study_files[0]
    assert scp.storescu(first).returncode == 0
    assert scp.storescu(first).returncode == 0  # identical re-send
    changed = pydicom.dcmread(first)
    changed.PatientComments = "changed payload, same SOP Instance UID"
    other = tmp_path / "changed.dcm"
    changed.save_as(other, enforce_file_format=True)
    assert scp.storescu(other).returncode == 0
    rows = scp.instances()
    assert len(rows) == 1
    assert hashlib.sha256(Path(rows[0].path).read_bytes()).hexdigest() == rows[0].sha256
    assert "PatientComments" not in pydicom.dcmread(rows[0].path)
    differs = scp.audit("duplicate-differs")
    assert [d.target for d in differs] == [rows[0].sop_instance_uid]
    with scp.db.session() as session:
        assert session.scalars(select(Study)).one().instance_count == 1


def test_real_vendor_and_cbis_ddsm_images_are_accepted(scp: RunningScp) -> None:
    data = shared_data_dir()
    vendor = sorted((data / "dicom" / "vendor_samples").glob("*.dcm"))
    cbis = sorted((data / "dicom" / "cbis_ddsm").glob("*.dcm"))
    assert len(vendor) >= 2 and len(cbis) >= 4, f"expected the real samples under {data}"
    # Propose each file's own compressed transfer syntax, as a modality would.
    jpeg = scp.storescu(*vendor, options=("-xs",))
    assert jpeg.returncode == 0, _status_of(jpeg)
    rle = scp.storescu(*cbis, options=("-xr",))
    assert rle.returncode == 0, _status_of(rle)
    stored = {r.sop_instance_uid: r for r in scp.instances()}
    assert len(stored) == len(vendor) + len(cbis)
    assert {r.transfer_syntax_uid for r in stored.values()} == {
        "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.5"}  # JPEG Lossless SV1 and RLE, as sent
    for row in stored.values():  # the spool holds exactly what the modality sent
        assert pydicom.dcmread(row.path).file_meta.TransferSyntaxUID == row.transfer_syntax_uid


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_scp(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningScp]:
    with contextlib.ExitStack() as stack:
        url = "" if request.param == "sqlite" else stack.enter_context(postgres_database())
        running = RunningScp(tmp_path / "node", allowed=[], database_url=url)
        try:
            yield running
        finally:
            running.scp.stop()
            running.db.dispose()


def test_concurrent_copies_of_one_instance_keep_exactly_the_first_committed(
    any_db_scp: RunningScp, study_files: list[Path]
) -> None:
    scp = any_db_scp
    import copy
    import threading

    base = pydicom.dcmread(study_files[0])
    variants = []
    for i in range(6):
        ds = copy.deepcopy(base)
        ds.PatientComments = f"variant {i}"
        variants.append(ds)
    statuses: list[int] = []
    barrier = threading.Barrier(len(variants), timeout=60)

    def send(ds: Dataset) -> None:
        ae = AE(ae_title=f"MOD{variants.index(ds)}")
        ae.add_requested_context(MG_FOR_PRESENTATION, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="MAMMOGATE")
        assert assoc.is_established
        barrier.wait()
        try:
            statuses.append(int(assoc.send_c_store(ds).Status))
        finally:
            assoc.release()

    threads = [threading.Thread(target=send, args=(ds,), daemon=True) for ds in variants]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [0] * len(variants)
    (row,) = scp.instances()
    stored = Path(row.path)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == row.sha256
    kept = pydicom.dcmread(stored).PatientComments
    assert kept in {f"variant {i}" for i in range(len(variants))}
    assert len(scp.audit("duplicate-differs")) == len(variants) - 1
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]  # no temp files left


def test_a_nul_inside_a_patient_attribute_is_stored_on_every_database(
    any_db_scp: RunningScp, study_files: list[Path], tmp_path: Path
) -> None:
    ds = pydicom.dcmread(study_files[0])
    ds.PatientName = "DUPONT\x00^Hélène"  # a NUL inside a value (senders' C-string slips)
    ds.AccessionNumber = "A\x001"
    padded = tmp_path / "padded.dcm"
    ds.save_as(padded, enforce_file_format=True)
    result = any_db_scp.storescu(padded)
    assert result.returncode == 0 and "Error" not in _status_of(result), _status_of(result)
    with any_db_scp.db.session() as session:
        study = session.scalars(select(Study)).one()
        assert study.patient_name == "DUPONT^Hélène" and study.accession_number == "A1"
        # the statistics' breakdown by manufacturer reads these
        assert (study.manufacturer, study.manufacturer_model) == (ds.Manufacturer, ds.ManufacturerModelName)


# A modality in another process (its memory is not the test's); with CHUNKED, pynetdicom sends
# the file's dataset bytes as they are: what the stored file must hold after its File Meta.
SENDER = """
import sys
from pynetdicom import AE, _config
_config.STORE_SEND_CHUNKED_DATASET = sys.argv[5] == "chunked"
ae = AE(ae_title="MODALITY")
ae.add_requested_context(sys.argv[3], sys.argv[4])
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="MAMMOGATE")
status = assoc.send_c_store(sys.argv[2])
assoc.release()
print(f"{int(status.Status):04X}|{status.get('ErrorComment', '')}")
"""


def send_from_another_process(scp: RunningScp, path: Path, syntax: str, *,
                              chunked: bool = False) -> tuple[int, str]:
    """Send a file as a modality would, from another process; (status, error comment)."""
    import sys

    run = subprocess.run(
        [sys.executable, "-c", SENDER, str(scp.port), str(path), MG_FOR_PRESENTATION, syntax,
         "chunked" if chunked else "whole"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    code, _, comment = run.stdout.strip().splitlines()[-1].partition("|")
    return int(code, 16), comment


def image_file(path: Path, rows: int, columns: int, syntax: str = ExplicitVRLittleEndian) -> Path:
    import numpy as np

    ds = _dataset(MG_FOR_PRESENTATION, "MG")
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns = rows, columns
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = np.random.default_rng(rows).integers(0, 4096, (rows, columns), np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian,
               little_endian=True)
    return path


@pytest.mark.parametrize(("rows", "syntax"), [
    (64, ExplicitVRLittleEndian),  # kept in memory, written at once
    (2048, ExplicitVRLittleEndian),  # 8 MB: written to the spool as it arrives
    (2048, ImplicitVRLittleEndian),
])
def test_the_stored_file_is_the_received_dataset_byte_for_byte(
    scp: RunningScp, tmp_path: Path, rows: int, syntax: str
) -> None:
    from pynetdicom.dsutils import create_file_meta, encode_file_meta

    from mammogate.dicom_node.limits import split_file_meta

    sent = image_file(tmp_path / "sent.dcm", rows, 2048, syntax)
    raw = sent.read_bytes()
    offset, _ = split_file_meta(raw)  # type: ignore[misc]
    status, comment = send_from_another_process(scp, sent, syntax, chunked=True)
    assert status == 0, comment
    (row,) = scp.instances()
    ds = pydicom.dcmread(sent)
    expected = b"".join((b"\x00" * 128, b"DICM", encode_file_meta(create_file_meta(
        sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax=syntax)), raw[offset:]))
    stored = Path(row.path).read_bytes()
    assert stored == expected  # what pynetdicom's own buffer (encoded_dataset) held
    assert (row.size, row.sha256) == (len(expected), hashlib.sha256(expected).hexdigest())
    receiving = scp.settings.spool_dir / ".receiving"
    assert not receiving.exists() or list(receiving.iterdir()) == []
    assert [p.name for p in Path(row.path).parent.iterdir()] == [Path(row.path).name]


def test_an_association_aborted_inside_a_large_dataset_leaves_nothing(
    scp: RunningScp, tmp_path: Path
) -> None:
    """The first half of an 8 MB C-STORE, then an A-ABORT: the half written to the spool goes."""
    import time
    from io import BytesIO

    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE

    from mammogate.dicom_node.limits import split_file_meta

    raw = image_file(tmp_path / "big.dcm", 2048, 2048).read_bytes()
    offset, _ = split_file_meta(raw)  # type: ignore[misc]
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MG_FOR_PRESENTATION, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MAMMOGATE")
    assert assoc.is_established
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = MG_FOR_PRESENTATION
    request.AffectedSOPInstanceUID = pydicom.dcmread(BytesIO(raw)).SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(raw[offset:])
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    context_id = assoc.accepted_contexts[0].context_id
    pdata = list(message.encode_msg(context_id, 65536))
    for primitive in pdata[: len(pdata) // 2]:
        assoc.dul.send_pdu(primitive)
    receiving = scp.settings.spool_dir / ".receiving"
    deadline = time.monotonic() + 10
    while not (receiving.exists() and list(receiving.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(receiving.iterdir()), "the first half was written as it came"
    assoc.abort()
    deadline = time.monotonic() + 10
    while list(receiving.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(receiving.iterdir()) == []
    assert scp.instances() == []
    assert scp.echoscu().returncode == 0


def test_storescu_c_stores_are_served_on_the_dul_thread(scp: RunningScp, study_files: list[Path]) -> None:
    """The C-STOREs of a plain storescu push are served on the association's DUL thread (the
    command set read by hand, the response written there), not through pynetdicom's reactor."""
    served: list[tuple[str, str]] = []
    service = scp.scp.service
    store = service.store_served

    def counting(assoc: Any, request: Any, received: Any) -> tuple[int, str]:
        served.append((request.sop_instance_uid, threading.current_thread().name))
        return store(assoc, request, received)

    service.store_served = counting  # type: ignore[method-assign]
    result = scp.storescu(*study_files)
    assert result.returncode == 0, _status_of(result)
    assert sorted(uid for uid, _ in served) == sorted(r.sop_instance_uid for r in scp.instances())
    assert len(served) == 4
    # pynetdicom's reactor runs as "AcceptorThread@..."; the DUL thread is another
    assert all(not name.startswith("AcceptorThread") for _, name in served)


# A modality that associates, sends files on that association when told (a line on its
# standard input), prints [status, seconds] per C-STORE, and releases when told again.
PATIENT_MODALITY = """
import json, sys, time
import pydicom
from pynetdicom import AE
ae = AE(ae_title="MODALITY")
ae.add_requested_context(sys.argv[2], sys.argv[3])
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="MAMMOGATE")
print("associated", flush=True)
sys.stdin.readline()
answers = []
for path in sys.argv[4:]:
    ds = pydicom.dcmread(path)
    started = time.monotonic()
    answers.append([int(assoc.send_c_store(ds).Status), time.monotonic() - started])
print(json.dumps(answers), flush=True)
sys.stdin.readline()
assoc.release()
"""


def test_a_busy_database_never_holds_a_sender_up_and_the_release_waits_for_the_rows(
    tmp_path: Path,
) -> None:
    """Small instances are answered from the ingest journal; their rows follow when the
    database is free. While another writer holds SQLite's lock, C-STOREs are answered at once;
    the release is answered once the rows are in."""
    import json
    import sqlite3
    import sys

    scp = RunningScp(tmp_path / "node", allowed=[], expected_views=[],
                     store_batch_idle_seconds=0.01, store_batch_lock_wait_seconds=0.02)
    try:
        files = [image_file(tmp_path / f"{i}.dcm", 64 + i, 52) for i in range(8)]
        database = sqlite3.connect(scp.settings.data_dir / "mammogate.sqlite3", isolation_level=None)
        sender = subprocess.Popen(
            [sys.executable, "-c", PATIENT_MODALITY, str(scp.port), MG_FOR_PRESENTATION,
             ExplicitVRLittleEndian, *map(str, files)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert sender.stdout is not None and sender.stdin is not None
            assert sender.stdout.readline().strip() == "associated"
            database.execute("BEGIN IMMEDIATE")  # another writer holds the database
            sender.stdin.write("send\n")
            sender.stdin.flush()
            answers = json.loads(sender.stdout.readline())
            assert [status for status, _ in answers] == [0x0000] * 8
            # (the database's busy timeout is 30 s: a store that waited for it would show)
            assert max(seconds for _, seconds in answers) < 2.0, answers
            with scp.db.read_session() as session:  # durable in the journal, not yet recorded
                assert session.scalars(select(Instance)).all() == []
            database.execute("COMMIT")
            sender.stdin.write("release\n")
            sender.stdin.flush()
            assert sender.wait(60) == 0
        finally:
            if sender.poll() is None:
                sender.kill()
            database.close()
        rows = scp.instances()
        assert len(rows) == 8  # in before the release was answered
        assert all(Path(row.path).is_file() for row in rows)
    finally:
        scp.scp.stop()
        scp.db.dispose()


def test_a_replay_restores_a_recorded_file_but_not_one_retention_removed(tmp_path: Path) -> None:
    """After a crash, the journal's records are applied again: a recorded instance whose file
    did not reach the disk gets it back; one whose study's images retention removed does not."""
    import os
    from datetime import datetime

    from sqlalchemy import update

    from mammogate.dicom_node.journal import Journal

    root = tmp_path / "node"
    first = RunningScp(root, allowed=[], expected_views=[])
    files = [image_file(tmp_path / f"{i}.dcm", 64 + i, 52) for i in range(2)]
    try:
        assert first.storescu(*files).returncode == 0
        kept, removed = sorted(first.instances(), key=lambda r: r.path)
    finally:
        first.scp.stop()
        first.db.dispose()
    data = {row.sop_instance_uid: Path(row.path).read_bytes() for row in (kept, removed)}
    spool = first.settings.spool_dir
    with first.db.session() as session:
        session.execute(update(Study).where(Study.id == removed.study_id)
                        .values(images_removed_at=datetime(2026, 1, 1)))
    Path(kept.path).unlink()  # written, not yet flushed, when the node died
    Path(removed.path).unlink()  # removed by retention
    # what a node killed before its segment was removed leaves
    journal = Journal(spool / ".journal", spool, first.settings.dicom.journal_segment_bytes)
    for part10 in data.values():
        journal.append({"calling_ae": "MODALITY", "called_ae": "MAMMOGATE"}, part10)
    for segment in journal._segments:
        os.close(segment.fd)
    second = RunningScp(root, allowed=[], expected_views=[])  # replays at start
    try:
        assert Path(kept.path).read_bytes() == data[kept.sop_instance_uid]
        assert not Path(removed.path).exists()
        assert list((spool / ".journal").glob("*.seg")) == []
        assert len(second.instances()) == 2  # nothing recorded twice
    finally:
        second.scp.stop()
        second.db.dispose()


def test_a_file_written_ahead_of_its_row_is_kept_only_for_the_copy_that_is_kept(
    tmp_path: Path,
) -> None:
    """A journalled instance's spool file is written while its sender sends the next, before
    its row. A re-sent copy whose first copy's file is missing restores it only when it is the
    same bytes; a copy whose study retention removed between its answer and its row leaves no
    file behind."""
    from datetime import datetime

    from sqlalchemy import update

    scp = RunningScp(tmp_path / "node", allowed=[], expected_views=[])
    try:
        first = image_file(tmp_path / "first.dcm", 64, 52)
        assert scp.storescu(first).returncode == 0
        (row,) = scp.instances()
        stored = Path(row.path)
        original = stored.read_bytes()
        stored.unlink()  # the first copy's file lost
        assert scp.storescu(first).returncode == 0  # the same bytes again: the file restored
        assert stored.read_bytes() == original and len(scp.instances()) == 1
        stored.unlink()
        changed = pydicom.dcmread(first)
        changed.PatientComments = "other bytes, same SOP Instance UID"
        changed.save_as(tmp_path / "changed.dcm", enforce_file_format=True)
        assert scp.storescu(tmp_path / "changed.dcm").returncode == 0
        assert not stored.exists()  # not the bytes the row's SHA-256 names
        assert [r.sha256 for r in scp.instances()] == [row.sha256]

        # a second image of the study, answered while the study was taking images (the
        # retention check is cached for a minute), recorded after retention removed them
        second_ds = pydicom.dcmread(first)
        second_ds.SOPInstanceUID = second_ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        second = tmp_path / "second.dcm"
        second_ds.save_as(second, enforce_file_format=True)
        with scp.db.session() as session:
            session.execute(update(Study).where(Study.id == row.study_id)
                            .values(images_removed_at=datetime(2026, 1, 1)))
        assert scp.storescu(second).returncode == 0
        assert [r.sop_instance_uid for r in scp.instances()] == [row.sop_instance_uid]
        assert sorted(p.name for p in stored.parent.iterdir()) == []
        assert [a.target for a in scp.audit("c-store-discarded")] == [second_ds.SOPInstanceUID]
    finally:
        scp.scp.stop()
        scp.db.dispose()
