"""Both structured reports reach the PACS by C-STORE and by STOW-RS, each as the route asks,
and read back as their readers expect."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from mammogate.training.synthetic import write_study
from tests.peers import Node, Orthanc, wait_until

CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[dict[str, Orthanc]]:
    peers = {"dimse": Orthanc(tmp_path / "pacs-dimse", aet="DIMSEPACS"),
             "web": Orthanc(tmp_path / "pacs-web", dicomweb=True)}
    for peer in peers.values():
        peer.start()
    try:
        yield peers
    finally:
        for peer in peers.values():
            peer.stop()


def _destinations(pacs: dict[str, Orthanc]) -> list[dict[str, object]]:
    return [{"name": "pacs-dimse", "kind": "dimse", "ae_title": pacs["dimse"].aet,
             "host": "127.0.0.1", "port": pacs["dimse"].dicom_port},
            {"name": "pacs-web", "kind": "stow", "url": f"{pacs['web'].url}/dicom-web"}]


def _objects(pacs: Orthanc, study_uid: str) -> dict[str, pydicom.Dataset]:
    found = pacs.find_instances(StudyInstanceUID=study_uid, Modality="SR")
    datasets = [pydicom.dcmread(io.BytesIO(pacs.instance_file(str(f["ID"])))) for f in found]
    return {str(ds.SOPClassUID): ds for ds in datasets}


def test_routes_send_each_object_kind_they_name_by_c_store_and_stow(
    tmp_path: Path, pacs: dict[str, Orthanc]
) -> None:
    node = Node(tmp_path / "node", destinations=_destinations(pacs), routes=[
        {"name": "workstation", "destinations": ["pacs-dimse"],
         "objects": ["cad_sr", "comprehensive_sr", "sc_overlay"]},
        {"name": "viewer", "destinations": ["pacs-web"],
         "objects": ["comprehensive_sr", "sc_overlay"]},
    ])
    node.start()
    try:
        study = write_study(tmp_path / "study", seed=31, lesion=True)
        assert node.storescu(*[i.path for i in study.images if i.path]).returncode == 0
        uid = study.study_instance_uid
        by_dimse = wait_until(lambda: (o := _objects(pacs["dimse"], uid)) and len(o) == 2 and o,
                              120, "both reports in the DIMSE PACS")
        by_stow = wait_until(lambda: _objects(pacs["web"], uid), 120, "the report in the STOW PACS")
        captures = wait_until(
            lambda: (found := pacs["dimse"].find_instances(StudyInstanceUID=uid, Modality="OT"))
            and len(found) == 4 and found, 120, "a Secondary Capture per view in the DIMSE PACS")
        capture = pydicom.dcmread(io.BytesIO(pacs["dimse"].instance_file(str(captures[0]["ID"]))))
        by_stow_captures = wait_until(
            lambda: (found := pacs["web"].find_instances(StudyInstanceUID=uid, Modality="OT"))
            and len(found) == 4 and found, 120, "the Secondary Captures by STOW-RS")
    finally:
        assert node.stop() == 0
    assert set(by_dimse) == {CAD_SR, COMPREHENSIVE_SR}
    assert set(by_stow) == {COMPREHENSIVE_SR}  # the viewer route asked for no CAD SR
    for ds in (by_dimse[COMPREHENSIVE_SR], by_stow[COMPREHENSIVE_SR]):
        report = hd.sr.ComprehensiveSR.from_dataset(ds).content
        groups = report.get_image_measurement_groups()
        exam = next(g for g in groups if g.tracking_identifier == "exam")
        assert 0 <= exam.get_measurements()[0].value <= 100
        assert ds.StudyInstanceUID == uid and ds.PatientID == pydicom.dcmread(
            study.images[0].path).PatientID
    assert capture.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and capture.BurnedInAnnotation == "YES"
    assert capture.StudyInstanceUID == uid and capture.SamplesPerPixel == 3
    assert "sha256" in capture.DerivationDescription
    assert {c["MainDicomTags"]["SOPInstanceUID"] for c in by_stow_captures} == {
        c["MainDicomTags"]["SOPInstanceUID"] for c in captures}
    # one analysis, so one object of each kind: the same instance in both PACS
    assert by_dimse[COMPREHENSIVE_SR].SOPInstanceUID == by_stow[COMPREHENSIVE_SR].SOPInstanceUID


def test_a_study_that_is_not_analysed_is_reported_as_such_unless_the_route_is_silent(
    tmp_path: Path, pacs: dict[str, Orthanc]
) -> None:
    from sqlalchemy import select

    from mammogate.config import load_settings
    from mammogate.db import Database, Delivery, Study
    from mammogate.reporting.cad_sr import read_cad_sr

    study = write_study(tmp_path / "study", seed=32, lesion=False)
    for image in study.images:  # For Processing: out of the model's scope
        assert image.path is not None
        ds = pydicom.dcmread(image.path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2.1"
        ds.PresentationIntentType = "FOR PROCESSING"
        ds.save_as(image.path)
    node = Node(tmp_path / "node", destinations=_destinations(pacs), routes=[
        {"name": "tell-the-pacs", "destinations": ["pacs-dimse"],
         "objects": ["cad_sr", "comprehensive_sr"]},
        {"name": "results-only", "destinations": ["pacs-web"], "on_not_analysed": "silent"},
    ])
    node.start()
    db = Database(load_settings(node.config_path).database_url)
    try:
        assert node.storescu(*[i.path for i in study.images if i.path],
                             options=("-R",)).returncode == 0  # -R: only the SOP classes given
        uid = study.study_instance_uid
        reported = wait_until(lambda: _objects(pacs["dimse"], uid), 120, "the not-analysed report")
        with db.read_session() as session:
            state = session.scalars(select(Study.state).where(Study.study_instance_uid == uid)).one()
            deliveries = [(d.destination.name, d.report.kind)
                          for d in session.scalars(select(Delivery))]
    finally:
        db.dispose()
        assert node.stop() == 0
    assert state == "skipped"
    # the CAD SR only (a measurement report has nothing to say), and nothing on the silent route
    assert set(reported) == {CAD_SR}
    assert deliveries == [("pacs-dimse", "cad_sr")]
    contents = read_cad_sr(reported[CAD_SR])
    assert contents.detections.value == "111225" and contents.analyses.value == "111225"  # not attempted
    assert len(contents.image_sop_instance_uids) == 4 and contents.findings == ()
    assert _objects(pacs["web"], uid) == {}
