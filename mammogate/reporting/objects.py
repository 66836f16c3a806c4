"""The registry of result objects: object kind (as routes name it in ``objects``) → builder.

A builder takes the study's result, the headers of its images and the objects of the same kind
that earlier analyses of the study sent (its predecessors), and returns the datasets to write
(one per view for the Secondary Capture), or none when this kind has nothing to say for this
result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydicom.dataset import Dataset

from mammogate.inference.results import StudyResult
from mammogate.reporting.cad_sr import PriorDocument, build_mammography_cad_sr
from mammogate.reporting.comprehensive_sr import build_comprehensive_sr
from mammogate.reporting.secondary_capture import build_secondary_captures

ObjectBuilder = Callable[[StudyResult, Sequence[Dataset], Sequence[PriorDocument]], list[Dataset]]


def _cad_sr(
    result: StudyResult, headers: Sequence[Dataset], predecessors: Sequence[PriorDocument]
) -> list[Dataset]:
    known = {str(h.get("SOPInstanceUID", "")) for h in headers}
    images = [i.sop_instance_uid for i in result.images] + [s.sop_instance_uid for s in result.skipped]
    if not known.intersection(images):
        return []  # not one image read as DICOM: nothing to reference
    # with no analysed view, the "not analysed" report: which images came and why none was
    # analysed (failed analyses, or none attempted: TID 4015/4016/4017)
    return [build_mammography_cad_sr(result, headers, predecessors=predecessors)]


def _comprehensive_sr(
    result: StudyResult, headers: Sequence[Dataset], predecessors: Sequence[PriorDocument]
) -> list[Dataset]:
    if not result.images:  # nothing measured
        return []
    return [build_comprehensive_sr(result, headers, predecessors=predecessors)]


def _sc_overlay(
    result: StudyResult, headers: Sequence[Dataset], predecessors: Sequence[PriorDocument]
) -> list[Dataset]:
    del predecessors  # images supersede nothing: a new analysis's series stands beside
    return build_secondary_captures(result, headers)


OBJECT_BUILDERS: dict[str, ObjectBuilder] = {
    "cad_sr": _cad_sr,  # Mammography CAD SR (TID 4000): mammography workstations
    "comprehensive_sr": _comprehensive_sr,  # Comprehensive SR (TID 1500): OHIF, Stone, ...
    "sc_overlay": _sc_overlay,  # Secondary Capture per view: PACS that show neither SR
}
