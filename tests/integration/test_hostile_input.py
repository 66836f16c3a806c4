"""Hostile and broken datasets against the SCP over real associations: every size is bounded
before anything is inflated or decoded, each refusal says why, and the node keeps storing."""

from __future__ import annotations

import resource
import threading
import time
import zlib
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from sqlalchemy import select

from mammogate.db import Database, Report, Study
from mammogate.reporting.cad_sr import read_cad_sr
from mammogate.training.synthetic import make_study
from tests.integration.test_scp import (  # noqa: F401
    MG_FOR_PRESENTATION,
    RunningScp,
    _dataset,
    _send,
    any_db_scp,
    send_from_another_process,
    study_files,  # noqa: F401
)
from tests.peers import Node, wait_until
from tests.tiny_bundle import write_tiny_bundle


@pytest.fixture
def scp(any_db_scp: RunningScp) -> RunningScp:  # noqa: F811
    """Every test of this module runs against an SCP on SQLite and on PostgreSQL."""
    return any_db_scp


def _deflated_bomb(path: Path, rows: int, columns: int, pixel_bytes: int) -> Path:
    """A Deflated Explicit VR file declaring rows x columns 16-bit pixels, its Pixel Data
    ``pixel_bytes`` zeros: streamed through zlib, so the file is small and never inflated here."""
    ds = _dataset(MG_FOR_PRESENTATION, "MG", pixels=False)
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation, ds.SamplesPerPixel, ds.PhotometricInterpretation = 0, 1, "MONOCHROME2"
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta, enforce_standard=True)
    body = BytesIO()
    from pydicom.filebase import DicomFileLike

    writer = DicomFileLike(body)
    writer.is_little_endian, writer.is_implicit_VR = True, False
    write_dataset(writer, ds)
    body.write(b"\xe0\x7f\x10\x00OW\x00\x00" + pixel_bytes.to_bytes(4, "little"))
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunks = [deflater.compress(body.getvalue())]
    zeros = bytes(1 << 24)
    left = pixel_bytes
    while left:
        piece = min(left, len(zeros))
        chunks.append(deflater.compress(zeros[:piece]))
        left -= piece
    chunks.append(deflater.flush())
    path.write_bytes(head.getvalue() + b"".join(chunks))
    return path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_deflated_bomb_is_refused_before_it_is_inflated(scp: RunningScp, tmp_path: Path, study_files: list[Path]) -> None:  # noqa: F811
    bomb = _deflated_bomb(tmp_path / "bomb.dcm", 20000, 25000, 20000 * 25000 * 2)
    assert bomb.stat().st_size < 2_000_000  # under 2 MB on the wire, 1 GB inflated
    before = _peak_rss_mb()
    status, comment = send_from_another_process(scp, bomb, DeflatedExplicitVRLittleEndian)
    assert status == 0xC000
    assert "max_rows_columns" in comment
    assert _peak_rss_mb() - before < 300, "the bomb was inflated"
    assert scp.instances() == []
    refused = scp.audit("c-store-refused")
    assert refused and "dicom.max_rows_columns" in refused[0].detail
    assert scp.storescu(*study_files).returncode == 0 and len(scp.instances()) == 4


def test_a_deflated_dataset_that_inflates_past_the_limit_is_cut_short(tmp_path: Path) -> None:
    from mammogate.config import load_settings
    from mammogate.dicom_node.limits import LimitExceeded, read_bounded

    settings = load_settings(None, dicom={"max_dataset_bytes": 8_000_000}).dicom
    bomb = _deflated_bomb(tmp_path / "bomb.dcm", 2048, 2048, 2048 * 2048 * 2)  # geometry allowed
    with pytest.raises(LimitExceeded, match="inflates past dicom.max_dataset_bytes"):
        read_bounded(bomb.read_bytes(), settings)
    small = _deflated_bomb(tmp_path / "small.dcm", 64, 64, 64 * 64 * 2)
    ds = read_bounded(small.read_bytes(), settings)  # within the limits: parsed as usual
    assert (ds.Rows, len(ds.PixelData)) == (64, 64 * 64 * 2)


