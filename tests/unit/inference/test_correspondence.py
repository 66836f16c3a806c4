"""Which findings on a breast's two views are one lesion, and where the nipple is."""

from __future__ import annotations

import numpy as np
import pytest

from mammogate.imaging.breast import breast_landmarks
from mammogate.inference.correspondence import (
    MAX_DIFFERENCE_MM,
    MAX_DIFFERENCE_RELATIVE,
    corresponding_findings,
)
from mammogate.inference.results import Finding, ImageResult, ModelInfo, StudyResult

MODEL = ModelInfo(name="m", version="1", sha256="", operating_point=0.5)


def _image(uid: str, laterality: str, view: str, centers: list[tuple[float, float]], *,
           spacing: float | None = 0.1, nipple: tuple[float, float] | None = (1000.0, 500.0),
           depth: float | None = 900.0) -> ImageResult:
    findings = tuple(
        Finding(uid, laterality, view, 0.9 - 0.1 * k, c, ())  # type: ignore[arg-type]
        for k, c in enumerate(centers)
    )
    return ImageResult(uid, "1.2.840.10008.5.1.4.1.1.1.2", "1.2.3", laterality, view, 0.9,  # type: ignore[arg-type]
                       findings, 1200, 1100, nipple=nipple, breast_depth=depth, pixel_spacing=spacing)


def _study(*images: ImageResult) -> StudyResult:
    return StudyResult("1.2.3.4", MODEL, images, (), {}, 0.9, "flagged")


def test_findings_at_the_same_distance_from_the_nipple_on_cc_and_mlo_are_one_lesion() -> None:
    # 400 px = 40 mm from the nipple on the CC, 41 mm on the MLO (at another angle)
    cc = _image("1", "R", "CC", [(600.0, 500.0)])
    mlo = _image("2", "R", "MLO", [(1000.0 - 0.6 * 410, 500.0 - 0.8 * 410)])
    pairs = corresponding_findings(_study(cc, mlo))
    assert len(pairs) == 1
    assert pairs[0].craniocaudal is cc.findings[0] and pairs[0].lateral is mlo.findings[0]
    assert pairs[0].unit == "mm" and pairs[0].difference == pytest.approx(1.0)
    assert pairs[0].probability == pytest.approx(0.9)


def test_the_limit_is_15_mm_and_other_breasts_or_same_view_kinds_never_pair() -> None:
    near = 400 + MAX_DIFFERENCE_MM * 10 - 1  # px at 0.1 mm: just within
    far = 400 + MAX_DIFFERENCE_MM * 10 + 1
    cc = _image("1", "R", "CC", [(600.0, 500.0)])
    assert len(corresponding_findings(_study(cc, _image("2", "R", "MLO", [(1000.0 - near, 500.0)])))) == 1
    assert corresponding_findings(_study(cc, _image("2", "R", "MLO", [(1000.0 - far, 500.0)]))) == []
    assert corresponding_findings(_study(cc, _image("2", "L", "MLO", [(600.0, 500.0)]))) == []
    assert corresponding_findings(_study(cc, _image("2", "R", "XCCL", [(600.0, 500.0)]))) == []


def test_closest_pairs_first_and_each_finding_in_one_pair_only() -> None:
    cc = _image("1", "L", "CC", [(600.0, 500.0), (700.0, 500.0)])  # 40 mm and 30 mm
    mlo = _image("2", "L", "MLO", [(690.0, 500.0)])  # 31 mm: closer to the second
    pairs = corresponding_findings(_study(cc, mlo))
    assert [(p.craniocaudal, p.lateral) for p in pairs] == [(cc.findings[1], mlo.findings[0])]


def test_without_pixel_spacing_the_breast_depth_decides_and_without_landmarks_nothing_pairs() -> None:
    cc = _image("1", "R", "CC", [(600.0, 500.0)], spacing=None)  # 400 / 900 = 0.44
    close = _image("2", "R", "MLO", [(550.0, 500.0)], spacing=None)  # 450 / 900 = 0.50
    pairs = corresponding_findings(_study(cc, close))
    assert len(pairs) == 1 and pairs[0].unit == "breast depth"
    assert pairs[0].difference == pytest.approx(50 / 900, abs=1e-3)
    shift = (MAX_DIFFERENCE_RELATIVE + 0.01) * 900
    apart = _image("2", "R", "MLO", [(600.0 - shift, 500.0)], spacing=None)
    assert corresponding_findings(_study(cc, apart)) == []
    unknown = _image("2", "R", "MLO", [(600.0, 500.0)], nipple=None, depth=None)
    assert corresponding_findings(_study(cc, unknown)) == []


def test_the_nipple_is_the_breasts_most_anterior_point() -> None:
    rows, columns = 200, 120
    v, u = np.mgrid[0:rows, 0:columns]
    mask = (u / 90.0) ** 2 + ((v - 120) / 70.0) ** 2 <= 1  # half ellipse, apex at (90, 120)
    landmarks = breast_landmarks(mask)
    assert landmarks is not None
    column, row = landmarks.nipple
    assert column == pytest.approx(90.5, abs=1.0)
    assert row == pytest.approx(120.5, abs=2.0)
    assert landmarks.depth == pytest.approx(91, abs=1.0)
    assert breast_landmarks(np.zeros((10, 10), dtype=bool)) is None
