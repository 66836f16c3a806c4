"""The whole node, as a modality, a PACS and a radiologist use it.

``mammogate serve`` runs as a subprocess on free loopback ports; DCMTK's storescu pushes a
synthetic 4-view study; Orthanc is the PACS the CAD SR goes to; the portal is read over HTTP.
"""

from __future__ import annotations

import re
import subprocess
from io import BytesIO
from pathlib import Path

import pydicom

from mammogate.inference import Analyzer, load_bundle
from mammogate.inference.bundle import with_operating_point
from mammogate.inference.correspondence import corresponding_findings
from mammogate.reporting.cad_sr import read_cad_sr
from mammogate.training.synthetic import write_study
from tests.peers import (
    DCIODVFY,
    DSRDUMP,
    Node,
    Orthanc,
    pixelmed_sr_validation,
    wait_until,
)

PASSWORD = "correct horse battery staple"
CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"


def destination(orthanc: Orthanc) -> dict[str, object]:
    return {"name": "pacs", "kind": "dimse", "ae_title": orthanc.aet, "host": "127.0.0.1",
            "port": orthanc.dicom_port}


def sr_in_pacs(orthanc: Orthanc, study_uid: str) -> list[dict[str, object]]:
    return orthanc.find_instances(StudyInstanceUID=study_uid, Modality="SR")


