"""Chest-wall normalisation, resampling to the model grid, and the way back.

Every image is flipped so that the chest wall is on the left, scaled (aspect kept) to fit the
model grid and padded at the right and bottom. ``GridTransform`` records that, and maps points
(SCOORD convention: (column, row), pixel centres at +0.5) and heatmaps back to the original
image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom import Dataset

from mammogate.imaging.errors import UnsupportedImageError


@dataclass(frozen=True)
class GridTransform:
    """How an original image was placed on the model grid.

    The chest wall is turned to the left (``flipped``), a crop box is cut (in original pixels,
    counted in that turned frame: by default the whole image), scaled with its aspect kept to
    ``content_rows`` x ``content_columns`` and put at the grid's top left; the rest is padding.
    """

    rows: int  # original image
    columns: int
    flipped: bool  # mirrored left-right before scaling (chest wall was on the right)
    grid_rows: int
    grid_columns: int
    content_rows: int  # rows of the grid that hold image (the rest is padding)
    content_columns: int
    crop_top: float = 0.0  # crop box in original pixels, in the chest-wall-left frame
    crop_left: float = 0.0
    crop_rows: float = 0.0  # 0: the whole image
    crop_columns: float = 0.0

    @property
    def box_rows(self) -> float:
        return self.crop_rows or float(self.rows)

    @property
    def box_columns(self) -> float:
        return self.crop_columns or float(self.columns)

    @property
    def scale_x(self) -> float:
        return self.content_columns / self.box_columns

    @property
    def scale_y(self) -> float:
        return self.content_rows / self.box_rows

    @property
    def millimetres_per_cell_hint(self) -> float:
        """Original pixels per grid pixel (geometric mean); times the pixel spacing gives mm."""
        return float(1.0 / np.sqrt(self.scale_x * self.scale_y))

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """A model-grid point (column, row) → original pixel coordinates (column, row)."""
        column = self.crop_left + x / self.scale_x
        if self.flipped:
            column = self.columns - column
        return column, self.crop_top + y / self.scale_y

    def to_grid(self, column: float, row: float) -> tuple[float, float]:
        """An original pixel point (column, row) → model-grid coordinates (column, row)."""
        if self.flipped:
            column = self.columns - column
        return (column - self.crop_left) * self.scale_x, (row - self.crop_top) * self.scale_y

    def length_to_original(self, length: float) -> float:
        """A length on the grid → original pixels (geometric mean of the two scales)."""
        return float(length / np.sqrt(self.scale_x * self.scale_y))

    def heatmap_valid_shape(self, heatmap_rows: int, heatmap_columns: int) -> tuple[int, int]:
        """(rows, columns) of a grid heatmap that cover the image, the padding excluded: the one
        rule for image scores, findings, overlays and training."""
        rows = max(1, round(heatmap_rows * self.content_rows / self.grid_rows))
        columns = max(1, round(heatmap_columns * self.content_columns / self.grid_columns))
        return rows, columns

    def heatmap_to_original(self, heatmap: np.ndarray) -> np.ndarray:
        """A heatmap over the grid (any resolution proportional to it) → the whole original
        image's frame and orientation, at the heatmap's own cell size: padding cropped, the
        crop box put back in place (zeros around it), flip undone. Resize it to rows x
        columns to overlay."""
        rows, columns = self.heatmap_valid_shape(heatmap.shape[0], heatmap.shape[1])
        cropped = np.asarray(heatmap[:rows, :columns], dtype=np.float32)
        if not self.crop_rows and not self.crop_columns:
            return np.ascontiguousarray(cropped[:, ::-1] if self.flipped else cropped)
        cell_rows = self.box_rows / rows  # original pixels per heatmap cell
        cell_columns = self.box_columns / columns
        out_rows = max(rows, round(self.rows / cell_rows))
        out_columns = max(columns, round(self.columns / cell_columns))
        top = min(out_rows - rows, max(0, round(self.crop_top / cell_rows)))
        left = min(out_columns - columns, max(0, round(self.crop_left / cell_columns)))
        frame = np.zeros((out_rows, out_columns), dtype=np.float32)
        frame[top : top + rows, left : left + columns] = cropped
        return np.ascontiguousarray(frame[:, ::-1] if self.flipped else frame)


_PATIENT_DIRECTIONS = frozenset("APRLHF")


def _row_direction(ds: Dataset | None) -> tuple[str, str] | None:
    """PatientOrientation's row direction and the whole value as written (``R\\P``), or None
    when there is no usable two-valued PatientOrientation."""
    orientation = ds.get("PatientOrientation") if ds is not None else None
    if orientation is None or isinstance(orientation, str) or len(orientation) < 2:
        return None
    row_direction = str(orientation[0]).strip().upper()
    if not row_direction or not set(row_direction) <= _PATIENT_DIRECTIONS:
        return None
    return row_direction, "\\".join(str(v) for v in orientation)


def rotation_reason(ds: Dataset | None) -> str | None:
    """Why an image cannot be normalised: PatientOrientation's row direction has neither A nor P
    (e.g. ``R\\P``: the chest wall is at the top or the bottom). None when it is not rotated."""
    direction = _row_direction(ds)
    if direction is None:
        return None
    row_direction, written = direction
    if "A" in row_direction or "P" in row_direction:
        return None
    return f"rotated: PatientOrientation {written} — chest wall not left or right"


def chest_wall_from_headers(ds: Dataset | None) -> bool | None:
    """Whether PatientOrientation puts the chest wall on the right (True), left (False), or
    does not say (None). Raises ``UnsupportedImageError`` for a rotated image."""
    reason = rotation_reason(ds)
    if reason is not None:
        raise UnsupportedImageError(reason)
    direction = _row_direction(ds)
    if direction is None:
        return None
    row_direction = direction[0]
    if "P" in row_direction and "A" not in row_direction:
        return True
    if "A" in row_direction and "P" not in row_direction:
        return False
    return None


def chest_wall_on_right(ds: Dataset | None, image: np.ndarray) -> bool:
    """Whether the chest wall is on the image's right: from PatientOrientation's row direction
    (``P`` = posterior to the right), else (no PatientOrientation) from which half holds more
    tissue. Raises ``UnsupportedImageError`` for a rotated image (row direction neither A nor
    P) rather than guessing."""
    reason = rotation_reason(ds)
    if reason is not None:
        raise UnsupportedImageError(reason)
    direction = _row_direction(ds)
    if direction is not None:
        row_direction = direction[0]
        if "P" in row_direction and "A" not in row_direction:
            return True
        if "A" in row_direction and "P" not in row_direction:
            return False
    half = image.shape[1] // 2
    return float(image[:, image.shape[1] - half :].sum()) > float(image[:, :half].sum())


def normalise_laterality(image: np.ndarray, ds: Dataset | None = None) -> tuple[np.ndarray, bool]:
    """Flip so the chest wall is on the left; returns the image and whether it was flipped."""
    flipped = chest_wall_on_right(ds, image)
    return (np.ascontiguousarray(image[:, ::-1]) if flipped else image), flipped


def resize(image: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Area-averaging resize of a float image (deterministic, Pillow ``BOX``/bilinear)."""
    source = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    shrinking = rows <= image.shape[0] and columns <= image.shape[1]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(source.resize((columns, rows), method), dtype=np.float32)


