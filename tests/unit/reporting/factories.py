"""Builders of source MG headers and hand-made StudyResults for the reporting tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mammogate.inference.results import (
    Finding,
    ImageResult,
    ModelInfo,
    SkippedImage,
    StudyResult,
)

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
ROWS, COLUMNS = 64, 48
PATIENT_NAME = "Dupré^Hélène"
VIEWS = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
}

SourceFactory = Callable[..., Dataset]


def image_result(
    source: Dataset, findings: tuple[Finding, ...] = (), *,
    nipple: tuple[float, float] | None = None, breast_depth: float | None = None,
    pixel_spacing: float | None = None,
) -> ImageResult:
    return ImageResult(
        sop_instance_uid=str(source.SOPInstanceUID),
        sop_class_uid=str(source.SOPClassUID),
        series_instance_uid=str(source.SeriesInstanceUID),
        laterality=source.ImageLaterality,
        view=source.ViewPosition,
        score=max((f.probability for f in findings), default=0.05),
        findings=findings,
        rows=ROWS,
        columns=COLUMNS,
        nipple=nipple,
        breast_depth=breast_depth,
        pixel_spacing=pixel_spacing,
    )


def finding(
    source: Dataset, probability: float, center: tuple[float, float], certainty: float | None = None
) -> Finding:
    c, r = center
    outline = ((c - 4, r - 4), (c + 4, r - 4), (c + 4, r + 4), (c - 4, r + 4), (c - 4, r - 4))
    return Finding(
        sop_instance_uid=str(source.SOPInstanceUID),
        laterality=source.ImageLaterality,
        view=source.ViewPosition,
        probability=probability,
        center=center,
        outline=outline,
        certainty=certainty,
    )


def skipped(
    source: Dataset, *, failed: bool, reason: str = "pixel data do not decode"
) -> SkippedImage:
    return SkippedImage(
        sop_instance_uid=str(source.SOPInstanceUID),
        sop_class_uid=str(source.SOPClassUID),
        series_instance_uid=str(source.SeriesInstanceUID),
        reason=reason,
        failed=failed,
    )


def study_result(
    study_uid: str,
    model: ModelInfo,
    images: tuple[ImageResult, ...],
    skipped_images: tuple[SkippedImage, ...] = (),
) -> StudyResult:
    exam = max((i.score for i in images), default=None)
    return StudyResult(
        study_instance_uid=study_uid,
        model=model,
        images=images,
        skipped=skipped_images,
        breast_scores={i.laterality: i.score for i in images},
        exam_score=exam,
        category="failed" if exam is None else ("flagged" if exam >= 0.4 else "not_flagged"),
    )


def source_factory(study_uid: str) -> SourceFactory:
    """An MG For Presentation image with realistic headers and small pixel data."""
    series_uid = generate_uid()

    def make(laterality: str = "R", view: str = "CC", *, magnified: bool = False) -> Dataset:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = MG_FOR_PRESENTATION
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.PatientName = PATIENT_NAME
        ds.PatientID = "MG-0001"
        ds.PatientBirthDate = "19650412"
        ds.PatientSex = "F"
        ds.StudyDate = "20240315"
        ds.StudyTime = "101500"
        ds.ContentDate = "20240315"
        ds.ContentTime = "101712"
        ds.AccessionNumber = "ACC123"
        ds.ReferringPhysicianName = "Martin^Éloïse"
        ds.StudyID = "S1"
        ds.Modality = "MG"
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = laterality
        ds.ViewPosition = view
        code = Dataset()
        code.CodeValue, code.CodeMeaning = VIEWS[view]
        code.CodingSchemeDesignator = "SCT"
        if magnified:
            modifier = Dataset()
            modifier.CodeValue = "399163009"
            modifier.CodingSchemeDesignator = "SCT"
            modifier.CodeMeaning = "Magnification"
            code.ViewModifierCodeSequence = [modifier]
        else:
            code.ViewModifierCodeSequence = []
        ds.ViewCodeSequence = [code]
        ds.PatientOrientation = ["P", "L"] if laterality == "R" else ["A", "R"]
        ds.ImagerPixelSpacing = [0.07, 0.065]
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = (np.arange(ROWS * COLUMNS, dtype=np.uint16) % 4096).tobytes()
        return ds

    return make
