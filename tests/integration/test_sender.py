"""The C-STORE sender against real pynetdicom peers that accept, refuse or fail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from sqlalchemy import select

from mammogate.app import destination_backends, open_database
from mammogate.config import load_settings
from mammogate.db import Analysis, Database, Delivery, DestinationRow, Report, Study, utcnow
from mammogate.delivery.outbox import DeliveryLoop
from tests.peers import free_port

CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
CT = "1.2.840.10008.5.1.4.1.1.2"


def _sr_file(path: Path) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CAD_SR
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CAD_SR
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)
    return path


class Peer:
    """A PACS stand-in built on pynetdicom: takes the given SOP class, answers ``status``."""

    def __init__(self, sop_class: str, status: int, comment: str = ""):
        self.port = free_port()
        self.received: list[str] = []
        ae = AE(ae_title="PEER")
        ae.add_supported_context(sop_class, ExplicitVRLittleEndian)

        def on_store(event: evt.Event) -> Dataset:
            self.received.append(str(event.dataset.SOPInstanceUID))
            answer = Dataset()
            answer.Status = status
            if comment:
                answer.ErrorComment = comment
            return answer

        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store)])

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Database, DeliveryLoop, Path]]:
    settings = load_settings(None, node={"data_dir": str(tmp_path / "node")},
                             sender={"retry_initial_seconds": 0, "max_attempts": 3})
    db = open_database(settings)
    yield db, DeliveryLoop(settings, db, "test-sender", destination_backends(settings)), _sr_file(tmp_path / "sr.dcm")
    db.dispose()


def _queue(db: Database, sr: Path, port: int) -> int:
    now = utcnow()
    with db.session() as session:
        study = Study(study_instance_uid=generate_uid(), first_received_at=now,
                      last_received_at=now, updated_at=now)
        session.add(study)
        session.flush()
        analysis = Analysis(study_id=study.id, model_name="m", model_version="1", model_sha256="0",
                            operating_point=0.5, category="not_flagged", created_at=now)
        session.add(analysis)
        session.flush()
        report = Report(analysis_id=analysis.id, kind="cad_sr", sop_class_uid=CAD_SR,
                        sop_instance_uid=generate_uid(), series_instance_uid=generate_uid(),
                        path=str(sr), created_at=now)
        destination = DestinationRow(name=f"peer{port}", kind="dimse", ae_title="PEER",
                                     host="127.0.0.1", port=port)
        session.add_all([report, destination])
        session.flush()
        delivery = Delivery(report_id=report.id, destination_id=destination.id,
                            next_attempt_at=now, created_at=now)
        session.add(delivery)
        session.flush()
        return delivery.id


def _delivery(db: Database, delivery_id: int) -> Delivery:
    with db.session() as session:
        row = session.scalar(select(Delivery).where(Delivery.id == delivery_id))
        assert row is not None
        return row


# Success, and the warning statuses a C-STORE SCP may answer: the object is stored either way.
@pytest.mark.parametrize("status", [0x0000, 0x0001, 0x0107, 0x0116, 0xB000])
def test_accepted_sr_is_delivered(world: tuple[Database, DeliveryLoop, Path], status: int) -> None:
    db, sender, sr = world
    peer = Peer(CAD_SR, status, "coerced a value" if status else "")
    try:
        delivery_id = _queue(db, sr, peer.port)
        assert sender.run_once() is True
        row = _delivery(db, delivery_id)
        assert row.state == "delivered" and row.attempts == 1 and peer.received
    finally:
        peer.stop()


def test_peer_without_cad_sr_support_ends_the_delivery_with_the_reason(
    world: tuple[Database, DeliveryLoop, Path]
) -> None:
    db, sender, sr = world
    peer = Peer(CT, 0x0000)  # accepts the association, not our SOP class
    try:
        delivery_id = _queue(db, sr, peer.port)
        assert sender.run_once() is True
        row = _delivery(db, delivery_id)
        assert row.state == "dead" and "does not accept" in row.last_error
        assert "Mammography CAD SR" in row.last_error
        assert sender.run_once() is False, "the sender goes on, with nothing left to do"
    finally:
        peer.stop()


def test_out_of_resources_is_retried_and_a_refusal_is_final(
    world: tuple[Database, DeliveryLoop, Path]
) -> None:
    db, sender, sr = world
    busy = Peer(CAD_SR, 0xA700, "disk full")
    refusing = Peer(CAD_SR, 0xC000, "we do not keep CAD results")
    try:
        retried = _queue(db, sr, busy.port)
        refused = _queue(db, sr, refusing.port)
        while sender.run_once():
            if _delivery(db, retried).state == "dead":
                break
        busy_row, refused_row = _delivery(db, retried), _delivery(db, refused)
        assert busy_row.state == "dead" and busy_row.attempts == 3, "retried up to max_attempts"
        assert "0xA700" in busy_row.last_error and "disk full" in busy_row.last_error
        assert refused_row.state == "dead" and refused_row.attempts == 1
        assert "we do not keep CAD results" in refused_row.last_error
    finally:
        busy.stop()
        refusing.stop()


def test_a_dataset_the_peer_calls_wrong_for_its_class_is_not_retried(
    world: tuple[Database, DeliveryLoop, Path]
) -> None:
    db, sender, sr = world
    peer = Peer(CAD_SR, 0xA900, "Data Set does not match SOP Class")
    try:
        delivery_id = _queue(db, sr, peer.port)
        assert sender.run_once() is True
        row = _delivery(db, delivery_id)
        assert row.state == "dead" and row.attempts == 1
        assert "0xA900" in row.last_error and "does not match SOP Class" in row.last_error
    finally:
        peer.stop()