def test_pixel_data_cut_off_inside_is_refused_not_stored(scp: RunningScp, tmp_path: Path, study_files: list[Path]) -> None:  # noqa: F811
    ds = pydicom.dcmread(study_files[0])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    cut = tmp_path / "cut.dcm"
    ds.save_as(cut, enforce_file_format=True)
    status, comment = send_from_another_process(scp, cut, ExplicitVRLittleEndian)
    assert status == 0xC000 and "cut off" in comment
    assert scp.instances() == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda ds: setattr(ds, "NumberOfFrames", 40000), "max_frames"),
        (lambda ds: setattr(ds, "Rows", 9000), "max_rows_columns"),
        (lambda ds: setattr(ds, "BitsAllocated", 12), "Bits Allocated"),
    ],
)
def test_impossible_geometry_is_refused_with_the_setting_named(scp: RunningScp, change, reason: str) -> None:  # type: ignore[no-untyped-def]
    ds = _dataset(MG_FOR_PRESENTATION, "MG")
    change(ds)
    status = _send(scp, ds, MG_FOR_PRESENTATION)
    assert status.Status == 0xC000 and reason in status.ErrorComment
    assert scp.instances() == []


def test_sequences_nested_too_deep_are_refused(scp: RunningScp) -> None:
    ds = _dataset(MG_FOR_PRESENTATION, "MG")
    inner = Dataset()
    inner.CodeValue = "1"
    for _ in range(40):
        outer = Dataset()
        outer.ContentSequence = [inner]
        inner = outer
    ds.ContentSequence = [inner]
    status = _send(scp, ds, MG_FOR_PRESENTATION)
    assert status.Status == 0xC000 and "max_sequence_depth" in status.ErrorComment


def test_a_nul_inside_view_or_laterality_is_stored_on_every_database(
    any_db_scp: RunningScp, study_files: list[Path], tmp_path: Path  # noqa: F811
) -> None:
    ds = pydicom.dcmread(study_files[0])
    ds.ViewPosition = "C\x00C"
    ds.ImageLaterality = "R\x00"
    odd = tmp_path / "odd.dcm"
    ds.save_as(odd, enforce_file_format=True)
    result = any_db_scp.storescu(odd)
    assert result.returncode == 0 and "Error" not in result.stdout + result.stderr
    (row,) = any_db_scp.instances()
    assert (row.view, row.laterality) == ("CC", "R")


def test_idle_sockets_and_trickling_senders_never_keep_a_modality_out(tmp_path: Path, study_files: list[Path]) -> None:  # noqa: F811
    import socket
    import threading
    import time

    running = RunningScp(tmp_path / "node", allowed=[], association_request_seconds=2, network_timeout=3)
    stop = threading.Event()
    try:
        idle = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(100)]

        def trickle() -> None:  # the start of an A-ASSOCIATE-RQ, a byte at a time
            with socket.create_connection(("127.0.0.1", running.port)) as sock:
                for byte in b"\x01\x00\x00\x00\x00\xcd\x00\x01":
                    if stop.is_set():
                        return
                    try:
                        sock.sendall(bytes([byte]))
                    except OSError:
                        return  # closed by the node: what we want
                    time.sleep(0.7)

        tricklers = [threading.Thread(target=trickle, daemon=True) for _ in range(10)]
        for thread in tricklers:
            thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        stored = running.storescu(*study_files)
        assert stored.returncode == 0, stored.stdout + stored.stderr
        assert time.monotonic() - started < 10 and len(running.instances()) == 4
        # the silent connections are closed once association_request_seconds has passed
        time.sleep(3)
        closed = 0
        for sock in idle:
            sock.settimeout(2)
            try:
                closed += sock.recv(16) == b""
            except OSError:
                closed += 1
            sock.close()
        assert closed == 100
        for thread in tricklers:
            thread.join(10)
            assert not thread.is_alive()
        assert running.echoscu().returncode == 0
    finally:
        stop.set()
        running.scp.stop()
        running.db.dispose()


