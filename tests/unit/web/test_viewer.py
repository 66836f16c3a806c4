"""The study page's image viewer: the pixels and heatmap it fetches, and how the page offers them.
(The viewer itself runs in Chromium: tests/integration/test_portal_browser.py.)"""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from PIL import Image
from pydicom import Dataset
from sqlalchemy import select, update

from mammogate.db import AuditEntry, Database, Study, utcnow
from mammogate.imaging import PixelDecodeError, UnsupportedImageError, viewer_pixels
from mammogate.imaging.display import PADDING_CODE, check_viewable
from mammogate.imaging.render import render_heatmap_png
from tests.unit.web.portal_sample import (
    IMAGE_COLUMNS,
    IMAGE_ROWS,
    LEFT_CC,
    RIGHT_MLO,
    WINDOW,
    sign_in,
)


def _image(stored: np.ndarray, **attributes: object) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = stored.astype("<u2").tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    return ds


def _decoded(content: bytes, headers: dict[str, str]) -> np.ndarray:
    rows, columns = int(headers["x-image-rows"]), int(headers["x-image-columns"])
    stored = np.frombuffer(content, dtype="<u2").reshape(rows, columns)
    return float(headers["x-value-offset"]) + stored * float(headers["x-value-scale"])


def test_the_pixels_are_the_modality_values_with_the_images_own_window(
    client: TestClient[Litestar], study: str, db: Database,
) -> None:
    sign_in(client, "vic")  # any signed-in user who may see the study may view its images
    response = client.get(f"/studies/{study}/images/{LEFT_CC}/pixels")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    h = response.headers
    assert (int(h["x-image-rows"]), int(h["x-image-columns"])) == (IMAGE_ROWS, IMAGE_COLUMNS)
    assert (int(h["x-original-rows"]), int(h["x-original-columns"])) == (IMAGE_ROWS, IMAGE_COLUMNS)
    assert (float(h["x-window-center"]), float(h["x-window-width"])) == WINDOW
    assert h["x-invert"] == "0"
    assert h["x-chest-wall"] == "left"  # from Patient Orientation A\\R
    values = _decoded(response.content, dict(h))
    # stored 30 r on row r, RescaleIntercept -100: the modality value, exactly
    assert np.array_equal(values[:, 0], np.arange(IMAGE_ROWS) * 30 - 100)
    assert np.array_equal(values[:, -1], values[:, 0])
    with db.session() as session:
        assert session.scalar(select(AuditEntry.actor).where(AuditEntry.action == "image viewed",
                                                             AuditEntry.target == study)) == "vic"


def test_a_large_image_is_block_averaged_inverted_and_padded_black() -> None:
    stored = np.full((512, 256), 1000, dtype=np.uint16)
    stored[:, :128] = 3000
    stored[:4, :] = 0  # padding
    ds = _image(stored, PhotometricInterpretation="MONOCHROME1", PixelPaddingValue=0,
                RescaleSlope=2, RescaleIntercept=0)
    image = viewer_pixels(ds, max_rows=128)
    assert image.values.shape == (128, 64)
    assert (image.original_rows, image.original_columns) == (512, 256)
    assert image.invert
    # MONOCHROME1: the right half's lower values are the brighter tissue, so the chest wall
    assert image.chest_wall_on_right is True
    values = image.offset + image.values.astype(float) * image.scale
    assert values[1, 0] == 6000 and values[1, -1] == 2000  # slope 2, 4x4 block means
    assert image.values[0, 0] == PADDING_CODE and image.values[1:].min() > PADDING_CODE
    # the block size rounds up: never more rows than asked for
    assert viewer_pixels(ds, max_rows=300).values.shape == (256, 128)
    # no window in the header: the 0.5th to 99.5th percentile of the image (padding left out)
    assert image.window_center == pytest.approx(4000) and image.window_width == pytest.approx(4000)


def test_a_wide_dynamic_range_is_scaled_into_sixteen_bits() -> None:
    stored = np.zeros((64, 64), dtype=np.uint16)
    stored[32:, :] = 60000
    image = viewer_pixels(_image(stored, RescaleSlope=3, RescaleIntercept=-5,
                                 WindowCenter=[90000, 1], WindowWidth=[50000, 2]))
    assert image.scale == pytest.approx(180000 / 65534)
    top, bottom = (image.offset + image.values[[0, -1], 0].astype(float) * image.scale)
    assert top == pytest.approx(-5, abs=0.01) and bottom == pytest.approx(179995, abs=image.scale)
    assert (image.window_center, image.window_width) == (90000, 50000)  # the first window


def test_a_fractional_slope_keeps_its_grey_levels_and_a_bad_window_falls_back() -> None:
    stored = np.repeat(np.arange(3000, dtype=np.uint16)[:, None], 8, axis=1)
    image = viewer_pixels(_image(stored, RescaleSlope=0.01, RescaleIntercept=0,
                                 WindowCenter="nan", WindowWidth=100), max_rows=4096)
    assert len(np.unique(image.values)) == 3000  # 30 modality units over 3,000 distinct codes
    values = image.offset + image.values[:, 0].astype(np.float64) * image.scale
    assert values == pytest.approx(np.arange(3000) * 0.01, abs=1e-3)
    assert np.isfinite(image.window_center) and image.window_width == pytest.approx(29.7, abs=0.1)


