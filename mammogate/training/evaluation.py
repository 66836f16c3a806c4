"""Metrics of a model's predictions on labelled records: the shape of ``report.json``, shared by
cross-validation (out-of-fold predictions) and ``mammogate evaluate`` (a bundle on a data set).

Per data set and pooled: ``malignant_vs_rest`` and ``abnormal_vs_normal`` at image and patient
level (a patient's score is the maximum over her images, as the node scores an exam), AUC with
a patient-bootstrap 95 % interval, sensitivity at 90 % specificity and the reverse;
localisation where lesion locations are known (top mark within the lesion radius, FROC);
calibration (ECE, curve); the operating points' sensitivity and specificity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammogate.inference.scoring import Calibration, find_peaks, probability_map
from mammogate.training.datasets import Record
from mammogate.training.metrics import (
    binary_summary,
    calibration_curve,
    expected_calibration_error,
    froc,
    roc_auc,
    sensitivity_at_false_marks,
)

MARKS_PER_IMAGE = 5  # marks considered per image for the FROC


@dataclass
class Predictions:
    """Per record: pooled logits of both channels, the malignant channel's logit map and its
    scoring cells, and the record's lesions in grid coordinates."""

    records: list[Record]
    pooled: np.ndarray  # (N, 2)
    maps: np.ndarray  # (N, h, w, 2) logits: malignant, any lesion
    cells: np.ndarray  # (N, h, w) bool
    lesions: list[np.ndarray]  # (k, 4): grid column, row, radius, malignant
    stride: int
    sharpness: float


