"""The breast region of a mammogram: inversion check, breast mask, chest-wall side, pectoral
muscle.

Everything here works on a display image (float in [0, 1], bright = dense, see
``display.display_image``) at a small working size (``SEGMENTATION_ROWS`` rows), so it costs a
few milliseconds whatever the detector size; masks are returned at that size with the scale to
the input.

- ``background_is_bright``: an image exported without its MONOCHROME1 inversion (white air,
  dark tissue), told from the border and the histogram.
- ``breast_mask``: the largest tissue component that touches the chest-wall edge, after a
  threshold between the background and the tissue, an opening that detaches film labels,
  markers and wedge artefacts that touch the breast, and hole filling. Film labels, markers,
  rulers and scanner edges are other components, so they are outside the mask.
- ``pectoral_mask``: on an image with the chest wall on the left, the bright triangle at the
  top left (MLO views): a straight line fitted (least squares, twice, outliers dropped) to the
  row-wise boundary where the bright muscle ends, accepted only when its shape, size and
  contrast are those of a pectoral muscle. CC views normally have none; the check decides.

Only numpy, scipy.ndimage and Pillow are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

SEGMENTATION_ROWS = 256


@dataclass(frozen=True)
class BreastRegion:
    """The breast of one image at the segmentation size (``mask.shape``), original orientation."""

    mask: np.ndarray  # bool: the breast (skin line inwards), labels and background excluded
    pectoral: np.ndarray  # bool: pectoral muscle (subset of ``mask``), empty when none was found
    chest_wall_right: bool  # the chest wall is at the image's right edge
    scale: float  # segmentation rows / input rows
    threshold: float  # tissue threshold used, in display units

    @property
    def found(self) -> bool:
        return bool(self.mask.any())

    def bounding_box(self) -> tuple[int, int, int, int]:
        """(row0, column0, row1, column1) of the mask at the segmentation size, end exclusive."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        columns = np.flatnonzero(self.mask.any(axis=0))
        if not rows.size:
            return 0, 0, self.mask.shape[0], self.mask.shape[1]
        return int(rows[0]), int(columns[0]), int(rows[-1]) + 1, int(columns[-1]) + 1


def shrink(image: np.ndarray, rows: int) -> np.ndarray:
    """Area-averaged copy with ``rows`` rows (aspect kept); the image itself when not larger."""
    if image.shape[0] <= rows:
        return np.asarray(image, dtype=np.float32)
    columns = max(1, round(image.shape[1] * rows / image.shape[0]))
    source = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    return np.asarray(source.resize((columns, rows), Image.Resampling.BOX), dtype=np.float32)


def _border(image: np.ndarray, width: int) -> np.ndarray:
    return np.concatenate(
        [image[:width].ravel(), image[-width:].ravel(), image[:, :width].ravel(), image[:, -width:].ravel()]
    )


