"""The Secondary Capture per analysed view: valid, captioned, and the portal's very picture."""

from __future__ import annotations

import dataclasses
import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from mammogate.imaging.render import render_overlay_png
from mammogate.inference.results import ModelInfo
from mammogate.reporting.cad_sr import save_report
from mammogate.reporting.objects import OBJECT_BUILDERS
from mammogate.reporting.secondary_capture import build_secondary_captures, caption
from tests.peers import DCIODVFY, require_tool

from .factories import ROWS, SourceFactory, finding, image_result, skipped, study_result

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def _rendered(image, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    picture = render_overlay_png(rng.random((ROWS, 48)), rng.random((ROWS, 48)),
                                 [f.center for f in image.findings], height=ROWS)
    return dataclasses.replace(image, overlay_png=picture)


def test_one_valid_captioned_capture_per_analysed_view(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    require_tool(DCIODVFY)
    rcc, lcc, lmlo = make_source("R", "CC"), make_source("L", "CC"), make_source("L", "MLO")
    rcc.PatientBirthDate = "00000000"
    images = (_rendered(image_result(rcc, (finding(rcc, 0.9, (20.0, 20.0)),)), 1),
              _rendered(image_result(lcc), 2))
    result = study_result(study_uid, model, images, (skipped(lmlo, failed=True),))
    captures = build_secondary_captures(result, [rcc, lcc, lmlo])
    assert len(captures) == 2  # the failed view has no picture
    assert len({c.SeriesInstanceUID for c in captures}) == 1
    for capture, image, source in zip(captures, images, (rcc, lcc), strict=True):
        path = save_report(capture, tmp_path)
        vfy = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
        errors = [ln for ln in (vfy.stdout + vfy.stderr).splitlines() if ln.startswith("Error")]
        assert errors == [], vfy.stderr
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == SC_STORAGE and ds.StudyInstanceUID == study_uid
        assert ds.BurnedInAnnotation == "YES" and "NOT FOR CLINICAL USE" in ds.SeriesDescription
        assert ds.PatientBirthDate == ("" if source is rcc else "19650412")
        assert ds.PatientName == source.PatientName and ds.Laterality == image.laterality
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        # the portal's picture, pixel for pixel, with the caption below it
        portal = np.asarray(Image.open(io.BytesIO(image.overlay_png)).convert("RGB"))
        pixels = ds.pixel_array
        assert pixels.shape[0] > portal.shape[0]
        assert np.array_equal(pixels[:portal.shape[0], :portal.shape[1]], portal)
        band = pixels[portal.shape[0]:]
        assert band.min() == 0 and (band > 200).sum() > 100  # white text on black
    lines = caption(result, images[0])
    assert lines[0].startswith("RCC  image 90.0 %") and "FLAGGED" in lines[1]
    assert lines[2].startswith("MammoNet 1.2.0") and "NOT FOR CLINICAL USE" in lines[3]


def test_no_analysed_view_no_capture(make_source: SourceFactory, study_uid: str,
                                     model: ModelInfo) -> None:
    source = make_source("R", "CC")
    result = study_result(study_uid, model, (), (skipped(source, failed=True),))
    assert OBJECT_BUILDERS["sc_overlay"](result, [source], ()) == []
