"""The breast clock face, which way an image's rows run on the patient, and how a position is said.

The clock face is the breast as the radiologist faces the patient: 12 o'clock superior,
6 o'clock inferior, 3 o'clock toward the patient's left and 9 o'clock toward the patient's
right. So on the RIGHT breast 9 o'clock is lateral (outer) and 3 o'clock medial (inner); on the
LEFT breast 3 o'clock is lateral and 9 o'clock medial.

A mammogram's rows run along one of the two axes the clock needs: on a craniocaudal view
(CC, XCCL, XCCM) from lateral to medial or back, on a lateral or oblique view (MLO, ML, LM,
LMO) from superior to inferior or back (the columns run from the nipple to the chest wall).
Which way is read from Patient Orientation (0020,0020): its second value is the patient
direction in which the rows increase (RCC ``P\\L``: toward the patient's left, i.e. medial
on the right breast; MLO ``A\\F``: toward the feet, i.e. inferior). Where it is absent or says
nothing usable the conventional positioning is assumed (the lateral side at the top of a CC
image, superior at the top of a lateral view) and the caller records that it was assumed.

Where a finding lies on the clock (which views, how far from the nipple counts as
retroareolar) is ``inference.position``'s rule; this module only knows the clock face and the
words, so that the portal, which may not import inference, says positions in the same words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydicom.dataset import Dataset

CRANIOCAUDAL_VIEWS = frozenset({"CC", "XCCL", "XCCM"})
LATERAL_VIEWS = frozenset({"MLO", "ML", "LM", "LMO"})

RETROAREOLAR = "retroareolar"  # within a small distance of the nipple: no clock hour
CENTRAL = "central"  # behind the nipple, deeper: on both views on the nipple's line
OUTER_HALF, INNER_HALF = "outer half", "inner half"  # from a craniocaudal view alone
UPPER_HALF, LOWER_HALF = "upper half", "lower half"  # from a lateral view alone
UPPER_OUTER, UPPER_INNER = "upper outer quadrant", "upper inner quadrant"
LOWER_OUTER, LOWER_INNER = "lower outer quadrant", "lower inner quadrant"


def patient_orientation(ds: Dataset | None) -> tuple[str, ...]:
    """Patient Orientation (0020,0020) as read: its two values (``("P", "L")``), or () when
    the header has no two-valued one."""
    value = ds.get("PatientOrientation") if ds is not None else None
    if value is None or isinstance(value, (str, bytes)) or len(value) < 2:
        return ()
    return tuple(str(v).strip().upper() for v in value[:2])


def _rows_toward(orientation: Sequence[str], towards: str, away: str) -> bool | None:
    """Whether the rows increase toward ``towards`` (True), toward ``away`` (False), or the
    orientation does not say (None): its second value names one of the two and not the other."""
    if len(orientation) < 2:
        return None
    direction = str(orientation[1]).strip().upper()
    if towards in direction and away not in direction:
        return True
    if away in direction and towards not in direction:
        return False
    return None


def rows_toward_lateral(orientation: Sequence[str], laterality: str) -> tuple[bool, bool]:
    """On a craniocaudal view of the ``laterality`` breast: whether the rows increase toward
    lateral, and whether that was assumed (no usable orientation: lateral at the top, so the
    rows increase toward medial)."""
    lateral, medial = ("R", "L") if laterality == "R" else ("L", "R")
    toward = _rows_toward(orientation, lateral, medial)
    return (False, True) if toward is None else (toward, False)


def rows_toward_superior(orientation: Sequence[str]) -> tuple[bool, bool]:
    """On a lateral or oblique view: whether the rows increase toward superior (head), and
    whether that was assumed (no usable orientation: superior at the top, so the rows increase
    toward the feet)."""
    toward = _rows_toward(orientation, "H", "F")
    return (False, True) if toward is None else (toward, False)


def clock_hour(lateral: float, superior: float, laterality: str) -> int:
    """The hour (1-12) of a point ``lateral`` toward the outer side and ``superior`` toward the
    head from the nipple (same unit on both), on the ``laterality`` breast's clock face,
    rounded to the nearest hour, half hours away from 12 o'clock (1:30 → 2, 10:30 → 10), so that
    the two breasts' answers mirror each other."""
    toward_three = lateral if laterality == "L" else -lateral  # 3 o'clock: the patient's left
    hours = math.degrees(math.atan2(toward_three, superior)) / 30.0  # clockwise from 12, -6..6
    hour = int(math.copysign(math.floor(abs(hours) + 0.5), hours)) % 12
    return hour or 12


def region_of_hour(hour: int, laterality: str) -> str:
    """The quadrant an hour lies in ("upper outer quadrant", ...), or the hour itself ("12
    o'clock") for 12, 3, 6 and 9 o'clock, which lie on the line between two quadrants."""
    if hour % 3 == 0:
        return f"{hour} o'clock"
    upper = hour in (10, 11, 1, 2)
    patient_left = hour in (1, 2, 4, 5)  # the clock's right half
    outer = patient_left == (laterality == "L")
    if upper:
        return UPPER_OUTER if outer else UPPER_INNER
    return LOWER_OUTER if outer else LOWER_INNER


def position_label(clock_hour: int | None, region: str) -> str:
    """The position in the portal's words: "10 o'clock, upper outer quadrant", "12 o'clock",
    "outer half", "retroareolar"; "" when neither is known."""
    parts = []
    if clock_hour is not None:
        parts.append(f"{clock_hour} o'clock")
    if region and region not in parts:
        parts.append(region)
    return ", ".join(parts)


def describe_position(
    laterality: str, clock_hour: int | None, region: str, distance_mm: float | None,
    *, orientation_assumed: bool = False,
) -> str:
    """The position as radiologists say it: "Right breast, 10 o'clock, upper outer quadrant,
    42 mm from the nipple", with "(orientation assumed)" when an image's Patient Orientation
    was not there to say which way is up or out."""
    parts = [{"R": "Right breast", "L": "Left breast"}.get(laterality, "Breast")]
    label = position_label(clock_hour, region)
    if label:
        parts.append(label)
    if distance_mm is not None:
        parts.append(f"{distance_mm:.0f} mm from the nipple")
    text = ", ".join(parts)
    if orientation_assumed:
        text += " (orientation assumed)"
    return text
