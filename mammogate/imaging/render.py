"""Renderings of a result: the image with the heatmap blended in colour and marks (the
portal's PNG), the heatmap alone (the portal's viewer colours it), and the picture with a
caption burned in (the Secondary Capture's pixels)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mammogate.imaging.geometry import resize


def _colour_map(values: np.ndarray) -> np.ndarray:
    """A jet-like map of [0, 1] values to RGB floats in [0, 1]."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    red = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return np.concatenate([red, green, blue], axis=-1)


def render_overlay_png(
    display_image: np.ndarray,
    heatmap: np.ndarray | None,
    findings_centres: Sequence[tuple[float, float]] = (),
    *,
    height: int = 512,
    opacity: float = 0.45,
    original_rows: int | None = None,
) -> bytes:
    """PNG of ``display_image`` ([0, 1], original orientation, maybe a reduced copy of an
    original with ``original_rows`` rows) scaled to ``height`` rows, with ``heatmap`` (the
    whole original frame, any size) blended in colour and a ring at each finding centre
    (original pixel coordinates, (column, row))."""
    rows, columns = display_image.shape
    out_rows = min(height, rows)
    out_columns = max(1, round(columns * out_rows / rows))
    scale = out_rows / (original_rows or rows)  # original pixels -> picture pixels
    gray = np.clip(resize(display_image, out_rows, out_columns), 0, 1)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if heatmap is not None and heatmap.size:
        heat = np.clip(resize(heatmap.astype(np.float32), out_rows, out_columns), 0, 1)
        alpha = (opacity * np.clip(heat * 2.0, 0, 1))[..., None]
        rgb = rgb * (1 - alpha) + _colour_map(heat) * alpha
    picture = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(picture)
    radius = max(6, round(out_rows * 0.03))
    for column, row in findings_centres:
        x, y = column * scale, row * scale
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=(255, 255, 0), width=2)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def render_heatmap_png(heatmap: np.ndarray, *, max_rows: int = 256) -> bytes:
    """The heatmap alone ([0, 1], the whole original frame, any size) as an 8-bit grayscale
    PNG of at most ``max_rows`` rows, same aspect: the portal's viewer colours it in the
    browser and can switch it off."""
    rows, columns = heatmap.shape
    out_rows = min(max_rows, rows)
    out_columns = max(1, round(columns * out_rows / rows))
    heat = np.clip(resize(heatmap.astype(np.float32), out_rows, out_columns), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray((heat * 255 + 0.5).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def captioned(png: bytes, lines: Sequence[str]) -> np.ndarray:
    """The picture ``png`` (from :func:`render_overlay_png`: the portal shows the same) with a
    black band below it holding ``lines`` of white text, as an RGB uint8 array: what a
    Secondary Capture burns in."""
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    font = ImageFont.load_default()
    line_height = 14
    band = line_height * len(lines) + 8
    out = Image.new("RGB", (max(picture.width, 320), picture.height + band), (0, 0, 0))
    out.paste(picture, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((4, picture.height + 4 + i * line_height), line, fill=(255, 255, 255), font=font)
    return np.asarray(out, dtype=np.uint8).copy()
