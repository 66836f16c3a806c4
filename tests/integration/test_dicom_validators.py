"""What the node writes passes the DICOM validators: dicom3tools' dciodvfy, DCMTK's dsrdump
and PixelMed's SR template validator (Debian packages installed by scripts/test; a missing one
fails, never skips). The tests build their objects as the reporting and training unit tests do
(tests/unit/reporting/factories.py, tests/unit/training)."""

from __future__ import annotations

import dataclasses
import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from mammogate.imaging.render import render_overlay_png
from mammogate.inference.results import ModelInfo
from mammogate.reporting import build_mammography_cad_sr, save_report
from mammogate.reporting.comprehensive_sr import build_comprehensive_sr
from mammogate.reporting.secondary_capture import build_secondary_captures, caption
from mammogate.training.synthetic import write_study
from tests.peers import (
    DCIODVFY,
    DSRDUMP,
    drop_misapplied_1410,
    pixelmed_sr_errors,
    pixelmed_sr_validation,
    require_tool,
)
from tests.unit.reporting.factories import (
    ROWS,
    SourceFactory,
    finding,
    image_result,
    skipped,
    source_factory,
    study_result,
)
from tests.unit.reporting.test_cad_sr import SCENARIOS, child, children, scenario, write_and_read
from tests.unit.reporting.test_comprehensive_sr import _study as comprehensive_study

needs_dciodvfy = pytest.mark.usefixtures("dciodvfy_installed")
needs_dsrdump = pytest.mark.usefixtures("dsrdump_installed")


@pytest.fixture
def dciodvfy_installed() -> None:
    require_tool(DCIODVFY)


@pytest.fixture
def dsrdump_installed() -> None:
    require_tool(DSRDUMP)


@pytest.fixture
def study_uid() -> str:
    return generate_uid()


@pytest.fixture
def make_source(study_uid: str) -> SourceFactory:
    return source_factory(study_uid)


@pytest.fixture
def model() -> ModelInfo:
    return ModelInfo(name="MammoNet", version="1.2.0", sha256="ab" * 32, operating_point=0.4)


# The Mammography CAD SR ---------------------------------------------------------------------


