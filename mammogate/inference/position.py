"""Where on the breast each finding lies: breast, clock hour or region, distance from the nipple.

Radiologists say where a lesion is as "Right breast, 10 o'clock, 42 mm from the nipple". The
clock face is the breast as the radiologist faces the patient (``imaging.clock``): 12 o'clock
superior, 6 inferior; on the RIGHT breast 9 o'clock is lateral (outer) and 3 medial (inner);
on the LEFT breast 3 o'clock is lateral and 9 medial. The rule:

- A craniocaudal view (CC, XCCL, XCCM) shows how far lateral or medial of the nipple a finding
  lies (its row offset from the nipple); a lateral view (MLO, ML, LM, LMO) how far superior or
  inferior. On the MLO, which is oblique (about 45°), that is approximate: the image's up is
  the oblique's, not the body's, so hours near 3 and 9 o'clock lean toward the axilla's side.
- A clock hour needs both: it is given to a lesion seen on the breast's two views (a pair of
  ``inference.correspondence``), and both findings of the pair get the same hour and region.
  hour = atan2(superior offset on the lateral view, lateral offset on the CC view), each in mm
  when both images state a pixel spacing, else as a fraction of that view's breast depth,
  rounded to the nearest hour (12, never 0; half hours away from 12 o'clock, so that the two
  breasts' answers mirror each other). The region is the quadrant of that hour ("upper
  outer quadrant", "upper inner quadrant", "lower outer quadrant", "lower inner quadrant"), or
  the hour itself ("12 o'clock", "3 o'clock", "6 o'clock", "9 o'clock") on the line between two.
- A finding seen on one view only gets the half that view shows: CC "outer half" or "inner
  half", lateral view "upper half" or "lower half"; no clock hour. Within ``NEAR_MM`` of the
  nipple's line (``NEAR_RELATIVE`` of the breast depth without pixel spacing) the view cannot
  tell which half: the region is "" (unknown).
- Within ``NEAR_MM`` (10 mm) of the nipple (``NEAR_RELATIVE``, 10 % of the breast depth, when
  an image states no pixel spacing) a finding is "retroareolar", with no clock hour; for a pair,
  the mean of its two distances decides. A pair farther from the nipple whose offsets on both
  views are that small lies on the nipple's axis, deeper: "central", with no clock hour.
- Which way the rows run on the patient comes from each image's Patient Orientation (0020,0020).
  Where it is absent the conventional positioning is assumed (the lateral side at the top of a
  CC image, superior at the top of a lateral view), and the position says so
  (``FindingPosition.orientation_assumed``, "(orientation assumed)" in the words).

The nipple is the breast mask's most anterior point (``ImageResult.nipple``), not a detected
nipple; an image without landmarks gives its findings no position (region "").
"""

from __future__ import annotations

import math
from dataclasses import replace

from mammogate.imaging.clock import (
    CENTRAL,
    CRANIOCAUDAL_VIEWS,
    INNER_HALF,
    LATERAL_VIEWS,
    LOWER_HALF,
    OUTER_HALF,
    RETROAREOLAR,
    UPPER_HALF,
    clock_hour,
    describe_position,
    region_of_hour,
    rows_toward_lateral,
    rows_toward_superior,
)
from mammogate.inference.correspondence import corresponding_findings
from mammogate.inference.results import Finding, FindingPosition, ImageResult, StudyResult

NEAR_MM = 10.0
NEAR_RELATIVE = 0.10

RULE = (
    "clock face as the radiologist faces the patient; the clock hour from a lesion's two views "
    "(lateral offset on the CC, superior offset on the MLO, approximate on the oblique), the "
    f"half from one view; retroareolar within {NEAR_MM:g} mm of the nipple"
)


def _offset(image: ImageResult, finding: Finding, unit: str) -> tuple[float, bool] | None:
    """How far the finding lies from the nipple along the image's rows, signed toward lateral
    (CC-type view) or superior (lateral view), in ``unit`` ("mm" or "breast depth"), and
    whether the orientation was assumed; None without landmarks or the unit's scale."""
    if image.nipple is None:
        return None
    scale = image.pixel_spacing if unit == "mm" else (1.0 / image.breast_depth if image.breast_depth else None)
    if not scale:
        return None
    if image.view in CRANIOCAUDAL_VIEWS:
        toward, assumed = rows_toward_lateral(image.patient_orientation, image.laterality)
    elif image.view in LATERAL_VIEWS:
        toward, assumed = rows_toward_superior(image.patient_orientation)
    else:
        return None
    rows = finding.center[1] - image.nipple[1]
    return (rows if toward else -rows) * scale, assumed


