"""``Analyzer``: a study's files in, a ``StudyResult`` out."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset

from mammogate.imaging import ImagingError, UnsupportedImageError, header_of, read_dataset
from mammogate.imaging.breast import breast_landmarks
from mammogate.imaging.clock import patient_orientation
from mammogate.imaging.geometry import pixel_spacing_mm
from mammogate.imaging.render import render_heatmap_png, render_overlay_png
from mammogate.inference.bundle import ModelBundle, load_bundle
from mammogate.inference.pipeline import (
    PreparedImage,
    postprocess,
    predict,
    preprocess,
    select_view,
)
from mammogate.inference.position import locate
from mammogate.inference.results import (
    ExamCategory,
    Finding,
    ImageResult,
    Laterality,
    SkippedImage,
    StudyResult,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Candidate:
    ds: Dataset
    laterality: Laterality
    view: str
    prepared: PreparedImage


@dataclass
class _Gathered:
    """A study's images read and prepared, before the model sees them."""

    candidates: list[_Candidate] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)
    study_uids: Counter[str] = field(default_factory=Counter)


def _skipped(ds: Dataset | None, reason: str, *, failed: bool, fallback_uid: str = "") -> SkippedImage:
    def attr(keyword: str) -> str:
        return str(ds.get(keyword, "") or "") if ds is not None else ""

    return SkippedImage(
        attr("SOPInstanceUID") or fallback_uid,
        attr("SOPClassUID"),
        attr("SeriesInstanceUID"),
        reason,
        failed,
    )