def _patient_max(records: Sequence[Record], values: np.ndarray, labels: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    by_patient: dict[str, tuple[float, float]] = {}
    for record, value, label in zip(records, values, labels, strict=True):
        best, positive = by_patient.get(record.patient, (-np.inf, 0.0))
        by_patient[record.patient] = (max(best, float(value)), max(positive, float(label)))
    patients = sorted(by_patient)
    return patients, np.array([by_patient[p][0] for p in patients]), np.array([by_patient[p][1] for p in patients])


def _two_levels(records: Sequence[Record], labels: np.ndarray, scores: np.ndarray, n_boot: int) -> dict[str, Any]:
    groups = [r.patient for r in records]
    patients, patient_scores, patient_labels = _patient_max(records, scores, labels)
    return {
        "image": binary_summary(labels, scores, groups, n_boot=n_boot),
        "patient": binary_summary(patient_labels, patient_scores, patients, n_boot=n_boot),
    }


def localisation(predictions: Predictions, calibration: Calibration, *, malignant_only: bool) -> dict[str, Any] | None:
    """Top mark within the lesion radius, and the FROC, over images with located lesions:
    malignant lesions on the malignant channel, or any lesion on the lesion channel."""
    channel = 0 if malignant_only else 1
    hits, total = 0, 0
    marks: list[list[tuple[float, bool, int]]] = []
    lesion_count = 0
    marks_outside_breast = 0
    for index, record in enumerate(predictions.records):
        lesions = predictions.lesions[index]
        wanted = lesions[lesions[:, 3] > 0.5] if malignant_only else lesions
        _, probabilities = probability_map(
            predictions.maps[index][..., channel], predictions.cells[index], calibration, predictions.sharpness
        )
        peaks = find_peaks(probabilities, max_peaks=MARKS_PER_IMAGE, cells=predictions.cells[index])  # as served
        for peak in peaks:
            row, column = int(peak.row), int(peak.column)
            if not predictions.cells[index][min(row, predictions.cells.shape[1] - 1), min(column, predictions.cells.shape[2] - 1)]:
                marks_outside_breast += 1
        image_marks: list[tuple[float, bool, int]] = []
        for rank, peak in enumerate(peaks):
            x, y = peak.column * predictions.stride, peak.row * predictions.stride
            matched = -1
            for number, (lx, ly, radius, _m) in enumerate(wanted):
                if np.hypot(x - lx, y - ly) <= max(float(radius), predictions.stride):
                    matched = lesion_count + number
                    break
            if rank == 0 and len(wanted):
                total += 1
                hits += int(matched >= 0)
            image_marks.append((peak.value, matched >= 0, matched))
        if len(wanted) or record.malignant == 0 and record.abnormal == 0:
            marks.append(image_marks)
        lesion_count += len(wanted)
    if total == 0:
        return None
    points = froc(marks, lesion_count)
    thinned = points[:: max(1, len(points) // 50)]
    return {
        "images_with_lesions": total,
        "top_mark_within_radius": hits / total,
        "froc": [[round(f, 4), round(s, 4)] for f, s in thinned],
        "sensitivity_at_0.5_false_marks_per_image": sensitivity_at_false_marks(points, 0.5),
        "sensitivity_at_1_false_mark_per_image": sensitivity_at_false_marks(points, 1.0),
        "marks_outside_breast": marks_outside_breast,
    }


def operating_point_table(
    records: Sequence[Record], probabilities: np.ndarray, points: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each operating point's sensitivity and specificity on these records, image and patient."""
    labels = np.array([r.malignant for r in records], dtype=bool)
    patients, patient_scores, patient_labels = _patient_max(records, probabilities, labels.astype(float))
    patient_labels = patient_labels.astype(bool)
    table = []
    for point in points:
        threshold = float(point["threshold"])
        flagged, patient_flagged = probabilities >= threshold, patient_scores >= threshold
        table.append({
            "name": point["name"],
            "threshold": threshold,
            "image_sensitivity": float(flagged[labels].mean()) if labels.any() else None,
            "image_specificity": float((~flagged[~labels]).mean()) if (~labels).any() else None,
            "patient_sensitivity": float(patient_flagged[patient_labels].mean()) if patient_labels.any() else None,
            "patient_specificity": float((~patient_flagged[~patient_labels]).mean()) if (~patient_labels).any() else None,
        })
    return table


def summarise(
    predictions: Predictions, malignant_calibration: Calibration, lesion_calibration: Calibration,
    operating_points: Sequence[dict[str, Any]] = (), *, n_boot: int = 1000,
) -> dict[str, Any]:
    """The report's metrics for one set of predictions (one data set, or several pooled)."""
    records = predictions.records
    malignant = np.array([r.malignant for r in records], dtype=float)
    abnormal = np.array([r.abnormal for r in records], dtype=float)
    p_malignant = malignant_calibration.probability(predictions.pooled[:, 0])
    p_lesion = lesion_calibration.probability(predictions.pooled[:, 1])
    report: dict[str, Any] = {
        "images": len(records),
        "patients": len({r.patient for r in records}),
        "malignant_vs_rest": _two_levels(records, malignant, p_malignant, n_boot),
        "abnormal_vs_normal": _two_levels(records, abnormal, p_lesion, n_boot),
        "calibration": {
            "method": "Platt scaling of the pooled logit, fitted on out-of-fold predictions",
            "ece": expected_calibration_error(malignant, p_malignant),
            "curve": calibration_curve(malignant, p_malignant),
            "prevalence": float(malignant.mean()) if len(malignant) else None,
        },
    }
    located = localisation(predictions, malignant_calibration, malignant_only=True)
    located_any = localisation(predictions, lesion_calibration, malignant_only=False)
    if located is not None or located_any is not None:
        report["localisation"] = {
            "malignant_top_mark_within_radius": located["top_mark_within_radius"] if located else None,
            "abnormal_top_mark_within_radius": located_any["top_mark_within_radius"] if located_any else None,
            "froc": located["froc"] if located else [],
            "malignant": located,
            "abnormal": located_any,
        }
    if operating_points:
        report["operating_points"] = operating_point_table(records, p_malignant, operating_points)
    return report


def within_fold_aucs(predictions: Predictions, folds: np.ndarray) -> dict[str, Any]:
    """Per-image AUC inside each cross-validation fold, and their mean.

    Pooling out-of-fold scores puts networks trained on different folds on one scale they never
    shared; within a fold one network scores every image. The shipped ensemble has one scale too,
    so neither number is its performance exactly: the report gives both."""
    malignant = np.array([r.malignant for r in predictions.records], dtype=float)
    abnormal = np.array([r.abnormal for r in predictions.records], dtype=float)
    result: dict[str, Any] = {"method": "AUC of the out-of-fold pooled logit within each fold; mean over folds with both classes"}
    for task, labels, channel in (("malignant_vs_rest", malignant, 0), ("abnormal_vs_normal", abnormal, 1)):
        aucs = [
            roc_auc(labels[folds == fold], predictions.pooled[folds == fold, channel]) for fold in np.unique(folds)
        ]
        valid = [a for a in aucs if not np.isnan(a)]
        result[task] = {"image_auc_per_fold": aucs, "image_auc_mean": float(np.mean(valid)) if valid else float("nan")}
    return result


def json_safe(value: Any) -> Any:
    """For json.dumps: NaN → null, numpy scalars → Python, floats to 4 decimals."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    return value


def nested_operating_points(
    records: Sequence[Record], probabilities: np.ndarray, folds: np.ndarray
) -> list[dict[str, Any]]:
    """How the operating points hold on data they were not chosen on: for each fold, the
    points are chosen on the other folds' out-of-fold probabilities and applied to it; the
    flags are pooled over folds (patient level)."""
    chosen_flags: dict[str, list[tuple[bool, bool]]] = {}
    for fold in np.unique(folds):
        held = folds == fold
        rest = [r for r, h in zip(records, held, strict=True) if not h]
        if len({r.malignant for r in rest}) < 2:
            continue
        points = choose_operating_points(rest, probabilities[~held])
        held_records = [r for r, h in zip(records, held, strict=True) if h]
        labels = np.array([r.malignant for r in held_records], dtype=float)
        _patients, scores, patient_labels = _patient_max(held_records, probabilities[held], labels)
        for point in points:
            chosen_flags.setdefault(point["name"], []).extend(
                zip((scores >= point["threshold"]).tolist(), (patient_labels > 0.5).tolist(), strict=True)
            )
    table = []
    for name, flags in chosen_flags.items():
        flagged = np.array([f for f, _ in flags])
        positive = np.array([p for _, p in flags])
        table.append({
            "name": name,
            "patient_sensitivity": float(flagged[positive].mean()) if positive.any() else None,
            "patient_specificity": float((~flagged[~positive]).mean()) if (~positive).any() else None,
        })
    return table


def subset(predictions: Predictions, keep: np.ndarray) -> Predictions:
    index = np.flatnonzero(keep)
    return Predictions(
        [predictions.records[i] for i in index], predictions.pooled[index], predictions.maps[index],
        predictions.cells[index], [predictions.lesions[i] for i in index], predictions.stride,
        predictions.sharpness,
    )


def by_source(predictions: Predictions) -> dict[str, Predictions]:
    sources = sorted({r.source for r in predictions.records})
    return {s: subset(predictions, np.array([r.source == s for r in predictions.records])) for s in sources}


def choose_operating_points(
    records: Sequence[Record], probabilities: np.ndarray, *, sensitivities: Sequence[float] = (0.9,),
    specificities: Sequence[float] = (0.9,),
) -> list[dict[str, Any]]:
    """Thresholds on patient-level probabilities (a patient's maximum, as the node flags an
    exam): at each stated sensitivity, each stated specificity, and Youden's J ("balanced")."""
    from mammogate.training.metrics import roc_curve

    labels = np.array([r.malignant for r in records], dtype=float)
    _patients, scores, patient_labels = _patient_max(records, probabilities, labels)
    fpr, tpr, thresholds = roc_curve(patient_labels, scores)
    points = []
    for target in sensitivities:
        index = int(np.flatnonzero(tpr >= target - 1e-12)[0])
        points.append(_point(f"sensitivity_{round(target * 100)}", thresholds[index], tpr[index], 1 - fpr[index]))
    j = tpr - fpr
    index = int(np.argmax(j[1:]) + 1)
    points.append(_point("balanced", thresholds[index], tpr[index], 1 - fpr[index]))
    for target in specificities:
        index = int(np.flatnonzero((1 - fpr) >= target - 1e-12)[-1])
        index = max(index, 1)
        points.append(_point(f"specificity_{round(target * 100)}", thresholds[index], tpr[index], 1 - fpr[index]))
    return points


def _point(name: str, threshold: float, sensitivity: float, specificity: float) -> dict[str, Any]:
    # rounded down: the score that set the threshold stays at or above it
    return {
        "name": name,
        "threshold": math.floor(float(min(threshold, 1.0)) * 1e6) / 1e6,
        "patient_sensitivity": round(float(sensitivity), 4),
        "patient_specificity": round(float(specificity), 4),
    }