def test_a_pdu_longer_than_announced_closes_the_association_without_reading_it(scp: RunningScp) -> None:
    import time

    from pynetdicom import AE

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MG_FOR_PRESENTATION, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MAMMOGATE")
    assert assoc.is_established
    before = _peak_rss_mb()
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    raw.sendall(b"\x04\x00" + (0xFFFFFFF0).to_bytes(4, "big") + b"\x00" * 65536)  # "4 GB follow"
    deadline = time.monotonic() + 10
    while assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not assoc.is_established, "the node kept reading a 4 GB PDU"
    assert _peak_rss_mb() - before < 100
    assert scp.echoscu().returncode == 0


def test_associations_over_the_per_host_limit_are_rejected_as_local_limit_exceeded(tmp_path: Path) -> None:
    from pynetdicom import AE

    running = RunningScp(tmp_path / "node", allowed=[], maximum_associations_per_host=2)
    held = []
    try:
        for _ in range(2):
            ae = AE(ae_title="MODALITY")
            ae.add_requested_context(MG_FOR_PRESENTATION)
            held.append(ae.associate("127.0.0.1", running.port, ae_title="MAMMOGATE"))
        assert all(a.is_established for a in held)
        ae = AE(ae_title="EXTRA")
        ae.add_requested_context(MG_FOR_PRESENTATION)
        third = ae.associate("127.0.0.1", running.port, ae_title="MAMMOGATE")
        assert third.is_rejected
        primitive = third.acceptor.primitive
        assert (primitive.result, primitive.diagnostic) == (0x02, 0x02)  # transient, local limit exceeded
        rejected = running.audit("association-rejected")
        assert rejected and "maximum_associations_per_host (2)" in rejected[-1].detail
    finally:
        for assoc in held:
            assoc.release()
        running.scp.stop()
        running.db.dispose()


def test_a_study_of_1x1_images_is_not_analysed_and_sends_no_result(tmp_path: Path, database_url: str) -> None:
    """Finding 5: a 1x1 "mammogram" once got a "not flagged" CAD SR. Now the study ends
    skipped, saying why, and the only object is the report that says no analysis was
    attempted (so the PACS shows it arrived), with no finding and no score."""
    study = make_study(seed=61, lesion=False, rows=96, columns=80)
    files = []
    for number, ds in enumerate(study.datasets):
        ds.Rows = ds.Columns = 1
        ds.PixelData = b"\x00\x08"
        files.append(tmp_path / f"{number}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    node = Node(tmp_path / "node", settle_seconds=1, database_url=database_url, destinations=[
        {"name": "pacs", "kind": "dimse", "ae_title": "NOWHERE", "host": "127.0.0.1", "port": 9}],
        extra_env={"MAMMOGATE_MODEL__BUNDLE": str(write_tiny_bundle(tmp_path / "bundle"))})
    node.start()
    try:
        assert node.storescu(*files).returncode == 0
        db = Database(database_url or f"sqlite:///{node.root / 'var' / 'mammogate.sqlite3'}")
        try:
            def finished() -> Study | None:
                with db.session() as session:
                    found = session.scalar(select(Study).where(Study.study_instance_uid == study.study_instance_uid))
                    return found if found is not None and found.state not in ("receiving", "queued", "processing") else None

            ended = wait_until(finished, 120, "the study of 1x1 images to be dealt with")
            assert ended.state == "skipped"
            assert "too small" in (ended.last_error or "")
            with db.session() as session:
                (report,) = session.scalars(select(Report)).all()
                assert report.kind == "cad_sr"
                contents = read_cad_sr(pydicom.dcmread(report.path))
                assert contents.detections.value == "111225" and contents.findings == ()
        finally:
            db.dispose()
    finally:
        assert node.stop() == 0


# -- a large dataset, written to the spool as it arrives (dicom_node.receive) ------------------

