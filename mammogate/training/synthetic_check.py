"""A bundle checked end to end on held-out synthetic studies, through the node's own
``Analyzer`` on DICOM files: exam and image AUC, and lesion sensitivity against false marks
per image (every mark the analyzer would make at any threshold, up to five per image).

Held-out seeds are 9000 + i: training's synthetic seeds (500000 and up) never reach them.
Lesions are those of the generator: masses 5-30 mm across, calcification clusters 6-16 mm,
contrast in the training range.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mammogate.inference.analyzer import Analyzer
from mammogate.inference.bundle import load_bundle
from mammogate.training.metrics import froc, roc_auc, sensitivity_at_false_marks
from mammogate.training.synthetic import write_study

HELD_OUT_SEED = 9000


def held_out_seeds(count: int) -> list[int]:
    return [HELD_OUT_SEED + i for i in range(count)]


def evaluate_synthetic(bundle_dir: Path, studies: int, *, rows: int = 1024, columns: int = 832) -> dict[str, Any]:
    bundle = load_bundle(bundle_dir)
    analyzer = Analyzer(dataclasses.replace(bundle, operating_point=0.0), max_findings_per_image=5)
    exam_labels, exam_scores, image_labels, image_scores = [], [], [], []
    marks: list[list[tuple[float, bool, int]]] = []
    lesion_count = 0
    with tempfile.TemporaryDirectory(prefix="mammogate-synthetic-check-") as tmp:
        for number, seed in enumerate(held_out_seeds(studies)):
            study = write_study(
                Path(tmp) / str(seed), seed=seed, lesion=number % 2 == 1, rows=rows, columns=columns,
                burned_in_label=number % 4 < 2,
            )
            result = analyzer.analyze_study(study.paths)
            exam_labels.append(float(study.has_lesion))
            exam_scores.append(result.exam_score if result.exam_score is not None else 0.0)
            for image in result.images:
                truth = study.lesions.get(image.sop_instance_uid, ())
                image_labels.append(float(bool(truth)))
                image_scores.append(image.score)
                image_marks = []
                for finding in image.findings:
                    hit = -1
                    for offset, lesion in enumerate(truth):
                        distance = np.hypot(finding.center[0] - lesion.center[0], finding.center[1] - lesion.center[1])
                        if distance <= lesion.radius:
                            hit = lesion_count + offset
                            break
                    image_marks.append((finding.probability, hit >= 0, hit))
                marks.append(image_marks)
                lesion_count += len(truth)
    points = froc(marks, lesion_count)
    exam_auc = roc_auc(exam_labels, exam_scores)
    threshold = bundle.operating_point
    flagged = np.asarray(exam_scores) >= threshold
    y = np.asarray(exam_labels, dtype=bool)
    return {
        "studies": studies,
        "seeds": f"{HELD_OUT_SEED}..{HELD_OUT_SEED + studies - 1}",
        "image_size": [rows, columns],
        "exam_auc": exam_auc,
        "image_auc": roc_auc(image_labels, image_scores),
        "lesions": lesion_count,
        "lesion_sensitivity_at_0.5_false_marks_per_image": sensitivity_at_false_marks(points, 0.5),
        "lesion_sensitivity_at_1_false_mark_per_image": sensitivity_at_false_marks(points, 1.0),
        "exam_sensitivity_at_operating_point": float(flagged[y].mean()) if y.any() else None,
        "exam_specificity_at_operating_point": float((~flagged[~y]).mean()) if (~y).any() else None,
    }
