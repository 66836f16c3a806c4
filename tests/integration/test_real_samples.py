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


def _library_context(sr: pydicom.Dataset) -> dict[str, str]:
    """The laterality and view code values of the first Image Library entry."""
    library = next(item for item in sr.ContentSequence
                   if item.ConceptNameCodeSequence[0].CodeValue == "111028")
    entry = library.ContentSequence[0]
    found = {}
    for context in entry.get("ContentSequence", []):
        name = context.ConceptNameCodeSequence[0].CodeValue
        if name in ("111027", "111031"):
            found["laterality" if name == "111027" else "view"] = str(
                context.ConceptCodeSequence[0].CodeValue)
    return found


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
        # the Image Library says the laterality and view the node determined, also where the
        # image holds them only in text (CBIS-DDSM's PatientID) or in ViewPosition
        assert _library_context(sr) == {"laterality": {"L": "80248007", "R": "73056007"}[
            image.laterality], "view": {"CC": "399162004", "MLO": "399368009"}[image.view]}
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


def _every_mark(analyzer: Analyzer) -> Analyzer:
    """The shipped model with its threshold at 0: every mark it could ever make, up to 10 per image."""
    import dataclasses

    return Analyzer(dataclasses.replace(analyzer.bundle, operating_point=0.0), max_findings_per_image=10)


def test_no_mark_of_the_shipped_model_on_the_cbis_film_labels(analyzer: Analyzer) -> None:
    from tests.unit.imaging.test_breast import CBIS_LABELS

    probe = _every_mark(analyzer)
    folder = shared_data_dir() / "dicom" / "cbis_ddsm"
    for name, boxes in CBIS_LABELS.items():
        result = probe.analyze_study([folder / name])
        (image,) = result.images
        assert image.findings
        for finding in image.findings:
            column, row = finding.center
            for row0, row1, column0, column1 in boxes:
                near = row0 - 150 <= row <= row1 + 150 and column0 - 150 <= column <= column1 + 150
                assert not near, f"{name}: a mark at {finding.center} on the film label"


def test_no_mark_of_the_shipped_model_outside_the_breast_on_any_real_sample(analyzer: Analyzer) -> None:
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    from mammogate.imaging import display_image
    from mammogate.imaging.breast import segment_breast
    from mammogate.imaging.prepare import prepare_picture
    from mammogate.inference import postprocess, predict

    probe = _every_mark(analyzer)
    bundle = probe.bundle

    def inside(display: np.ndarray, rows: int, centres: list[tuple[float, float]]) -> None:
        region = segment_breast(display)
        mask = ndimage.binary_dilation(region.mask, iterations=2)  # the cell grid's coarseness
        scale = region.mask.shape[0] / rows
        for column, row in centres:
            assert mask[min(int(row * scale), mask.shape[0] - 1), min(int(column * scale), mask.shape[1] - 1)], (column, row)

    for path in _samples():
        result = probe.analyze_study([path])
        ds = pydicom.dcmread(path)
        inside(display_image(ds, max_rows=1024), int(ds.Rows), [f.center for f in result.findings])
    pictures = sorted((shared_data_dir() / "png_unlabelled").glob("*.png"))
    pictures += sorted((shared_data_dir() / "mias").glob("mdb0[0-4]*.png"))
    pictures += sorted((shared_data_dir() / "kaggle_bcd640").glob("10*.jpg"))[:20]
    for path in pictures:
        pixels = np.asarray(Image.open(path).convert("L"))
        prepared = prepare_picture(pixels, bundle.input_rows, bundle.input_columns)
        logits = predict(probe.model, [prepared.grid])[0]
        scored = postprocess(logits, prepared, 0.0, bundle.calibration, sharpness=bundle.sharpness, max_findings=10)
        display = 1.0 - pixels / 255.0 if prepared.inverted else pixels / 255.0
        inside(display.astype(np.float32), pixels.shape[0], [f.center for f in scored.findings])


def test_every_object_kind_from_the_real_samples_is_valid(analyzer: Analyzer, tmp_path: Path) -> None:
    """CBIS-DDSM's four views as one exam (each its own study) and the GE image: each kind of
    result object under dciodvfy, and dsrdump and PixelMed for the SRs."""
    from mammogate.reporting.objects import OBJECT_BUILDERS
    from tests.peers import pixelmed_sr_errors

    samples = _samples()
    cbis, ge = samples[:4], samples[4:]
    for label, paths in (("cbis", cbis), ("ge", ge)):
        result = analyzer.analyze_study(paths)
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
        studies = tuple(dict.fromkeys(str(h.StudyInstanceUID) for h in headers))
        if len(studies) > 1:  # as the worker records an assembled exam
            import dataclasses
            result = dataclasses.replace(result, study_instance_uid=studies[0],
                                         assembled_from=studies)
        assert result.images, label
        for kind, builder in OBJECT_BUILDERS.items():
            datasets = builder(result, headers, ())
            assert datasets, f"{label}: no {kind}"
            for ds in datasets:
                path = save_report(ds, tmp_path / label / kind)
                require_tool(DCIODVFY)
                vfy = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
                errors = [ln for ln in (vfy.stdout + vfy.stderr).splitlines()
                          if ln.startswith("Error")]
                assert errors == [], f"{label} {kind}: {errors}"
                written = pydicom.dcmread(path)
                assert written.StudyInstanceUID == result.study_instance_uid
                # an SR: the first image's patient attributes; a capture: its own view's
                by_uid = {str(h.SOPInstanceUID): h for h in headers}
                own = (by_uid[str(written.SourceImageSequence[0].ReferencedSOPInstanceUID)]
                       if kind == "sc_overlay" else headers[0])
                assert written.PatientID == own.PatientID
                if kind.endswith("_sr"):
                    dump = subprocess.run([DSRDUMP, str(path)], capture_output=True, text=True)
                    assert dump.returncode == 0, dump.stdout + dump.stderr
                    errors, pixelmed = pixelmed_sr_errors(path)
                    assert errors == [], f"{label} {kind}: {pixelmed}"


@pytest.mark.parametrize("charset", ["ISO_IR 192", "ISO_IR 100"])
def test_a_french_name_survives_in_every_object_in_its_character_set(
    charset: str, tmp_path: Path
) -> None:
    """The source's Specific Character Set is the objects' too, and the name reads back."""
    from mammogate.reporting.objects import OBJECT_BUILDERS
    from mammogate.training.synthetic import write_study

    study = write_study(tmp_path / "study", seed=77, lesion=True, rows=512, columns=416)
    paths = []
    for image in study.images:
        assert image.path is not None
        ds = pydicom.dcmread(image.path)
        ds.SpecificCharacterSet = charset
        ds.PatientName = "Lefèvre^Anaïs"
        ds.save_as(image.path)
        raw = image.path.read_bytes()
        assert ("Lefèvre".encode("latin-1") in raw) == (charset == "ISO_IR 100")
        paths.append(image.path)
    result = Analyzer(load_bundle(None)).analyze_study(paths)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    for kind, builder in OBJECT_BUILDERS.items():
        for ds in builder(result, headers, ()):
            written = pydicom.dcmread(save_report(ds, tmp_path / kind))
            assert written.SpecificCharacterSet == charset, kind
            assert str(written.PatientName) == "Lefèvre^Anaïs", kind
