"""The Comprehensive SR (TID 1500 Measurement Report), built with highdicom, for viewers that
render TID 1500 and not the Mammography CAD SR (OHIF, Orthanc Stone).

Content::

    Imaging Measurement Report (TID 1500), observer: the model as a device
      Procedure reported: (363679005, SCT, "Imaging procedure")
      Imaging Measurements
        per finding (TID 1410 Planar ROI Measurements and Qualitative Evaluations):
          tracking identifier ("finding N" and a UID), finding "Mammography breast density"
          at the breast with its laterality, the region (a closed POLYLINE outline, or the
          centre as a POINT) in the referenced image's own pixel grid, its probability of
          cancer (%), the algorithm (name, version, parameters with its sha256)
        per breast analysed (TID 1501): the breast's probability of cancer (%)
        the exam (TID 1501): the exam's probability of cancer (%) and the rendering intent
          that says whether it is flagged (CID 6034, as in the CAD SR)

The header carries the same sanitised patient and study attributes as the CAD SR (a source's
birth date of 00000000 is left empty, not copied) and the model's name and version.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from mammogate import DISCLAIMER, __version__
from mammogate.inference.results import Finding, StudyResult
from mammogate.reporting import sr_items as si
from mammogate.reporting.cad_sr import (
    MANUFACTURER,
    PriorDocument,
    copy_source_attributes,
    evidence_items,
    index_sources,
    references,
    sanitised,
)

COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"
SERIES_DESCRIPTION = "mammogate measurements (not for clinical use)"
# PixelMed's validator (the Debian build the tests run) knows neither (43468-8, LN) nor
# (71651007, SCT, "Mammography") in CID 100; this one passes it, dciodvfy and dsrdump.
PROCEDURE_REPORTED = Code("363679005", "SCT", "Imaging procedure")
FINDING_TYPE = Code("129793001", "SCT", "Mammography breast density")  # as in the CAD SR
PROBABILITY_OF_CANCER = codes.DCM.ProbabilityOfCancer  # (111047, DCM)
RENDERING_INTENT = Code("111056", "DCM", "Rendering Intent")
_LATERALITY = {"L": codes.SCT.Left, "R": codes.SCT.Right}


def _algorithm(result: StudyResult) -> hd.sr.AlgorithmIdentification:
    model = result.model
    parameters = [f"operating_point={model.operating_point:g}", DISCLAIMER]
    if model.sha256:
        parameters.insert(0, f"sha256={model.sha256}")
    return hd.sr.AlgorithmIdentification(name=model.name, version=model.version,
                                         parameters=parameters)


def _percent(value: float, algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=PROBABILITY_OF_CANCER, value=round(100.0 * value, 10),
                             unit=codes.UCUM.Percent, algorithm_id=algorithm)


def _region(finding: Finding, source: Dataset) -> hd.sr.ImageRegion:
    image = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=str(source.SOPClassUID),
        referenced_sop_instance_uid=str(source.SOPInstanceUID))
    if len(finding.outline) >= 4:
        points = np.array(finding.outline, dtype=np.float64)
        if not np.array_equal(points[0], points[-1]):
            points = np.vstack([points, points[:1]])
        return hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                                 graphic_data=points, source_image=image)
    return hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POINT,
                             graphic_data=np.array([finding.center], dtype=np.float64),
                             source_image=image)


def build_comprehensive_sr(
    result: StudyResult,
    sources: Sequence[Dataset],
    *,
    predecessors: Sequence[PriorDocument] = (),
    series_number: int = 9002,
    instance_number: int = 1,
) -> Dataset:
    """The TID 1500 report of an analysed study (raises ValueError when nothing was analysed:
    there is nothing to measure)."""
    if not result.images:
        raise ValueError("no analysed view: a measurement report has nothing to say")
    headers = index_sources(result, sources)
    algorithm = _algorithm(result)
    groups: list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations |
                 hd.sr.MeasurementsAndQualitativeEvaluations] = []
    number = 0
    for image in result.images:
        source = headers[image.sop_instance_uid]
        for finding in image.findings:
            number += 1
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                referenced_region=_region(finding, source),
                tracking_identifier=hd.sr.TrackingIdentifier(
                    identifier=f"finding {number}", uid=generate_uid()),
                finding_type=FINDING_TYPE,
                finding_sites=[hd.sr.FindingSite(
                    anatomic_location=codes.SCT.Breast,
                    laterality=_LATERALITY[finding.laterality])],
                algorithm_id=algorithm,
                measurements=[_percent(finding.probability, algorithm)],
            ))
    for laterality, score in sorted(result.breast_scores.items()):
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                identifier=f"{'left' if laterality == 'L' else 'right'} breast",
                uid=generate_uid()),
            finding_type=codes.SCT.Breast,
            finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Breast,
                                             laterality=_LATERALITY[laterality])],
            algorithm_id=algorithm,
            measurements=[_percent(score, algorithm)],
        ))
    assert result.exam_score is not None  # some view was analysed
    intent = si.PRESENTATION_REQUIRED if result.category == "flagged" else si.PRESENTATION_OPTIONAL
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier="exam", uid=generate_uid()),
        finding_type=codes.SCT.Breast,
        algorithm_id=algorithm,
        measurements=[_percent(result.exam_score, algorithm)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=RENDERING_INTENT,
                                                             value=intent)],
    ))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=result.model.name, manufacturer_name=MANUFACTURER,
            model_name=result.model.version))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    first = sources[0]
    evidence = sorted((sanitised(headers[image.sop_instance_uid]) for image in result.images),
                      key=lambda h: str(h.StudyInstanceUID) != result.study_instance_uid)
    # (the result's own study first: highdicom takes the object's study from evidence[0])
    ds = hd.sr.ComprehensiveSR(
        evidence=evidence, content=report, series_number=series_number,
        series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(),
        instance_number=instance_number, manufacturer=MANUFACTURER,
        series_description=SERIES_DESCRIPTION, is_complete=True, is_final=False,
        is_verified=False,
    )
    copy_source_attributes(ds, first)
    ds.StudyInstanceUID = result.study_instance_uid
    # every image under its own study, as in the CAD SR (an assembled exam spans studies)
    ds.CurrentRequestedProcedureEvidenceSequence = evidence_items(evidence)
    if "PertinentOtherEvidenceSequence" in ds:
        del ds.PertinentOtherEvidenceSequence
    ds.ManufacturerModelName = result.model.name[:64]
    setattr(ds, "SoftwareVersions", [f"mammogate {__version__}"[:64],  # noqa: B010 -- LO, VM 1-n
                                     f"{result.model.name} {result.model.version}"[:64]])
    if predecessors:
        ds.PredecessorDocumentsSequence = [references(result.study_instance_uid, [
            (p.series_instance_uid, p.sop_class_uid, p.sop_instance_uid) for p in predecessors])]
    return ds