def _unit(*images: ImageResult) -> str | None:
    if all(i.pixel_spacing for i in images):
        return "mm"
    if all(i.breast_depth for i in images):
        return "breast depth"
    return None


def _distance(image: ImageResult, finding: Finding, unit: str) -> float | None:
    mm, relative = image.distance_from_nipple(finding.center)
    return mm if unit == "mm" else relative


def _near(unit: str) -> float:
    return NEAR_MM if unit == "mm" else NEAR_RELATIVE


def single_view_position(image: ImageResult, finding: Finding) -> FindingPosition:
    """The position of a finding seen on one view: retroareolar, or the half the view shows."""
    unit = _unit(image)
    if unit is None or image.nipple is None:
        return FindingPosition()
    distance = _distance(image, finding, unit)
    if distance is not None and distance <= _near(unit):
        return FindingPosition(region=RETROAREOLAR)
    found = _offset(image, finding, unit)
    if found is None:
        return FindingPosition()
    offset, assumed = found
    if abs(offset) <= _near(unit):
        return FindingPosition(orientation_assumed=assumed)
    if image.view in CRANIOCAUDAL_VIEWS:
        return FindingPosition(region=OUTER_HALF if offset > 0 else INNER_HALF, orientation_assumed=assumed)
    return FindingPosition(region=UPPER_HALF if offset > 0 else LOWER_HALF, orientation_assumed=assumed)


def paired_position(
    craniocaudal: ImageResult, cc_finding: Finding, lateral: ImageResult, lateral_finding: Finding
) -> FindingPosition | None:
    """The position of a lesion seen on a breast's CC-type and lateral views (the clock hour
    and quadrant, retroareolar or central); None when the two images lack what it needs."""
    unit = _unit(craniocaudal, lateral)
    if unit is None:
        return None
    across = _offset(craniocaudal, cc_finding, unit)
    up = _offset(lateral, lateral_finding, unit)
    distances = (_distance(craniocaudal, cc_finding, unit), _distance(lateral, lateral_finding, unit))
    if across is None or up is None or distances[0] is None or distances[1] is None:
        return None
    if (distances[0] + distances[1]) / 2 <= _near(unit):
        return FindingPosition(region=RETROAREOLAR)
    assumed = across[1] or up[1]
    if math.hypot(across[0], up[0]) <= _near(unit):
        return FindingPosition(region=CENTRAL, orientation_assumed=assumed)
    hour = clock_hour(across[0], up[0], craniocaudal.laterality)
    return FindingPosition(hour, region_of_hour(hour, craniocaudal.laterality), assumed)


def finding_positions(result: StudyResult) -> dict[int, FindingPosition]:
    """The position of every finding of the result, by ``id(finding)``: the one it carries when
    located already, else by the rule above."""
    image_of = {id(f): image for image in result.images for f in image.findings}
    positions: dict[int, FindingPosition] = {}
    for pair in corresponding_findings(result):
        found = paired_position(image_of[id(pair.craniocaudal)], pair.craniocaudal,
                                image_of[id(pair.lateral)], pair.lateral)
        if found is not None:
            positions[id(pair.craniocaudal)] = positions[id(pair.lateral)] = found
    for image in result.images:
        for finding in image.findings:
            if finding.position is not None:
                positions[id(finding)] = finding.position
            elif id(finding) not in positions:
                positions[id(finding)] = single_view_position(image, finding)
    return positions


def locate(result: StudyResult) -> StudyResult:
    """The result with every finding's ``position`` set (the rule above)."""
    positions = finding_positions(result)
    images = tuple(
        replace(image, findings=tuple(replace(f, position=positions[id(f)]) for f in image.findings))
        for image in result.images
    )
    return replace(result, images=images)


def describe(image: ImageResult, finding: Finding) -> str:
    """The finding's position in words: "Right breast, 10 o'clock, upper outer quadrant, 42 mm
    from the nipple" (its own position, else as seen on its view alone)."""
    position = finding.position or single_view_position(image, finding)
    distance_mm, _ = image.distance_from_nipple(finding.center)
    return describe_position(finding.laterality, position.clock_hour, position.region, distance_mm,
                             orientation_assumed=position.orientation_assumed)
