"""Read models of the history and study-detail pages, and the queries that fill them.

Handlers get plain dataclasses, built inside the request's transaction, so templates and the
JSON API never touch a live ORM object.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from mammogate.config.settings import DEFAULT_EXPECTED_VIEWS
from mammogate.db import (
    Analysis,
    AnalysisImage,
    Delivery,
    Feedback,
    Instance,
    Report,
    Study,
    heatmap_file,
    utcnow,
)
from mammogate.db.admin import reanalysis_refused
from mammogate.db.queue import views_present
from mammogate.db.routes import routes_in_order, routing_inputs
from mammogate.imaging import read_headers
from mammogate.imaging.clock import describe_position, position_label
from mammogate.imaging.views import views_summary
from mammogate.routing import RouteRule, RouteVerdict, StudyFacts, explain
from mammogate.web.errors import NotFoundError
from mammogate.web.i18n import gettext as _

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_VIEW_ORDER = {v: i for i, v in enumerate(DEFAULT_EXPECTED_VIEWS)}


@dataclass(frozen=True)
class ImageView:
    sop_instance_uid: str
    laterality: str
    view: str
    status: str  # analysed | skipped | failed
    score: float | None
    reason: str
    has_overlay: bool
    has_heatmap: bool = False  # the heatmap alone, for the viewer's layer
    has_pixels: bool = False  # the DICOM image is on this node: the viewer can window it
    rows: int = 0  # of the original image (0: not known)
    columns: int = 0

    @property
    def hanging_order(self) -> int:
        """Where the view hangs: RCC, LCC (top row), RMLO, LMLO (bottom row), then the rest."""
        return _HANGING.get(f"{self.laterality}{self.view}", 4)


_HANGING = {"RCC": 0, "LCC": 1, "RMLO": 2, "LMLO": 3}


@dataclass(frozen=True)
class FindingView:
    sop_instance_uid: str
    laterality: str
    view: str
    probability: float
    center_column: float
    center_row: float
    certainty: float | None = None  # how likely a lesion at all (benign or malignant)
    nipple_distance_mm: float | None = None
    lesion: int | None = None  # findings sharing the number: one lesion seen on two views
    # where on the breast (inference.position): clock hour 1-12 (None: one view only,
    # retroareolar or central), region ("" unknown), whether the orientation was assumed
    clock_hour: int | None = None
    region: str = ""
    orientation_assumed: bool = False
    position: str = ""  # "10 o'clock, upper outer quadrant", "outer half", ... ("" unknown)
    # the whole of it as radiologists say it: "Right breast, 10 o'clock, upper outer
    # quadrant, 42 mm from the nipple"
    description: str = ""


@dataclass(frozen=True)
class DeliveryView:
    destination: str
    route: str
    state: str
    attempts: int
    last_error: str
    delivered_at: datetime | None


@dataclass(frozen=True)
class ReportView:
    kind: str
    sop_instance_uid: str
    created_at: datetime
    deliveries: list[DeliveryView]


@dataclass(frozen=True)
class AnalysisView:
    id: int
    created_at: datetime
    model_name: str
    model_version: str
    model_sha256: str
    model_description: str
    operating_point: float
    exam_score: float | None
    score_left: float | None
    score_right: float | None
    category: str
    elapsed_seconds: float
    images: list[ImageView]
    findings: list[FindingView]
    reports: list[ReportView]

    def hanging(self) -> list[tuple[str, ImageView | None]]:
        """The overlays as radiologists hang them, mirrored: RCC | LCC over RMLO | LMLO, an
        empty slot (None) for a standard view without one, then any other view; [] when no
        image has an overlay."""
        shown = sorted((i for i in self.images if i.has_overlay), key=lambda i: i.hanging_order)
        if not shown:
            return []
        slots: list[tuple[str, ImageView | None]] = []
        for name in _HANGING:
            match = next((i for i in shown if f"{i.laterality}{i.view}" == name), None)
            slots.append((name, match))
        taken = {id(image) for _, image in slots if image is not None}
        return slots + [(f"{i.laterality}{i.view}", i) for i in shown if id(i) not in taken]

    def marks(self, sop_instance_uid: str) -> list[list[float]]:
        """The image's findings for the viewer: [column, row, probability], original pixels."""
        return [[f.center_column, f.center_row, f.probability] for f in self.findings
                if f.sop_instance_uid == sop_instance_uid]


