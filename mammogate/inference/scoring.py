"""From the network's logit map to calibrated probabilities: the one definition of an image's
score, shared by training (``mammogate.training.model.masked_lse`` is its Keras twin), the
evaluator and serving.

- Cells count only where the breast is (pectoral muscle, background, labels excluded): the
  scoring mask, reduced to the heatmap's cells.
- An image's logit is the masked log-sum-exp of its cells, ``max + log(mean exp(r (x - max))) / r``:
  near the maximum when one region stands out, smoother than a bare maximum to train.
- Probabilities are ``sigmoid(a * logit + b)`` (Platt scaling, ``a`` and ``b`` fitted on
  out-of-fold predictions at training time and stored in model.json).
- The probability map for findings shifts every cell by the same amount (the image logit minus
  the maximum cell logit) before calibration, so its maximum is exactly the image's
  probability: an image at or above the operating point always has a finding at its maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_SHARPNESS = 6.0


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of a pooled logit: p = sigmoid(slope * logit + intercept)."""

    slope: float = 1.0
    intercept: float = 0.0

    def probability(self, logit: np.ndarray | float) -> np.ndarray:
        z = self.slope * np.asarray(logit, dtype=np.float64) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def cell_mask(mask: np.ndarray, heatmap_rows: int, heatmap_columns: int) -> np.ndarray:
    """A grid mask (bool, rows x columns) → the heatmap's cells that are at least half inside."""
    rows, columns = mask.shape
    factor_y, factor_x = rows // heatmap_rows, columns // heatmap_columns
    blocks = mask[: heatmap_rows * factor_y, : heatmap_columns * factor_x].reshape(
        heatmap_rows, factor_y, heatmap_columns, factor_x
    )
    cells = blocks.mean(axis=(1, 3)) >= 0.5
    if not cells.any():  # a sliver of breast: every cell it touches
        cells = blocks.any(axis=(1, 3))
    return np.asarray(cells)


def pooled_logits(logits: np.ndarray, cells: np.ndarray, sharpness: float = DEFAULT_SHARPNESS) -> np.ndarray:
    """Per channel, the masked log-sum-exp of ``logits`` (h, w, C) over ``cells`` (h, w)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 2:
        logits = logits[..., None]
    if not cells.any():
        cells = np.ones(cells.shape, dtype=bool)
    values = logits[cells]  # (n, C)
    top = values.max(axis=0)
    return top + np.log(np.mean(np.exp(sharpness * (values - top)), axis=0)) / sharpness


def probability_map(
    logits: np.ndarray, cells: np.ndarray, calibration: Calibration, sharpness: float = DEFAULT_SHARPNESS
) -> tuple[float, np.ndarray]:
    """(image probability, per-cell probability map) for one channel's logits (h, w): the map is
    0 outside ``cells`` and its maximum equals the image probability."""
    logits = np.asarray(logits, dtype=np.float64)
    pooled = float(pooled_logits(logits, cells, sharpness)[0])
    if not cells.any():
        cells = np.ones(cells.shape, dtype=bool)
    shift = pooled - float(logits[cells].max())
    probabilities = np.where(cells, calibration.probability(logits + shift), 0.0)
    probability = float(calibration.probability(pooled))
    # the maximum cell is exactly the image probability (no rounding between the two)
    top = np.unravel_index(np.argmax(np.where(cells, logits, -np.inf)), logits.shape)
    probabilities[top] = probability
    return probability, probabilities.astype(np.float64)


@dataclass(frozen=True)
class Peak:
    """A local maximum of a probability map: cell-centre coordinates refined to the weighted
    centroid of the cells around it that reach half its value, in cells."""

    value: float
    column: float
    row: float
    radius: float  # cells: the radius of a disc with the area of those cells


def local_maxima(values: np.ndarray) -> list[tuple[int, int]]:
    """Cells not below any of their 8 neighbours (plateaus included), highest first, ties in
    raster order: the first is always the maximum."""
    padded = np.pad(values, 1, mode="constant", constant_values=-np.inf)
    rows, columns = values.shape
    neighbours = np.stack(
        [padded[dy : dy + rows, dx : dx + columns] for dy in range(3) for dx in range(3)]
    )
    is_peak = values >= neighbours.max(axis=0)
    ys, xs = np.nonzero(is_peak)
    order = np.lexsort((xs, ys, -values[ys, xs]))
    return [(int(ys[i]), int(xs[i])) for i in order]


def find_peaks(
    values: np.ndarray, *, threshold: float = -np.inf, max_peaks: int = 3, window: int = 4,
    cells: np.ndarray | None = None,
) -> list[Peak]:
    """Up to ``max_peaks`` local maxima at or above ``threshold``, at least ``window`` cells
    apart (Chebyshev), highest first; the first is the map's maximum. With ``cells``, a refined
    centre that falls outside them (a concave breast edge) goes back to the peak cell's centre."""
    rows, columns = values.shape
    peaks: list[Peak] = []
    taken: list[tuple[int, int]] = []
    for y, x in local_maxima(values):
        value = float(values[y, x])
        if value < threshold or len(peaks) >= max_peaks or value <= 0:
            break
        if any(abs(y - ty) <= window and abs(x - tx) <= window for ty, tx in taken):
            continue
        taken.append((y, x))
        y0, y1 = max(0, y - window), min(rows, y + window + 1)
        x0, x1 = max(0, x - window), min(columns, x + window + 1)
        patch = values[y0:y1, x0:x1]
        near = patch >= 0.5 * value
        weights = np.where(near, patch, 0.0)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        cy = float((weights * (yy + 0.5)).sum() / weights.sum())
        cx = float((weights * (xx + 0.5)).sum() / weights.sum())
        if cells is not None and not cells[min(int(cy), rows - 1), min(int(cx), columns - 1)]:
            cy, cx = y + 0.5, x + 0.5
        peaks.append(Peak(value, cx, cy, max(1.0, float(np.sqrt(near.sum() / np.pi)))))
    return peaks
