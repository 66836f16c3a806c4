from __future__ import annotations

import io

import numpy as np
from PIL import Image

from mammogate.imaging import render_overlay_png


def test_overlay_png_is_downscaled_coloured_and_marked() -> None:
    display = np.tile(np.linspace(0, 1, 832, dtype=np.float32), (1024, 1))
    heatmap = np.zeros((40, 32), dtype=np.float32)
    heatmap[20, 10] = 1.0
    png = render_overlay_png(display, heatmap, [(300.0, 500.0)])
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.mode == "RGB"
    assert picture.size == (416, 512)
    pixels = np.asarray(picture).astype(int)
    assert (np.abs(pixels[..., 0] - pixels[..., 2]) > 30).any(), "the heatmap adds colour"
    ring = pixels[250 - 16 : 250 + 17, 150 - 16 : 150 + 17]
    assert ((ring[..., 0] > 200) & (ring[..., 1] > 200) & (ring[..., 2] < 80)).any(), "a yellow mark"


def test_overlay_without_heatmap_is_grayscale() -> None:
    display = np.full((300, 200), 0.5, dtype=np.float32)
    picture = Image.open(io.BytesIO(render_overlay_png(display, None, [])))
    assert picture.size == (200, 300)
    pixels = np.asarray(picture)
    assert (pixels[..., 0] == pixels[..., 1]).all()
