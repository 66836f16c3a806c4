"""What an admin asks for by hand (CLI and JSON API alike): analyse a study again, send
deliveries again. Each request is a row in the database (a job, a pending delivery) that the
worker or the sender carries out, and an audit entry; nothing here touches the network."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammogate.db.engine import utcnow
from mammogate.db.models import (
    Analysis,
    AssociationRecord,
    AuditEntry,
    Delivery,
    DestinationRow,
    Instance,
    Job,
    Report,
    Study,
)
from mammogate.db.queue import (
    enqueue_analysis,
    enqueue_destination_test,
    reanalysable,
    resubmit_delivery,
)
from mammogate.db.retention import removed_reason
from mammogate.db.states import DeliveryState
from mammogate.db.wakeup import ANALYSIS, DELIVERY, announce


class RequestRefused(ValueError):
    """The request cannot be carried out; the message says why and what to do."""


def _audit(session: Session, actor: str, action: str, target: str, detail: str = "") -> None:
    session.add(AuditEntry(at=utcnow(), actor=actor, action=action, target=target, detail=detail))


def find_study(session: Session, study_instance_uid: str) -> Study:
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid)
                           .with_for_update())
    if study is None:
        raise RequestRefused(f"no study {study_instance_uid} on this node")
    return study


def request_reanalysis(session: Session, study_instance_uid: str, *, actor: str) -> Job:
    """Queue a new analysis of a study; its result supersedes the current one, and the objects
    it sends name their predecessors."""
    study = find_study(session, study_instance_uid)
    why_not = reanalysable(study)
    if why_not is not None:
        raise RequestRefused(f"study {study_instance_uid} cannot be analysed again now: {why_not}")
    if study.images_removed_at is not None:
        raise RequestRefused(f"{removed_reason(study_instance_uid, study.images_removed_at)}: it "
                             "cannot be analysed again (send the study again under new UIDs)")
    if session.scalar(select(Instance.id).where(Instance.study_id == study.id).limit(1)) is None:
        raise RequestRefused(f"study {study_instance_uid} has no stored images")
    job = enqueue_analysis(session, study)
    announce(session, ANALYSIS)
    session.flush()
    _audit(session, actor, "study-reanalyse", study_instance_uid, f"job {job.id}")
    return job


def request_resubmission(
    session: Session, *, actor: str, delivery_ids: Sequence[int] = (),
    study_instance_uid: str | None = None, dead: bool = False,
) -> list[Delivery]:
    """Send deliveries again from scratch: the ones named, every delivery of a study's current
    analysis, or every dead one. Deliveries being sent right now are left alone."""
    query = select(Delivery).order_by(Delivery.id)
    if delivery_ids:
        query = query.where(Delivery.id.in_(delivery_ids))
    if study_instance_uid is not None:
        study = find_study(session, study_instance_uid)
        latest = session.scalar(select(Analysis.id).where(Analysis.study_id == study.id)
                                .order_by(Analysis.id.desc()).limit(1))
        if latest is None:
            raise RequestRefused(f"study {study_instance_uid} has not been analysed: nothing to "
                                 "resubmit (use `mammogate study reanalyse`)")
        query = query.join(Report).where(Report.analysis_id == latest)
    if dead:
        query = query.where(Delivery.state == DeliveryState.DEAD)
    if not (delivery_ids or study_instance_uid or dead):
        raise RequestRefused("name deliveries by id, or give a study or --dead")
    rows = list(session.scalars(query.with_for_update(of=Delivery)))
    missing = set(delivery_ids) - {row.id for row in rows}
    if missing:
        exist = set(session.scalars(select(Delivery.id).where(Delivery.id.in_(missing))))
        if missing - exist:
            raise RequestRefused(
                f"no delivery {', '.join(str(i) for i in sorted(missing - exist))}")
        wanted = " and ".join(
            ([f"of the current analysis of study {study_instance_uid}"] if study_instance_uid
             else []) + (["dead"] if dead else []))
        raise RequestRefused(f"delivery {', '.join(str(i) for i in sorted(exist))} exists but "
                             f"is not {wanted}")
    resubmitted = [row for row in rows if resubmit_delivery(row)]
    if resubmitted:
        announce(session, DELIVERY)
    for row in resubmitted:
        _audit(session, actor, "delivery-resubmit", f"delivery {row.id}",
               f"report {row.report_id} to destination {row.destination_id}")
    return resubmitted


def request_destination_test(session: Session, name: str, *, actor: str) -> Job:
    """Queue a connection test of a destination, for the sender (which has the network)."""
    if session.scalar(select(DestinationRow.id).where(DestinationRow.name == name)) is None:
        raise RequestRefused(f"no destination {name!r} on this node")
    job = enqueue_destination_test(session, name)
    announce(session, DELIVERY)
    session.flush()
    _audit(session, actor, "destination-test", name, f"job {job.id}")
    return job


def association_history(
    session: Session, *, limit: int = 50, calling_ae_title: str | None = None,
    rejected_only: bool = False,
) -> list[AssociationRecord]:
    """The latest associations requested of the SCP, newest first."""
    query = select(AssociationRecord).order_by(AssociationRecord.id.desc()).limit(limit)
    if calling_ae_title:
        query = query.where(AssociationRecord.calling_ae_title == calling_ae_title)
    if rejected_only:
        query = query.where(AssociationRecord.accepted.is_(False))
    return list(session.scalars(query))
