"""The stages of the analysis, each testable alone:
select views → preprocess → predict → postprocess (image score and findings from a heatmap)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset

from mammogate.imaging import ViewInfo, rotation_reason, view_info
from mammogate.imaging.prepare import PreparedImage, prepare_dataset
from mammogate.inference.scoring import Calibration, cell_mask, find_peaks, probability_map
from mammogate.inference.tf_runtime import serving_function

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
BREAST_PROJECTION_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.13.1.4"
BREAST_PROJECTION_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.13.1.5"
BREAST_TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

# Declarative intended use: which images the model is for.
ACCEPTED_SOP_CLASSES = {
    MG_FOR_PRESENTATION: "Digital Mammography X-Ray Image – For Presentation",
    BREAST_PROJECTION_FOR_PRESENTATION: "Breast Projection X-Ray Image – For Presentation",
    CR_IMAGE: "legacy CR image with Modality MG",
    DX_FOR_PRESENTATION: "legacy DX image with Modality MG",
    SECONDARY_CAPTURE: "digitised film (Secondary Capture) with Modality MG",
}
REFUSED_SOP_CLASSES = {
    MG_FOR_PROCESSING: "For Processing (raw) mammogram; only For Presentation images are analysed",
    BREAST_PROJECTION_FOR_PROCESSING: "For Processing (raw) breast projection; only For Presentation images are analysed",
    BREAST_TOMOSYNTHESIS: "breast tomosynthesis is outside the intended use (2D views only)",
}
SCREENING_VIEWS = ("CC", "MLO")
LATERALITIES = ("L", "R")
# CID 4015 view modifiers that keep a CC/MLO a screening view: only implant displaced (Eklund).
# Any other modifier (spot compression 399055006, magnification 399163009, rolled, tangential,
# cleavage, ...) makes it a diagnostic work-up view, outside the intended use.
SCREENING_VIEW_MODIFIERS = {"399209000", "R-102D5"}  # implant displaced (SCT, retired SNOMED-RT)
_SCREENING_MODIFIER_MEANINGS = {"implant displaced"}
_MODIFIER_NAMES = {
    "399055006": "spot compression", "R-102D7": "spot compression",
    "399163009": "magnification", "R-102D6": "magnification",
}
# Descriptions of objects that are not images of a patient's breast.
_NON_PATIENT_TEXT = re.compile(r"FLAT[\s_\-]*FIELD|PHANTOM|CALIBRATION", re.IGNORECASE)
_DESCRIPTION_FIELDS = ("SeriesDescription", "ProtocolName", "ImageComments")


@dataclass(frozen=True)
class ViewSelection:
    """Whether an image is within the intended use, and why not."""

    accepted: bool
    reason: str | None
    info: ViewInfo


def _sop_class_reason(ds: Dataset) -> str | None:
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class in REFUSED_SOP_CLASSES:
        return REFUSED_SOP_CLASSES[sop_class]
    if sop_class.startswith("1.2.840.10008.5.1.4.1.1.88."):
        return "a structured report, not an image"
    if sop_class not in ACCEPTED_SOP_CLASSES:
        return f"SOP class {sop_class or '(none)'} is not a 2D mammography image"
    return None


def _modifier_reason(info: ViewInfo) -> str | None:
    for value, _scheme, meaning in info.view_modifiers:
        value, meaning = value.strip(), meaning.strip()
        if value in SCREENING_VIEW_MODIFIERS or meaning.lower() in _SCREENING_MODIFIER_MEANINGS:
            continue
        name = meaning.lower() or _MODIFIER_NAMES.get(value) or "(no meaning)"
        return f"{info.view} with view modifier {name} ({value or 'no code'}) is not a screening view"
    return None


def _non_patient_reason(ds: Dataset) -> str | None:
    for keyword in _DESCRIPTION_FIELDS:
        text = str(ds.get(keyword, "") or "")
        if _NON_PATIENT_TEXT.search(text):
            return f"not a patient image ({keyword} {text!r})"
    return None


def select_view(ds: Dataset) -> ViewSelection:
    """Intended use: 2D For Presentation screening views (CC, MLO) of one breast, Modality MG."""
    info = view_info(ds)
    reason = _sop_class_reason(ds)
    modality = str(ds.get("Modality", "") or "")
    if reason is None and modality != "MG":
        reason = f"modality {modality or '(none)'} is not MG"
    intent = str(ds.get("PresentationIntentType", "") or "").upper()
    if reason is None and intent == "FOR PROCESSING":
        reason = "For Processing (raw) image; only For Presentation images are analysed"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if reason is None and any(v in {"STEREO", "BIOPSY", "SPECIMEN"} for v in image_type[2:]):
        reason = f"{'/'.join(image_type[2:])} image (biopsy or specimen), not a screening view"
    if reason is None and int(ds.get("NumberOfFrames", 1) or 1) > 1:
        reason = "multi-frame image; only single-frame 2D views are analysed"
    if reason is None and info.laterality not in LATERALITIES:
        reason = (
            "laterality unknown (no ImageLaterality, Laterality or view text)"
            if info.laterality is None
            else f"laterality {info.laterality} is not a single breast"
        )
    if reason is None and info.view_conflict is not None:
        reason = f"{info.view_conflict}; not a screening view"
    if reason is None:
        reason = _non_patient_reason(ds)
    if reason is None and info.view not in SCREENING_VIEWS:
        reason = (
            "view unknown (no ViewCodeSequence, ViewPosition or view text)"
            if info.view is None
            else f"view {info.view} is not a screening view ({'/'.join(SCREENING_VIEWS)})"
        )
    if reason is None:
        reason = _modifier_reason(info)
    if reason is None:
        reason = rotation_reason(ds)
    return ViewSelection(reason is None, reason, info)


def preprocess(ds: Dataset, input_rows: int, input_columns: int) -> PreparedImage:
    """Decode (reduced before the LUTs), segment the breast, chest wall to the left, crop and
    scale to the grid: ``mammogate.imaging.prepare.prepare_dataset``, the path training uses
    too. Raises ImagingError."""
    return prepare_dataset(ds, input_rows, input_columns)


def predict(model: Any, grids: Sequence[np.ndarray]) -> np.ndarray:
    """Run the model on a batch of grids (all of one shape): logit maps (N, h, w, channels).
    One traced graph per model and grid serves every batch size (``serving_function``)."""
    batch = np.stack([np.asarray(g, dtype=np.float32) for g in grids])[..., None]
    function = serving_function(model, batch.shape[1], batch.shape[2])
    return np.asarray(function(batch), dtype=np.float32)


@dataclass(frozen=True)
class HeatmapPeak:
    """A finding before it is tied to an image: original pixel coordinates."""

    probability: float
    center: tuple[float, float]
    radius: float
    outline: tuple[tuple[float, float], ...]
    certainty: float | None = None  # the lesion channel's probability there (None: no channel)


def _octagon(center: tuple[float, float], radius: float, columns: int, rows: int) -> tuple[tuple[float, float], ...]:
    points = []
    for k in range(8):
        angle = np.pi / 8 + k * np.pi / 4
        x = float(np.clip(center[0] + radius * np.cos(angle), 0.0, columns))
        y = float(np.clip(center[1] + radius * np.sin(angle), 0.0, rows))
        points.append((round(x, 2), round(y, 2)))
    points.append(points[0])
    return tuple(points)


@dataclass(frozen=True)
class ScoredImage:
    """An image's calibrated probability, its probability map over the grid's cells (0 outside
    the scoring mask; its maximum is the probability) and its findings."""

    probability: float
    cell_probabilities: np.ndarray
    findings: list[HeatmapPeak]


def postprocess(
    logits: np.ndarray,
    prepared: PreparedImage,
    threshold: float,
    calibration: Calibration,
    *,
    sharpness: float,
    max_findings: int = 3,
    lesion_calibration: Calibration | None = None,
) -> ScoredImage:
    """An image's probability and findings from its logit map (h, w, channels), consistent by
    construction: the probability is the map's maximum, so ``probability >= threshold`` exactly
    when there is a finding, and the first finding is at the maximum. Only cells of the breast
    without the pectoral muscle count (``prepared.scoring_mask``), so no finding can lie
    outside the breast."""
    channels = np.asarray(logits, dtype=np.float64)
    malignant = channels[..., 0] if channels.ndim == 3 else channels
    heat_rows, heat_columns = malignant.shape
    cells = cell_mask(prepared.scoring_mask, heat_rows, heat_columns)
    probability, probabilities = probability_map(malignant, cells, calibration, sharpness)
    transform = prepared.transform
    stride_y = transform.grid_rows / heat_rows
    stride_x = transform.grid_columns / heat_columns
    peaks = find_peaks(probabilities, threshold=threshold, max_peaks=max_findings, cells=cells)
    lesion_map = None
    if lesion_calibration is not None and channels.ndim == 3 and channels.shape[-1] > 1:
        lesion_map = probability_map(channels[..., 1], cells, lesion_calibration, sharpness)[1]
    findings = []
    for peak in peaks:
        center = transform.to_original(peak.column * stride_x, peak.row * stride_y)
        center = (round(center[0], 2), round(center[1], 2))
        radius = transform.length_to_original(peak.radius * (stride_x + stride_y) / 2)
        certainty = None
        if lesion_map is not None:
            cell = (min(int(peak.row), heat_rows - 1), min(int(peak.column), heat_columns - 1))
            certainty = float(lesion_map[cell])
        findings.append(HeatmapPeak(
            peak.value, center, radius, _octagon(center, radius, transform.columns, transform.rows),
            certainty,
        ))
    return ScoredImage(probability, probabilities, findings)
