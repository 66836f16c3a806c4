"""Where on the breast a finding lies: the clock hour of a lesion seen on both views, the half
seen on one, retroareolar near the nipple, and which way is out and up from Patient Orientation
(or the convention, said to be assumed)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from mammogate.imaging.clock import (
    clock_hour,
    describe_position,
    patient_orientation,
    position_label,
    region_of_hour,
)
from mammogate.inference.position import (
    NEAR_MM,
    describe,
    finding_positions,
    locate,
)
from mammogate.inference.results import (
    Finding,
    FindingPosition,
    ImageResult,
    ModelInfo,
    StudyResult,
)

MODEL = ModelInfo(name="m", version="1", sha256="", operating_point=0.5)
NIPPLE = (1000.0, 500.0)  # column, row; 0.1 mm per pixel
# the conventional orientations (as the synthetic studies and most modalities write them):
# lateral at the top of the CC, superior at the top of the MLO
STANDARD = {("R", "CC"): ("P", "L"), ("L", "CC"): ("A", "R"), ("R", "MLO"): ("P", "F"), ("L", "MLO"): ("A", "F")}


def _image(uid: str, laterality: str, view: str, centers: list[tuple[float, float]], *,
           orientation: tuple[str, ...] | None = None, spacing: float | None = 0.1,
           depth: float | None = 900.0) -> ImageResult:
    findings = tuple(Finding(uid, laterality, view, 0.9, c, ()) for c in centers)  # type: ignore[arg-type]
    return ImageResult(uid, "1.2.840.10008.5.1.4.1.1.1.2", "1.2.3", laterality, view, 0.9,  # type: ignore[arg-type]
                       findings, 1200, 1100, nipple=NIPPLE, breast_depth=depth, pixel_spacing=spacing,
                       patient_orientation=STANDARD[(laterality, view)] if orientation is None else orientation)


def _study(*images: ImageResult) -> StudyResult:
    return StudyResult("1.2.3.4", MODEL, images, (), {}, 0.9, "flagged")


def _pair(laterality: str, rows_cc: float, rows_mlo: float, *, cc: tuple[str, ...] | None = None,
          mlo: tuple[str, ...] | None = None, spacing: float | None = 0.1) -> tuple[FindingPosition, FindingPosition]:
    """A lesion 50 mm from the nipple on both views, ``rows_cc`` rows from the nipple on the CC
    and ``rows_mlo`` on the MLO (negative: above it): the positions of its two findings."""
    def at(rows: float) -> tuple[float, float]:
        return NIPPLE[0] - (500.0**2 - rows**2) ** 0.5, NIPPLE[1] + rows

    result = _study(_image("1", laterality, "CC", [at(rows_cc)], orientation=cc, spacing=spacing),
                    _image("2", laterality, "MLO", [at(rows_mlo)], orientation=mlo, spacing=spacing))
    positions = finding_positions(result)
    return positions[id(result.images[0].findings[0])], positions[id(result.images[1].findings[0])]


def test_a_right_lesion_lateral_and_superior_is_upper_outer_at_10_or_11_and_both_views_say_so() -> None:
    # 20 mm toward the top (lateral) on the RCC, 40 mm toward the top (superior) on the RMLO
    on_cc, on_mlo = _pair("R", -200.0, -400.0)
    assert on_cc == on_mlo
    assert on_cc == FindingPosition(11, "upper outer quadrant", orientation_assumed=False)
    # 45°: half past ten, rounded away from 12 o'clock
    assert _pair("R", -300.0, -300.0)[0] == FindingPosition(10, "upper outer quadrant")


def test_the_same_lesion_on_the_left_breast_is_upper_outer_at_1_or_2() -> None:
    assert _pair("L", -200.0, -400.0)[0] == FindingPosition(1, "upper outer quadrant")
    assert _pair("L", -300.0, -300.0)[0] == FindingPosition(2, "upper outer quadrant")


def test_medial_and_inferior_is_lower_inner_and_the_hours_on_the_lines_are_named() -> None:
    # 45°: half past four (right) and half past seven (left), rounded away from 12 o'clock
    assert _pair("R", 300.0, 300.0)[0] == FindingPosition(5, "lower inner quadrant")
    assert _pair("L", 300.0, 300.0)[0] == FindingPosition(7, "lower inner quadrant")
    assert _pair("R", 200.0, 400.0)[0] == FindingPosition(5, "lower inner quadrant")
    assert _pair("R", -300.0, 300.0)[0] == FindingPosition(7, "lower outer quadrant")
    assert _pair("R", -20.0, -450.0)[0] == FindingPosition(12, "12 o'clock")
    assert _pair("R", -450.0, 20.0)[0] == FindingPosition(9, "9 o'clock")
    assert _pair("L", -450.0, 20.0)[0] == FindingPosition(3, "3 o'clock")
    assert _pair("L", 20.0, 450.0)[0] == FindingPosition(6, "6 o'clock")


def test_patient_orientation_decides_which_way_is_lateral_and_superior() -> None:
    # the same pixels, but the RCC's rows run toward the patient's right (lateral on the
    # right breast: lateral at the bottom): the finding at the top is medial — mirrored
    assert _pair("R", -200.0, -400.0, cc=("A", "R"))[0] == FindingPosition(1, "upper inner quadrant")
    # and the LCC's toward the patient's left (lateral on the left breast)
    assert _pair("L", -200.0, -400.0, cc=("P", "L"))[0] == FindingPosition(11, "upper inner quadrant")
    # an MLO whose rows run toward the head: the finding at the top is inferior
    assert _pair("R", -200.0, -400.0, mlo=("P", "H"))[0] == FindingPosition(7, "lower outer quadrant")
    # the synthetic MLOs' "FL": toward the feet (and lateral), as standard
    assert _pair("R", -200.0, -400.0, mlo=("P", "FL"))[0] == FindingPosition(11, "upper outer quadrant")


def test_without_patient_orientation_the_convention_is_assumed_and_said() -> None:
    assert _pair("R", -200.0, -400.0, cc=(), mlo=())[0] == FindingPosition(11, "upper outer quadrant", True)
    assert _pair("R", -200.0, -400.0, mlo=())[0] == FindingPosition(11, "upper outer quadrant", True)
    # a value that names neither side is no orientation either
    assert _pair("L", -200.0, -400.0, cc=("A", "F"))[0] == FindingPosition(1, "upper outer quadrant", True)
    single = finding_positions(_study(_image("1", "R", "CC", [(600.0, 200.0)], orientation=())))
    assert list(single.values()) == [FindingPosition(None, "outer half", True)]


def test_near_the_nipple_a_finding_is_retroareolar_with_no_clock_hour() -> None:
    near = NEAR_MM * 10 - 10  # px at 0.1 mm: just within
    result = _study(_image("1", "R", "CC", [(NIPPLE[0] - near * 0.6, NIPPLE[1] - near * 0.8)]),
                    _image("2", "R", "MLO", [(NIPPLE[0] - near, NIPPLE[1])]))
    assert set(finding_positions(result).values()) == {FindingPosition(None, "retroareolar")}
    alone = _study(_image("1", "L", "MLO", [(NIPPLE[0] - 50.0, NIPPLE[1] + 30.0)], orientation=()))
    assert list(finding_positions(alone).values()) == [FindingPosition(None, "retroareolar")]
    # without pixel spacing: 10 % of the breast depth (900 px)
    relative = _study(_image("1", "L", "CC", [(NIPPLE[0] - 85.0, NIPPLE[1])], spacing=None))
    assert list(finding_positions(relative).values()) == [FindingPosition(None, "retroareolar")]
    # farther, but on the nipple's line on both views: central
    assert _pair("R", 30.0, -30.0)[0] == FindingPosition(None, "central")


def test_a_finding_on_one_view_gets_the_half_that_view_shows() -> None:
    def alone(laterality: str, view: str, row: float, **kwargs: object) -> FindingPosition:
        result = _study(_image("1", laterality, view, [(500.0, row)], **kwargs))  # type: ignore[arg-type]
        return finding_positions(result)[id(result.images[0].findings[0])]

    assert alone("R", "CC", 200.0) == FindingPosition(None, "outer half")
    assert alone("R", "CC", 800.0) == FindingPosition(None, "inner half")
    assert alone("L", "CC", 200.0) == FindingPosition(None, "outer half")
    assert alone("R", "CC", 200.0, orientation=("A", "R")) == FindingPosition(None, "inner half")
    assert alone("L", "MLO", 200.0) == FindingPosition(None, "upper half")
    assert alone("L", "MLO", 800.0) == FindingPosition(None, "lower half")
    assert alone("L", "MLO", 800.0, spacing=None) == FindingPosition(None, "lower half")
    # on the nipple's line the one view cannot tell which half
    assert alone("R", "CC", 505.0) == FindingPosition(None, "")
    # no landmarks: no position
    bare = ImageResult("1", "", "", "R", "CC", 0.9, (Finding("1", "R", "CC", 0.9, (5.0, 5.0), ()),), 10, 10)
    assert finding_positions(_study(bare))[id(bare.findings[0])] == FindingPosition()


def test_a_paired_finding_is_not_given_a_half_and_an_unpaired_one_on_the_same_image_is() -> None:
    cc = _image("1", "R", "CC", [(1000.0 - 400.0, 200.0), (300.0, 900.0)])  # 50 mm; 80 mm
    mlo = _image("2", "R", "MLO", [(1000.0 - 400.0, 200.0)])
    positions = finding_positions(_study(cc, mlo))
    assert positions[id(cc.findings[0])].clock_hour == positions[id(mlo.findings[0])].clock_hour == 10
    assert positions[id(cc.findings[1])] == FindingPosition(None, "inner half")


def test_locate_sets_each_findings_position_and_describe_says_it_as_radiologists_do() -> None:
    cc = _image("1", "R", "CC", [(1000.0 - 400.0, 200.0)])
    mlo = _image("2", "R", "MLO", [(1000.0 - 400.0, 200.0)])
    located = locate(_study(cc, mlo))
    assert [f.position for f in located.findings] == [FindingPosition(10, "upper outer quadrant")] * 2
    assert describe(located.images[0], located.findings[0]) == (
        "Right breast, 10 o'clock, upper outer quadrant, 50 mm from the nipple")
    # located again, the positions stay (they are the result's, not recomputed)
    assert locate(located).findings == located.findings
    assert describe_position("L", None, "outer half", 42.4, orientation_assumed=True) == (
        "Left breast, outer half, 42 mm from the nipple (orientation assumed)")
    assert describe_position("R", None, "", None) == "Right breast"


def test_the_clock_face_and_its_words() -> None:
    assert [clock_hour(0.0, 1.0, side) for side in "RL"] == [12, 12]
    assert [clock_hour(1.0, 0.0, side) for side in "RL"] == [9, 3]  # lateral
    assert [clock_hour(-1.0, 0.0, side) for side in "RL"] == [3, 9]  # medial
    assert [clock_hour(0.0, -1.0, side) for side in "RL"] == [6, 6]
    assert clock_hour(0.01, 1.0, "L") == 12  # never 0
    assert [region_of_hour(h, "R") for h in (1, 5, 7, 11)] == [
        "upper inner quadrant", "lower inner quadrant", "lower outer quadrant", "upper outer quadrant"]
    assert position_label(10, "upper outer quadrant") == "10 o'clock, upper outer quadrant"
    assert position_label(12, "12 o'clock") == "12 o'clock"
    assert position_label(None, "retroareolar") == "retroareolar"
    assert position_label(None, "") == ""


@pytest.mark.parametrize(("value", "expected"), [
    (["P", "L"], ("P", "L")), (["A", "FR "], ("A", "FR")), ("P", ()), (None, ()),
])
def test_patient_orientation_is_read_as_its_two_values(value: object, expected: tuple[str, ...]) -> None:
    ds = Dataset()
    if value is not None:
        ds.PatientOrientation = value
    assert patient_orientation(ds) == expected
