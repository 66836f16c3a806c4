"""Result persistence: an analysis, its images, findings and reports as rows.

The caller owns the transaction: the worker writes these rows, the delivery rows and the job's
completion in one commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy.orm import Session

from mammogate.db import Analysis, AnalysisImage, Finding, Report, Study, utcnow
from mammogate.inference.correspondence import corresponding_findings
from mammogate.inference.position import finding_positions
from mammogate.inference.results import StudyResult


def record_analysis(
    session: Session,
    study: Study,
    result: StudyResult,
    *,
    job_id: int | None,
    worker: str,
    overlays: Mapping[str, Path] | None = None,
) -> Analysis:
    overlays = overlays or {}
    previous = study.analyses[-1] if study.analyses else None
    analysis = Analysis(
        study_id=study.id,
        job_id=job_id,
        model_name=result.model.name,
        model_version=result.model.version,
        model_sha256=result.model.sha256,
        model_description=result.model.description,
        operating_point=result.model.operating_point,
        exam_score=result.exam_score,
        score_left=result.breast_scores.get("L"),
        score_right=result.breast_scores.get("R"),
        category=result.category,
        elapsed_seconds=result.elapsed_seconds,
        worker=worker,
        created_at=utcnow(),
        supersedes_id=previous.id if previous is not None else None,
    )
    session.add(analysis)
    lesion_of: dict[int, int] = {}
    for number, pair in enumerate(corresponding_findings(result), start=1):
        lesion_of[id(pair.craniocaudal)] = lesion_of[id(pair.lateral)] = number
    positions = finding_positions(result)
    for image in result.images:
        analysis.images.append(
            AnalysisImage(
                sop_instance_uid=image.sop_instance_uid,
                status="analysed",
                laterality=image.laterality,
                view=image.view,
                score=image.score,
                overlay_path=str(overlays.get(image.sop_instance_uid, "")),
            )
        )
        for finding in image.findings:
            distance_mm, _ = image.distance_from_nipple(finding.center)
            position = positions[id(finding)]
            analysis.findings.append(
                Finding(
                    sop_instance_uid=finding.sop_instance_uid,
                    laterality=finding.laterality,
                    view=finding.view,
                    probability=finding.probability,
                    center_column=finding.center[0],
                    center_row=finding.center[1],
                    outline=[list(p) for p in finding.outline],
                    certainty=finding.certainty,
                    nipple_distance_mm=None if distance_mm is None else round(distance_mm, 1),
                    lesion=lesion_of.get(id(finding)),
                    clock_hour=position.clock_hour,
                    region=position.region,
                    orientation_assumed=position.orientation_assumed,
                )
            )
    for skipped in result.skipped:
        analysis.images.append(
            AnalysisImage(
                sop_instance_uid=skipped.sop_instance_uid,
                status="failed" if skipped.failed else "skipped",
                reason=skipped.reason,
            )
        )
    return analysis


def record_report(
    session: Session, analysis: Analysis, ds: Dataset, path: Path, *, kind: str
) -> Report:
    report = Report(
        kind=kind,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        path=str(path),
        created_at=utcnow(),
    )
    analysis.reports.append(report)
    session.add(report)
    return report