def background_is_bright(image: np.ndarray) -> bool:
    """Whether air is white and tissue dark (an inverted export of a MONOCHROME1 image).

    Air fills much of a mammogram's border and sits at one end of the range. The image is
    called inverted when its border holds more near-white than near-black pixels and near-white
    pixels are a real share of the border (a bright film label alone is not enough)."""
    small = shrink(image, 128)
    border = _border(small, max(2, small.shape[0] // 32))
    low, high = np.percentile(small, [1, 99])
    if high - low < 1e-3:
        return False
    normalised = (border - low) / (high - low)
    bright = float((normalised > 0.9).mean())
    dark = float((normalised < 0.1).mean())
    return bright > 0.2 and bright > 2 * dark


def _otsu(values: np.ndarray) -> float:
    histogram, edges = np.histogram(values, bins=128, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(histogram)
    total = weight[-1]
    mean = np.cumsum(histogram * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight / total - mean) ** 2 / (weight * (total - weight))
    between = np.nan_to_num(between)
    return float(centres[int(np.argmax(between))])


def _tissue_threshold(small: np.ndarray) -> float:
    """Just above the air: the air level is the histogram's mode below the Otsu threshold of
    air against tissue, its spread the median deviation around it; the threshold sits four
    spreads (and at least a tenth of the way to the Otsu threshold) above it, so the faint fatty
    tissue at the skin line stays inside."""
    otsu = _otsu(small.ravel())
    below = small[small < otsu]
    if not below.size:
        return otsu / 2
    histogram, edges = np.histogram(below, bins=64, range=(0.0, max(otsu, 1e-3)))
    mode = float((edges[np.argmax(histogram)] + edges[np.argmax(histogram) + 1]) / 2)
    near = below[np.abs(below - mode) < 0.1]
    spread = float(np.median(np.abs(near - mode))) if near.size else 0.0
    return mode + max(4 * spread + 0.02, 0.1 * (otsu - mode))


def _chest_wall_right(mask: np.ndarray) -> bool:
    """The edge the breast leans on: more mask along the right column band than the left."""
    band = max(2, mask.shape[1] // 20)
    left = float(mask[:, :band].sum())
    right = float(mask[:, -band:].sum())
    if left == right:
        half = mask.shape[1] // 2
        return float(mask[:, half:].sum()) > float(mask[:, :half].sum())
    return right > left


def _largest_component(mask: np.ndarray, prefer_edge_columns: tuple[int, ...] = ()) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1).astype(np.float64)
    sizes[0] = 0
    if prefer_edge_columns:
        touching = np.zeros(count + 1, dtype=bool)
        for column in prefer_edge_columns:
            touching[np.unique(labels[:, column])] = True
        touching[0] = False
        # a component on the chest-wall edge wins over a bigger one that is not (a detached label)
        sizes = np.where(touching, sizes * 4, sizes)
    return np.asarray(labels == int(np.argmax(sizes)))


def breast_mask(image: np.ndarray, *, chest_wall_right: bool | None = None) -> BreastRegion:
    """Segment the breast of a display image (any size; bright = dense, not inverted).

    ``chest_wall_right`` from the headers, when they say; otherwise it is decided from the mask.
    The pectoral muscle is not looked for here (see ``pectoral_mask``): ``pectoral`` is empty."""
    small = shrink(image, SEGMENTATION_ROWS)
    scale = small.shape[0] / image.shape[0]
    smooth = ndimage.uniform_filter(small, size=3)
    threshold = _tissue_threshold(smooth)
    raw = smooth > threshold
    # Scanner and film edges: a thin frame is cleared so that an edge strip cannot join the breast.
    frame = max(1, small.shape[0] // 128)
    raw[:frame] = raw[-frame:] = False
    raw[:, :frame] = raw[:, -frame:] = False
    if chest_wall_right is None:
        chest_wall_right = _chest_wall_right(_largest_component(raw))
    # the chest-wall columns belong to the breast; give them back after the frame was cleared
    edge = small.shape[1] - 1 if chest_wall_right else 0
    wall = slice(small.shape[1] - frame, None) if chest_wall_right else slice(0, frame)
    inner = small.shape[1] - 1 - frame if chest_wall_right else frame
    raw[frame:-frame, wall] = raw[frame:-frame, inner : inner + 1]
    radius = max(1, small.shape[0] // 64)
    structure = ndimage.generate_binary_structure(2, 1)
    opened = ndimage.binary_opening(raw, structure=structure, iterations=radius)
    mask = _largest_component(opened, prefer_edge_columns=(edge,))
    # give back what the opening took from the breast's own outline (not the detached labels)
    mask = ndimage.binary_dilation(mask, structure=structure, iterations=radius) & raw
    mask = _largest_component(mask, prefer_edge_columns=(edge,))
    # holes open only to the chest-wall edge are holes too (dark fat against the wall)
    closed = np.pad(mask, ((0, 0), (0, 1)) if chest_wall_right else ((0, 0), (1, 0)), constant_values=True)
    filled = ndimage.binary_fill_holes(closed)
    mask = filled[:, :-1] if chest_wall_right else filled[:, 1:]
    if mask.sum() < 0.01 * mask.size:
        mask = np.zeros_like(mask)
    return BreastRegion(
        np.asarray(mask, dtype=bool), np.zeros_like(mask, dtype=bool), bool(chest_wall_right), scale,
        threshold,
    )


def _triangle_from_component(
    component: np.ndarray, top: int, chest_wall: int
) -> tuple[float, float] | None:
    """(slope, intercept) of the line columns = slope * row + intercept (relative to the chest
    wall) through the right boundary of a region hanging from the top of the chest wall."""
    rows = np.flatnonzero(component.any(axis=1))
    if rows.size < 6:
        return None
    extent = component.shape[1] - 1 - np.argmax(component[rows, ::-1], axis=1) - chest_wall
    slope, intercept = np.polyfit(rows.astype(np.float64), extent.astype(np.float64), 1)
    residual = np.abs(extent - (slope * rows + intercept))
    keep = residual <= max(2.0, float(np.percentile(residual, 75)))
    if keep.sum() < 6:
        return None
    slope, intercept = np.polyfit(rows[keep].astype(np.float64), extent[keep].astype(np.float64), 1)
    return float(slope), float(intercept)


def pectoral_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The pectoral muscle of a breast with its chest wall on the LEFT, or an empty mask.

    ``image`` and ``mask`` are at the segmentation size; columns are counted from the breast's
    chest-wall edge (film and detector margins vary). For a series of brightness thresholds the
    bright region connected to the top of the chest wall is taken and a straight line fitted to
    its right boundary; the threshold whose region best matches its own triangle wins. The
    triangle is accepted only when it runs down towards the chest wall, starts on the top of
    the breast, covers 2-40 % of it, matches its region (IoU >= 0.6) and is clearly brighter
    than the tissue just beyond its edge. Otherwise nothing is masked."""
    empty = np.zeros_like(mask, dtype=bool)
    rows_with_breast = np.flatnonzero(mask.any(axis=1))
    if rows_with_breast.size < 16:
        return empty
    top, bottom = int(rows_with_breast[0]), int(rows_with_breast[-1])
    height = bottom - top + 1
    has_row = mask.any(axis=1)
    first = np.where(has_row, np.argmax(mask, axis=1), mask.shape[1])
    chest_wall = int(np.median(first[top : top + height // 2]))
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    width = int((last - chest_wall)[has_row].max()) + 1
    if width < 16 or first[top : top + max(2, height // 8)].min() > chest_wall + max(2, width // 10):
        return empty  # the breast does not reach the top of the chest-wall edge: no muscle there
    smooth = ndimage.gaussian_filter(image.astype(np.float32), 1.5)
    region = np.zeros_like(mask, dtype=bool)
    region[top : top + int(0.75 * height), chest_wall : chest_wall + int(0.75 * width)] = True
    region &= mask
    values = smooth[region]
    if values.size < 64:
        return empty
    row_index, column_index = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    seed_rows = slice(top, top + max(3, height // 20))
    seed_columns = slice(chest_wall, chest_wall + max(3, width // 20))
    best: tuple[float, np.ndarray] | None = None
    for quantile in np.arange(0.45, 0.96, 0.05):
        bright = region & (smooth >= np.quantile(values, quantile))
        labels, _count = ndimage.label(bright)
        seeds = np.unique(labels[seed_rows, seed_columns])
        seeds = seeds[seeds > 0]
        if not seeds.size:
            continue
        component = np.isin(labels, seeds)
        fit = _triangle_from_component(component, top, chest_wall)
        if fit is None:
            continue
        slope, intercept = fit
        top_column = slope * top + intercept
        if slope >= -0.15 or not (0.08 * width <= top_column <= 0.9 * width):
            continue
        bottom_row = -intercept / slope
        if not (top + 0.15 * height <= bottom_row <= top + 1.1 * height):
            continue
        triangle = (column_index - chest_wall < slope * row_index + intercept) & mask
        share = float(triangle.sum()) / float(mask.sum())
        if not 0.02 <= share <= 0.4:
            continue
        iou = float((triangle & component).sum()) / float((triangle | component).sum())
        if iou >= 0.6 and (best is None or iou > best[0]):
            edge = slope * row_index + intercept + chest_wall
            beyond = (column_index >= edge) & (column_index < edge + 0.15 * width) & mask
            beyond &= row_index < bottom_row
            if beyond.any() and float(np.median(smooth[triangle])) >= float(np.median(smooth[beyond])) + 0.03:
                best = (iou, triangle)
    return np.asarray(best[1], dtype=bool) if best is not None else empty


def segment_breast(
    image: np.ndarray, *, chest_wall_right: bool | None = None, find_pectoral: bool = True
) -> BreastRegion:
    """``breast_mask`` plus, when ``find_pectoral``, the pectoral muscle (looked for with the
    chest wall turned to the left, reported in the image's own orientation)."""
    region = breast_mask(image, chest_wall_right=chest_wall_right)
    if not find_pectoral or not region.found:
        return region
    small = shrink(image, SEGMENTATION_ROWS)
    flip = region.chest_wall_right
    oriented_image = small[:, ::-1] if flip else small
    oriented_mask = region.mask[:, ::-1] if flip else region.mask
    pectoral = pectoral_mask(oriented_image, oriented_mask)
    if flip:
        pectoral = pectoral[:, ::-1]
    return BreastRegion(region.mask, np.ascontiguousarray(pectoral), flip, region.scale, region.threshold)


@dataclass(frozen=True)
class BreastLandmarks:
    """Where the nipple is and how deep the breast is, on an image with the chest wall on the
    left (the model grid), in that image's pixels: ``nipple`` is (column, row) in the SCOORD
    convention (pixel centres at +0.5), ``depth`` the distance from the nipple to the chest
    wall (the breast's leftmost column)."""

    nipple: tuple[float, float]
    depth: float


def breast_landmarks(mask: np.ndarray) -> BreastLandmarks | None:
    """The nipple as the breast's most anterior point: the rows where the mask reaches (within
    one pixel) its rightmost column, their middle row. On a CC view that is the nipple; on an
    MLO view the most anterior point of the breast, where the nipple lies in profile on a
    well-positioned view. Without nipple detection this is an approximation, good enough to
    compare a lesion's distance from the nipple between a breast's CC and MLO views (the rule
    of ``mammogate.inference.correspondence``). None for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        return None
    front = int(columns[-1])
    rows = np.flatnonzero(mask[:, max(front - 1, 0) : front + 1].any(axis=1))
    row = float(np.median(rows))
    return BreastLandmarks(nipple=(front + 0.5, row + 0.5), depth=float(front - columns[0] + 1))
