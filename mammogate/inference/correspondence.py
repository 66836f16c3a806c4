"""Which findings on a breast's two views are one lesion.

A lesion seen on the craniocaudal and on the (medio)lateral view of a breast lies at about
the same distance from the nipple on both: the nipple is a landmark both projections share,
and compression changes that distance little (radiologists triangulate this way). The rule:

- the two findings are on the same breast, one on a craniocaudal view (CC, XCCL, XCCM) and one
  on a lateral view (MLO, ML, LM, LMO), of the same exam;
- their distances from the nipple differ by at most ``MAX_DIFFERENCE_MM`` (15 mm) when both
  images state a pixel spacing, else by at most ``MAX_DIFFERENCE_RELATIVE`` (0.15) of each
  view's breast depth (nipple to chest wall);
- pairs are taken closest first, and a finding belongs to at most one pair.

The nipple is the breast's most anterior point (``imaging.breast.breast_landmarks``), not a
detected nipple; findings with no landmarks on either image are never paired.
"""

from __future__ import annotations

from dataclasses import dataclass

from mammogate.imaging.clock import CRANIOCAUDAL_VIEWS, LATERAL_VIEWS
from mammogate.inference.results import Finding, ImageResult, StudyResult

MAX_DIFFERENCE_MM = 15.0
MAX_DIFFERENCE_RELATIVE = 0.15

RULE = (
    "same breast, one craniocaudal and one lateral view, distances from the nipple within "
    f"{MAX_DIFFERENCE_MM:g} mm (or {MAX_DIFFERENCE_RELATIVE:.0%} of the breast depth when an "
    "image states no pixel spacing), closest pairs first"
)


@dataclass(frozen=True)
class CorrespondingFindings:
    """Two findings taken to be one lesion: ``craniocaudal`` and ``lateral``, and how far
    apart their distances from the nipple are (``difference``, in ``unit``: "mm" or
    "breast depth")."""

    craniocaudal: Finding
    lateral: Finding
    difference: float
    unit: str

    @property
    def probability(self) -> float:
        """The lesion's probability of cancer: the larger of its two views'."""
        return max(self.craniocaudal.probability, self.lateral.probability)


def _difference(a: ImageResult, fa: Finding, b: ImageResult, fb: Finding) -> tuple[float, str] | None:
    mm_a, rel_a = a.distance_from_nipple(fa.center)
    mm_b, rel_b = b.distance_from_nipple(fb.center)
    if mm_a is not None and mm_b is not None:
        difference = abs(mm_a - mm_b)
        return (difference, "mm") if difference <= MAX_DIFFERENCE_MM else None
    if rel_a is not None and rel_b is not None:
        difference = abs(rel_a - rel_b)
        return (difference, "breast depth") if difference <= MAX_DIFFERENCE_RELATIVE else None
    return None


def corresponding_findings(result: StudyResult) -> list[CorrespondingFindings]:
    """The pairs of findings the rule above takes to be one lesion, in the order of the
    result's images."""
    candidates: list[tuple[float, int, CorrespondingFindings]] = []
    images = list(result.images)
    for a in images:
        if a.view not in CRANIOCAUDAL_VIEWS:
            continue
        for b in images:
            if b.view not in LATERAL_VIEWS or b.laterality != a.laterality:
                continue
            for fa in a.findings:
                for fb in b.findings:
                    found = _difference(a, fa, b, fb)
                    if found is not None:
                        pair = CorrespondingFindings(fa, fb, round(found[0], 3), found[1])
                        candidates.append((found[0], len(candidates), pair))
    used: set[int] = set()
    chosen: list[CorrespondingFindings] = []
    for _, _, pair in sorted(candidates, key=lambda c: (c[0], c[1])):
        if id(pair.craniocaudal) in used or id(pair.lateral) in used:
            continue
        used.update((id(pair.craniocaudal), id(pair.lateral)))
        chosen.append(pair)
    order = {id(f): k for k, f in enumerate(result.findings)}
    return sorted(chosen, key=lambda p: order[id(p.craniocaudal)])
