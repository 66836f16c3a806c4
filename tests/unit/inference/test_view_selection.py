from __future__ import annotations

from copy import deepcopy

import pytest
from pydicom import Dataset

from mammogate.imaging import read_dataset
from mammogate.inference import select_view
from mammogate.training.synthetic import make_study
from tests.shared_data import shared_file


@pytest.fixture(scope="module")
def study_datasets() -> tuple[Dataset, ...]:
    return make_study(seed=5, lesion=False, rows=128, columns=104).datasets


@pytest.fixture
def mg(study_datasets: tuple[Dataset, ...]) -> Dataset:
    return deepcopy(study_datasets[3])  # L-MLO


def test_for_presentation_screening_view_is_accepted(mg: Dataset) -> None:
    selection = select_view(mg)
    assert selection.accepted and selection.reason is None
    assert (selection.info.laterality, selection.info.view) == ("L", "MLO")


@pytest.mark.shared_data
def test_for_processing_is_skipped() -> None:
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-Im-GE_Seno_1_ForProcessing.dcm"))
    selection = select_view(ds)
    assert not selection.accepted and "For Processing" in str(selection.reason)


def test_for_processing_intent_on_a_presentation_class_is_skipped(mg: Dataset) -> None:
    mg.PresentationIntentType = "FOR PROCESSING"
    assert "For Processing" in str(select_view(mg).reason)


@pytest.mark.shared_data
def test_dose_report_is_skipped() -> None:
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-RDSR-Hologic_2D.dcm"))
    assert "structured report" in str(select_view(ds).reason)


def test_tomosynthesis_is_skipped(mg: Dataset) -> None:
    mg.SOPClassUID = "1.2.840.10008.5.1.4.1.1.13.1.3"
    assert "tomosynthesis" in str(select_view(mg).reason)


def test_unknown_view_is_skipped(mg: Dataset) -> None:
    del mg.ViewCodeSequence
    del mg.ViewPosition
    mg.SeriesDescription = "screening"
    assert select_view(mg).reason == "view unknown (no ViewCodeSequence, ViewPosition or view text)"


def test_non_screening_view_is_skipped(mg: Dataset) -> None:
    mg.ViewCodeSequence[0].CodeValue = "399260004"
    mg.ViewCodeSequence[0].CodeMeaning = "medio-lateral"
    assert select_view(mg).reason == "view ML is not a screening view (CC/MLO)"


def test_unknown_laterality_is_skipped(mg: Dataset) -> None:
    del mg.ImageLaterality
    mg.SeriesDescription = "MLO"
    assert "laterality unknown" in str(select_view(mg).reason)


def test_other_modality_is_skipped(mg: Dataset) -> None:
    mg.Modality = "CR"
    assert select_view(mg).reason == "modality CR is not MG"


@pytest.mark.shared_data
def test_stereotactic_image_is_skipped() -> None:
    ds = read_dataset(
        shared_file(
            "dicom", "vendor_samples",
            "fodicom_OutOfBoundsOverlay_Siemens_MammomatInspiration_stereoLCC.dcm",
        ),
        stop_before_pixels=True,
    )
    assert "STEREO" in str(select_view(ds).reason)


@pytest.mark.shared_data
def test_digitised_film_with_view_in_patient_id_is_accepted() -> None:
    ds = read_dataset(shared_file("dicom", "cbis_ddsm", "1-133.dcm"), stop_before_pixels=True)
    selection = select_view(ds)
    assert selection.accepted, selection.reason
    assert (selection.info.laterality, selection.info.view) == ("R", "MLO")


@pytest.mark.shared_data
def test_hologic_flat_field_secondary_capture_is_skipped() -> None:
    # Secondary Capture, Modality MG, ViewPosition FLATFIELD, "Flat Field Tomo", but a CC code
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-Im-Hologic-PropProj.dcm"))
    selection = select_view(ds)
    assert not selection.accepted
    assert selection.reason == (
        "ViewPosition FLATFIELD contradicts ViewCodeSequence (CC); not a screening view"
    )


def test_flat_field_or_phantom_description_is_skipped(mg: Dataset) -> None:
    mg.SeriesDescription = "Flat Field Tomo"
    assert select_view(mg).reason == "not a patient image (SeriesDescription 'Flat Field Tomo')"


def _modifier(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return item


@pytest.mark.parametrize(
    ("code", "meaning"),
    [("399055006", "spot compression"), ("399163009", "magnification"), ("399226006", "rolled medial")],
)
def test_non_screening_view_modifier_is_skipped(mg: Dataset, code: str, meaning: str) -> None:
    mg.ViewCodeSequence[0].ViewModifierCodeSequence = [_modifier(code, meaning)]
    selection = select_view(mg)
    assert not selection.accepted
    assert selection.reason == f"MLO with view modifier {meaning} ({code}) is not a screening view"


def test_spot_compression_with_a_retired_code_and_no_meaning_is_skipped(mg: Dataset) -> None:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "R-102D7", "SNM3"
    mg.ViewCodeSequence[0].ViewModifierCodeSequence = [item]
    assert select_view(mg).reason == (
        "MLO with view modifier spot compression (R-102D7) is not a screening view"
    )


@pytest.mark.parametrize(("code", "scheme"), [("399209000", "SCT"), ("R-102D5", "SRT")])
def test_implant_displaced_is_still_a_screening_view(mg: Dataset, code: str, scheme: str) -> None:
    item = _modifier(code, "Implant Displaced")
    item.CodingSchemeDesignator = scheme
    mg.ViewCodeSequence[0].ViewModifierCodeSequence = [item]
    selection = select_view(mg)
    assert selection.accepted, selection.reason


@pytest.mark.shared_data
def test_rotated_image_is_skipped() -> None:
    # GE Senographe For Presentation CC with PatientOrientation R\P: chest wall at top or bottom
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-Im-GE_Seno_1_ForPresentation.dcm"))
    selection = select_view(ds)
    assert not selection.accepted
    assert selection.reason == "rotated: PatientOrientation R\\P — chest wall not left or right"


def test_single_frame_breast_projection_is_accepted(mg: Dataset) -> None:
    mg.SOPClassUID = "1.2.840.10008.5.1.4.1.1.13.1.4"
    mg.NumberOfFrames = 1
    assert select_view(mg).accepted
