"""The one preprocessing path from a display image to the model grid, shared by serving
(DICOM) and training (DICOM, PNG, JPEG): inversion check, breast segmentation, chest wall to the
left, crop to the breast, scale to the grid, intensity normalised within the breast.

The grid holds only the breast: film labels, markers, background and edge artefacts are set to
0, so the model cannot see them and no finding can lie outside the breast. The pectoral muscle
stays in the picture (it is anatomy the model should know), but ``scoring_mask`` leaves it out
of the image score and the findings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom import Dataset

from mammogate.imaging.breast import background_is_bright, segment_breast
from mammogate.imaging.display import display_image, reduction_factor
from mammogate.imaging.errors import PixelDecodeError, UnsupportedImageError
from mammogate.imaging.geometry import GridTransform, chest_wall_from_headers, resize, to_model_grid
from mammogate.imaging.views import view_info

# Bumped whenever the output of ``prepare`` changes, so training caches are rebuilt.
PREPROCESSING_VERSION = 2
MINIMUM_SIDE = 64  # pixels: anything smaller is not a mammogram
CROP_MARGIN = 0.02  # of the breast's size, kept around its bounding box
INTENSITY_PERCENTILES = (1.0, 99.5)  # within the breast, mapped to 0 and 1


@dataclass(frozen=True)
class PreparedImage:
    """One image on the model grid, and how to get back to the original."""

    grid: np.ndarray  # float32 (grid rows, grid columns): chest wall left, breast only, [0, 1]
    breast: np.ndarray  # bool, grid: the breast
    pectoral: np.ndarray  # bool, grid: the pectoral muscle (subset of ``breast``)
    transform: GridTransform
    display: np.ndarray  # float32 display image, original orientation (maybe block-reduced)
    inverted: bool  # the background was bright and the image was inverted

    @property
    def scoring_mask(self) -> np.ndarray:
        """Where scores and findings may come from: the breast without the pectoral muscle."""
        return self.breast & ~self.pectoral


def working_rows(grid_rows: int) -> int:
    """Rows the display image is reduced to before segmentation (twice the grid's: the breast
    is cropped from it, and a crop of half the image still fills the grid)."""
    return 2 * grid_rows


def _normalise_intensity(grid: np.ndarray, breast: np.ndarray) -> np.ndarray:
    if not breast.any():
        return np.zeros_like(grid)
    low, high = np.percentile(grid[breast], INTENSITY_PERCENTILES)
    span = float(high - low)
    scaled = (grid - low) / span if span > 1e-6 else grid - low
    return (np.clip(scaled, 0.0, 1.0) * breast).astype(np.float32)


def prepare(
    display: np.ndarray,
    grid_rows: int,
    grid_columns: int,
    *,
    original_shape: tuple[int, int] | None = None,
    reduction: float | None = None,
    chest_wall_right: bool | None = None,
    find_pectoral: bool = True,
) -> PreparedImage:
    """A display image (float [0, 1], bright = dense, original orientation; maybe reduced from
    an original of ``original_shape`` by ``reduction``) → the model grid.

    ``chest_wall_right`` from the headers when they say (else from the breast mask);
    ``find_pectoral`` False for views without a pectoral muscle (CC). Raises
    ``UnsupportedImageError`` when the image is too small or no breast is found in it."""
    rows, columns = original_shape or display.shape
    if min(rows, columns) < MINIMUM_SIDE or min(display.shape) < MINIMUM_SIDE // 4:
        raise UnsupportedImageError(
            f"image of {rows}x{columns} pixels is too small to be a mammogram (minimum {MINIMUM_SIDE})"
        )
    display = np.asarray(display, dtype=np.float32)
    inverted = background_is_bright(display)
    if inverted:
        display = 1.0 - display
    region = segment_breast(display, chest_wall_right=chest_wall_right, find_pectoral=find_pectoral)
    if not region.found:
        raise UnsupportedImageError("no breast found in the image (no tissue above the background)")
    flipped = region.chest_wall_right
    oriented = np.ascontiguousarray(display[:, ::-1]) if flipped else display
    mask = region.mask[:, ::-1] if flipped else region.mask
    pectoral = region.pectoral[:, ::-1] if flipped else region.pectoral
    # bounding box at the segmentation size, with a margin, then in display pixels
    seg_rows, seg_columns = mask.shape
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    margin_y = max(1, round(CROP_MARGIN * (ys[-1] - ys[0] + 1)))
    margin_x = max(1, round(CROP_MARGIN * (xs[-1] - xs[0] + 1)))
    box = (
        max(0, int(ys[0]) - margin_y), max(0, int(xs[0]) - margin_x),
        min(seg_rows, int(ys[-1]) + 1 + margin_y), min(seg_columns, int(xs[-1]) + 1 + margin_x),
    )
    to_display_y = display.shape[0] / seg_rows
    to_display_x = display.shape[1] / seg_columns
    crop = (
        int(np.floor(box[0] * to_display_y)), int(np.floor(box[1] * to_display_x)),
        min(display.shape[0], int(np.ceil(box[2] * to_display_y))),
        min(display.shape[1], int(np.ceil(box[3] * to_display_x))),
    )
    grid, transform = to_model_grid(
        oriented, grid_rows, grid_columns, flipped=flipped, crop=crop,
        original_shape=(rows, columns), reduction=reduction,
    )
    breast = _mask_to_grid(mask[box[0] : box[2], box[1] : box[3]], transform)
    pectoral_grid = _mask_to_grid(pectoral[box[0] : box[2], box[1] : box[3]], transform) & breast
    grid = _normalise_intensity(grid, breast)
    return PreparedImage(grid, breast, pectoral_grid, transform, display, inverted)


def _mask_to_grid(mask: np.ndarray, transform: GridTransform) -> np.ndarray:
    out = np.zeros((transform.grid_rows, transform.grid_columns), dtype=bool)
    if mask.size:
        scaled = resize(mask.astype(np.float32), transform.content_rows, transform.content_columns)
        out[: transform.content_rows, : transform.content_columns] = scaled >= 0.5
    return out


def prepare_dataset(ds: Dataset, grid_rows: int, grid_columns: int) -> PreparedImage:
    """A DICOM image → the model grid: decoded and reduced by whole blocks before the LUTs
    (``display_image(max_rows=...)``), chest wall from PatientOrientation when it says,
    pectoral muscle looked for unless the view is CC. Raises ``ImagingError``."""
    display = display_image(ds, max_rows=working_rows(grid_rows))  # decodes: PixelDecodeError first
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise PixelDecodeError("the dataset has no usable Rows and Columns") from exc
    chest_wall_right = chest_wall_from_headers(ds)
    view = view_info(ds).view
    return prepare(
        display, grid_rows, grid_columns, original_shape=(rows, columns),
        reduction=reduction_factor(rows, working_rows(grid_rows)),
        chest_wall_right=chest_wall_right, find_pectoral=view != "CC",
    )


def picture_display(pixels: np.ndarray) -> np.ndarray:
    """An 8- or 16-bit grayscale picture (PNG, JPEG) → a display image in [0, 1]. A picture is
    already a rendering, so no LUT applies; its own bit depth is the range."""
    if pixels.ndim == 3:
        pixels = pixels[..., :3].mean(axis=2)
    top = 65535.0 if pixels.dtype == np.uint16 or pixels.max() > 255 else 255.0
    return (np.asarray(pixels, dtype=np.float32) / top).clip(0.0, 1.0)


def prepare_picture(
    pixels: np.ndarray, grid_rows: int, grid_columns: int, *, view: str | None = None
) -> PreparedImage:
    """A PNG/JPEG picture's pixels → the model grid, through the same ``prepare`` as DICOM."""
    display = picture_display(pixels)
    rows, columns = display.shape
    factor = reduction_factor(rows, working_rows(grid_rows))
    if factor > 1:
        from mammogate.imaging.display import block_mean

        display = block_mean(display, factor)
    return prepare(
        display, grid_rows, grid_columns, original_shape=(rows, columns), reduction=factor,
        find_pectoral=view != "CC",
    )