@dataclass(frozen=True)
class StudyDetail:
    study_instance_uid: str
    state: str
    accession_number: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    study_date: str
    study_description: str
    calling_ae_title: str
    instance_count: int
    first_received_at: datetime
    last_received_at: datetime
    last_error: str
    images_removed_at: datetime | None  # by retention (storage.retention_days); results kept
    views_present: list[str]  # laterality + view of the images received, e.g. "RMLO"
    views_missing: list[str]  # of dicom.expected_views
    views_summary: str  # "4 of 4 expected views" or "3 of 4 expected views; RMLO missing"
    # an exam assembled from several studies (dicom.group_studies_by_patient_and_date): each
    # study it holds images of, its own first; [] for a study received as one
    assembled_from: list[str]
    analysis_count: int
    analysis: AnalysisView | None  # the current result
    earlier: list[EarlierAnalysis]  # the results it superseded, newest first
    feedback: list[FeedbackView] = field(default_factory=list)  # newest first
    manufacturer: str = ""


@dataclass(frozen=True)
class FeedbackView:
    username: str
    verdict: str  # agree | disagree | ""
    ground_truth: str  # biopsy_malignant | biopsy_benign | normal_followup | ""
    comment: str
    created_at: datetime
    analysis_id: int | None


VERDICTS = ("agree", "disagree")
GROUND_TRUTHS = ("biopsy_malignant", "biopsy_benign", "normal_followup")


def record_feedback(session: Session, study_instance_uid: str, username: str, verdict: str,
                    ground_truth: str, comment: str) -> Feedback:
    """A radiologist's word on the study's current result (ValueError naming a bad field;
    NotFoundError for an unknown study). The caller's transaction writes it."""
    study = _get_study(session, study_instance_uid)
    if verdict not in ("", *VERDICTS):
        raise ValueError(_("verdict must be agree or disagree, not %(value)r") % {"value": verdict[:32]})
    if ground_truth not in ("", *GROUND_TRUTHS):
        raise ValueError(_("ground truth must be one of %(allowed)s, not %(value)r")
                         % {"allowed": ", ".join(GROUND_TRUTHS), "value": ground_truth[:32]})
    if not verdict and not ground_truth:
        raise ValueError(_("say whether you agree with the result, or what the ground truth is (or both)"))
    if len(comment) > 2000:
        raise ValueError(_("the comment is longer than 2,000 characters"))
    current = session.scalar(select(func.max(Analysis.id)).where(Analysis.study_id == study.id))
    if verdict and current is None:
        raise ValueError(_("this study has no result to agree or disagree with yet"))
    row = Feedback(study_id=study.id, analysis_id=current, username=username, verdict=verdict,
                   ground_truth=ground_truth, comment=comment.replace("\x00", "").strip(),
                   created_at=utcnow())
    session.add(row)
    return row


@dataclass(frozen=True)
class EarlierAnalysis:
    id: int
    created_at: datetime
    model_name: str
    model_version: str
    exam_score: float | None
    category: str
    superseded_by: int | None


def _check_uid(uid: str, what: str) -> str:
    if len(uid) > 64 or not _UID.fullmatch(uid):
        raise NotFoundError(_("%(what)s %(uid)r is not a DICOM UID (digits and dots, at most 64).")
                            % {"what": what, "uid": uid})
    return uid


def _get_study(session: Session, study_instance_uid: str) -> Study:
    _check_uid(study_instance_uid, "Study Instance UID")
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))
    if study is None:
        raise NotFoundError(_("There is no study with Study Instance UID %(uid)s.") % {"uid": study_instance_uid})
    return study


