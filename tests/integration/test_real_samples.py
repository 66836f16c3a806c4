"""The real mammograms in ../shared/data through analysis and reporting: digitised film with
the real-world mess (CBIS-DDSM: Secondary Capture, RLE, view only in PatientID, Laterality
instead of ImageLaterality) and a GE Senographe For-Presentation image (JPEG Lossless)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from mammogate.inference import Analyzer, load_bundle
from mammogate.reporting.cad_sr import build_mammography_cad_sr, read_cad_sr, save_report
from tests.peers import DCIODVFY, DSRDUMP, require_tool
from tests.shared_data import shared_data_dir


@pytest.fixture(scope="module")
def analyzer() -> Iterator[Analyzer]:
    yield Analyzer(load_bundle(None))


def _valid(path: Path) -> None:
    require_tool(DCIODVFY)
    vfy = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
    lines = (vfy.stdout + vfy.stderr).splitlines()
    assert [ln for ln in lines if ln.startswith("Error")] == []
    # The only warnings allowed are about names copied as the archive wrote them.
    assert [ln for ln in lines if ln.startswith("Warning") and "Retired Person Name form" not in ln] == []
    dump = subprocess.run([DSRDUMP, str(path)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stdout + dump.stderr


def _samples() -> list[Path]:
    data = shared_data_dir()
    return sorted((data / "dicom" / "cbis_ddsm").glob("*.dcm")) + [
        data / "dicom" / "vendor_samples" / "fodicom_GH133_GE_SenographeEssential_RMLO.dcm"
    ]


def test_real_for_presentation_images_are_analysed_and_reported(analyzer: Analyzer, tmp_path: Path) -> None:
    for path in _samples():
        result = analyzer.analyze_study([path])
        assert len(result.images) == 1, f"{path.name}: {result.skipped}"
        image = result.images[0]
        source = pydicom.dcmread(path, stop_before_pixels=True)
        assert (image.rows, image.columns) == (source.Rows, source.Columns)
        assert image.laterality in ("L", "R") and image.view in ("CC", "MLO")
        for finding in image.findings:  # mapped back onto the original pixel grid
            assert 0 <= finding.center[0] <= source.Columns and 0 <= finding.center[1] <= source.Rows
        sr = build_mammography_cad_sr(result, [source])
        written = save_report(sr, tmp_path / path.stem)
        _valid(written)
        back = read_cad_sr(pydicom.dcmread(written))
        assert back.image_sop_instance_uids == (str(source.SOPInstanceUID),)
        assert sr.SpecificCharacterSet == source.get("SpecificCharacterSet", sr.get("SpecificCharacterSet"))
        assert sr.PatientID == source.PatientID


def test_cbis_ddsm_views_come_from_the_patient_id(analyzer: Analyzer) -> None:
    views = {}
    for path in _samples()[:-1]:
        result = analyzer.analyze_study([path])
        (image,) = result.images
        views[str(pydicom.dcmread(path, stop_before_pixels=True).PatientID)] = (image.laterality, image.view)
    for patient_id, (laterality, view) in views.items():
        assert ("LEFT" if laterality == "L" else "RIGHT") in patient_id and view in patient_id


def test_stereotactic_image_is_skipped_with_a_reason(analyzer: Analyzer) -> None:
    stereo = shared_data_dir() / "dicom" / "vendor_samples" / (
        "fodicom_OutOfBoundsOverlay_Siemens_MammomatInspiration_stereoLCC.dcm")
    result = analyzer.analyze_study([stereo])
    assert result.images == () and result.exam_score is None
    (skipped,) = result.skipped
    assert not skipped.failed and skipped.reason
