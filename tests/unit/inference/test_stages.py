from __future__ import annotations

import numpy as np
import pytest

from mammogate.imaging import normalise_laterality, to_model_grid
from mammogate.inference import Analyzer, find_findings, predict, preprocess
from mammogate.training.synthetic import make_study


def test_preprocess_puts_the_chest_wall_left_on_the_model_grid() -> None:
    study = make_study(seed=12, lesion=False, rows=512, columns=416)
    right_cc, left_cc = study.datasets[0], study.datasets[1]
    for ds, flipped in ((right_cc, True), (left_cc, False)):
        prepared = preprocess(ds, 160, 128)
        assert prepared.grid.shape == (160, 128) and prepared.grid.dtype == np.float32
        assert prepared.transform.flipped is flipped
        assert prepared.grid[:, :20].mean() > prepared.grid[:, -20:].mean()
        assert prepared.display.shape == (512, 416)


def test_predict_returns_a_heatmap_and_score_per_image(analyzer: Analyzer) -> None:
    grids = [np.zeros((160, 128), np.float32), np.full((160, 128), 0.3, np.float32)]
    heatmaps, scores = predict(analyzer.model, grids)
    assert heatmaps.shape == (2, 40, 32) and scores.shape == (2,)
    assert np.all((heatmaps >= 0) & (heatmaps <= 1))
    assert scores == pytest.approx(heatmaps.reshape(2, -1).max(axis=1), abs=1e-6)


def test_findings_are_heatmap_peaks_above_threshold_in_original_pixels() -> None:
    image = np.zeros((1000, 800), np.float32)
    image[:, 400:] = 0.5  # chest wall on the right: flipped onto the grid
    normalised, flipped = normalise_laterality(image)
    _, transform = to_model_grid(normalised, 160, 128, flipped=flipped)
    heatmap = np.zeros((40, 32), np.float32)
    heatmap[10, 4] = 0.9  # cell centre (4.5, 10.5) x stride 4 = grid (18, 42)
    heatmap[30, 20] = 0.2  # below the threshold
    peaks = find_findings(heatmap, transform, threshold=0.5)
    assert len(peaks) == 1
    peak = peaks[0]
    assert peak.probability == pytest.approx(0.9)
    assert peak.center == pytest.approx((800 - 18 / 0.16, 42 / 0.16), abs=0.01)
    assert peak.outline[0] == peak.outline[-1] and len(peak.outline) == 9
    xs = [p[0] for p in peak.outline]
    assert min(xs) < peak.center[0] < max(xs)


def test_no_findings_below_the_operating_point() -> None:
    _, transform = to_model_grid(np.ones((100, 80), np.float32), 160, 128, flipped=False)
    assert find_findings(np.full((40, 32), 0.1, np.float32), transform, threshold=0.5) == []
