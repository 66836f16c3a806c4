from __future__ import annotations

import numpy as np
import pytest

from mammogate.inference.scoring import (
    Calibration,
    cell_mask,
    find_peaks,
    pooled_logits,
    probability_map,
)


def test_pooled_logit_lies_between_the_mean_and_the_maximum_of_the_masked_cells() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (20, 12, 2))
    cells = np.zeros((20, 12), bool)
    cells[2:15, 1:9] = True
    logits[0, 0] = 50.0  # outside the mask: must not count
    pooled = pooled_logits(logits, cells, 6.0)
    inside = logits[cells]
    assert np.all(pooled <= inside.max(axis=0) + 1e-12)
    assert np.all(pooled >= inside.mean(axis=0) - 1e-12)
    # a very sharp pooling is the maximum, a very soft one the log-mean-exp towards the mean
    assert pooled_logits(logits, cells, 1e4) == pytest.approx(inside.max(axis=0), abs=1e-3)


def test_keras_pooling_is_the_numpy_pooling() -> None:
    from mammogate.inference.tf_runtime import tensorflow

    tensorflow()
    from mammogate.training.model import masked_lse

    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, (3, 10, 6, 2)).astype(np.float32)
    masks = rng.random((3, 10, 6)) > 0.4
    masks[2] = False  # an empty mask counts every cell, in both
    keras_values = np.asarray(masked_lse(logits, masks[..., None].astype(np.float32), 6.0))
    for index in range(3):
        expected = pooled_logits(logits[index], masks[index] if masks[index].any() else np.ones((10, 6), bool), 6.0)
        assert keras_values[index] == pytest.approx(expected, abs=1e-4)


def test_probability_map_peaks_at_exactly_the_image_probability_and_is_zero_outside() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(-2, 1, (16, 10))
    cells = np.ones((16, 10), bool)
    cells[:, 7:] = False
    logits[:, 8] = 9.0  # the highest values lie outside the breast
    calibration = Calibration(1.3, -0.4)
    probability, probabilities = probability_map(logits, cells, calibration, 6.0)
    assert probabilities.max() == probability
    assert probability == pytest.approx(float(calibration.probability(pooled_logits(logits, cells, 6.0)[0])))
    assert np.all(probabilities[~cells] == 0)
    top = np.unravel_index(np.argmax(np.where(cells, logits, -np.inf)), logits.shape)
    assert probabilities[top] == probability


def test_cell_mask_keeps_cells_at_least_half_inside() -> None:
    mask = np.zeros((32, 16), bool)
    mask[:, :6] = True  # 6 of 8 columns of the first cell column, none of the second
    mask[:4, 8:12] = True  # a quarter of one cell
    cells = cell_mask(mask, 4, 2)
    assert cells[:, 0].all() and not cells[:, 1].any()
    tiny = np.zeros((32, 16), bool)
    tiny[0, 0] = True
    assert cell_mask(tiny, 4, 2)[0, 0]  # a sliver still gives its cell


def test_peaks_are_apart_highest_first_and_refined_inside_the_mask() -> None:
    values = np.zeros((20, 20))
    values[5, 5], values[6, 6], values[15, 14] = 0.9, 0.8, 0.7
    peaks = find_peaks(values, threshold=0.5, max_peaks=3, window=3)
    assert [round(p.value, 2) for p in peaks] == [0.9, 0.7]
    assert peaks[0].column == pytest.approx((5.5 * 0.9 + 6.5 * 0.8) / 1.7)
    assert find_peaks(values, threshold=0.95) == []
    # a centroid that would fall outside a concave mask goes back to the peak cell
    ring = np.zeros((9, 9))
    cells = np.zeros((9, 9), bool)
    for y, x in [(0, 4), (4, 0), (8, 4), (4, 8)]:
        ring[y, x] = 1.0 if (y, x) == (0, 4) else 0.9
        cells[y, x] = True
    peak = find_peaks(ring, window=8, cells=cells)[0]
    assert cells[int(peak.row), int(peak.column)]


def test_calibration_is_a_logistic_of_the_logit() -> None:
    calibration = Calibration(2.0, -1.0)
    assert calibration.probability(0.5) == pytest.approx(0.5)
    assert calibration.probability(np.array([-100.0, 100.0])) == pytest.approx([0.0, 1.0])
