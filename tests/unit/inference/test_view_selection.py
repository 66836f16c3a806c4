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


def test_for_processing_is_skipped() -> None:
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-Im-GE_Seno_1_ForProcessing.dcm"))
    selection = select_view(ds)
    assert not selection.accepted and "For Processing" in str(selection.reason)


def test_for_processing_intent_on_a_presentation_class_is_skipped(mg: Dataset) -> None:
    mg.PresentationIntentType = "FOR PROCESSING"
    assert "For Processing" in str(select_view(mg).reason)


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


def test_stereotactic_image_is_skipped() -> None:
    ds = read_dataset(
        shared_file(
            "dicom", "vendor_samples",
            "fodicom_OutOfBoundsOverlay_Siemens_MammomatInspiration_stereoLCC.dcm",
        ),
        stop_before_pixels=True,
    )
    assert "STEREO" in str(select_view(ds).reason)


def test_digitised_film_with_view_in_patient_id_is_accepted() -> None:
    ds = read_dataset(shared_file("dicom", "cbis_ddsm", "1-133.dcm"), stop_before_pixels=True)
    selection = select_view(ds)
    assert selection.accepted, selection.reason
    assert (selection.info.laterality, selection.info.view) == ("R", "MLO")
