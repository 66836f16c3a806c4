"""Training-time augmentation of prepared grids (numpy, Pillow, scipy; no TensorFlow).

Every transform keeps the chest wall on the left and moves the masks and the lesion
coordinates with the image: top-bottom mirror, anisotropic scale (0.85-1.15 each way, which
also covers the unknown aspect of pictures stretched to a square), a small shift, an elastic
warp (a smooth random displacement field) and intensity changes (gamma, contrast, noise)
within the breast only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage


@dataclass(frozen=True)
class AugmentOptions:
    flip: float = 0.5  # probability of a top-bottom mirror
    scale: tuple[float, float] = (0.85, 1.15)
    shift: float = 0.04  # of the grid, each way
    elastic: float = 0.25  # probability of an elastic warp
    elastic_pixels: float = 6.0  # its displacement's standard deviation
    gamma: tuple[float, float] = (0.7, 1.4)
    contrast: tuple[float, float] = (0.85, 1.15)
    noise: float = 0.02


NONE = AugmentOptions(0.0, (1.0, 1.0), 0.0, 0.0, 0.0, (1.0, 1.0), (1.0, 1.0), 0.0)


def _resize(array: np.ndarray, rows: int, columns: int, *, nearest: bool) -> np.ndarray:
    mode = "L" if array.dtype == np.uint8 else "F"
    picture = Image.fromarray(np.ascontiguousarray(array), mode=mode)
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(picture.resize((columns, rows), method))


def _place(array: np.ndarray, rows: int, columns: int, top: int, left: int) -> np.ndarray:
    """``array`` put at (top, left) (negative: cut) on a zero canvas of rows x columns."""
    out = np.zeros((rows, columns), dtype=array.dtype)
    src_top, src_left = max(0, -top), max(0, -left)
    dst_top, dst_left = max(0, top), max(0, left)
    height = min(array.shape[0] - src_top, rows - dst_top)
    width = min(array.shape[1] - src_left, columns - dst_left)
    if height > 0 and width > 0:
        out[dst_top : dst_top + height, dst_left : dst_left + width] = array[
            src_top : src_top + height, src_left : src_left + width
        ]
    return out


def augment(
    image: np.ndarray, mask: np.ndarray, lesions: np.ndarray, rng: np.random.Generator,
    options: AugmentOptions,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random variant: (float32 image in [0, 1], uint8 mask, lesions (k, 4) moved along).

    ``image`` is uint8 or float; lesions are (grid column, grid row, radius, malignant)."""
    rows, columns = image.shape
    picture = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    lesions = np.array(lesions, dtype=np.float32, copy=True).reshape(-1, 4)
    if rng.random() < options.flip:
        picture, mask = picture[::-1], mask[::-1]
        lesions[:, 1] = rows - lesions[:, 1]
    scale_y, scale_x = rng.uniform(*options.scale), rng.uniform(*options.scale)
    shift_y = int(round(rng.uniform(-options.shift, options.shift) * rows))
    shift_x = -int(round(rng.uniform(0, options.shift) * columns))  # left only: stays on the chest wall
    if (scale_y, scale_x, shift_y, shift_x) != (1.0, 1.0, 0, 0):
        new_rows, new_columns = max(8, round(rows * scale_y)), max(8, round(columns * scale_x))
        picture = _place(_resize(picture, new_rows, new_columns, nearest=False), rows, columns, shift_y, shift_x)
        mask = _place(_resize(np.ascontiguousarray(mask), new_rows, new_columns, nearest=True), rows, columns, shift_y, shift_x)
        lesions[:, 0] = lesions[:, 0] * new_columns / columns + shift_x
        lesions[:, 1] = lesions[:, 1] * new_rows / rows + shift_y
        lesions[:, 2] *= np.sqrt(scale_x * scale_y)
    if options.elastic_pixels > 0 and rng.random() < options.elastic:
        picture, mask, lesions = _elastic(picture, mask, lesions, rng, options.elastic_pixels)
    breast = (mask & 1) > 0
    if breast.any():
        gamma = rng.uniform(*options.gamma)
        contrast = rng.uniform(*options.contrast)
        adjusted = np.clip(picture, 0, 1) ** gamma
        adjusted = 0.5 + (adjusted - 0.5) * contrast
        if options.noise > 0:
            adjusted = adjusted + rng.normal(0, rng.uniform(0, options.noise), adjusted.shape).astype(np.float32)
        picture = np.where(breast, np.clip(adjusted, 0, 1), 0.0).astype(np.float32)
    return np.ascontiguousarray(picture, dtype=np.float32), np.ascontiguousarray(mask), lesions


def _elastic(
    picture: np.ndarray, mask: np.ndarray, lesions: np.ndarray, rng: np.random.Generator, sigma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, columns = picture.shape
    coarse = rng.normal(0, sigma, (2, 6, 4)).astype(np.float32)
    dy = _resize(coarse[0], rows, columns, nearest=False)
    dx = _resize(coarse[1], rows, columns, nearest=False)
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    coordinates = np.stack([yy + dy, xx + dx])
    # beyond the edges the edge pixels continue: the breast stays on the chest wall
    warped = ndimage.map_coordinates(picture, coordinates, order=1, mode="nearest")
    warped_mask = ndimage.map_coordinates(mask, coordinates, order=0, mode="nearest")
    moved = lesions.copy()
    for index, (x, y, _radius, _m) in enumerate(lesions):
        # the output pixel p samples the input at p + d(p): a lesion moves by about -d
        row, column = int(np.clip(y, 0, rows - 1)), int(np.clip(x, 0, columns - 1))
        moved[index, 0] = x - dx[row, column]
        moved[index, 1] = y - dy[row, column]
    return warped.astype(np.float32), warped_mask.astype(np.uint8), moved
