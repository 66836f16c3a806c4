"""What an admin asks for by hand (CLI and JSON API alike): analyse a study again, send
deliveries again. Each request is a row in the database (a job, a pending delivery) that the
worker or the sender carries out, and an audit entry; nothing here touches the network."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mammogate.db.audit import audit
from mammogate.db.models import (
    Analysis,
    AnalysisImage,
    AssociationRecord,
    Delivery,
    DestinationRow,
    Feedback,
    Finding,
    Instance,
    Job,
    Report,
    Study,
    heatmap_file,
)
from mammogate.db.queue import (
    enqueue_analysis,
    enqueue_destination_test,
    reanalysable,
    resubmit_delivery,
)
from mammogate.db.retention import removed_reason
from mammogate.db.states import DeliveryState, JobState, StudyState
from mammogate.db.wakeup import ANALYSIS, DELIVERY, announce


class RequestRefused(ValueError):
    """The request cannot be carried out; the message says why and what to do."""


class NotOnThisNode(RequestRefused):
    """The study, delivery or destination the request names does not exist here."""


def find_study(session: Session, study_instance_uid: str) -> Study:
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid)
                           .with_for_update())
    if study is None:
        raise NotOnThisNode(f"no study {study_instance_uid} on this node")
    return study


def reanalysis_refused(session: Session, study: Study) -> str | None:
    """Why ``study`` cannot be analysed again now (a sentence naming it), or None if it can."""
    uid = study.study_instance_uid
    why_not = reanalysable(study)
    if why_not is not None:
        return f"study {uid} cannot be analysed again now: {why_not}"
    if study.images_removed_at is not None:
        return (f"{removed_reason(uid, study.images_removed_at)}: it cannot be analysed again "
                "(send the study again under new UIDs)")
    if session.scalar(select(Instance.id).where(Instance.study_id == study.id).limit(1)) is None:
        return f"study {uid} has no stored images"
    return None


def request_reanalysis(session: Session, study_instance_uid: str, *, actor: str) -> Job:
    """Queue a new analysis of a study; its result supersedes the current one, and the objects
    it sends name their predecessors."""
    study = find_study(session, study_instance_uid)
    why_not = reanalysis_refused(session, study)
    if why_not is not None:
        raise RequestRefused(why_not)
    job = enqueue_analysis(session, study)
    announce(session, ANALYSIS)
    session.flush()
    audit(session, actor, "study-reanalyse", study_instance_uid, f"job {job.id}")
    return job


def request_resubmission(
    session: Session, *, actor: str, delivery_ids: Sequence[int] = (),
    study_instance_uid: str | None = None, dead: bool = False,
) -> list[Delivery]:
    """Send deliveries again from scratch: the ones named, every delivery of a study's current
    analysis, or every dead one. Deliveries being sent right now are left alone."""
    impossible = [i for i in delivery_ids if not 0 < i < 2**63]  # beyond any database's ids
    if impossible:
        raise NotOnThisNode(f"no delivery {impossible[0]}: delivery ids are whole numbers from 1 "
                             "(`mammogate delivery list` shows them)")
    query = select(Delivery).order_by(Delivery.id)
    if delivery_ids:
        query = query.where(Delivery.id.in_(delivery_ids))
    if study_instance_uid is not None:
        study = find_study(session, study_instance_uid)
        if study.state in (StudyState.QUEUED, StudyState.PROCESSING):
            raise RequestRefused(f"study {study_instance_uid} is being analysed again ({study.state}): "
                                 "its new result is sent when it is done; resend after that")
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
            raise NotOnThisNode(
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
        audit(session, actor, "delivery-resubmit", f"delivery {row.id}",
               f"report {row.report_id} to destination {row.destination_id}")
    return resubmitted


def request_destination_test(session: Session, name: str, *, actor: str) -> Job:
    """Queue a connection test of a destination, for the sender (which has the network)."""
    if session.scalar(select(DestinationRow.id).where(DestinationRow.name == name)) is None:
        raise NotOnThisNode(f"no destination {name!r} on this node")
    job = enqueue_destination_test(session, name)
    announce(session, DELIVERY)
    session.flush()
    audit(session, actor, "destination-test", name, f"job {job.id}")
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


@dataclass(frozen=True)
class Purged:
    """What a purge removed from the database, and the files that are now to go."""

    study_instance_uid: str
    instances: int
    analyses: int
    reports: int
    deliveries: int
    files: tuple[Path, ...]  # images, result objects, overlays: unlink after the commit


def purge_study(session: Session, study_instance_uid: str, *, actor: str, reason: str) -> Purged:
    """Remove a study (wrong patient, an erasure request): its instances, analyses, findings,
    result objects, deliveries, feedback and jobs go from the database, and the files are
    returned for the caller to unlink once this transaction has committed. The audit rows stay,
    and one more says who purged it and why. Refused while the study is being received,
    analysed or its results sent (try again when that is over)."""
    reason = reason.strip()
    if len(reason) < 4:
        raise RequestRefused("say why the study is purged (e.g. 'wrong patient', 'erasure request')")
    study = find_study(session, study_instance_uid)
    busy = session.scalar(select(Job.id).where(Job.study_id == study.id, Job.state == JobState.RUNNING).limit(1))
    if busy is not None:
        raise RequestRefused(f"study {study_instance_uid} is being analysed now (job {busy}): try again "
                             "when the analysis is over")
    analysis_ids = list(session.scalars(select(Analysis.id).where(Analysis.study_id == study.id)))
    report_rows = list(session.execute(select(Report.id, Report.path).where(Report.analysis_id.in_(analysis_ids))))
    report_ids = [r.id for r in report_rows]
    if session.scalar(select(Delivery.id).where(Delivery.report_id.in_(report_ids),
                                                Delivery.state == DeliveryState.SENDING).limit(1)):
        raise RequestRefused(f"a result of study {study_instance_uid} is being sent now: try again in a minute")
    files = [Path(p) for p in session.scalars(select(Instance.path).where(Instance.study_id == study.id)) if p]
    files += [Path(r.path) for r in report_rows if r.path]
    overlays = [Path(p) for p in session.scalars(select(AnalysisImage.overlay_path).where(
        AnalysisImage.analysis_id.in_(analysis_ids))) if p]
    files += overlays + [heatmap_file(p) for p in overlays]
    counts = {"deliveries": _deleted(session.execute(delete(Delivery).where(Delivery.report_id.in_(report_ids))))}
    session.execute(delete(Report).where(Report.id.in_(report_ids)))
    session.execute(delete(Finding).where(Finding.analysis_id.in_(analysis_ids)))
    session.execute(delete(AnalysisImage).where(AnalysisImage.analysis_id.in_(analysis_ids)))
    session.execute(delete(Feedback).where(Feedback.study_id == study.id))
    session.execute(update(Analysis).where(Analysis.id.in_(analysis_ids)).values(supersedes_id=None))
    study.current_analysis_id = None
    session.flush()
    session.execute(delete(Analysis).where(Analysis.id.in_(analysis_ids)))
    session.execute(delete(Job).where(Job.study_id == study.id))
    counts["instances"] = _deleted(session.execute(delete(Instance).where(Instance.study_id == study.id)))
    session.delete(study)
    audit(session, actor, "study purged", study_instance_uid,
           f"{reason[:200]}; {counts['instances']} image(s), {len(analysis_ids)} analysis(es), "
           f"{len(report_ids)} result object(s), {counts['deliveries']} delivery(ies) removed")
    return Purged(study_instance_uid, counts["instances"], len(analysis_ids), len(report_ids),
                  counts["deliveries"], tuple(files))


def _deleted(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def remove_purged_files(purged: Purged, roots: Sequence[Path]) -> list[str]:
    """Unlink a committed purge's files (only those inside ``roots``: the data directory and the
    spool) and the study's overlay and report folders; the problems, one line each (an empty
    list: all gone)."""
    problems = []
    bases = [r.resolve() for r in roots]
    folders = {base / sub / purged.study_instance_uid for base in bases for sub in ("overlays", "reports")}
    for path in purged.files:
        try:
            resolved = path.resolve()
            if not any(base in resolved.parents for base in bases):
                problems.append(f"{resolved}: outside the data directory and the spool, left alone")
                continue
            resolved.unlink(missing_ok=True)
            folders.add(resolved.parent)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        if not folder.is_dir() or not any(base in folder.resolve().parents for base in bases):
            continue
        try:
            if folder.name == purged.study_instance_uid:
                shutil.rmtree(folder)  # the study's own folder: whatever is left in it goes
            else:
                folder.rmdir()  # a shared folder goes only when empty
        except OSError as exc:
            if folder.name == purged.study_instance_uid or exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                problems.append(f"{folder}: {exc.strerror or exc}")
    return problems
