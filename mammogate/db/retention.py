"""Retention: which studies' spool files may go, and the record that they went.

A study's images may be removed once it is settled (done, failed or skipped, no analysis
pending or running), it has had at least one delivery and every delivery of every analysis of
it is delivered, and its last image, analysis and delivery are all older than the cutoff. Its
results (analyses, result objects, overlays) are kept; ``images_removed_at`` says when the
images went, and an audit entry says how many.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.orm import Session

from mammogate.db.audit import audit
from mammogate.db.engine import utcnow
from mammogate.db.models import Analysis, Delivery, Instance, Job, Report, Study
from mammogate.db.states import DeliveryState, JobState, StudyState

SETTLED = (StudyState.DONE, StudyState.FAILED, StudyState.SKIPPED)


def _retention_filter(cutoff: datetime) -> list[ColumnElement[bool]]:
    of_study = and_(Report.analysis_id == Analysis.id, Analysis.study_id == Study.id)
    last_delivered = (
        select(func.max(Delivery.delivered_at)).join(Report, Delivery.report_id == Report.id)
        .join(Analysis, Report.analysis_id == Analysis.id).where(Analysis.study_id == Study.id)
        .scalar_subquery()
    )
    undelivered = exists(
        select(Delivery.id).join(Report, Delivery.report_id == Report.id).join(Analysis, of_study)
        .where(Delivery.state != DeliveryState.DELIVERED)
    )
    recent_analysis = exists(
        select(Analysis.id).where(Analysis.study_id == Study.id, Analysis.created_at >= cutoff)
    )
    live_job = exists(
        select(Job.id).where(Job.study_id == Study.id, Job.state.in_((JobState.PENDING, JobState.RUNNING)))
    )
    return [
        Study.images_removed_at.is_(None),
        Study.state.in_(SETTLED),
        Study.last_received_at < cutoff,
        # NULL (no delivery, or none delivered) compares false: at least one is delivered
        last_delivered < cutoff,
        ~undelivered,
        ~recent_analysis,
        ~live_job,
    ]


def studies_past_retention(session: Session, cutoff: datetime, limit: int = 100) -> list[int]:
    """Ids of studies whose images may be removed (oldest first), at most ``limit``."""
    return list(session.scalars(
        select(Study.id).where(*_retention_filter(cutoff)).order_by(Study.id).limit(limit)
    ))


def lock_for_removal(session: Session, study_id: int, cutoff: datetime) -> Study | None:
    """The study, locked, if its images may still be removed (nothing changed since it was
    selected: no image came, no re-analysis was asked for); else None."""
    return session.scalar(
        select(Study).where(Study.id == study_id, *_retention_filter(cutoff))
        .with_for_update(skip_locked=True)
    )


def instance_paths(session: Session, study_id: int) -> list[str]:
    return list(session.scalars(select(Instance.path).where(Instance.study_id == study_id)
                                .order_by(Instance.id)))


def images_removed(session: Session, study: Study, *, detail: str, actor: str) -> None:
    """Record that ``study``'s spool files were removed (it keeps its rows and results)."""
    now = utcnow()
    study.images_removed_at = now
    study.updated_at = now
    audit(session, actor=actor, action="study-images-removed", target=study.study_instance_uid, detail=detail, at=now)


def removed_reason(study_instance_uid: str, removed_at: datetime) -> str:
    """Why a study whose images are gone cannot take images or be analysed again."""
    return (f"the images of study {study_instance_uid} were removed by retention on "
            f"{removed_at:%Y-%m-%d} (storage.retention_days); its results are kept")
