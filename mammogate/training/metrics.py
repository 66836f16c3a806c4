"""Evaluation metrics, numpy only (the tests check them against scikit-learn on known inputs).

- ``roc_auc``: Mann-Whitney with ties counted one half.
- ``auc_ci``: 95 % interval by bootstrap over patients (images of one woman are resampled
  together, so correlated views do not narrow the interval).
- ``roc_curve``, ``sensitivity_at_specificity``, ``specificity_at_sensitivity``.
- ``froc``: lesion sensitivity against false marks per image.
- ``expected_calibration_error`` and ``calibration_curve``: equal-width bins.
- ``fit_platt``: logistic regression of labels on one logit (Newton's method), the
  calibration stored in the model bundle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve; NaN when one class is missing."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    # average ranks of ties
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_ci(
    labels: ArrayLike, scores: ArrayLike, groups: Sequence[str] | None = None, *,
    n_boot: int = 1000, seed: int = 0,
) -> tuple[float, float]:
    """95 % bootstrap interval of the AUC, resampling ``groups`` (patients) when given."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(groups if groups is not None else np.arange(len(y)).astype(str))
    unique, inverse = np.unique(ids, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(unique))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        picked = rng.integers(0, len(unique), len(unique))
        index = np.concatenate([members[i] for i in picked])
        value = roc_auc(y[index], s[index])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds descending; a point
    per distinct score, starting at (0, 0) with threshold +inf."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.flatnonzero(np.diff(s)) if len(s) > 1 else np.array([], dtype=int)
    last = np.concatenate([distinct, [len(s) - 1]])
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    fpr = np.concatenate([[0.0], fps / n_neg])
    tpr = np.concatenate([[0.0], tps / n_pos])
    thresholds = np.concatenate([[np.inf], s[last]])
    return fpr, tpr, thresholds


def sensitivity_at_specificity(labels: ArrayLike, scores: ArrayLike, specificity: float) -> tuple[float, float]:
    """(sensitivity, threshold) at the lowest threshold whose specificity is at least ``specificity``."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    ok = (1 - fpr) >= specificity - 1e-12
    index = int(np.flatnonzero(ok)[-1])
    return float(tpr[index]), float(thresholds[index])


def specificity_at_sensitivity(labels: ArrayLike, scores: ArrayLike, sensitivity: float) -> tuple[float, float]:
    """(specificity, threshold) at the highest threshold whose sensitivity is at least ``sensitivity``."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    ok = tpr >= sensitivity - 1e-12
    index = int(np.flatnonzero(ok)[0])
    return float(1 - fpr[index]), float(thresholds[index])


def froc(
    marks: Sequence[Sequence[tuple[float, bool, int]]], n_lesions: int,
    thresholds: ArrayLike | None = None,
) -> list[tuple[float, float]]:
    """FROC points (false marks per image, lesion sensitivity), one per threshold.

    ``marks`` has one list per image of (score, is_true_positive, lesion_index) — lesion_index
    numbers lesions over the whole set, -1 for a false mark; a lesion hit by several marks
    counts once, at its best score."""
    all_scores = np.array([m[0] for image in marks for m in image], dtype=np.float64)
    if thresholds is None:
        thresholds = np.unique(all_scores)[::-1] if all_scores.size else np.array([1.0])
    n_images = max(len(marks), 1)
    best: dict[int, float] = {}
    false_scores = []
    for image in marks:
        for score, hit, lesion in image:
            if hit and lesion >= 0:
                best[lesion] = max(best.get(lesion, -np.inf), score)
            else:
                false_scores.append(score)
    hits = np.array(list(best.values()), dtype=np.float64)
    falses = np.array(false_scores, dtype=np.float64)
    points = []
    for t in np.asarray(thresholds, dtype=np.float64):
        sensitivity = float((hits >= t).sum()) / max(n_lesions, 1)
        points.append((float((falses >= t).sum()) / n_images, sensitivity))
    return sorted(points)


def sensitivity_at_false_marks(points: Sequence[tuple[float, float]], false_marks: float) -> float:
    """The best FROC sensitivity with at most ``false_marks`` false marks per image."""
    eligible = [s for f, s in points if f <= false_marks + 1e-12]
    return max(eligible) if eligible else 0.0