def study_detail(
    session: Session, study_instance_uid: str, data_dir: Path,
    expected_views: Sequence[str] = DEFAULT_EXPECTED_VIEWS,
) -> StudyDetail:
    """The study, its latest analysis (images, findings, reports, deliveries), and which of
    the expected views it has."""
    study = _get_study(session, study_instance_uid)
    present = sorted(views_present(session, [study.id]).get(study.id, set()),
                     key=lambda v: (_VIEW_ORDER.get(v, 99), v))
    missing, summary = views_summary(present, expected_views)
    sources = list(dict.fromkeys(session.scalars(
        select(Instance.study_instance_uid)
        .where(Instance.study_id == study.id, Instance.study_instance_uid != "")
        .order_by(Instance.id))))
    assembled_from = (sorted(sources, key=lambda uid: uid != study.study_instance_uid)
                      if len(sources) > 1 else [])
    analysis_count = session.scalar(select(func.count()).where(Analysis.study_id == study.id)) or 0
    analysis = session.scalar(
        select(Analysis)
        .where(Analysis.study_id == study.id)
        .order_by(Analysis.id.desc())
        .limit(1)
        .options(
            selectinload(Analysis.images),
            selectinload(Analysis.findings),
            selectinload(Analysis.reports)
            .selectinload(Report.deliveries)
            .selectinload(Delivery.destination),
        )
    )
    return StudyDetail(
        study_instance_uid=study.study_instance_uid,
        state=study.state,
        accession_number=study.accession_number,
        patient_name=study.patient_name,
        patient_id=study.patient_id,
        patient_birth_date=study.patient_birth_date,
        study_date=study.study_date,
        study_description=study.study_description,
        calling_ae_title=study.calling_ae_title,
        instance_count=study.instance_count,
        first_received_at=study.first_received_at,
        last_received_at=study.last_received_at,
        last_error=study.last_error,
        images_removed_at=study.images_removed_at,
        views_present=present,
        views_missing=missing,
        views_summary=summary,
        assembled_from=assembled_from,
        analysis_count=analysis_count,
        analysis=(_analysis_view(analysis, data_dir, _image_files(session, study))
                  if analysis is not None else None),
        earlier=_earlier(session, study.id, analysis.id) if analysis is not None else [],
        feedback=[
            FeedbackView(f.username, f.verdict, f.ground_truth, f.comment, f.created_at, f.analysis_id)
            for f in session.scalars(select(Feedback).where(Feedback.study_id == study.id)
                                     .order_by(Feedback.id.desc()))
        ],
        manufacturer=" ".join(p for p in (study.manufacturer, study.manufacturer_model) if p),
    )


def _earlier(session: Session, study_id: int, current_id: int) -> list[EarlierAnalysis]:
    rows = list(session.scalars(select(Analysis).where(Analysis.study_id == study_id,
                                                       Analysis.id != current_id)
                                .order_by(Analysis.id.desc())))
    successor = {r.supersedes_id: r.id for r in rows if r.supersedes_id is not None}
    successor.update({a: current_id for a in session.scalars(
        select(Analysis.supersedes_id).where(Analysis.id == current_id)) if a is not None})
    return [EarlierAnalysis(r.id, r.created_at, r.model_name, r.model_version, r.exam_score,
                            r.category, successor.get(r.id)) for r in rows]


def _image_files(session: Session, study: Study) -> dict[str, Path]:
    """The study's DICOM files still on this node, by SOP Instance UID (none once retention
    removed them)."""
    if study.images_removed_at is not None:
        return {}
    rows = session.execute(select(Instance.sop_instance_uid, Instance.path)
                           .where(Instance.study_id == study.id, Instance.path != ""))
    return {uid: Path(path) for uid, path in rows if Path(path).is_file()}


