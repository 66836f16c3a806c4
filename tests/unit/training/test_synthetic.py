"""Synthetic studies: their headers, pixels and lesions (dciodvfy's word on the files:
tests/integration/test_dicom_validators.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from mammogate.imaging import display_image, view_info
from mammogate.training.synthetic import make_study, write_dataset, write_study


def test_headers_describe_a_for_presentation_four_view_study(tmp_path: Path) -> None:
    study = write_study(tmp_path / "study", seed=8, lesion=False, rows=256, columns=208)
    datasets = [pydicom.dcmread(p) for p in study.paths]
    assert {(ds.ImageLaterality, ds.ViewPosition) for ds in datasets} == {
        ("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")
    }
    orientation = {(ds.ImageLaterality, ds.ViewPosition): list(ds.PatientOrientation) for ds in datasets}
    assert orientation[("R", "CC")] == ["P", "L"] and orientation[("L", "CC")] == ["A", "R"]
    assert orientation[("R", "MLO")] == ["P", "FL"] and orientation[("L", "MLO")] == ["A", "FR"]
    for ds in datasets:
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2"
        assert ds.Modality == "MG" and ds.PresentationIntentType == "FOR PRESENTATION"
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == "Dupré^Hélène"
        assert ds.StudyInstanceUID == study.study_instance_uid
        assert ds.BitsStored == 12 and ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.BurnedInAnnotation == "NO"
        info = view_info(ds)
        assert info.view_source == "ViewCodeSequence" and info.view == ds.ViewPosition
    assert len({ds.SOPInstanceUID for ds in datasets}) == 4


def test_same_seed_same_study_different_seed_different_uids() -> None:
    first = make_study(seed=21, rows=128, columns=104)
    again = make_study(seed=21, rows=128, columns=104)
    other = make_study(seed=22, rows=128, columns=104)
    assert first.study_instance_uid == again.study_instance_uid != other.study_instance_uid
    assert first.images == again.images
    assert [d.PixelData for d in first.datasets] == [d.PixelData for d in again.datasets]


def test_lesions_are_where_the_study_says(tmp_path: Path) -> None:
    study = write_study(tmp_path / "study", seed=40, lesion=True, rows=512, columns=416)
    assert study.has_lesion
    with_lesion = [image for image in study.images if image.lesions]
    assert len(with_lesion) == 2 and len({image.laterality for image in with_lesion}) == 1
    for image, path in zip(study.images, study.paths, strict=True):
        if not image.lesions:
            continue
        pixels = display_image(pydicom.dcmread(path))
        lesion = image.lesions[0]
        column, row = (int(v) for v in lesion.center)
        r = int(lesion.radius)
        core = pixels[row - r // 3 : row + r // 3 + 1, column - r // 3 : column + r // 3 + 1].mean()
        ring = np.concatenate([
            pixels[row - 3 * r : row - 2 * r, column - r : column + r].ravel(),
            pixels[row + 2 * r : row + 3 * r, column - r : column + r].ravel(),
        ]).mean()
        assert core > ring + 0.03, (image.laterality, image.view, lesion)


def test_normal_study_has_no_lesions() -> None:
    study = make_study(seed=41, lesion=False, rows=128, columns=104)
    assert not study.has_lesion and all(not v for v in study.lesions.values())


def test_write_dataset_makes_half_lesion_studies(tmp_path: Path) -> None:
    studies = write_dataset(tmp_path, 4, 500, rows=128, columns=104)
    assert [s.has_lesion for s in studies] == [False, True, False, True]
    assert all(p.is_file() for s in studies for p in s.paths)