class Analyzer:
    """Runs the model bundle over studies. Load once per worker process; not thread-safe."""

    def __init__(
        self, bundle: ModelBundle | None = None, *, max_findings_per_image: int = 3, batch_size: int = 8
    ) -> None:
        self.bundle = bundle if bundle is not None else load_bundle(None)
        self.max_findings_per_image = max_findings_per_image
        self.batch_size = batch_size
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self.bundle.load_model()
        return self._model

    def warm_up(self) -> float:
        """Load the model and trace its graph on an empty grid, so that the first study is as
        fast as the next (tracing takes seconds on a CPU). Seconds spent."""
        started = time.perf_counter()
        blank = np.zeros((self.bundle.input_rows, self.bundle.input_columns), np.float32)
        predict(self.model, [blank])
        return time.perf_counter() - started

    @property
    def threshold(self) -> float:
        return self.bundle.operating_point

    def prepare(self, ds: Dataset) -> PreparedImage:
        return preprocess(ds, self.bundle.input_rows, self.bundle.input_columns)

    def predict_prepared(self, prepared: Sequence[PreparedImage]) -> np.ndarray:
        """Logit maps (N, h, w, channels) of prepared images, in batches."""
        maps: list[np.ndarray] = []
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start : start + self.batch_size]
            maps.extend(predict(self.model, [p.grid for p in chunk]))
        return np.stack(maps) if maps else np.zeros((0, 1, 1, 1), np.float32)

    def analyze_study(self, paths: Sequence[Path]) -> StudyResult:
        result = self.analyze_studies([paths])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def analyze_studies(self, studies: Sequence[Sequence[Path]]) -> list[StudyResult | Exception]:
        """Several studies at once: their views go through the model together, in batches of
        ``batch_size`` across studies (a worker with a deep queue). Each study's result, or
        the exception that ended it (another study's failure does not touch it)."""
        started = time.perf_counter()
        gathered: list[_Gathered | Exception] = []
        for paths in studies:
            try:
                gathered.append(self._gather(paths))
            except Exception as exc:  # noqa: BLE001 -- that study's failure, said per study
                gathered.append(exc)
        candidates = [c for g in gathered if isinstance(g, _Gathered) for c in g.candidates]
        logit_maps = self.predict_prepared([c.prepared for c in candidates])
        results: list[StudyResult | Exception] = []
        first = 0  # the study's first map
        for g in gathered:
            if isinstance(g, Exception):
                results.append(g)
                continue
            maps, first = logit_maps[first:first + len(g.candidates)], first + len(g.candidates)
            try:
                images = [self._image_result(c, m) for c, m in zip(g.candidates, maps, strict=True)]
                results.append(self._study_result(g, images, time.perf_counter() - started,
                                                  len(studies)))
            except Exception as exc:  # noqa: BLE001 -- as above
                results.append(exc)
        return results

    def _gather(self, paths: Sequence[Path]) -> _Gathered:
        """Read, select and prepare a study's images (what fails is a skipped image)."""
        gathered = _Gathered()
        for path in sorted(Path(p) for p in paths):
            try:
                ds = read_dataset(path)
            except ImagingError as exc:
                gathered.skipped.append(_skipped(None, str(exc), failed=True, fallback_uid=path.name))
                continue
            gathered.headers.append(header_of(ds))
            if ds.get("StudyInstanceUID"):
                gathered.study_uids[str(ds.StudyInstanceUID)] += 1
            selection = select_view(ds)
            if not selection.accepted:
                gathered.skipped.append(_skipped(ds, selection.reason or "not selected", failed=False))
                continue
            try:
                prepared = self.prepare(ds)
            except UnsupportedImageError as exc:
                # not a single-frame grayscale image (an RGB Secondary Capture labelled MG):
                # out of scope, not a failure of the algorithm
                gathered.skipped.append(_skipped(ds, str(exc), failed=False))
                continue
            except ImagingError as exc:
                logger.warning("image %s failed preprocessing: %s", ds.get("SOPInstanceUID"), exc)
                gathered.skipped.append(_skipped(ds, str(exc), failed=True))
                continue
            info = selection.info
            laterality: Laterality = "L" if info.laterality == "L" else "R"
            # what is left to do needs the header and the prepared images, not the pixels: a
            # batch of studies holds one full-size image at a time, not all of them
            del ds.PixelData
            gathered.candidates.append(_Candidate(ds, laterality, str(info.view), prepared))
        return gathered

    def _study_result(self, gathered: _Gathered, images: list[ImageResult], elapsed: float,
                      batch: int) -> StudyResult:
        skipped = gathered.skipped
        breast_scores: dict[str, float] = {}
        for image in images:
            breast_scores[image.laterality] = max(breast_scores.get(image.laterality, 0.0), image.score)
        exam_score = max(breast_scores.values()) if breast_scores else None
        category: ExamCategory
        if exam_score is None:
            # nothing analysed: "failed" when a view failed, "skipped" when all were out of scope
            category = "failed" if any(s.failed for s in skipped) else "skipped"
        else:
            category = "flagged" if exam_score >= self.threshold else "not_flagged"
        study_uids = gathered.study_uids
        study_uid = study_uids.most_common(1)[0][0] if study_uids else ""
        logger.info(
            "study %s: %d analysed, %d skipped, exam score %s, %s in %.2f s%s",
            study_uid, len(images), len(skipped), exam_score, category, elapsed,
            f" (in a batch of {batch} studies)" if batch > 1 else "",
        )
        # each finding's place on the breast (clock hour or region), from both views of a lesion
        return locate(StudyResult(
            study_instance_uid=study_uid,
            model=self.bundle.model_info,
            images=tuple(images),
            skipped=tuple(skipped),
            breast_scores=breast_scores,
            exam_score=exam_score,
            category=category,
            elapsed_seconds=elapsed,
            headers=tuple(gathered.headers),
        ))

    def _image_result(self, candidate: _Candidate, logits: np.ndarray) -> ImageResult:
        ds, prepared = candidate.ds, candidate.prepared
        sop_uid = str(ds.SOPInstanceUID)
        # probability and findings from the same map, unrounded: flagged ⇔ a finding
        scored = postprocess(
            logits, prepared, self.threshold, self.bundle.calibration,
            sharpness=self.bundle.sharpness, max_findings=self.max_findings_per_image,
            lesion_calibration=self.bundle.lesion_calibration,
        )
        findings = tuple(
            Finding(sop_uid, candidate.laterality, candidate.view, p.probability, p.center, p.outline,
                    p.certainty)
            for p in scored.findings
        )
        original_heatmap = prepared.transform.heatmap_to_original(scored.cell_probabilities.astype(np.float32))
        nipple = depth = None
        landmarks = breast_landmarks(prepared.breast)
        if landmarks is not None:
            column, row = prepared.transform.to_original(*landmarks.nipple)
            nipple = (round(column, 2), round(row, 2))
            depth = round(prepared.transform.length_to_original(landmarks.depth), 2)
        return ImageResult(
            sop_instance_uid=sop_uid,
            sop_class_uid=str(ds.get("SOPClassUID", "")),
            series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
            laterality=candidate.laterality,
            view=candidate.view,
            score=scored.probability,
            findings=findings,
            rows=prepared.transform.rows,
            columns=prepared.transform.columns,
            heatmap=original_heatmap,
            overlay_png=render_overlay_png(
                prepared.display, original_heatmap, [f.center for f in findings],
                original_rows=prepared.transform.rows,
            ),
            heatmap_png=render_heatmap_png(original_heatmap),
            nipple=nipple,
            breast_depth=depth,
            pixel_spacing=pixel_spacing_mm(ds),
            patient_orientation=patient_orientation(ds),
        )