def _analysis_view(analysis: Analysis, data_dir: Path, files: dict[str, Path]) -> AnalysisView:
    return AnalysisView(
        id=analysis.id,
        created_at=analysis.created_at,
        model_name=analysis.model_name,
        model_version=analysis.model_version,
        model_sha256=analysis.model_sha256,
        model_description=analysis.model_description or "",
        operating_point=analysis.operating_point,
        exam_score=analysis.exam_score,
        score_left=analysis.score_left,
        score_right=analysis.score_right,
        category=analysis.category,
        elapsed_seconds=analysis.elapsed_seconds,
        images=[
            ImageView(
                sop_instance_uid=image.sop_instance_uid,
                laterality=image.laterality,
                view=image.view,
                status=image.status,
                score=image.score,
                reason=image.reason,
                has_overlay=(overlay := overlay_file(image.overlay_path, data_dir)) is not None,
                has_heatmap=overlay is not None and _png_file(heatmap_file(overlay)) is not None,
                has_pixels=image.sop_instance_uid in files,
            )
            for image in analysis.images
        ],
        findings=[
            FindingView(
                sop_instance_uid=f.sop_instance_uid,
                laterality=f.laterality,
                view=f.view,
                probability=f.probability,
                center_column=f.center_column,
                center_row=f.center_row,
                certainty=f.certainty,
                nipple_distance_mm=f.nipple_distance_mm,
                lesion=f.lesion,
                clock_hour=f.clock_hour,
                region=f.region or "",
                orientation_assumed=bool(f.orientation_assumed),
                position=position_label(f.clock_hour, f.region or ""),
                description=describe_position(
                    f.laterality, f.clock_hour, f.region or "", f.nipple_distance_mm,
                    orientation_assumed=bool(f.orientation_assumed),
                ),
            )
            for f in analysis.findings
        ],
        reports=[
            ReportView(
                kind=r.kind,
                sop_instance_uid=r.sop_instance_uid,
                created_at=r.created_at,
                deliveries=[
                    DeliveryView(
                        destination=d.destination.name,
                        route=d.route,
                        state=d.state,
                        attempts=d.attempts,
                        last_error=d.last_error,
                        delivered_at=d.delivered_at,
                    )
                    for d in sorted(r.deliveries, key=lambda d: d.id)
                ],
            )
            for r in sorted(analysis.reports, key=lambda r: r.id)
        ],
    )


def overlay_file(overlay_path: str, data_dir: Path) -> Path | None:
    """The overlay PNG if the path names an existing PNG file (relative paths: in data_dir)."""
    if not overlay_path:
        return None
    path = Path(overlay_path)
    if not path.is_absolute():
        path = data_dir / path
    return _png_file(path)


def _png_file(path: Path) -> Path | None:
    """``path`` if it is a PNG file (by name and signature)."""
    try:
        if path.suffix.lower() != ".png" or not path.is_file():
            return None
        with path.open("rb") as fh:
            if fh.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                return None
    except OSError:
        return None
    return path


def result_object_for(
    session: Session, study_instance_uid: str, sop_instance_uid: str, data_dir: Path
) -> Path:
    """The file of one result object (CAD SR, Comprehensive SR, Secondary Capture) of the
    study, as written under the data directory's reports."""
    study = _get_study(session, study_instance_uid)
    _check_uid(sop_instance_uid, "SOP Instance UID")
    stored = session.scalar(
        select(Report.path).join(Analysis, Report.analysis_id == Analysis.id)
        .where(Analysis.study_id == study.id, Report.sop_instance_uid == sop_instance_uid))
    if stored:
        path = Path(stored)
        reports = (data_dir / "reports").resolve()
        if path.resolve().is_relative_to(reports) and path.is_file():
            return path
    raise NotFoundError(_("This study has no result object %(uid)s on this node.") % {"uid": sop_instance_uid})


def overlay_for(
    session: Session, study_instance_uid: str, sop_instance_uid: str, data_dir: Path
) -> Path:
    """The overlay of one image in the study's latest analysis that has that image."""
    study = _get_study(session, study_instance_uid)
    path = overlay_file(_analysis_image(session, study, sop_instance_uid).overlay_path, data_dir)
    if path is None:
        raise NotFoundError(_("Image %(uid)s of this study has no overlay to show.") % {"uid": sop_instance_uid})
    return path


