"""Result types of an analysis: what inference produces and reporting, the worker and the portal read.

Coordinates are in the *original* image's pixel matrix, in the DICOM SCOORD convention:
(column, row), where (0.0, 0.0) is the top-left corner of the top-left pixel, so the centre of
pixel (c, r) is (c + 0.5, r + 0.5). Probabilities are in [0, 1]; reporting writes them x100 in %.

These types import nothing heavy (no TensorFlow) so every package may use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

Laterality = Literal["L", "R"]


@dataclass(frozen=True)
class ModelInfo:
    """Provenance of the model bundle that produced a result."""

    name: str
    version: str
    sha256: str
    operating_point: float  # image/exam score threshold for "flagged" and for marking findings
    manufacturer: str = "mammogate"
    description: str = ""  # training data and measured performance, one line


@dataclass(frozen=True)
class FindingPosition:
    """Where on the breast a finding lies, as radiologists say it (the rule:
    ``inference.position``): the clock hour (1-12; None when it needs a view the finding was
    not paired on, or the finding is retroareolar or central) and the region ("upper outer
    quadrant", "12 o'clock", "outer half", "retroareolar", ...; "" when unknown)."""

    clock_hour: int | None = None
    region: str = ""
    # True when an image had no usable Patient Orientation and the conventional positioning
    # (lateral at the top of a CC image, superior at the top of a lateral view) was assumed
    orientation_assumed: bool = False


@dataclass(frozen=True)
class Finding:
    """One suspicious region on one image (a heatmap peak above the operating point)."""

    sop_instance_uid: str
    laterality: Laterality
    view: str  # CC, MLO, ML, LM, XCCL, ... (see imaging.views)
    probability: float  # probability of cancer, 0..1
    center: tuple[float, float]  # (column, row), original pixel grid
    outline: tuple[tuple[float, float], ...]  # closed POLYLINE (first point repeated at the end)
    # how likely the region is a lesion at all, benign or malignant (the model's lesion
    # channel, calibrated), 0..1; None when the model has no such channel
    certainty: float | None = None
    # where on the breast (inference.position.locate sets it for the study); None: not located
    position: FindingPosition | None = None


@dataclass(frozen=True)
class ImageResult:
    """An analysed view."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    laterality: Laterality
    view: str
    score: float  # image-level probability of cancer, 0..1
    findings: tuple[Finding, ...]
    rows: int
    columns: int
    # Heatmap on the model grid, already mapped back to the original orientation
    # (same aspect and flips as the original image; resize to rows x columns to overlay).
    heatmap: np.ndarray | None = field(default=None, compare=False, repr=False)
    # The portal's picture: the image with the heatmap blended in and the findings marked.
    overlay_png: bytes | None = field(default=None, compare=False, repr=False)
    # The heatmap alone, 8-bit grayscale (imaging.render.render_heatmap_png): the viewer's layer
    heatmap_png: bytes | None = field(default=None, compare=False, repr=False)
    # The breast's most anterior point (the nipple, see imaging.breast.breast_landmarks) and
    # its depth to the chest wall, in original pixels; None when not determined
    nipple: tuple[float, float] | None = None
    breast_depth: float | None = None
    # mm per original pixel (PixelSpacing, else ImagerPixelSpacing; the mean of the two
    # directions); None when the header states none
    pixel_spacing: float | None = None
    # Patient Orientation (0020,0020) as read, e.g. ("P", "L"); () when the header has none:
    # which way the rows run on the patient (see imaging.clock)
    patient_orientation: tuple[str, ...] = ()

    def distance_from_nipple(self, point: tuple[float, float]) -> tuple[float | None, float | None]:
        """How far ``point`` (column, row) lies from the nipple: (mm, fraction of the breast's
        depth), each None when the image lacks what it needs (spacing, landmarks)."""
        if self.nipple is None:
            return None, None
        pixels = float(np.hypot(point[0] - self.nipple[0], point[1] - self.nipple[1]))
        mm = pixels * self.pixel_spacing if self.pixel_spacing else None
        relative = pixels / self.breast_depth if self.breast_depth else None
        return mm, relative


@dataclass(frozen=True)
class SkippedImage:
    """An image that was not analysed, and why (a reason a person can act on)."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    reason: str
    failed: bool  # True: analysis was attempted and failed (e.g. pixels do not decode)


# flagged / not_flagged: at least one view analysed (exam score >= / < the operating point);
# failed: nothing analysed and at least one view failed; skipped: nothing analysed, nothing
# failed (every image outside the intended use).
ExamCategory = Literal["flagged", "not_flagged", "failed", "skipped"]


@dataclass(frozen=True)
class StudyResult:
    """The analysis of one study."""

    study_instance_uid: str
    model: ModelInfo
    images: tuple[ImageResult, ...]
    skipped: tuple[SkippedImage, ...]
    breast_scores: dict[str, float]  # {"L": .., "R": ..} for the breasts with analysed views
    exam_score: float | None  # None when no view could be analysed
    category: ExamCategory
    elapsed_seconds: float = 0.0
    # the header (no pixel data) of every file that could be read, in the order read: the
    # result objects and the routing use these, so each file is read once per analysis
    headers: tuple[Dataset, ...] = field(default=(), compare=False, repr=False)
    # an exam assembled from several studies (the node's grouping by patient and date): each
    # study whose images it holds; () when the images are of study_instance_uid alone
    assembled_from: tuple[str, ...] = ()
    # the views a complete exam has (dicom.expected_views, e.g. RCC, LCC, RMLO, LMLO), set by
    # the worker so the result objects can say which were missing; () when not known
    expected_views: tuple[str, ...] = ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for image in self.images for f in image.findings)

    @property
    def failed_images(self) -> tuple[SkippedImage, ...]:
        return tuple(s for s in self.skipped if s.failed)