def calibration_curve(labels: ArrayLike, probabilities: ArrayLike, bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins of predicted probability: mean prediction, observed rate, count."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    index = np.minimum((p * bins).astype(int), bins - 1)
    curve = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            curve.append({
                "bin": b, "mean_predicted": float(p[inside].mean()), "observed": float(y[inside].mean()),
                "count": int(inside.sum()),
            })
    return curve


def expected_calibration_error(labels: ArrayLike, probabilities: ArrayLike, bins: int = 10) -> float:
    """Sum over equal-width bins of |observed - predicted| weighted by the bin's share."""
    curve = calibration_curve(labels, probabilities, bins)
    total = sum(c["count"] for c in curve)
    if not total:
        return float("nan")
    return float(sum(c["count"] / total * abs(c["observed"] - c["mean_predicted"]) for c in curve))


def fit_platt(logits: ArrayLike, labels: ArrayLike, *, iterations: int = 100) -> tuple[float, float]:
    """(slope, intercept) maximising the likelihood of sigmoid(slope * logit + intercept), with
    Platt's target smoothing ((n+ + 1)/(n+ + 2), 1/(n- + 2)) so separable data stay finite.

    Newton's method on standardised logits with step halving (the likelihood never drops), so
    saturated starting points converge; the slope is kept positive (a model that ranks
    backwards gets a flat, prevalence-only calibration rather than an inverted one)."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(x) == 0 or y.min() == y.max():
        raise ValueError("Platt scaling needs both classes")
    centre, spread = float(x.mean()), float(x.std()) or 1.0
    z = (x - centre) / spread
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    target = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(w: np.ndarray) -> float:
        t = w[0] * z + w[1]
        return float(np.sum(np.logaddexp(0, t) - target * t))

    w = np.array([0.0, float(np.log(target.mean() / (1 - target.mean())))])
    current = loss(w)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(w[0] * z + w[1], -60, 60)))
        gradient = np.array([np.sum((p - target) * z), np.sum(p - target)])
        h = p * (1 - p) + 1e-12
        hessian = np.array([[np.sum(h * z * z), np.sum(h * z)], [np.sum(h * z), np.sum(h)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6 and loss(w - scale * step) > current:
            scale /= 2
        w = w - scale * step
        improved = loss(w)
        if current - improved < 1e-12:
            break
        current = improved
    slope = max(float(w[0]), 1e-6) / spread
    intercept = float(w[1]) - slope * centre if w[0] > 1e-6 else float(w[1])
    return slope, intercept


def binary_summary(
    labels: ArrayLike, scores: ArrayLike, groups: Sequence[str] | None = None, *, n_boot: int = 1000
) -> dict[str, object]:
    """AUC with its patient-bootstrap interval, counts, sensitivity at 90 % specificity and
    specificity at 90 % sensitivity."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    summary: dict[str, object] = {"auc": roc_auc(y, s), "n_pos": int(y.sum()), "n_neg": int((~y).sum())}
    if y.any() and (~y).any():
        summary["auc_ci95"] = list(auc_ci(y, s, groups, n_boot=n_boot))
        summary["sensitivity_at_90_specificity"] = sensitivity_at_specificity(y, s, 0.9)[0]
        summary["specificity_at_90_sensitivity"] = specificity_at_sensitivity(y, s, 0.9)[0]
    else:  # one class only: the same keys, without numbers
        summary["auc_ci95"] = [None, None]
        summary["sensitivity_at_90_specificity"] = None
        summary["specificity_at_90_sensitivity"] = None
    return summary


def fit_logistic(features: np.ndarray, labels: ArrayLike, *, l2: float = 1.0, iterations: int = 50) -> np.ndarray:
    """Weights (with the intercept last) of an L2-regularised logistic regression on
    standardised ``features``, by Newton's method; used for the trivial-statistics baseline."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    design = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(design @ w, -60, 60)))
        gradient = design.T @ (p - y) + penalty * w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def cross_validated_logistic(features: np.ndarray, labels: ArrayLike, folds: np.ndarray) -> np.ndarray:
    """Out-of-fold logits of ``fit_logistic`` (features standardised on each training part)."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    out = np.zeros(len(y))
    for fold in np.unique(folds):
        test, train = folds == fold, folds != fold
        if len(np.unique(y[train])) < 2:
            continue
        mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-9
        w = fit_logistic((x[train] - mean) / std, y[train])
        out[test] = np.hstack([(x[test] - mean) / std, np.ones((int(test.sum()), 1))]) @ w
    return out