def _analysis_image(session: Session, study: Study, sop_instance_uid: str) -> AnalysisImage:
    _check_uid(sop_instance_uid, "SOP Instance UID")
    image = session.scalar(
        select(AnalysisImage)
        .join(Analysis, AnalysisImage.analysis_id == Analysis.id)
        .where(Analysis.study_id == study.id, AnalysisImage.sop_instance_uid == sop_instance_uid)
        .order_by(Analysis.id.desc())
        .limit(1)
    )
    if image is None:
        raise NotFoundError(_("Image %(uid)s is not an analysed image of this study.") % {"uid": sop_instance_uid})
    return image


def heatmap_for(
    session: Session, study_instance_uid: str, sop_instance_uid: str, data_dir: Path
) -> Path:
    """The heatmap PNG of one image in the study's latest analysis that has that image."""
    study = _get_study(session, study_instance_uid)
    overlay = overlay_file(_analysis_image(session, study, sop_instance_uid).overlay_path, data_dir)
    path = _png_file(heatmap_file(overlay)) if overlay is not None else None
    if path is None:
        raise NotFoundError(_("Image %(uid)s of this study has no heatmap to show (it was analysed "
                              "before heatmaps were kept apart: its overlay has one).") % {"uid": sop_instance_uid})
    return path


def image_file_for(session: Session, study_instance_uid: str, sop_instance_uid: str) -> Path:
    """The DICOM file of one analysed image of the study, for the viewer (NotFoundError when
    retention removed it, or it is not an analysed image of the study's latest analysis)."""
    study = _get_study(session, study_instance_uid)
    if study.images_removed_at is not None:
        raise NotFoundError(_("This study's images were removed by retention; its overlays remain."))
    image = _analysis_image(session, study, sop_instance_uid)
    stored = session.scalar(select(Instance.path).where(
        Instance.study_id == study.id, Instance.sop_instance_uid == sop_instance_uid,
        Instance.path != "")) if image.status == "analysed" else None
    path = Path(stored) if stored else None
    if path is None or not path.is_file():
        raise NotFoundError(_("Image %(uid)s of this study is not on this node.") % {"uid": sop_instance_uid})
    return path


def study_verdicts(session: Session, study_instance_uid: str,
                   rules: Sequence[RouteRule] | None = None) -> tuple[str, list[RouteVerdict]] | None:
    """The study's state and each route's verdict for it (the database's routes unless
    ``rules`` are given: a dry run of an edited document), from its images' headers, the
    associations' AE titles and its current result; None when the node has no such study."""
    inputs = routing_inputs(session, study_instance_uid)
    if inputs is None:
        return None
    if rules is None:
        rules = [RouteRule.from_record(r) for r in routes_in_order(session)]
    return inputs.state, explain(rules, StudyFacts.from_stored(inputs, read_headers(inputs.paths)))


@dataclass(frozen=True)
class StudyOperations:
    """What an admin can do with a study from its page: the routing dry run against the
    routes in force, and whether it can be analysed again (and why not)."""

    verdicts: list[RouteVerdict]
    reanalyse_refused: str | None  # why a re-analysis cannot be asked for now; None: it can
    deliveries: int  # of the current result: what "send again" would resend


def study_operations(session: Session, study_instance_uid: str) -> StudyOperations:
    study = _get_study(session, study_instance_uid)
    found = study_verdicts(session, study_instance_uid)
    assert found is not None  # the study exists
    why_not = reanalysis_refused(session, study)
    deliveries = session.scalar(
        select(func.count()).select_from(Delivery).join(Report, Delivery.report_id == Report.id)
        .where(Report.analysis_id == study.current_analysis_id)) or 0
    return StudyOperations(found[1], why_not, deliveries)


def find_study_uid(session: Session, text: str) -> str | None:
    """The Study Instance UID of the study ``text`` names: its UID, else its accession number
    (the latest study received under it); None when no study matches."""
    if not text or len(text) > 64:
        return None
    by_uid = session.scalar(select(Study.study_instance_uid).where(Study.study_instance_uid == text))
    if by_uid is not None:
        return by_uid
    return session.scalar(select(Study.study_instance_uid).where(Study.accession_number == text)
                          .order_by(Study.last_received_at.desc()).limit(1))