def to_model_grid(
    image: np.ndarray,
    grid_rows: int,
    grid_columns: int,
    *,
    flipped: bool,
    crop: tuple[int, int, int, int] | None = None,
    original_shape: tuple[int, int] | None = None,
    reduction: float | None = None,
) -> tuple[np.ndarray, GridTransform]:
    """Scale an already normalised image (chest wall left) onto the grid, padding with 0.

    ``flipped`` is what ``normalise_laterality`` returned; ``image`` is its output. ``crop``
    (row0, column0, row1, column1 in ``image`` pixels, end exclusive) cuts a box first.
    ``original_shape`` is the (rows, columns) of the original when ``image`` is a reduced copy
    of it, and ``reduction`` the original pixels per ``image`` pixel (``display.block_mean``'s
    factor; by default the ratio of the shapes), so the transform maps to the original's pixels.
    """
    rows, columns = image.shape
    original_rows, original_columns = original_shape or (rows, columns)
    if reduction is not None:
        factor_y = factor_x = float(reduction)
    else:
        factor_y, factor_x = original_rows / rows, original_columns / columns
    row0, column0, row1, column1 = crop if crop is not None else (0, 0, rows, columns)
    box = image[row0:row1, column0:column1]
    box_rows, box_columns = box.shape
    scale = min(grid_rows / box_rows, grid_columns / box_columns)
    content_rows = min(grid_rows, max(1, round(box_rows * scale)))
    content_columns = min(grid_columns, max(1, round(box_columns * scale)))
    grid = np.zeros((grid_rows, grid_columns), dtype=np.float32)
    grid[:content_rows, :content_columns] = resize(box, content_rows, content_columns)
    whole = crop is None and original_shape is None
    # a block reduction drops the original's last columns that do not fill a block; turned
    # round, those columns come first in the chest-wall-left frame
    dropped = original_columns - columns * factor_x if flipped and reduction is not None else 0.0
    transform = GridTransform(
        original_rows, original_columns, flipped, grid_rows, grid_columns, content_rows, content_columns,
        0.0 if whole else row0 * factor_y,
        0.0 if whole else column0 * factor_x + dropped,
        0.0 if whole else box_rows * factor_y,
        0.0 if whole else box_columns * factor_x,
    )
    return grid, transform


def pixel_spacing_mm(ds: Dataset | None) -> float | None:
    """mm per pixel of an image: PixelSpacing (calibrated to the patient) when present, else
    ImagerPixelSpacing (at the detector); the mean of the row and column spacing. None when
    neither holds two positive numbers."""
    if ds is None:
        return None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            spacing = [float(v) for v in value] if value is not None else []
        except (TypeError, ValueError):
            continue
        if len(spacing) == 2 and all(np.isfinite(v) and v > 0 for v in spacing):
            return (spacing[0] + spacing[1]) / 2
    return None