@needs_dciodvfy
def test_an_invalid_source_birth_date_is_left_empty_not_copied(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario("findings", make_source, study_uid, model)
    for source in sources:
        source.PatientBirthDate = "00000000"  # as in real archives (the GE sample)
    path, ds = write_and_read(build_mammography_cad_sr(result, sources), tmp_path)
    assert "PatientBirthDate" in ds and ds.PatientBirthDate == ""
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    assert [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")] == []


@needs_dciodvfy
@needs_dsrdump
@pytest.mark.filterwarnings("ignore:Invalid value for VR (DA|TM)")
def test_invalid_source_dates_and_times_are_neither_copied_nor_in_the_library(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario("findings", make_source, study_uid, model)
    for source in sources:
        source.StudyDate, source.ContentDate = "00000000", "20241340"  # not calendar dates
        source.StudyTime, source.ContentTime = "999999", "246000"  # not times of day
    path, ds = write_and_read(build_mammography_cad_sr(result, sources), tmp_path)

    assert ds.StudyDate == "" and ds.StudyTime == ""
    for entry in child(ds, "111028").ContentSequence:
        for code in ("111060", "111061", "111018", "111019"):
            assert children(entry, code) == [], code
    run = subprocess.run([DSRDUMP, "+Pt", str(path)], capture_output=True, text=True, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert [line for line in output.splitlines() if line.startswith(("E:", "F:"))] == []
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    assert [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")] == []


@needs_dciodvfy
@pytest.mark.parametrize("name", SCENARIOS)
def test_dciodvfy_reports_no_error(
    name: str, make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario(name, make_source, study_uid, model)
    path = save_report(build_mammography_cad_sr(result, sources), tmp_path)
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    output = run.stdout + run.stderr
    assert "MammographyCADSR" in output
    assert [line for line in output.splitlines() if line.startswith("Error")] == []
    assert run.returncode == 0, output


@needs_dsrdump
@pytest.mark.parametrize("name", SCENARIOS)
def test_dsrdump_parses_without_error(
    name: str, make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario(name, make_source, study_uid, model)
    path = save_report(build_mammography_cad_sr(result, sources), tmp_path)
    run = subprocess.run([DSRDUMP, "+Pt", str(path)], capture_output=True, text=True, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert [line for line in output.splitlines() if line.startswith(("E:", "F:"))] == []
    assert "TID 4000 (DCMR)" in output
    assert "Mammography CAD SR Document" in output


@pytest.mark.parametrize("name", ["two_views", "no_analysable_view"])
def test_pixelmed_validates_the_templates(
    name: str, make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario(name, make_source, study_uid, model)
    path = save_report(build_mammography_cad_sr(result, sources), tmp_path)
    output = pixelmed_sr_validation(path)
    assert "Root Template Validation Complete" in output, output
    # PixelMed's template table spells 111025 "Failed  Detections" (two spaces): its warning
    # that our (correct) meaning differs is PixelMed's typo, not ours
    problems = [
        line for line in output.splitlines()
        if line.startswith(("Error", "Warning")) and '"Failed  Detections")' not in line
    ]
    assert problems == [], output


# The Comprehensive SR (TID 1500) ------------------------------------------------------------


def _one_finding_study(make_source: SourceFactory, study_uid: str, model: ModelInfo):  # type: ignore[no-untyped-def]
    """A flagged study with one finding and both breasts analysed: one image region in the
    whole report, beside three TID 1501 groups (right breast, left breast, exam)."""
    rcc, lcc = make_source("R", "CC"), make_source("L", "CC")
    images = (image_result(rcc, (finding(rcc, 0.875, (20.5, 26.5)),)), image_result(lcc))
    return study_result(study_uid, model, images), [rcc, lcc]


# set aside: with one region PixelMed checks every group as TID 1410 (so it did check the
# finding's own group) and misreports rows 5 and 7 on each of the three TID 1501 groups
@pytest.mark.parametrize(("scenario", "set_aside"), [(comprehensive_study, 0), (_one_finding_study, 6)],
                         ids=["two findings", "one finding"])
def test_validators_accept_it(scenario, set_aside: int, make_source: SourceFactory,  # type: ignore[no-untyped-def]
                              study_uid: str, model: ModelInfo, tmp_path: Path) -> None:
    require_tool(DCIODVFY)
    require_tool(DSRDUMP)
    result, sources = scenario(make_source, study_uid, model)
    assert result.category == "flagged"
    sources[0].PatientBirthDate = "00000000"  # as real archives hold: left empty, not copied
    path = save_report(build_comprehensive_sr(result, sources), tmp_path)
    vfy = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
    errors = [line for line in (vfy.stdout + vfy.stderr).splitlines() if line.startswith("Error")]
    assert errors == [] and vfy.returncode == 0, vfy.stderr
    dump = subprocess.run([DSRDUMP, str(path)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stdout + dump.stderr
    errors, pixelmed = pixelmed_sr_errors(path)
    assert "Found Root Template TID_1500" in pixelmed, pixelmed
    assert errors == [], pixelmed
    assert len([ln for ln in pixelmed.splitlines() if ln.startswith("Error")]) == set_aside, pixelmed
    ds = pydicom.dcmread(path)
    assert ds.PatientBirthDate == "" and ds.PatientName == sources[0].PatientName
    assert ds.SpecificCharacterSet == "ISO_IR 192"


def test_only_pixelmeds_misapplied_1410_errors_are_set_aside(
        make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path) -> None:
    """The one-finding report: an error PixelMed would give the finding's own TID 1410 group
    (1.8.1, with its region) stands; the same error on a region-less TID 1501 group goes; with
    two regions in the report nothing is set aside."""
    def line(position: str) -> str:
        return ('Error: Template 1410 PlanarROIMeasurements/[Row 1] CONTAINER (125007,DCM,'
                '"Measurement Group")/[Row 5] SCOORD (111030,DCM,"Image Region"): within '
                f'{position}: /CONTAINER (126000,DCM,"Imaging Measurement Report")/CONTAINER '
                '(126010,DCM,"Imaging Measurements")/CONTAINER (125007,DCM,"Measurement Group"): '
                'Missing conditional content item')

    other = "Error: something else: within 1.8.2: Missing conditional content item"
    result, sources = _one_finding_study(make_source, study_uid, model)
    one = pydicom.dcmread(save_report(build_comprehensive_sr(result, sources), tmp_path / "one"))
    errors = [line("1.8.1"), line("1.8.2"), line("1.8.4"), line("1.8.9"), other]
    assert drop_misapplied_1410(errors, one) == [line("1.8.1"), line("1.8.9"), other]
    # the finding's group stripped of its region is still a finding: its error stands
    finding_group, right_breast = one.ContentSequence[7].ContentSequence[:2]
    (region,) = [c for c in finding_group.ContentSequence if c.ValueType == "SCOORD"]
    finding_group.ContentSequence.remove(region)
    right_breast.ContentSequence.append(region)  # still one region in the report
    assert drop_misapplied_1410([line("1.8.1"), line("1.8.3")], one) == [line("1.8.1")]
    result, sources = comprehensive_study(make_source, study_uid, model)
    two = pydicom.dcmread(save_report(build_comprehensive_sr(result, sources), tmp_path / "two"))
    assert drop_misapplied_1410(errors, two) == errors


# The Secondary Capture per analysed view ----------------------------------------------------


SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def _rendered(image, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    picture = render_overlay_png(rng.random((ROWS, 48)), rng.random((ROWS, 48)),
                                 [f.center for f in image.findings], height=ROWS)
    return dataclasses.replace(image, overlay_png=picture)


def test_one_valid_captioned_capture_per_analysed_view(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    require_tool(DCIODVFY)
    rcc, lcc, lmlo = make_source("R", "CC"), make_source("L", "CC"), make_source("L", "MLO")
    rcc.PatientBirthDate = "00000000"
    images = (_rendered(image_result(rcc, (finding(rcc, 0.9, (20.0, 20.0)),)), 1),
              _rendered(image_result(lcc), 2))
    result = study_result(study_uid, model, images, (skipped(lmlo, failed=True),))
    captures = build_secondary_captures(result, [rcc, lcc, lmlo])
    assert len(captures) == 2  # the failed view has no picture
    assert len({c.SeriesInstanceUID for c in captures}) == 1
    for capture, image, source in zip(captures, images, (rcc, lcc), strict=True):
        path = save_report(capture, tmp_path)
        vfy = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
        errors = [ln for ln in (vfy.stdout + vfy.stderr).splitlines() if ln.startswith("Error")]
        assert errors == [], vfy.stderr
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == SC_STORAGE and ds.StudyInstanceUID == study_uid
        assert ds.BurnedInAnnotation == "YES" and "NOT FOR CLINICAL USE" in ds.SeriesDescription
        assert ds.PatientBirthDate == ("" if source is rcc else "19650412")
        assert ds.PatientName == source.PatientName and ds.Laterality == image.laterality
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        # the portal's picture, pixel for pixel, with the caption below it
        portal = np.asarray(Image.open(io.BytesIO(image.overlay_png)).convert("RGB"))
        pixels = ds.pixel_array
        assert pixels.shape[0] > portal.shape[0]
        assert np.array_equal(pixels[:portal.shape[0], :portal.shape[1]], portal)
        band = pixels[portal.shape[0]:]
        assert band.min() == 0 and (band > 200).sum() > 100  # white text on black
    lines = caption(result, images[0])
    assert lines[0].startswith("RCC  image 90.0 %") and "FLAGGED" in lines[1]
    assert lines[2].startswith("MammoNet 1.2.0") and "NOT FOR CLINICAL USE" in lines[3]


# Synthetic studies --------------------------------------------------------------------------


def test_synthetic_files_pass_dciodvfy_without_errors(tmp_path: Path) -> None:
    require_tool(DCIODVFY)  # installed by scripts/test: missing is a failure, not a skip
    study = write_study(tmp_path / "study", seed=3, lesion=True, rows=256, columns=208)
    assert len(study.paths) == 4
    for path in study.paths:
        run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"
