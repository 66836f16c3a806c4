"""The Comprehensive SR (TID 1500): read back with highdicom as OHIF reads it (measurement
groups with tracking identifiers and image regions). Valid under every validator here:
tests/integration/test_dicom_validators.py."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from mammogate.inference.results import ModelInfo
from mammogate.reporting.cad_sr import PriorDocument, save_report
from mammogate.reporting.comprehensive_sr import build_comprehensive_sr
from mammogate.reporting.objects import OBJECT_BUILDERS

from .factories import SourceFactory, finding, image_result, skipped, study_result


def _walk(item):  # type: ignore[no-untyped-def]
    """Every content item below ``item`` (a dataset, or a highdicom template: a list)."""
    children = item if not isinstance(item, pydicom.Dataset) else item.get("ContentSequence", [])
    for child in children:
        yield child
        yield from _walk(child)


def _study(make_source: SourceFactory, study_uid: str, model: ModelInfo):  # type: ignore[no-untyped-def]
    rcc, lcc, rmlo = make_source("R", "CC"), make_source("L", "CC"), make_source("R", "MLO")
    images = (image_result(rcc, (finding(rcc, 0.875, (20.5, 26.5)),)),
              image_result(lcc), image_result(rmlo, (finding(rmlo, 0.25, (30.0, 12.0)),)))
    return study_result(study_uid, model, images), [rcc, lcc, rmlo]


def test_read_back_as_a_viewer_does(make_source: SourceFactory, study_uid: str,
                                    model: ModelInfo, tmp_path: Path) -> None:
    result, sources = _study(make_source, study_uid, model)
    prior = PriorDocument("1.2.840.10008.5.1.4.1.1.88.33", "1.2.3.4.5", "1.2.3.4")
    path = save_report(build_comprehensive_sr(result, sources, predecessors=[prior]), tmp_path)
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    assert sr.StudyInstanceUID == study_uid
    assert sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[
        0].ReferencedSOPInstanceUID == "1.2.3.4.5"
    referenced = {ref.ReferencedSOPInstanceUID
                  for study in sr.CurrentRequestedProcedureEvidenceSequence
                  for series in study.ReferencedSeriesSequence
                  for ref in series.ReferencedSOPSequence}
    assert referenced == {str(s.SOPInstanceUID) for s in sources}

    report = sr.content
    planar = report.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in planar] == ["finding 1", "finding 2"]
    first, second = planar
    assert first.reference_type == codes.DCM.ImageRegion
    region = first.roi
    assert region is not None
    assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    outline = np.asarray(result.images[0].findings[0].outline)
    assert np.allclose(region.value[:len(outline)], outline)  # the image's own pixel grid
    selected_from = region.ContentSequence[0]  # SELECTED FROM the image
    assert selected_from.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == str(
        sources[0].SOPInstanceUID)
    (probability,) = first.get_measurements(name=codes.DCM.ProbabilityOfCancer)
    assert probability.value == pytest.approx(87.5) and probability.unit == codes.UCUM.Percent
    assert first.finding_sites[0].laterality == codes.SCT.Right
    assert second.get_measurements()[0].value == pytest.approx(25.0)
    # the algorithm (TID 4019) under the group: name, version, and its sha256 as a parameter
    texts = {(i.ConceptNameCodeSequence[0].CodeValue, i.TextValue) for i in _walk(first)
             if i.ValueType == "TEXT"}
    assert {("111001", "MammoNet"), ("111003", "1.2.0"), ("111002", "sha256=" + "ab" * 32)} <= texts

    others = {g.tracking_identifier: g for g in report.get_image_measurement_groups()}
    assert set(others) == {"right breast", "left breast", "exam"}
    for side, name in (("R", "right breast"), ("L", "left breast")):
        assert others[name].get_measurements()[0].value == pytest.approx(
            100 * result.breast_scores[side])
    exam = others["exam"]
    assert exam.get_measurements()[0].value == pytest.approx(87.5)
    (intent,) = exam.get_qualitative_evaluations()
    assert intent.value.value == "111150"  # flagged: presentation required
    observer = report.get_observer_contexts(observer_type=codes.DCM.Device)
    assert observer, "no device observer"
    device = {getattr(i, "value", None) for i in observer[0].observer_identifying_attributes}
    assert {"MammoNet", "mammogate", "1.2.0"} <= device  # name, manufacturer, model


def test_nothing_analysed_gives_no_measurement_report(make_source: SourceFactory,
                                                      study_uid: str, model: ModelInfo) -> None:
    source = make_source("R", "CC")
    result = study_result(study_uid, model, (), (skipped(source, failed=True),))
    assert OBJECT_BUILDERS["comprehensive_sr"](result, [source], ()) == []
    with pytest.raises(ValueError, match="nothing to say"):
        build_comprehensive_sr(result, [source])
