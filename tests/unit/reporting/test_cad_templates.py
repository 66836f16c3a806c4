"""Each constructor rule of the TID helper classes, one case per rule."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from mammogate.reporting import sr_items as si
from mammogate.reporting.cad_templates import (
    AlgorithmIdentification,
    DetectionPerformed,
    ImageLibraryEntry,
    SingleImageFinding,
    valid_da,
    valid_tm,
)

MG = "1.2.840.10008.5.1.4.1.1.1.2"
UID = "1.2.3.4.5"
CC = Code("399162004", "SCT", "cranio-caudal")
SQUARE = ((1.0, 1.0), (5.0, 1.0), (5.0, 5.0), (1.0, 5.0), (1.0, 1.0))
ALGORITHM = AlgorithmIdentification("MammoNet", "1.2.0")


def test_valid_helpers_encode_without_error() -> None:
    entry = ImageLibraryEntry(
        MG,
        UID,
        laterality="L",
        view=CC,
        view_modifiers=[Code("399163009", "SCT", "Magnification")],
        patient_orientation=("A", "R"),
        study_date="20240315",
        study_time="101500.123",
        content_date="20240315",
        content_time="1017",
        pixel_spacing=(0.07, 0.065),
    )
    assert entry.to_item().ValueType == "IMAGE"
    finding = SingleImageFinding(0.5, (3.0, 3.0), SQUARE, ALGORITHM)
    assert finding.to_item((1, 2, 1)).ValueType == "CONTAINER"
    assert DetectionPerformed(ALGORITHM, [(1, 2, 1)]).to_item().ValueType == "CODE"


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"name": 1}, TypeError, "name"),
        ({"name": " "}, ValueError, "name"),
        ({"version": None}, TypeError, "version"),
        ({"version": ""}, ValueError, "version"),
        ({"parameters": "sha256=00"}, TypeError, "parameters"),
        ({"parameters": [3]}, TypeError, "parameters[0]"),
        ({"parameters": ["ok", ""]}, ValueError, "parameters[1]"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_algorithm_identification_rejects(
    kwargs: dict[str, Any], error: type[Exception], argument: str
) -> None:
    arguments: dict[str, Any] = {"name": "MammoNet", "version": "1.2.0", **kwargs}
    with pytest.raises(error, match="^" + re.escape(argument)):
        AlgorithmIdentification(**arguments)


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"sop_class_uid": 1}, TypeError, "sop_class_uid"),
        ({"sop_class_uid": "1.2.abc"}, ValueError, "sop_class_uid"),
        ({"sop_instance_uid": ""}, ValueError, "sop_instance_uid"),
        ({"sop_instance_uid": "1..2"}, ValueError, "sop_instance_uid"),
        ({"laterality": "X"}, ValueError, "laterality"),
        ({"view": "CC"}, TypeError, "view"),
        ({"view": CC, "view_modifiers": ["magnified"]}, TypeError, "view_modifiers[0]"),
        ({"view_modifiers": [CC]}, ValueError, "view_modifiers"),
        ({"patient_orientation": ("P",)}, ValueError, "patient_orientation"),
        ({"patient_orientation": ("P", "")}, ValueError, "patient_orientation[1]"),
        ({"study_date": 20240315}, TypeError, "study_date"),
        ({"study_date": "2024-03-15"}, ValueError, "study_date"),
        ({"study_date": "00000000"}, ValueError, "study_date"),
        ({"content_date": "20241340"}, ValueError, "content_date"),
        ({"study_time": "999999"}, ValueError, "study_time"),
        ({"content_time": "2460"}, ValueError, "content_time"),
        ({"study_time": "10:15"}, ValueError, "study_time"),
        ({"content_date": "202403"}, ValueError, "content_date"),
        ({"content_time": "1"}, ValueError, "content_time"),
        ({"pixel_spacing": (0.07,)}, ValueError, "pixel_spacing"),
        ({"pixel_spacing": ("0.07", 0.07)}, TypeError, "pixel_spacing[0]"),
        ({"pixel_spacing": (0.07, float("nan"))}, ValueError, "pixel_spacing[1]"),
        ({"pixel_spacing": (0.0, 0.07)}, ValueError, "pixel_spacing"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_image_library_entry_rejects(
    kwargs: dict[str, Any], error: type[Exception], argument: str
) -> None:
    arguments: dict[str, Any] = {"sop_class_uid": MG, "sop_instance_uid": UID, **kwargs}
    with pytest.raises(error, match="^" + re.escape(argument)):
        ImageLibraryEntry(**arguments)


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"probability": "0.5"}, TypeError, "probability"),
        ({"probability": True}, TypeError, "probability"),
        ({"probability": float("inf")}, ValueError, "probability"),
        ({"probability": 1.2}, ValueError, "probability"),
        ({"probability": -0.1}, ValueError, "probability"),
        ({"center": "3,3"}, TypeError, "center"),
        ({"center": (3.0, 3.0, 3.0)}, ValueError, "center"),
        ({"center": (3.0, None)}, TypeError, "center[1]"),
        ({"center": (-1.0, 3.0)}, ValueError, "center"),
        ({"outline": 5}, TypeError, "outline"),
        ({"outline": ((1.0, 1.0), (-5.0, 1.0), (1.0, 1.0))}, ValueError, "outline[1]"),
        ({"outline": SQUARE[:-1]}, ValueError, "outline must be closed"),
        ({"outline": ((1.0, 1.0), (5.0, 1.0), (1.0, 1.0))}, ValueError, "outline must have"),
        ({"algorithm": "MammoNet"}, TypeError, "algorithm"),
        ({"rendering_intent": "111150"}, TypeError, "rendering_intent"),
        ({"rendering_intent": CC}, ValueError, "rendering_intent"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_single_image_finding_rejects(
    kwargs: dict[str, Any], error: type[Exception], argument: str
) -> None:
    arguments: dict[str, Any] = {
        "probability": 0.5,
        "center": (3.0, 3.0),
        "outline": SQUARE,
        "algorithm": ALGORITHM,
        **kwargs,
    }
    with pytest.raises(error, match="^" + re.escape(argument)):
        SingleImageFinding(**arguments)


def test_single_image_finding_accepts_no_outline() -> None:
    item = SingleImageFinding(0.5, (3.0, 3.0), (), ALGORITHM).to_item((1, 2, 1))
    finding = item.ContentSequence[1]
    assert [c.ValueType for c in finding.ContentSequence].count("SCOORD") == 1


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ([1, 2, 1], TypeError),
        ((1, 2, "1"), TypeError),
        ((1,), ValueError),
        ((2, 2, 1), ValueError),
        ((1, 0), ValueError),
    ],
)
def test_single_image_finding_rejects_bad_image_path(path: Any, error: type[Exception]) -> None:
    finding = SingleImageFinding(0.5, (3.0, 3.0), SQUARE, ALGORITHM)
    with pytest.raises(error, match="^image_path"):
        finding.to_item(path)


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"algorithm": None}, TypeError, "algorithm"),
        ({"image_paths": (1, 2, 1)}, TypeError, "image_paths"),
        ({"image_paths": {(1, 2, 1)}}, TypeError, "image_paths"),
        ({"image_paths": []}, ValueError, "image_paths"),
        ({"image_paths": [[1, 2, 1]]}, TypeError, "image_paths[0]"),
        ({"image_paths": [(1, 2, 1), (1, -2)]}, ValueError, "image_paths[1]"),
        ({"detection": "129793001"}, TypeError, "detection"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_detection_performed_rejects(
    kwargs: dict[str, Any], error: type[Exception], argument: str
) -> None:
    arguments: dict[str, Any] = {"algorithm": ALGORITHM, "image_paths": [(1, 2, 1)], **kwargs}
    with pytest.raises(error, match="^" + re.escape(argument)):
        DetectionPerformed(**arguments)


def test_dates_and_times_must_be_real_ones() -> None:
    assert valid_da("20240229") and not valid_da("20230229") and not valid_da("00000000")
    assert all(valid_tm(t) for t in ("10", "1015", "101500", "235960.123456", "000000.0"))
    assert not any(valid_tm(t) for t in ("24", "1060", "999999", "101500.", "10:15"))


def test_code_meanings_have_no_invisible_characters() -> None:
    codes = [v for v in vars(si).values() if isinstance(v, Code)]
    assert codes
    assert all(c.meaning.isprintable() and len(c.meaning) <= 64 for c in codes)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_from_source_leaves_out_malformed_header_attributes() -> None:
    header = Dataset()
    header.SOPClassUID, header.SOPInstanceUID = MG, UID
    header.ImageLaterality = "U"
    view = Dataset()
    view.CodeMeaning = "cranio-caudal"  # no CodeValue
    header.ViewCodeSequence = [view]
    header.PatientOrientation = "P"
    header.StudyDate = "15.03.2024"
    header.PixelSpacing = 0.07
    item = ImageLibraryEntry.from_source(header).to_item()
    assert item.ValueType == "IMAGE"
    assert "ContentSequence" not in item
