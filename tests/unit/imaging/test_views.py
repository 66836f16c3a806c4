from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.sr._snomed_dict import mapping as snomed_mapping
from pydicom.sr.codedict import codes

from mammogate.imaging import laterality_code, read_dataset, view_code, view_info
from mammogate.imaging.views import view_modifier_code
from tests.shared_data import shared_file

CBIS = {
    "1-130.dcm": ("L", "CC"),
    "1-131.dcm": ("L", "MLO"),
    "1-132.dcm": ("R", "CC"),
    "1-133.dcm": ("R", "MLO"),
}


@pytest.mark.shared_data
@pytest.mark.parametrize(("name", "expected"), sorted(CBIS.items()))
def test_cbis_ddsm_view_comes_from_patient_id_and_laterality_from_series(
    name: str, expected: tuple[str, str]
) -> None:
    info = view_info(read_dataset(shared_file("dicom", "cbis_ddsm", name), stop_before_pixels=True))
    assert (info.laterality, info.view) == expected
    assert info.laterality_source == "Laterality"
    assert info.view_source == "text"


@pytest.mark.shared_data
def test_ge_vendor_sample_view_code_sequence_with_retired_snomed_code() -> None:
    ds = read_dataset(
        shared_file("dicom", "vendor_samples", "fodicom_GH133_GE_SenographeEssential_RMLO.dcm"),
        stop_before_pixels=True,
    )
    info = view_info(ds)
    assert (info.laterality, info.view) == ("R", "MLO")
    assert (info.laterality_source, info.view_source) == ("ImageLaterality", "ViewCodeSequence")
    assert info.view_code == ("399368009", "SCT", "medio-lateral oblique")
    assert info.laterality_code == ("73056007", "SCT", "Right breast")


@pytest.mark.shared_data
def test_siemens_stereo_sample_is_left_cc() -> None:
    ds = read_dataset(
        shared_file(
            "dicom", "vendor_samples",
            "fodicom_OutOfBoundsOverlay_Siemens_MammomatInspiration_stereoLCC.dcm",
        ),
        stop_before_pixels=True,
    )
    assert (view_info(ds).laterality, view_info(ds).view) == ("L", "CC")


@pytest.mark.shared_data
def test_hologic_flat_field_view_position_contradicts_its_cc_code() -> None:
    # Hologic writes a CC code on its flat-field calibration object; ViewPosition says what it is
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-Im-Hologic-PropProj.dcm"))
    assert ds.ViewPosition == "FLATFIELD"
    info = view_info(ds)
    assert (info.laterality, info.view, info.view_source) == ("R", None, None)
    assert info.view_conflict == "ViewPosition FLATFIELD contradicts ViewCodeSequence (CC)"


@pytest.mark.shared_data
def test_vendor_view_position_that_agrees_with_the_code_is_no_conflict() -> None:
    ds = read_dataset(
        shared_file("dicom", "vendor_samples", "fodicom_GH133_GE_SenographeEssential_RMLO.dcm"),
        stop_before_pixels=True,
    )
    ds.ViewPosition = "RMLO"  # laterality-prefixed vendor string
    info = view_info(ds)
    assert (info.view, info.view_source, info.view_conflict) == ("MLO", "ViewCodeSequence", None)
    ds.ViewPosition = "ML"  # another view: the code is authoritative
    assert (view_info(ds).view, view_info(ds).view_conflict) == ("MLO", None)
    ds.ViewPosition = "PHANTOM"  # no view of a breast at all
    assert view_info(ds).view is None
    assert view_info(ds).view_conflict == "ViewPosition PHANTOM contradicts ViewCodeSequence (MLO)"


@pytest.mark.shared_data
def test_dose_report_has_no_view() -> None:
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-RDSR-Hologic_2D.dcm"))
    info = view_info(ds)
    assert info.laterality is None and info.view is None


def test_view_position_is_the_fallback_when_the_code_sequence_is_absent() -> None:
    ds = Dataset()
    ds.ImageLaterality = "L"
    ds.ViewPosition = "XCCL"
    info = view_info(ds)
    assert (info.view, info.view_source) == ("XCCL", "ViewPosition")
    assert info.view_code == ("399192008", "SCT", "cranio-caudal exaggerated laterally")


def test_text_fallback_reads_series_description() -> None:
    ds = Dataset()
    ds.PatientID = "ANON123"
    ds.SeriesDescription = "R MLO screening"
    info = view_info(ds)
    assert (info.laterality, info.view) == ("R", "MLO")


def test_codes_for_reporting() -> None:
    assert view_code("CC") == ("399162004", "SCT", "cranio-caudal")
    assert laterality_code("L") == ("80248007", "SCT", "Left breast")
    assert view_code(None) is None and laterality_code("X") is None


def test_retired_view_modifier_codes_map_to_their_cid_4015_sct_codes() -> None:
    assert view_modifier_code("R-102D5", "SRT") == ("399209000", "SCT", "Implant Displaced")
    assert view_modifier_code(" R-102D6", "snm3") == ("399163009", "SCT", "Magnification")
    assert view_modifier_code("399209000", "SCT") is None
    assert view_modifier_code("R-10242", "SRT") is None  # a view, not a view modifier
    # every CID 4015 code, as pydicom's tables (PS3.16) give it and its SNOMED-RT value
    concepts = codes.CID4015.concepts.values()
    assert len(concepts) == 14
    for code in concepts:
        retired = snomed_mapping["SCT"][code.value]
        assert view_modifier_code(retired, "SRT") == (code.value, "SCT", code.meaning)
