"""Delivery while the PACS is down, and a study that cannot be analysed: never silently lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless
from sqlalchemy import select

from mammogate.db import Analysis, Database, Delivery, Report, Study
from mammogate.reporting.cad_sr import read_cad_sr
from mammogate.training.synthetic import write_study
from tests.peers import Node, Orthanc, wait_until

PASSWORD = "another long passphrase"


def _break_pixels(path: Path) -> None:
    """RLE Lossless whose one fragment is not RLE: the dataset parses and its size is what the
    header says (the SCP stores it), but the pixels do not decode (the analysis fails)."""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([b"\x05\x00\x00\x00" + b"\xff" * 60])  # 5 segments claimed, none there
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def _study_state(db: Database, study_uid: str) -> str:
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        return study.state if study is not None else ""


def test_sr_arrives_after_pacs_comes_up_and_undecodable_study_fails_visibly(tmp_path: Path) -> None:
    pacs = Orthanc(tmp_path / "orthanc")  # ports chosen, not started: the PACS is down
    node = Node(
        tmp_path / "node",
        destinations=[{"name": "pacs", "kind": "dimse", "ae_title": pacs.aet,
                       "host": "127.0.0.1", "port": pacs.dicom_port}],
    )
    node.write_config()
    node.run_cli("user", "add", "viewer1", "--role", "viewer", "--password-stdin",
                 stdin=PASSWORD + "\n")
    good = write_study(tmp_path / "good", seed=5150, lesion=True)
    broken = write_study(tmp_path / "broken", seed=5151, lesion=False)
    for image in broken.images:
        assert image.path is not None
        _break_pixels(image.path)
    db = Database(f"sqlite:///{node.root / 'var' / 'mammogate.sqlite3'}")
    node.start()
    try:
        assert node.storescu(*[i.path for i in good.images if i.path]).returncode == 0
        assert node.storescu(*[i.path for i in broken.images if i.path], options=("-xr",)).returncode == 0

        def good_delivery(session: Any) -> Delivery | None:
            """The delivery of the good study's CAD SR (the broken one gets its own: the
            report that says it could not be analysed)."""
            rows = session.scalars(
                select(Delivery).join(Report).join(Analysis).join(Study, Study.id == Analysis.study_id)
                .where(Study.study_instance_uid == good.study_instance_uid)).all()
            assert len(rows) <= 1
            if not rows:
                return None
            session.expunge(rows[0])
            return rows[0]

        def pending_after_failures() -> Delivery | None:
            with db.session() as session:
                row = good_delivery(session)
                return (row if row is not None and row.state == "pending" and row.last_error
                        and row.attempts >= 2 else None)
        delivery = wait_until(pending_after_failures, 120, "delivery attempts against the down PACS")
        assert "cannot associate" in delivery.last_error

        pacs.start()
        try:
            found = wait_until(
                lambda: pacs.find_instances(StudyInstanceUID=good.study_instance_uid, Modality="SR"),
                120, "the CAD SR to arrive once the PACS is up")
            assert len(found) == 1

            def delivery_after_the_store() -> Delivery | None:
                # Orthanc holds the SR a moment before the node has recorded its answer.
                with db.session() as session:
                    row = good_delivery(session)
                    return row if row is not None and row.state != "sending" else None
            delivery = wait_until(delivery_after_the_store, 30, "the delivery to be recorded")
            assert delivery.state == "delivered" and delivery.attempts >= 3
        finally:
            pacs.stop()

        wait_until(lambda: _study_state(db, broken.study_instance_uid) == "failed", 120,
                   "the undecodable study to end failed")
        with db.session() as session:
            study = session.scalar(select(Study).where(
                Study.study_instance_uid == broken.study_instance_uid))
            assert study is not None and "no view could be analysed" in study.last_error
            # its report says so (the not-analysed CAD SR), rather than nothing at all
            (report,) = study.analyses[-1].reports
            contents = read_cad_sr(pydicom.dcmread(report.path))
            assert contents.findings == () and contents.summary.value == "111245"  # failed
        client = node.login("viewer1", PASSWORD)
        detail = client.get(f"/studies/{broken.study_instance_uid}").text
        assert "failed" in detail.lower() and "no view could be analysed" in detail
    finally:
        code = node.stop()
        db.dispose()
    assert code == 0, node.log_text()[-3000:]
