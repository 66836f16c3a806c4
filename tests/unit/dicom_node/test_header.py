"""Header values read from raw bytes (dicom_node.header) equal what pydicom converts, on every
real sample and on encodings chosen to take each branch."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from mammogate.dicom_node import header
from mammogate.dicom_node.limits import _file_meta, _file_meta_elements, split_file_meta
from tests.shared_data import shared_data_dir

TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "PN", "SH", "TM", "UI"}


def _read(data: bytes) -> Dataset:
    return dcmread(BytesIO(data), force=True)


def _compare_every_element(data: bytes) -> int:
    """header.text / header.integer against pydicom's conversion, for every top-level element
    of a text, US or IS VR; returns how many were compared."""
    fresh = _read(data)
    compared = 0
    for element_tag in list(fresh.keys()):
        raw = fresh.get_item(element_tag, keep_deferred=True)
        keyword = keyword_for_tag(element_tag)
        if (not keyword or not isinstance(raw, RawDataElement)
                or tag_for_keyword(keyword) != element_tag):  # (repeating groups: 60xx)
            continue
        try:
            vr = raw.VR or dictionary_VR(element_tag)
        except KeyError:
            continue
        ours = _read(data)  # each read from unconverted elements
        if vr in TEXT_VRS:
            expected = _read(data)[element_tag].value
            assert header.text(ours, keyword) == (None if expected is None else str(expected)), keyword
            compared += 1
        elif vr in ("US", "IS"):
            assert header.integer(ours, keyword) == _read(data)[element_tag].value, keyword
            compared += 1
    return compared


@pytest.mark.shared_data
def test_every_real_sample_reads_as_pydicom_converts_it() -> None:
    files = sorted((shared_data_dir() / "dicom").rglob("*.dcm"))
    assert len(files) >= 10
    compared = sum(_compare_every_element(path.read_bytes()) for path in files)
    assert compared > 300  # the samples' headers were read, not skipped


def _encoded(syntax: str, **values: object) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    ExplicitVRBigEndian])
def test_padding_values_and_character_sets_read_as_pydicom_converts_them(syntax: str) -> None:
    data = _encoded(
        syntax,
        SpecificCharacterSet="ISO_IR 100",
        SOPInstanceUID="1.2.3.4",  # odd length: padded with NUL
        StudyInstanceUID="1.2.3",
        PatientName="Müller^Anna",  # Latin-1: converted by pydicom
        PatientID="  ID 7",  # leading spaces are kept in LO
        StudyDescription="",
        Modality="MG",
        ImageType=["ORIGINAL", "PRIMARY"],  # two values: pydicom's MultiValue
        Rows=3328, Columns=4096, NumberOfFrames="12",
        RetrieveAETitle=" PACS ",
    )
    assert _compare_every_element(data) >= 10
    ds = _read(data)
    assert header.text(ds, "SOPInstanceUID") == "1.2.3.4"
    assert header.text(ds, "PatientName") == "Müller^Anna"
    assert header.text(ds, "PatientID") == "  ID 7"
    assert header.integer(ds, "Rows") == 3328 and header.integer(ds, "NumberOfFrames") == 12
    assert header.text(ds, "AccessionNumber") is None  # absent
    # nothing read by header was converted (cached) in the dataset, except what fell back
    assert isinstance(ds.get_item(header.tag("StudyInstanceUID"), keep_deferred=True),
                      RawDataElement)


def test_an_escape_sequence_goes_to_pydicom() -> None:
    # ISO 2022 IR 87 (Japanese): ASCII bytes with escape sequences, decoded by pydicom
    name = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$B#A\x1b(B"
    data = _encoded(ExplicitVRLittleEndian, SpecificCharacterSet=["", "ISO 2022 IR 87"])
    ds = _read(data)
    ds.add_new(0x00100010, "PN", name)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    read = _read(out.getvalue())
    assert header.text(read, "PatientName") == str(_read(out.getvalue()).PatientName)
    assert "\x1b" not in (header.text(read, "PatientName") or "")


def test_an_unknown_keyword_is_an_error_not_a_silent_none() -> None:
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        header.text(Dataset(), "NoSuchKeyword")


def test_a_deferred_or_converted_element_is_read_through_pydicom(tmp_path: Path) -> None:
    path = tmp_path / "a.dcm"
    path.write_bytes(_encoded(ExplicitVRLittleEndian, PatientID="X" * 60, Modality="MG"))
    deferred = dcmread(path, defer_size=16)  # the long value stays in the file
    assert header.text(deferred, "PatientID") == "X" * 60
    converted = dcmread(path)
    converted.Modality = "CT"  # set in memory: a DataElement
    assert header.text(converted, "Modality") == "CT"


@pytest.mark.shared_data
def test_the_file_meta_group_read_by_hand_equals_pydicoms_reading() -> None:
    files = sorted((shared_data_dir() / "dicom").rglob("*.dcm"))
    for path in files:
        data = path.read_bytes()
        found = _file_meta_elements(data)
        assert found is not None, path.name
        assert split_file_meta(data) == found[:2]
        ours = _file_meta(data, found)
        theirs = dcmread(BytesIO(data)).file_meta
        assert list(ours.keys()) == list(theirs.keys()), path.name
        for element_tag in theirs.keys():
            assert ours[element_tag].VR == theirs[element_tag].VR
            assert ours[element_tag].value == theirs[element_tag].value, (path.name, element_tag)