def test_study_pushed_by_storescu_comes_back_as_cad_sr_and_shows_in_portal(
    tmp_path: Path, orthanc: Orthanc, database_url: str
) -> None:
    # The most sensitive of the bundle's operating points, and the first of ten synthetic lesion
    # studies the shipped model flags there: this test is about carrying findings through, so it
    # needs a study that has some (the model is weak and misses many).
    analyzer = Analyzer(with_operating_point(load_bundle(None), "sensitivity_90"))
    for seed in range(4242, 4252):
        study = write_study(tmp_path / f"study-{seed}", seed=seed, lesion=True)
        paths = [image.path for image in study.images]
        if analyzer.analyze_study(paths).findings:  # type: ignore[arg-type]
            break
    else:
        raise AssertionError("the shipped model flags none of ten synthetic lesion studies at sensitivity_90")
    assert len(paths) == 4 and all(p is not None for p in paths)
    node = Node(tmp_path / "node", destinations=[destination(orthanc)], database_url=database_url,
                extra_env={"MAMMOGATE_MODEL__OPERATING_POINT": "sensitivity_90"})
    node.write_config()
    node.run_cli("user", "add", "dr.curie", "--role", "radiologist", "--password-stdin",
                 stdin=PASSWORD + "\n")
    node.start()
    try:
        stored = node.storescu(*paths)  # type: ignore[arg-type]
        assert stored.returncode == 0, stored.stderr

        found = wait_until(lambda: sr_in_pacs(orthanc, study.study_instance_uid), 180,
                           "the CAD SR to arrive in Orthanc")
        assert len(found) == 1, "exactly one CAD SR for the study"
        sr_bytes = orthanc.instance_file(str(found[0]["ID"]))
        sr = pydicom.dcmread(BytesIO(sr_bytes))
        assert sr.SOPClassUID == CAD_SR

        # Valid under both validators.
        sr_file = tmp_path / "sr.dcm"
        sr_file.write_bytes(sr_bytes)
        vfy = subprocess.run([DCIODVFY, str(sr_file)], capture_output=True, text=True)
        errors = [ln for ln in (vfy.stdout + vfy.stderr).splitlines() if ln.startswith("Error")]
        assert errors == [], errors
        dump = subprocess.run([DSRDUMP, str(sr_file)], capture_output=True, text=True)
        assert dump.returncode == 0, dump.stderr
        pixelmed = pixelmed_sr_validation(sr_file)
        assert "Found Root Template TID_4000" in pixelmed, pixelmed
        assert "Root Template Validation Complete" in pixelmed, pixelmed
        assert not [ln for ln in pixelmed.splitlines() if ln.startswith(("Error", "Warning"))], pixelmed

        # It references the four images, and carries the same numbers as an in-process run.
        contents = read_cad_sr(sr)
        referenced = {
            item.ReferencedSOPInstanceUID
            for entry in sr.CurrentRequestedProcedureEvidenceSequence
            for series in entry.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        }
        assert referenced == {image.sop_instance_uid for image in study.images}
        expected = analyzer.analyze_study(paths)  # type: ignore[arg-type]
        assert expected.findings, "a lesion study must produce findings for this test to bite"
        got = sorted((f.sop_instance_uid, round(f.probability, 6)) for f in contents.findings)
        want = sorted((f.sop_instance_uid, round(f.probability, 6)) for f in expected.findings)
        assert got == want
        # each finding says how certain a lesion it is (the model's lesion channel), as in-process
        assert sorted(round(f.certainty or -1, 6) for f in contents.findings) == sorted(
            round(f.certainty or -1, 6) for f in expected.findings)
        assert all(f.certainty is not None for f in contents.findings)
        assert set(contents.image_sop_instance_uids) == referenced
        # the overall impression in words: the exam score and that all four views came
        assert contents.impression is not None
        assert f"Exam probability of cancer {100 * expected.exam_score:.1f} %" in contents.impression
        assert "4 views analysed. Received 4 of 4 expected views." in contents.impression
        # composite features pair exactly what the correspondence rule pairs
        assert len(contents.composites) == len(corresponding_findings(expected))
        assert {(f.algorithm_name, f.algorithm_version) for f in contents.findings} == {
            (expected.model.name, expected.model.version)
        }
        for f in contents.findings:  # centres match too (FL: float32 precision)
            twin = next(e for e in expected.findings if e.sop_instance_uid == f.sop_instance_uid
                        and abs(e.probability - f.probability) < 1e-6)
            assert abs(twin.center[0] - f.center[0]) < 1e-2 and abs(twin.center[1] - f.center[1]) < 1e-2

        # The portal shows the same exam score, after sign-in only.
        anonymous = node.client().get("/", follow_redirects=False)
        assert anonymous.status_code in (302, 303) and "/login" in anonymous.headers["location"]
        client = node.login("dr.curie", PASSWORD)
        assert expected.exam_score is not None
        history = client.get("/").text
        assert f'/studies/{study.study_instance_uid}' in history
        shown = f"{expected.exam_score * 100:.1f} %"
        assert shown in history, f"history lacks the exam score {shown}"
        detail = client.get(f"/studies/{study.study_instance_uid}").text
        scores = re.findall(r'class="[^"]*\bexam-score\b[^"]*" data-score="([0-9.eE+-]+)"', detail)
        assert scores and abs(float(scores[0]) - expected.exam_score) < 1e-6
        overlays = re.findall(r'<img src="(/studies/[^"]+/overlay\.png)"', detail)
        assert len(overlays) == 4, "one heatmap overlay per analysed view"
        png = client.get(overlays[0])
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        # the viewer's layers: each analysed view's heatmap alone, and its pixels to window
        heatmaps = re.findall(r'data-heatmap="(/studies/[^"]+/heatmap\.png)"', detail)
        pixels = re.findall(r'data-pixels="(/studies/[^"]+/pixels)"', detail)
        assert len(heatmaps) == 4 and len(pixels) == 4
        assert client.get(heatmaps[0]).content.startswith(b"\x89PNG")
        served = client.get(pixels[0])
        rows, columns = int(served.headers["X-Image-Rows"]), int(served.headers["X-Image-Columns"])
        assert served.status_code == 200 and len(served.content) == 2 * rows * columns
        assert int(served.headers["X-Original-Rows"]) >= rows > 0
        shown_findings = re.findall(r'finding-probability" data-score="([0-9.eE+-]+)"', detail)
        assert sorted(round(float(v), 6) for v in shown_findings) == sorted(
            round(f.probability, 6) for f in expected.findings)
    finally:
        code = node.stop()
    assert code == 0, node.log_text()[-3000:]
    log = node.log_text()
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)  # type: ignore[arg-type]
    for value in ("Dupré", "Hélène", str(source.PatientID), str(source.PatientBirthDate)):
        assert value not in log, "patient data must not be logged"