def test_a_multi_valued_padding_value_and_what_the_viewer_refuses_from_the_header() -> None:
    stored = np.full((64, 64), 500, dtype=np.uint16)
    stored[:8] = 0
    image = viewer_pixels(_image(stored, PixelPaddingValue=[0, 1]))
    assert (image.values[:8] == PADDING_CODE).all() and (image.values[8:] != PADDING_CODE).all()
    header = Dataset()
    header.NumberOfFrames, header.Rows, header.Columns = 2, 64, 64
    with pytest.raises(UnsupportedImageError, match="multi-frame"):
        check_viewable(header)
    header.NumberOfFrames, header.Rows, header.Columns = 1, 10000, 9000
    with pytest.raises(UnsupportedImageError, match="more than the viewer serves"):
        check_viewable(header)


def test_the_chest_wall_side_follows_patient_orientation_over_the_tissue() -> None:
    stored = np.zeros((64, 64), dtype=np.uint16)
    stored[:, :40] = 2000  # more tissue on the left
    assert viewer_pixels(_image(stored)).chest_wall_on_right is False
    assert viewer_pixels(_image(stored, PatientOrientation=["P", "L"])).chest_wall_on_right is True
    assert viewer_pixels(_image(stored, PatientOrientation=["F", "L"])).chest_wall_on_right is None


def test_pixels_that_do_not_decode_are_refused_with_the_reason() -> None:
    ds = _image(np.zeros((8, 8), dtype=np.uint16))
    del ds.PixelData
    with pytest.raises(PixelDecodeError, match="no Pixel Data"):
        viewer_pixels(ds)


def test_the_heatmap_is_served_alone_and_an_image_without_one_says_why(
    client: TestClient[Litestar], study: str,
) -> None:
    sign_in(client, "rita")
    heat = client.get(f"/studies/{study}/images/{LEFT_CC}/heatmap.png")
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(heat.content)))
    assert picture.shape == (12, 10) and picture[3, 7] == 255 and picture.sum() == 255
    missing = client.get(f"/studies/{study}/images/{RIGHT_MLO}/heatmap.png")
    assert missing.status_code == 404 and "no heatmap" in missing.text
    stranger = client.get(f"/studies/{study}/images/1.2.3.4/pixels")
    assert stranger.status_code == 404 and "is not an analysed image of this study" in stranger.text
    no_file = client.get(f"/studies/{study}/images/{RIGHT_MLO}/pixels")  # analysed, file not here
    assert no_file.status_code == 404 and "not on this node" in no_file.text
    big = client.get(f"/studies/{study}/images/{LEFT_CC}/pixels?rows=4096")
    assert big.status_code == 400
    assert client.get(f"/studies/{study}/images/not-a-uid/pixels").status_code == 404


def test_the_study_page_offers_the_viewer_its_layers_and_marks(
    client: TestClient[Litestar], study: str,
) -> None:
    sign_in(client, "rita")
    response = client.get(f"/studies/{study}")
    page = response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert '<script src="/static/viewer.js" defer></script>' in page
    figure = re.search(rf'<figure id="overlay-{re.escape(LEFT_CC)}"[^>]*>', page, re.S)
    assert figure, "the left CC hangs in the viewer"
    tag = figure.group(0)
    assert f'data-pixels="/studies/{study}/images/{LEFT_CC}/pixels"' in tag
    assert f'data-heatmap="/studies/{study}/images/{LEFT_CC}/heatmap.png"' in tag
    marks = json.loads(re.search(r"data-marks='([^']*)'", tag).group(1))  # type: ignore[union-attr]
    assert marks == [[1023.5, 2047.25, 0.812345]]
    labels = json.loads(re.search(r"data-viewer-labels='([^']*)'", page).group(1))  # type: ignore[union-attr]
    assert labels["heatmap"] == "Heatmap" and labels["controls"] == "Viewer controls for %s"
    french = client.get(f"/studies/{study}", headers={"Accept-Language": "fr"}).text
    labels = json.loads(re.search(r"data-viewer-labels='([^']*)'", french).group(1))  # type: ignore[union-attr]
    assert labels["heatmap"] == "Carte de chaleur" and labels["controls"].endswith(" pour %s")
    script = client.get("/static/viewer.js")
    assert script.status_code == 200 and "X-Window-Center" in script.text


def test_after_retention_the_viewer_falls_back_to_the_overlay(
    client: TestClient[Litestar], study: str, db: Database,
) -> None:
    with db.session() as session:
        session.execute(update(Study).values(images_removed_at=utcnow() - timedelta(days=1)))
    sign_in(client, "rita")
    page = client.get(f"/studies/{study}").text
    assert "data-pixels" not in page and "data-heatmap=" in page
    gone = client.get(f"/studies/{study}/images/{LEFT_CC}/pixels")
    assert gone.status_code == 404 and "removed by retention" in gone.text


def test_the_heatmap_png_keeps_the_frames_aspect_and_values() -> None:
    heat = np.zeros((1000, 800), dtype=np.float32)
    heat[:500] = 1.0
    picture = np.asarray(Image.open(io.BytesIO(render_heatmap_png(heat))))
    assert picture.shape == (256, 205) and picture.dtype == np.uint8
    assert picture[0, 0] == 255 and picture[-1, 0] == 0
