from __future__ import annotations

import numpy as np
import pytest
from pydicom import Dataset

from mammogate.imaging import (
    UnsupportedImageError,
    chest_wall_on_right,
    normalise_laterality,
    to_model_grid,
)
from mammogate.imaging.geometry import rotation_reason


def breast_image(rows: int, columns: int, *, chest_wall_right: bool) -> np.ndarray:
    image = np.zeros((rows, columns), dtype=np.float32)
    image[:, : columns // 2] = 0.6
    return image[:, ::-1].copy() if chest_wall_right else image


@pytest.mark.parametrize("chest_wall_right", [False, True])
def test_points_round_trip_between_grid_and_original(chest_wall_right: bool) -> None:
    image = breast_image(1024, 832, chest_wall_right=chest_wall_right)
    normalised, flipped = normalise_laterality(image)
    assert flipped is chest_wall_right
    _, transform = to_model_grid(normalised, 160, 128, flipped=flipped)
    for point in [(0.0, 0.0), (100.5, 700.25), (831.0, 1023.5), (416.0, 512.0)]:
        back = transform.to_original(*transform.to_grid(*point))
        assert back == pytest.approx(point, abs=1e-6)


def test_flipped_grid_point_maps_to_the_mirrored_column() -> None:
    image = breast_image(1000, 800, chest_wall_right=True)
    normalised, flipped = normalise_laterality(image)
    grid, transform = to_model_grid(normalised, 160, 128, flipped=flipped)
    assert transform.content_rows == 160 and transform.content_columns == 128
    # the chest wall (grid column 0) is the original's right edge
    assert transform.to_original(0.0, 0.0) == pytest.approx((800.0, 0.0))
    assert transform.to_original(12.8, 16.0) == pytest.approx((800 - 80.0, 100.0))
    assert grid[:, :32].mean() > 0.5 and grid[:, -32:].mean() == 0


def test_padding_is_recorded_and_heatmap_returns_to_original_orientation() -> None:
    image = breast_image(400, 500, chest_wall_right=True)  # wider than the grid's aspect
    normalised, flipped = normalise_laterality(image)
    grid, transform = to_model_grid(normalised, 160, 128, flipped=flipped)
    assert transform.content_columns == 128 and transform.content_rows == round(400 * 128 / 500)
    assert grid[transform.content_rows :].max() == 0
    heatmap = np.zeros((40, 32), dtype=np.float32)
    heatmap[5, 2] = 1.0  # near the chest wall on the grid
    back = transform.heatmap_to_original(heatmap)
    assert back.shape == (round(40 * transform.content_rows / 160), 32)
    assert back[5, 32 - 1 - 2] == 1.0  # the chest wall is on the right again


def test_patient_orientation_decides_the_chest_wall_side() -> None:
    image = breast_image(100, 80, chest_wall_right=False)
    ds = Dataset()
    ds.PatientOrientation = ["P", "L"]
    assert chest_wall_on_right(ds, image) is True  # headers win over the tissue heuristic
    ds.PatientOrientation = ["A", "FR"]
    assert chest_wall_on_right(ds, image) is False
    assert chest_wall_on_right(None, image[:, ::-1]) is True


@pytest.mark.parametrize(("orientation", "rotated"), [
    (["R", "P"], True), (["L", "A"], True), (["F", "R"], True), (["P", "L"], False),
    (["A", "FR"], False), (["P", "FL"], False), ([], False),
])
def test_rotated_images_are_refused_rather_than_guessed(orientation: list[str], rotated: bool) -> None:
    image = breast_image(100, 80, chest_wall_right=False)
    ds = Dataset()
    ds.PatientOrientation = orientation
    text = "\\".join(orientation)
    expected = f"rotated: PatientOrientation {text} — chest wall not left or right"
    assert rotation_reason(ds) == (expected if rotated else None)
    if rotated:
        with pytest.raises(UnsupportedImageError, match="rotated"):
            chest_wall_on_right(ds, image)
        with pytest.raises(UnsupportedImageError, match="rotated"):
            normalise_laterality(image, ds)
    else:
        assert isinstance(chest_wall_on_right(ds, image), bool)


@pytest.mark.parametrize("chest_wall_right", [False, True])
def test_a_point_maps_back_exactly_through_a_block_reduction_and_a_crop(chest_wall_right: bool) -> None:
    from mammogate.imaging.display import block_mean

    rows, columns, factor = 4000, 3202, 3  # 3202 is not a multiple of 3: a column is dropped
    original = np.zeros((rows, columns), np.float32)
    original[1000:3000, :1500] = 0.5
    original[2100:2106, 700:706] = 1.0  # a dot centred at (703, 2103)
    if chest_wall_right:
        original = original[:, ::-1].copy()
    dot = (columns - 703.0, 2103.0) if chest_wall_right else (703.0, 2103.0)
    reduced = block_mean(original, factor)
    normalised, flipped = normalise_laterality(reduced)
    crop = (300, 0, 1050, 520)
    grid, transform = to_model_grid(
        normalised, 640, 384, flipped=flipped, crop=crop, original_shape=(rows, columns), reduction=factor
    )
    back = transform.to_original(*transform.to_grid(*dot))
    assert back == pytest.approx(dot, abs=1e-6)
    y, x = np.unravel_index(np.argmax(grid), grid.shape)
    found = transform.to_original(x + 0.5, y + 0.5)
    assert abs(found[0] - dot[0]) <= 1 / transform.scale_x and abs(found[1] - dot[1]) <= 1 / transform.scale_y
