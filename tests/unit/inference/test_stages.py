from __future__ import annotations

import numpy as np
import pytest

from mammogate.imaging import GridTransform, normalise_laterality, to_model_grid
from mammogate.inference import Analyzer, find_findings, predict, preprocess
from mammogate.inference.pipeline import image_score, postprocess
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


def _padded_transform() -> GridTransform:
    # 400 x 200 image → 160 x 80 of the 160 x 128 grid; the heatmap's valid columns are 0..19
    _, transform = to_model_grid(np.ones((400, 200), np.float32), 160, 128, flipped=False)
    assert transform.content_columns == 80
    return transform


def test_maximum_in_the_last_valid_column_is_a_finding() -> None:
    transform = _padded_transform()
    heatmap = np.full((40, 32), 0.1, np.float32)
    heatmap[10, 19] = 0.8  # the last valid column
    heatmap[:, 20:] = 0.95  # what the model happens to output over the padding
    score, peaks = postprocess(heatmap, transform, threshold=0.5)
    assert score == pytest.approx(0.8) and score == float(np.float32(0.8))
    assert len(peaks) == 1
    assert peaks[0].probability == score
    assert peaks[0].center == pytest.approx(transform.to_original(19.5 * 4, 10.5 * 4), abs=0.01)
    # find_findings alone (the review's failing input): the edge cell is a peak
    assert len(find_findings(heatmap, transform, threshold=0.5)) == 1


def _float32_around(threshold: float) -> tuple[np.float32, np.float32]:
    at = np.float32(threshold)
    if float(at) < threshold:
        at = np.nextafter(at, np.float32(1))
    under = np.nextafter(at, np.float32(0))
    assert float(under) < threshold <= float(at)
    return under, at


@pytest.mark.parametrize("where", ["at", "under"])
@pytest.mark.parametrize("threshold", [0.497424, 0.5, 0.123456789])
def test_score_and_findings_agree_at_the_operating_point(where: str, threshold: float) -> None:
    transform = _padded_transform()
    under, at = _float32_around(threshold)
    heatmap = np.full((40, 32), 0.05, np.float32)
    heatmap[25, 19] = at if where == "at" else under  # maximum on the valid region's edge
    heatmap[25, 20] = 0.99  # padding
    score, peaks = postprocess(heatmap, transform, threshold)
    assert score == float(heatmap[25, 19])  # unrounded, the number the findings compare
    assert (score >= threshold) is (where == "at")
    assert bool(peaks) is (score >= threshold)
    if peaks:
        assert peaks[0].probability == score
        cell = transform.to_grid(*peaks[0].center)
        assert (int(cell[0] // 4), int(cell[1] // 4)) == (19, 25)


def test_every_flagged_image_has_a_finding_at_its_maximum(analyzer: Analyzer) -> None:
    study = make_study(seed=9131, lesion=True, rows=512, columns=416)
    prepared = [analyzer.prepare(ds) for ds in study.datasets]
    heatmaps, scores = analyzer.predict_prepared(prepared)
    for heatmap, image, score in zip(heatmaps, prepared, scores, strict=True):
        # the threshold exactly at the image's score: it must be flagged and have a finding
        assert image_score(heatmap, image.transform) == score
        got, peaks = postprocess(heatmap, image.transform, float(score))
        assert got == score and peaks and peaks[0].probability == score
        assert not postprocess(heatmap, image.transform, float(np.nextafter(score, 2.0)))[1]