def _large(path: Path, rows: int = 2048, columns: int = 2048, *, cut: int = 1) -> Path:
    """An 8 MB MG image (above dicom_node.receive.SPILL_BYTES), its pixels cut to 1/cut."""
    ds = _dataset(MG_FOR_PRESENTATION, "MG")
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = bytes(2048 * 2048 * 2 // cut)
    ds.save_as(path, enforce_file_format=True)
    return path


def _nothing_left(scp: RunningScp) -> bool:
    receiving = scp.settings.spool_dir / ".receiving"
    return not receiving.exists() or list(receiving.iterdir()) == []


def test_a_large_dataset_cut_off_inside_its_pixels_is_refused_and_removed(scp: RunningScp, tmp_path: Path) -> None:
    status, comment = send_from_another_process(scp, _large(tmp_path / "cut.dcm", cut=3), ExplicitVRLittleEndian)
    assert status == 0xC000 and "cut off" in comment
    assert scp.instances() == [] and _nothing_left(scp)


def test_a_large_dataset_with_impossible_geometry_is_refused_from_its_header(scp: RunningScp, tmp_path: Path) -> None:
    status, comment = send_from_another_process(scp, _large(tmp_path / "tall.dcm", rows=9000), ExplicitVRLittleEndian)
    assert status == 0xC000 and "max_rows_columns" in comment
    assert scp.instances() == [] and _nothing_left(scp)


def test_a_dataset_over_max_dataset_bytes_is_not_kept_while_it_arrives(tmp_path: Path) -> None:
    running = RunningScp(tmp_path / "node", allowed=[], max_dataset_bytes=4_000_000)
    try:
        status, comment = send_from_another_process(running, _large(tmp_path / "big.dcm"), ExplicitVRLittleEndian)
        assert status == 0xC000 and "dicom.max_dataset_bytes (4000000)" in comment
        assert running.instances() == [] and _nothing_left(running)
        refused = running.audit("c-store-refused")
        assert refused and "max_dataset_bytes" in refused[0].detail
    finally:
        running.scp.stop()
        running.db.dispose()


def test_a_received_file_is_checked_from_its_header_without_reading_its_pixels(tmp_path: Path) -> None:
    import tracemalloc

    from mammogate.config import load_settings
    from mammogate.dicom_node.limits import LimitExceeded, read_bounded, read_bounded_file

    settings = load_settings(None).dicom
    path = _large(tmp_path / "big.dcm")
    tracemalloc.start()
    try:
        ds = read_bounded_file(path, settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak} bytes allocated to check an 8 MB file"
    assert (ds.Rows, ds.Columns) == (2048, 2048)
    assert ds.SOPInstanceUID == read_bounded(path.read_bytes(), settings).SOPInstanceUID
    with pytest.raises(LimitExceeded, match="cut off"):
        read_bounded_file(_large(tmp_path / "cut.dcm", cut=3), settings)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(path.read_bytes()[:-1000])  # the file ends inside the pixels
    with pytest.raises(LimitExceeded, match="cut off"):
        read_bounded_file(truncated, settings)


def test_an_association_that_ended_does_not_count_while_its_end_is_recorded(tmp_path: Path) -> None:
    """A modality sends studies one association after another. Its previous association has
    released, but its thread still waits to record the end (here: the database's write lock is
    held); the next association from the same host is accepted all the same."""
    from pynetdicom import AE

    running = RunningScp(tmp_path / "node", allowed=[], maximum_associations_per_host=1)
    engine = running.db.engine
    try:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(MG_FOR_PRESENTATION)
        first = ae.associate("127.0.0.1", running.port, ae_title="MAMMOGATE")
        assert first.is_established
        with engine.begin() as lock:  # BEGIN IMMEDIATE: the end of `first` waits for it
            lock.exec_driver_sql("SELECT 1")
            first.release()
            assert first.is_released
            time.sleep(0.3)
            assert any(a.is_released for a in running.scp.ae.active_associations), \
                "the first association's thread is still recording its end"
            done: list[Any] = []
            opening = threading.Thread(target=lambda: done.append(
                ae.associate("127.0.0.1", running.port, ae_title="MAMMOGATE")))
            opening.start()
            time.sleep(1.0)
        opening.join(30)
        (second,) = done
        assert second.is_established, "refused because of the association that had ended"
        second.release()
    finally:
        running.scp.stop()
        running.db.dispose()
