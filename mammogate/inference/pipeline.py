"""The stages of the analysis, each testable alone:
select views → preprocess → predict → postprocess (image score and findings from a heatmap)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset

from mammogate.imaging import (
    GridTransform,
    ViewInfo,
    display_image,
    normalise_laterality,
    rotation_reason,
    to_model_grid,
    view_info,
)

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


@dataclass(frozen=True)
class PreparedImage:
    """One image on the model grid, and how to get back to the original."""

    grid: np.ndarray  # float32 (input_rows, input_columns), chest wall left, [0, 1]
    transform: GridTransform
    display: np.ndarray  # float32 original orientation, [0, 1]


def preprocess(ds: Dataset, input_rows: int, input_columns: int) -> PreparedImage:
    """Decode, display LUTs, chest wall to the left, scale to the grid. Raises ImagingError."""
    display = display_image(ds)
    normalised, flipped = normalise_laterality(display, ds)
    grid, transform = to_model_grid(normalised, input_rows, input_columns, flipped=flipped)
    return PreparedImage(grid, transform, display)


def predict(model: Any, grids: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Run the model on a batch of grids: (heatmaps (N, h, w), image scores (N,))."""
    batch = np.stack([np.asarray(g, dtype=np.float32) for g in grids])[..., None]
    heatmaps, scores = model.predict_on_batch(batch)
    return np.asarray(heatmaps, dtype=np.float32)[..., 0], np.asarray(scores, dtype=np.float32).reshape(-1)


@dataclass(frozen=True)
class HeatmapPeak:
    """A finding before it is tied to an image: original pixel coordinates."""

    probability: float
    center: tuple[float, float]
    radius: float
    outline: tuple[tuple[float, float], ...]


def valid_region(heatmap: np.ndarray, transform: GridTransform) -> np.ndarray:
    """The part of a grid heatmap that covers the image (padding excluded)."""
    rows, columns = transform.heatmap_valid_shape(heatmap.shape[0], heatmap.shape[1])
    return heatmap[:rows, :columns]


def image_score(heatmap: np.ndarray, transform: GridTransform) -> float:
    """An image's score: the maximum of its heatmap over the image, unrounded. Inference and
    training (the operating point) both use this; ``find_findings`` compares the same values."""
    return float(valid_region(heatmap, transform).max())


def _local_maxima(heatmap: np.ndarray) -> list[tuple[int, int]]:
    """Cells not below any of their 8 neighbours (plateaus included), highest first, ties in
    raster order: the first is always the maximum."""
    padded = np.pad(heatmap, 1, mode="constant", constant_values=-np.inf)
    rows, columns = heatmap.shape
    neighbours = np.stack(
        [padded[dy : dy + rows, dx : dx + columns] for dy in range(3) for dx in range(3)]
    )
    is_peak = heatmap >= neighbours.max(axis=0)
    ys, xs = np.nonzero(is_peak)
    order = np.lexsort((xs, ys, -heatmap[ys, xs]))  # by value, ties in raster order
    return [(int(ys[i]), int(xs[i])) for i in order]


def _octagon(center: tuple[float, float], radius: float, columns: int, rows: int) -> tuple[tuple[float, float], ...]:
    points = []
    for k in range(8):
        angle = np.pi / 8 + k * np.pi / 4
        x = float(np.clip(center[0] + radius * np.cos(angle), 0.0, columns))
        y = float(np.clip(center[1] + radius * np.sin(angle), 0.0, rows))
        points.append((round(x, 2), round(y, 2)))
    points.append(points[0])
    return tuple(points)


def find_findings(
    heatmap: np.ndarray,
    transform: GridTransform,
    threshold: float,
    *,
    max_findings: int = 3,
    window: int = 6,
) -> list[HeatmapPeak]:
    """Heatmap peaks at or above ``threshold`` → centres and outlines in original pixels.

    ``heatmap`` is the model output over the grid (chest wall left, before mapping back). Only
    the valid region counts (``valid_region``: padding cells are neither peaks nor neighbours),
    and values are compared unrounded, so an image whose ``image_score`` is at or above
    ``threshold`` always has a finding, the first, at its maximum (edge cells included).
    """
    stride_y = transform.grid_rows / heatmap.shape[0]
    stride_x = transform.grid_columns / heatmap.shape[1]
    heatmap = valid_region(heatmap, transform)
    rows, columns = heatmap.shape
    peaks: list[HeatmapPeak] = []
    taken: list[tuple[int, int]] = []
    for y, x in _local_maxima(heatmap):
        value = float(heatmap[y, x])
        if value < threshold or len(peaks) >= max_findings:
            break
        if any(abs(y - ty) <= window and abs(x - tx) <= window for ty, tx in taken):
            continue
        taken.append((y, x))
        y0, y1 = max(0, y - window), min(rows, y + window + 1)
        x0, x1 = max(0, x - window), min(columns, x + window + 1)
        patch = heatmap[y0:y1, x0:x1]
        mask = patch >= 0.5 * value
        weights = np.where(mask, patch, 0.0)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        cy = float((weights * (yy + 0.5)).sum() / weights.sum())
        cx = float((weights * (xx + 0.5)).sum() / weights.sum())
        radius_cells = max(1.0, float(np.sqrt(mask.sum() / np.pi)))
        center = transform.to_original(cx * stride_x, cy * stride_y)
        center = (round(center[0], 2), round(center[1], 2))
        radius = transform.length_to_original(radius_cells * (stride_x + stride_y) / 2)
        outline = _octagon(center, radius, transform.columns, transform.rows)
        peaks.append(HeatmapPeak(value, center, radius, outline))
    return peaks


def postprocess(
    heatmap: np.ndarray, transform: GridTransform, threshold: float, *, max_findings: int = 3
) -> tuple[float, list[HeatmapPeak]]:
    """An image's score and findings from its grid heatmap, consistent by construction:
    ``score >= threshold`` exactly when there is a finding, and the first finding's probability
    is the score."""
    return image_score(heatmap, transform), find_findings(
        heatmap, transform, threshold, max_findings=max_findings
    )
