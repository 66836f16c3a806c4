"""The metrics against scikit-learn on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve

from mammogate.training import metrics


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    labels = rng.random(400) < 0.3
    scores = np.round(rng.normal(labels * 1.2, 1.0), 1)  # rounded: many ties
    return labels, scores


def test_auc_matches_scikit_learn_with_ties(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = scored
    assert metrics.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert np.isnan(metrics.roc_auc([1, 1], [0.1, 0.2]))


def test_roc_curve_matches_scikit_learn(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = scored
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores)
    sk_fpr, sk_tpr, sk_thresholds = roc_curve(labels, scores, drop_intermediate=False)
    assert fpr == pytest.approx(sk_fpr) and tpr == pytest.approx(sk_tpr)
    assert thresholds[1:] == pytest.approx(sk_thresholds[1:])


def test_operating_thresholds_reach_the_stated_rates(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = scored
    sensitivity, threshold = metrics.sensitivity_at_specificity(labels, scores, 0.9)
    assert (scores[~labels] < threshold).mean() >= 0.9
    assert (scores[labels] >= threshold).mean() == pytest.approx(sensitivity)
    specificity, threshold = metrics.specificity_at_sensitivity(labels, scores, 0.9)
    assert (scores[labels] >= threshold).mean() >= 0.9
    assert (scores[~labels] < threshold).mean() == pytest.approx(specificity)


def test_patient_bootstrap_interval_contains_the_auc_and_widens_with_clusters(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = scored
    auc = metrics.roc_auc(labels, scores)
    low, high = metrics.auc_ci(labels, scores, n_boot=300)
    assert low < auc < high and high - low < 0.2
    # the same 100 images each copied 4 times as one patient: resampling patients, not
    # images, gives the interval of 100, not of 400
    few_labels, few_scores = labels[:100], scores[:100]
    copied = np.repeat(np.arange(100), 4).astype(str)
    wide = metrics.auc_ci(np.repeat(few_labels, 4), np.repeat(few_scores, 4), copied, n_boot=300)
    narrow = metrics.auc_ci(np.repeat(few_labels, 4), np.repeat(few_scores, 4), n_boot=300)
    assert wide[1] - wide[0] > 1.5 * (narrow[1] - narrow[0])


def test_platt_scaling_matches_scikit_learn_logistic_regression() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, 600)
    labels = rng.random(600) < 1 / (1 + np.exp(-(0.7 * logits - 0.5)))
    slope, intercept = metrics.fit_platt(logits, labels)
    # Platt's smoothed targets differ from 0/1 by 1/(n+2): compare with a weighted fit
    model = LogisticRegression(C=1e9, max_iter=1000).fit(logits[:, None], labels)
    assert slope == pytest.approx(model.coef_[0, 0], abs=0.03)
    assert intercept == pytest.approx(model.intercept_[0], abs=0.03)
    assert slope == pytest.approx(0.7, abs=0.15) and intercept == pytest.approx(-0.5, abs=0.2)


def test_logistic_baseline_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(0, 1, (300, 3))
    labels = (features @ np.array([1.5, -1.0, 0.0]) + rng.normal(0, 1, 300)) > 0
    weights = metrics.fit_logistic(features, labels, l2=1.0)
    model = LogisticRegression(C=1.0).fit(features, labels)
    assert weights[:3] == pytest.approx(model.coef_[0], abs=1e-3)
    assert weights[3] == pytest.approx(model.intercept_[0], abs=1e-3)


def test_calibration_error_of_perfect_and_overconfident_predictions() -> None:
    rng = np.random.default_rng(4)
    probabilities = rng.random(20000)
    labels = rng.random(20000) < probabilities
    assert metrics.expected_calibration_error(labels, probabilities) < 0.02
    overconfident = np.where(probabilities > 0.5, 1.0, 0.0)
    assert metrics.expected_calibration_error(labels, overconfident) == pytest.approx(0.25, abs=0.02)


def test_froc_counts_a_lesion_once_and_false_marks_per_image() -> None:
    marks = [
        [(0.9, True, 0), (0.8, True, 0), (0.3, False, -1)],  # lesion 0 hit twice
        [(0.7, False, -1)],
        [(0.6, True, 1)],
    ]
    points = metrics.froc(marks, n_lesions=3)
    assert (0.0, 1 / 3) in points  # at 0.9: one lesion, no false mark
    assert (1 / 3, 2 / 3) in points  # at 0.6: two lesions, one false mark in three images
    assert metrics.sensitivity_at_false_marks(points, 0.5) == pytest.approx(2 / 3)
    assert max(s for _, s in points) == pytest.approx(2 / 3)  # lesion 2 is never found


def test_platt_scaling_converges_from_saturated_logits() -> None:
    rng = np.random.default_rng(8)
    logits = np.concatenate([rng.normal(-5, 1, 300), rng.normal(-3, 1, 100)])
    labels = np.concatenate([np.zeros(300), np.ones(100)])
    slope, intercept = metrics.fit_platt(logits, labels)
    model = LogisticRegression(C=1e9, max_iter=1000).fit(logits[:, None], labels)
    assert slope == pytest.approx(model.coef_[0, 0], rel=0.05)
    assert intercept == pytest.approx(model.intercept_[0], rel=0.05)
    backwards = metrics.fit_platt(-logits, labels)
    assert backwards[0] > 0  # never an inverted calibration
    with pytest.raises(ValueError, match="both classes"):
        metrics.fit_platt(logits, np.zeros(400))


def test_within_fold_aucs_score_each_fold_alone_and_skip_a_fold_with_one_class() -> None:
    from mammogate.training.datasets import Record
    from mammogate.training.evaluation import Predictions, within_fold_aucs

    rng = np.random.default_rng(3)
    n = 60
    folds = np.repeat([0, 1, 2], 20)
    malignant = rng.integers(0, 2, n)
    malignant[folds == 2] = 0  # fold 2 holds no cancer
    abnormal = np.maximum(malignant, rng.integers(0, 2, n))
    # fold 1 scores on a scale shifted by +5: pooled, its scores would dominate; within it, not
    pooled = rng.normal(size=(n, 2)) + np.stack([malignant, abnormal], axis=1) + 5.0 * (folds == 1)[:, None]
    records = [Record("s", f"{i}.png", f"s:{i}", int(malignant[i]), int(abnormal[i])) for i in range(n)]
    empty = np.zeros((n, 1, 1, 2))
    predictions = Predictions(records, pooled, empty, np.ones((n, 1, 1), bool), [np.zeros((0, 4))] * n, 16, 1.0)
    result = within_fold_aucs(predictions, folds)
    expected = [roc_auc_score(malignant[folds == f], pooled[folds == f, 0]) for f in (0, 1)]
    per_fold = result["malignant_vs_rest"]["image_auc_per_fold"]
    assert per_fold[:2] == pytest.approx(expected) and np.isnan(per_fold[2])
    assert result["malignant_vs_rest"]["image_auc_mean"] == pytest.approx(np.mean(expected))
    assert result["malignant_vs_rest"]["image_auc_mean"] != pytest.approx(roc_auc_score(malignant, pooled[:, 0]))
    assert result["abnormal_vs_normal"]["image_auc_per_fold"][2] == pytest.approx(
        roc_auc_score(abnormal[folds == 2], pooled[folds == 2, 1])
    )
