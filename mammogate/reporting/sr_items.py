"""Low-level SR content items (PS3.3 C.17.3) and the coded concepts of the CAD templates.

Each function returns one Content Sequence item as a :class:`pydicom.Dataset`. They do not
validate: the template classes in :mod:`mammogate.reporting.cad_templates` do, before calling
them. Code meanings are written out here because pydicom's dictionary carries typographic
zero-width spaces in some of them (e.g. "Impression/\u200bRecommendation").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.valuerep import format_number_as_ds

ContentItemPath = tuple[int, ...]

# Concept names (DCM unless stated)
MAMMOGRAPHY_CAD_REPORT = Code("111036", "DCM", "Mammography CAD Report")
LANGUAGE_OF_CONTENT = Code("121049", "DCM", "Language of Content Item and Descendants")
ENGLISH_US = Code("en-US", "RFC5646", "English (United States)")
IMAGE_LIBRARY = Code("111028", "DCM", "Image Library")
IMAGE_LATERALITY = Code("111027", "DCM", "Image Laterality")
IMAGE_VIEW = Code("111031", "DCM", "Image View")
IMAGE_VIEW_MODIFIER = Code("111032", "DCM", "Image View Modifier")
PATIENT_ORIENTATION_ROW = Code("111044", "DCM", "Patient Orientation Row")
PATIENT_ORIENTATION_COLUMN = Code("111043", "DCM", "Patient Orientation Column")
STUDY_DATE = Code("111060", "DCM", "Study Date")
STUDY_TIME = Code("111061", "DCM", "Study Time")
CONTENT_DATE = Code("111018", "DCM", "Content Date")
CONTENT_TIME = Code("111019", "DCM", "Content Time")
HORIZONTAL_PIXEL_SPACING = Code("111026", "DCM", "Horizontal Pixel Spacing")
VERTICAL_PIXEL_SPACING = Code("111066", "DCM", "Vertical Pixel Spacing")
CAD_PROCESSING_AND_FINDINGS_SUMMARY = Code("111017", "DCM", "CAD Processing and Findings Summary")
INDIVIDUAL_IMPRESSION = Code("111034", "DCM", "Individual Impression/Recommendation")
RENDERING_INTENT = Code("111056", "DCM", "Rendering Intent")
SINGLE_IMAGE_FINDING = Code("111059", "DCM", "Single Image Finding")
ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = Code("111003", "DCM", "Algorithm Version")
ALGORITHM_PARAMETERS = Code("111002", "DCM", "Algorithm Parameters")
PROBABILITY_OF_CANCER = Code("111047", "DCM", "Probability of cancer")
CERTAINTY_OF_FINDING = Code("111012", "DCM", "Certainty of Finding")
CERTAINTY_OF_FEATURE = Code("111011", "DCM", "Certainty of Feature")
CENTER = Code("111010", "DCM", "Center")
OUTLINE = Code("111041", "DCM", "Outline")
SUMMARY_OF_DETECTIONS = Code("111064", "DCM", "Summary of Detections")
SUMMARY_OF_ANALYSES = Code("111065", "DCM", "Summary of Analyses")
SUCCESSFUL_DETECTIONS = Code("111063", "DCM", "Successful Detections")
FAILED_DETECTIONS = Code("111025", "DCM", "Failed Detections")
DETECTION_PERFORMED = Code("111022", "DCM", "Detection Performed")
COMPOSITE_FEATURE = Code("111015", "DCM", "Composite Feature")
COMPOSITE_TYPE = Code("111016", "DCM", "Composite Type")
SCOPE_OF_FEATURE = Code("111057", "DCM", "Scope of Feature")
IMPRESSION_DESCRIPTION = Code("111033", "DCM", "Impression Description")

# Values
# CID 6047
ALL_SUCCEEDED_WITHOUT_FINDINGS = Code("111241", "DCM", "All algorithms succeeded; without findings")
ALL_SUCCEEDED_WITH_FINDINGS = Code("111242", "DCM", "All algorithms succeeded; with findings")
NOT_ALL_SUCCEEDED_WITHOUT_FINDINGS = Code(
    "111243", "DCM", "Not all algorithms succeeded; without findings"
)
NOT_ALL_SUCCEEDED_WITH_FINDINGS = Code(
    "111244", "DCM", "Not all algorithms succeeded; with findings"
)
NONE_SUCCEEDED_WITHOUT_FINDINGS = Code("111245", "DCM", "No algorithms succeeded; without findings")
# CID 6042
SUCCEEDED = Code("111222", "DCM", "Succeeded")
PARTIALLY_SUCCEEDED = Code("111223", "DCM", "Partially Succeeded")
FAILED = Code("111224", "DCM", "Failed")
NOT_ATTEMPTED = Code("111225", "DCM", "Not Attempted")
# CID 6034
PRESENTATION_REQUIRED = Code(
    "111150", "DCM", "Presentation Required: Rendering device is expected to present"
)
PRESENTATION_OPTIONAL = Code("111151", "DCM", "Presentation Optional: Rendering device may present")
NOT_FOR_PRESENTATION = Code(
    "111152", "DCM", "Not for Presentation: Rendering device expected not to present"
)
# CID 6014. A single-view soft-tissue detection: "mass" (129788004) is a composite feature
# that needs two views, so a one-image finding is coded as a breast density (DICOM_SR.md 1.3).
MAMMOGRAPHY_BREAST_DENSITY = Code("129793001", "SCT", "Mammography breast density")
# CID 6016: a lesion seen on two views of a breast (TID 4004, inferred from its two findings)
MAMMOGRAPHIC_BREAST_MASS = Code("129788004", "SCT", "Mammographic breast mass")
# CID 6035 / CID 6036
RELATED_SPATIALLY = Code("111154", "DCM", "Target content items are related spatially")
DETECTED_ON_MULTIPLE_IMAGES = Code("111158", "DCM", "Feature detected on multiple images")
# CID 6022
RIGHT_BREAST = Code("73056007", "SCT", "Right breast")
LEFT_BREAST = Code("80248007", "SCT", "Left breast")
BOTH_BREASTS = Code("63762007", "SCT", "Both breasts")
LATERALITY_CODES = {"R": RIGHT_BREAST, "L": LEFT_BREAST, "B": BOTH_BREASTS}
# Units
MILLIMETER = Code("mm", "UCUM", "millimeter")
PERCENT = Code("%", "UCUM", "Percent")


def code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    if code.scheme_version:
        item.CodingSchemeVersion = code.scheme_version
    item.CodeMeaning = code.meaning
    return item


def code_of(item: Dataset) -> Code:
    """The :class:`Code` held by a Code Sequence item."""
    return Code(
        value=str(item.CodeValue),
        scheme_designator=str(item.CodingSchemeDesignator),
        meaning=str(item.CodeMeaning),
    )


def _item(relationship: str | None, value_type: str, name: Code | None) -> Dataset:
    item = Dataset()
    if relationship is not None:
        item.RelationshipType = relationship
    item.ValueType = value_type
    if name is not None:
        item.ConceptNameCodeSequence = [code_item(name)]
    return item


def container(relationship: str | None, name: Code, children: Iterable[Dataset] = ()) -> Dataset:
    item = _item(relationship, "CONTAINER", name)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = list(children)
    return item


def coded(relationship: str, name: Code, value: Code, children: Iterable[Dataset] = ()) -> Dataset:
    item = _item(relationship, "CODE", name)
    item.ConceptCodeSequence = [code_item(value)]
    kids = list(children)
    if kids:
        item.ContentSequence = kids
    return item


def text(relationship: str, name: Code, value: str) -> Dataset:
    item = _item(relationship, "TEXT", name)
    item.TextValue = value
    return item


def date(relationship: str, name: Code, value: str) -> Dataset:
    item = _item(relationship, "DATE", name)
    item.Date = value
    return item


def time(relationship: str, name: Code, value: str) -> Dataset:
    item = _item(relationship, "TIME", name)
    item.Time = value
    return item


def num(relationship: str, name: Code, value: float, unit: Code) -> Dataset:
    """A NUM item. The value is written as the most precise DS that fits 16 characters."""
    item = _item(relationship, "NUM", name)
    measured = Dataset()
    measured.NumericValue = format_number_as_ds(float(value))
    measured.MeasurementUnitsCodeSequence = [code_item(unit)]
    item.MeasuredValueSequence = [measured]
    return item


def image(
    relationship: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    children: Iterable[Dataset] = (),
) -> Dataset:
    item = _item(relationship, "IMAGE", None)
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class_uid
    ref.ReferencedSOPInstanceUID = sop_instance_uid
    item.ReferencedSOPSequence = [ref]
    kids = list(children)
    if kids:
        item.ContentSequence = kids
    return item


def scoord(
    relationship: str,
    name: Code,
    graphic_type: str,
    points: Sequence[tuple[float, float]],
    children: Iterable[Dataset] = (),
) -> Dataset:
    item = _item(relationship, "SCOORD", name)
    item.GraphicType = graphic_type
    item.GraphicData = [float(v) for point in points for v in point]
    kids = list(children)
    if kids:
        item.ContentSequence = kids
    return item


def by_reference(relationship: str, path: ContentItemPath) -> Dataset:
    """A by-reference item: only a relationship and the 1-based path from the root (root = 1)."""
    item = Dataset()
    item.RelationshipType = relationship
    item.ReferencedContentItemIdentifier = list(path)
    return item
