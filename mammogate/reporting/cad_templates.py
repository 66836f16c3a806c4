"""Typed builders for the templates of the Mammography CAD SR (PS3.16 TID 4000 family).

One class per template, in the highdicom spirit: the constructor validates every argument
(wrong type: ``TypeError``, wrong value: ``ValueError``, the message names the argument), so
an object that exists can always be encoded. Encoding returns pydicom Content Sequence items.

By-reference links (R-SELECTED FROM, R-HAS PROPERTIES) point at Image Library entries by
their content item path, e.g. ``(1, 2, 1)`` for the first entry: root = 1, the Image Library
is the root's second child. ``cad_sr`` computes the paths when it lays out the tree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from numbers import Real

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import RE_VALID_UID

from mammogate.imaging.views import view_info, view_modifier_code
from mammogate.reporting import sr_items as si
from mammogate.reporting.sr_items import ContentItemPath

RENDERING_INTENTS = (si.PRESENTATION_REQUIRED, si.PRESENTATION_OPTIONAL, si.NOT_FOR_PRESENTATION)
_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


def valid_da(value: str) -> bool:
    """True for a DICOM DA that is a real calendar date (not 00000000, not 20241340)."""
    if not _DA.fullmatch(value):
        return False
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return True


def valid_tm(value: str) -> bool:
    """True for a DICOM TM whose hours, minutes and seconds are in range (not 999999); SS may
    be 60, a leap second (PS3.5 6.2)."""
    if not _TM.fullmatch(value):
        return False
    fields = (value[i : i + 2] for i in range(0, min(len(value), 6), 2))
    return all(int(f) <= limit for f, limit in zip(fields, (23, 59, 60), strict=False))


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value


def _uid(value: object, name: str) -> str:
    _text(value, name)
    assert isinstance(value, str)
    if len(value) > 64 or not RE_VALID_UID.match(value):
        raise ValueError(f"{name} is not a valid UID: {value!r}")
    return value


def _real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, not {number}")
    return number


def _fraction(value: object, name: str) -> float:
    number = _real(value, name)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], not {number}")
    return number


def _certainty_items(concept: Code, certainty: float | None) -> list[Dataset]:
    if certainty is None:
        return []
    return [si.num("HAS PROPERTIES", concept, certainty * 100, si.PERCENT)]


def _point(value: object, name: str) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a (column, row) pair, not {type(value).__name__}")
    if len(value) != 2:
        raise ValueError(f"{name} must have 2 coordinates (column, row), not {len(value)}")
    column, row = _real(value[0], f"{name}[0]"), _real(value[1], f"{name}[1]")
    if column < 0 or row < 0:
        raise ValueError(f"{name} must not be negative: ({column}, {row})")
    return column, row


def _code(value: object, name: str) -> Code:
    if not isinstance(value, Code):
        raise TypeError(f"{name} must be a pydicom Code, not {type(value).__name__}")
    return value


def _is_code(item: Dataset) -> bool:
    return all(item.get(k) for k in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"))


def check_path(path: object, name: str) -> ContentItemPath:
    """Validate a by-reference content item path: at least two positive ints, root first."""
    if not isinstance(path, tuple) or not all(
        isinstance(p, int) and not isinstance(p, bool) for p in path
    ):
        raise TypeError(f"{name} must be a tuple of int, not {path!r}")
    if len(path) < 2 or path[0] != 1 or any(p < 1 for p in path):
        raise ValueError(f"{name} must be a path from the root (1, ...) of positive ints: {path}")
    return path


class AlgorithmIdentification:
    """TID 4019 Algorithm Identification: name, version and free-text parameters."""

    def __init__(self, name: str, version: str, parameters: Sequence[str] = ()) -> None:
        self.name = _text(name, "name")
        self.version = _text(version, "version")
        if isinstance(parameters, str) or not isinstance(parameters, Sequence):
            raise TypeError("parameters must be a sequence of str, not a single str")
        self.parameters = tuple(_text(p, f"parameters[{i}]") for i, p in enumerate(parameters))

    def to_items(self) -> list[Dataset]:
        items = [
            si.text("HAS PROPERTIES", si.ALGORITHM_NAME, self.name),
            si.text("HAS PROPERTIES", si.ALGORITHM_VERSION, self.version),
        ]
        items += [si.text("HAS PROPERTIES", si.ALGORITHM_PARAMETERS, p) for p in self.parameters]
        return items


class ImageLibraryEntry:
    """TID 4020 CAD Image Library Entry: one IMAGE with its acquisition context.

    Every context row is optional and written only when given (the template makes each
    conditional on the attribute being present in the image). ``pixel_spacing`` is
    ``(row spacing, column spacing)`` in mm, the order of ImagerPixelSpacing / PixelSpacing.
    """

    def __init__(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        *,
        laterality: str | None = None,
        view: Code | None = None,
        view_modifiers: Sequence[Code] = (),
        patient_orientation: tuple[str, str] | None = None,
        study_date: str | None = None,
        study_time: str | None = None,
        content_date: str | None = None,
        content_time: str | None = None,
        pixel_spacing: tuple[float, float] | None = None,
    ) -> None:
        self.sop_class_uid = _uid(sop_class_uid, "sop_class_uid")
        self.sop_instance_uid = _uid(sop_instance_uid, "sop_instance_uid")
        if laterality is not None and laterality not in si.LATERALITY_CODES:
            raise ValueError(f"laterality must be one of L, R, B or None, not {laterality!r}")
        self.laterality = laterality
        self.view = None if view is None else _code(view, "view")
        self.view_modifiers = tuple(
            _code(m, f"view_modifiers[{i}]") for i, m in enumerate(view_modifiers)
        )
        if self.view_modifiers and self.view is None:
            raise ValueError("view_modifiers need a view")
        if patient_orientation is not None:
            if not isinstance(patient_orientation, tuple) or len(patient_orientation) != 2:
                raise ValueError("patient_orientation must be a (row, column) pair")
            patient_orientation = (
                _text(patient_orientation[0], "patient_orientation[0]"),
                _text(patient_orientation[1], "patient_orientation[1]"),
            )
        self.patient_orientation = patient_orientation
        self.study_date = self._matching(study_date, valid_da, "study_date")
        self.study_time = self._matching(study_time, valid_tm, "study_time")
        self.content_date = self._matching(content_date, valid_da, "content_date")
        self.content_time = self._matching(content_time, valid_tm, "content_time")
        if pixel_spacing is not None:
            if not isinstance(pixel_spacing, tuple) or len(pixel_spacing) != 2:
                raise ValueError("pixel_spacing must be a (row, column) pair in mm")
            spacing = (
                _real(pixel_spacing[0], "pixel_spacing[0]"),
                _real(pixel_spacing[1], "pixel_spacing[1]"),
            )
            if min(spacing) <= 0:
                raise ValueError(f"pixel_spacing must be positive, not {spacing}")
            pixel_spacing = spacing
        self.pixel_spacing = pixel_spacing

    @staticmethod
    def _matching(value: str | None, valid: Callable[[str], bool], name: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        if not valid(value):
            raise ValueError(f"{name} is not a DICOM {'DA' if valid is valid_da else 'TM'}: {value!r}")
        return value

    @classmethod
    def from_source(cls, source: Dataset) -> ImageLibraryEntry:
        """The entry for a source image header, with the context rows its attributes allow.

        Attributes that are present but malformed (an unknown laterality, a view code
        without a value, a single pixel spacing, a date or time that is not a real one such as
        00000000) are left out rather than failing the whole report: the rows are conditional
        on the header anyway.
        """
        view: Code | None = None
        modifiers: list[Code] = []
        if source.get("ViewCodeSequence") and _is_code(source.ViewCodeSequence[0]):
            view_item = source.ViewCodeSequence[0]
            view = si.code_of(view_item)
            # Retired SNOMED-RT codes (SNM3 R-10242, ... still written by GE, Hologic and
            # Siemens) become their CID 4014 SCT equivalents.
            standard = view_info(source).view_code
            if standard is not None and view.scheme_designator != "SCT":
                view = Code(*standard)
            for item in view_item.get("ViewModifierCodeSequence", []):
                if not _is_code(item):
                    continue
                modifier = si.code_of(item)
                # ... and so do retired view modifiers (SRT R-102D5 → CID 4015 SCT 399209000)
                standard_modifier = view_modifier_code(modifier.value, modifier.scheme_designator)
                modifiers.append(modifier if standard_modifier is None else Code(*standard_modifier))
        # where the image has no ViewCodeSequence or ImageLaterality (digitised film names
        # its view in ViewPosition or in text: CBIS-DDSM's PatientID), the view and laterality
        # the node determined, from whichever attribute it found them in
        determined = view_info(source)
        if (view is None and determined.view_code is not None
                and determined.view_source in ("ViewPosition", "text")):
            view = Code(*determined.view_code)
        orientation = source.get("PatientOrientation")
        spacing = source.get("ImagerPixelSpacing") or source.get("PixelSpacing")

        def matching(keyword: str, valid: Callable[[str], bool]) -> str | None:
            value = str(source.get(keyword) or "").strip()
            return value if valid(value) else None

        laterality = str(source.get("ImageLaterality") or determined.laterality or "")
        return cls(
            str(source.SOPClassUID),
            str(source.SOPInstanceUID),
            laterality=laterality if laterality in si.LATERALITY_CODES else None,
            view=view,
            view_modifiers=modifiers,
            patient_orientation=(
                (str(orientation[0]), str(orientation[1]))
                if isinstance(orientation, Sequence)
                and not isinstance(orientation, str)
                and len(orientation) == 2
                and all(str(v).strip() for v in orientation)
                else None
            ),
            study_date=matching("StudyDate", valid_da),
            study_time=matching("StudyTime", valid_tm),
            content_date=matching("ContentDate", valid_da),
            content_time=matching("ContentTime", valid_tm),
            pixel_spacing=(
                (float(spacing[0]), float(spacing[1]))
                if isinstance(spacing, Sequence)
                and len(spacing) == 2
                and all(float(v) > 0 for v in spacing)
                else None
            ),
        )

    def to_item(self) -> Dataset:
        acq = "HAS ACQ CONTEXT"
        context: list[Dataset] = []
        if self.laterality is not None:
            context.append(si.coded(acq, si.IMAGE_LATERALITY, si.LATERALITY_CODES[self.laterality]))
        if self.view is not None:
            modifiers = [
                si.coded("HAS CONCEPT MOD", si.IMAGE_VIEW_MODIFIER, m) for m in self.view_modifiers
            ]
            context.append(si.coded(acq, si.IMAGE_VIEW, self.view, modifiers))
        if self.patient_orientation is not None:
            context.append(si.text(acq, si.PATIENT_ORIENTATION_ROW, self.patient_orientation[0]))
            context.append(si.text(acq, si.PATIENT_ORIENTATION_COLUMN, self.patient_orientation[1]))
        if self.study_date is not None:
            context.append(si.date(acq, si.STUDY_DATE, self.study_date))
        if self.study_time is not None:
            context.append(si.time(acq, si.STUDY_TIME, self.study_time))
        if self.content_date is not None:
            context.append(si.date(acq, si.CONTENT_DATE, self.content_date))
        if self.content_time is not None:
            context.append(si.time(acq, si.CONTENT_TIME, self.content_time))
        if self.pixel_spacing is not None:
            row_spacing, column_spacing = self.pixel_spacing
            context.append(si.num(acq, si.HORIZONTAL_PIXEL_SPACING, column_spacing, si.MILLIMETER))
            context.append(si.num(acq, si.VERTICAL_PIXEL_SPACING, row_spacing, si.MILLIMETER))
        return si.image("CONTAINS", self.sop_class_uid, self.sop_instance_uid, context)


class SingleImageFinding:
    """TID 4003 Individual Impression/Recommendation holding one TID 4006 Single Image Finding.

    Coded (129793001, SCT, "Mammography breast density"): a one-view soft-tissue detection
    (a mass needs two views as a TID 4004 composite feature). ``probability`` is the model's
    probability of cancer in [0, 1], written x100 as NUM 111047 in %. ``center`` and
    ``outline`` are (column, row) in the referenced image's pixel matrix (TID 4021 Geometry);
    an outline, when given, is a closed POLYLINE of at least 3 distinct points. ``certainty``
    (optional, [0, 1]): how likely the region is a lesion at all (NUM 111012 Certainty of
    Finding, in %).
    """

    def __init__(
        self,
        probability: float,
        center: tuple[float, float],
        outline: Sequence[tuple[float, float]],
        algorithm: AlgorithmIdentification,
        *,
        rendering_intent: Code = si.PRESENTATION_REQUIRED,
        certainty: float | None = None,
    ) -> None:
        self.probability = _fraction(probability, "probability")
        self.certainty = None if certainty is None else _fraction(certainty, "certainty")
        self.center = _point(center, "center")
        if isinstance(outline, str) or not isinstance(outline, Sequence):
            raise TypeError(f"outline must be a sequence of points, not {type(outline).__name__}")
        self.outline = tuple(_point(p, f"outline[{i}]") for i, p in enumerate(outline))
        if self.outline:
            if self.outline[0] != self.outline[-1]:
                raise ValueError("outline must be closed (first point repeated at the end)")
            if len(set(self.outline)) < 3:
                raise ValueError("outline must have at least 3 distinct points")
        if not isinstance(algorithm, AlgorithmIdentification):
            raise TypeError(
                f"algorithm must be an AlgorithmIdentification, not {type(algorithm).__name__}"
            )
        self.algorithm = algorithm
        if _code(rendering_intent, "rendering_intent") not in RENDERING_INTENTS:
            raise ValueError(f"rendering_intent must be from CID 6034, not {rendering_intent}")
        self.rendering_intent = rendering_intent

    def to_item(self, image_path: ContentItemPath) -> Dataset:
        """The INFERRED FROM container; ``image_path`` locates the Image Library IMAGE."""
        intent = si.coded("HAS CONCEPT MOD", si.RENDERING_INTENT, self.rendering_intent)
        return si.container(
            "INFERRED FROM", si.INDIVIDUAL_IMPRESSION, [intent, self.finding_item(image_path)]
        )

    def finding_item(self, image_path: ContentItemPath, relationship: str = "CONTAINS") -> Dataset:
        """The TID 4006 Single Image Finding itself: CONTAINS it from an Individual
        Impression, INFERRED FROM it from a composite feature."""
        check_path(image_path, "image_path")
        geometry = [
            si.scoord(
                "HAS PROPERTIES",
                si.CENTER,
                "POINT",
                [self.center],
                [si.by_reference("SELECTED FROM", image_path)],
            )
        ]
        if self.outline:
            geometry.append(
                si.scoord(
                    "HAS PROPERTIES",
                    si.OUTLINE,
                    "POLYLINE",
                    self.outline,
                    [si.by_reference("SELECTED FROM", image_path)],
                )
            )
        return si.coded(
            relationship,
            si.SINGLE_IMAGE_FINDING,
            si.MAMMOGRAPHY_BREAST_DENSITY,
            [
                si.coded("HAS CONCEPT MOD", si.RENDERING_INTENT, self.rendering_intent),
                *self.algorithm.to_items(),
                *_certainty_items(si.CERTAINTY_OF_FINDING, self.certainty),
                si.num(
                    "HAS PROPERTIES", si.PROBABILITY_OF_CANCER, self.probability * 100, si.PERCENT
                ),
                *geometry,
            ],
        )


class CompositeFeature:
    """TID 4003 Individual Impression/Recommendation holding one TID 4004 Composite Feature: a
    lesion seen on two (or more) views of a breast, coded (129788004, SCT, "Mammographic
    breast mass") and INFERRED FROM its single image findings (each a TID 4006, by value).

    ``findings`` pairs each SingleImageFinding with the Image Library path of its image;
    ``probability`` is the lesion's probability of cancer in [0, 1] (NUM 111047 in %).
    """

    def __init__(
        self,
        findings: Sequence[tuple[SingleImageFinding, ContentItemPath]],
        probability: float,
        algorithm: AlgorithmIdentification,
        *,
        feature: Code = si.MAMMOGRAPHIC_BREAST_MASS,
        rendering_intent: Code = si.PRESENTATION_REQUIRED,
    ) -> None:
        if isinstance(findings, str) or not isinstance(findings, Sequence):
            raise TypeError(f"findings must be a sequence, not {type(findings).__name__}")
        if len(findings) < 2:
            raise ValueError("a composite feature is inferred from at least 2 single image findings")
        self.findings = []
        for i, pair in enumerate(findings):
            if not (isinstance(pair, tuple) and len(pair) == 2
                    and isinstance(pair[0], SingleImageFinding)):
                raise TypeError(f"findings[{i}] must be (SingleImageFinding, image path)")
            self.findings.append((pair[0], check_path(pair[1], f"findings[{i}] image path")))
        if len({path for _, path in self.findings}) < 2:
            raise ValueError("a composite feature's findings must be on at least 2 images")
        self.probability = _fraction(probability, "probability")
        # the feature is as certain a lesion as its most certain view says
        certainties = [f.certainty for f, _ in self.findings if f.certainty is not None]
        self.certainty = max(certainties) if len(certainties) == len(self.findings) else None
        if not isinstance(algorithm, AlgorithmIdentification):
            raise TypeError(
                f"algorithm must be an AlgorithmIdentification, not {type(algorithm).__name__}"
            )
        self.algorithm = algorithm
        self.feature = _code(feature, "feature")
        if _code(rendering_intent, "rendering_intent") not in RENDERING_INTENTS:
            raise ValueError(f"rendering_intent must be from CID 6034, not {rendering_intent}")
        self.rendering_intent = rendering_intent

    def to_item(self) -> Dataset:
        intent = si.coded("HAS CONCEPT MOD", si.RENDERING_INTENT, self.rendering_intent)
        composite = si.coded(
            "CONTAINS",
            si.COMPOSITE_FEATURE,
            self.feature,
            [
                si.coded("HAS CONCEPT MOD", si.RENDERING_INTENT, self.rendering_intent),
                si.coded("HAS PROPERTIES", si.COMPOSITE_TYPE, si.RELATED_SPATIALLY),
                si.coded("HAS PROPERTIES", si.SCOPE_OF_FEATURE, si.DETECTED_ON_MULTIPLE_IMAGES),
                *self.algorithm.to_items(),
                *_certainty_items(si.CERTAINTY_OF_FEATURE, self.certainty),
                si.num(
                    "HAS PROPERTIES", si.PROBABILITY_OF_CANCER, self.probability * 100, si.PERCENT
                ),
                *(finding.finding_item(path, "INFERRED FROM") for finding, path in self.findings),
            ],
        )
        return si.container("INFERRED FROM", si.INDIVIDUAL_IMPRESSION, [intent, composite])


class DetectionPerformed:
    """TID 4017 Detection Performed: what was detected, by which algorithm, on which images."""

    def __init__(
        self,
        algorithm: AlgorithmIdentification,
        image_paths: Sequence[ContentItemPath],
        *,
        detection: Code = si.MAMMOGRAPHY_BREAST_DENSITY,
    ) -> None:
        if not isinstance(algorithm, AlgorithmIdentification):
            raise TypeError(
                f"algorithm must be an AlgorithmIdentification, not {type(algorithm).__name__}"
            )
        self.algorithm = algorithm
        if isinstance(image_paths, tuple) and image_paths and isinstance(image_paths[0], int):
            raise TypeError("image_paths must be a sequence of paths, not a single path")
        if not isinstance(image_paths, Sequence):
            raise TypeError(f"image_paths must be a sequence, not {type(image_paths).__name__}")
        if not image_paths:
            raise ValueError("image_paths must reference at least one Image Library entry")
        self.image_paths = tuple(
            check_path(p, f"image_paths[{i}]") for i, p in enumerate(image_paths)
        )
        self.detection = _code(detection, "detection")

    def to_item(self) -> Dataset:
        return si.coded(
            "CONTAINS",
            si.DETECTION_PERFORMED,
            self.detection,
            [
                *self.algorithm.to_items(),
                *(si.by_reference("HAS PROPERTIES", p) for p in self.image_paths),
            ],
        )
