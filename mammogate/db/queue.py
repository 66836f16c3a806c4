"""The job and delivery queues: claim, complete, retry, lease.

A claim is one statement: ``UPDATE ... WHERE id = (SELECT id ... LIMIT 1 [FOR UPDATE SKIP LOCKED])
RETURNING id``. On PostgreSQL the row lock makes concurrent workers skip each other's rows; on
SQLite the statement runs inside ``BEGIN IMMEDIATE`` so it is atomic by construction. A claimed
row carries a lease; a row whose lease expired (its worker died) is claimable again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from mammogate.db.engine import utcnow
from mammogate.db.models import Delivery, Job, Study

ANALYZE = "analyze"


def enqueue_analysis(session: Session, study: Study) -> Job:
    now = utcnow()
    job = Job(kind=ANALYZE, study_id=study.id, state="pending", run_after=now, created_at=now)
    session.add(job)
    study.state = "queued"
    study.updated_at = now
    return job


def settle_studies(session: Session, settle_seconds: float) -> list[Study]:
    """Queue an analysis for every study that has been quiet for ``settle_seconds``."""
    cutoff = utcnow() - timedelta(seconds=settle_seconds)
    studies = list(
        session.scalars(
            select(Study)
            .where(Study.state == "receiving", Study.last_received_at <= cutoff)
            .with_for_update(skip_locked=True)
        )
    )
    for study in studies:
        enqueue_analysis(session, study)
    return studies


def _claim(
    session: Session,
    model: type[Job] | type[Delivery],
    due: Any,
    *,
    active_state: str,
    worker_id: str,
    lease_seconds: float,
    max_attempts: int,
) -> int | None:
    """Claim the first due row: pending and due, or active with an expired lease and attempts
    left (one whose attempts are used up is given up by ``give_up_abandoned``)."""
    now = utcnow()
    candidate = (
        select(model.id)
        .where(
            or_(
                and_(model.state == "pending", due <= now),
                and_(
                    model.state == active_state,
                    model.lease_until < now,
                    model.attempts < max_attempts,
                ),
            )
        )
        .order_by(due, model.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    claimed: int | None = session.execute(
        update(model)
        .where(model.id == candidate)
        .values(
            state=active_state,
            locked_by=worker_id,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=model.attempts + 1,
        )
        .returning(model.id)
    ).scalar_one_or_none()
    return claimed


def claim_job(
    session: Session, worker_id: str, lease_seconds: float, max_attempts: int = 3
) -> Job | None:
    job_id = _claim(session, Job, Job.run_after, active_state="running", worker_id=worker_id,
                    lease_seconds=lease_seconds, max_attempts=max_attempts)
    return None if job_id is None else session.get(Job, job_id, populate_existing=True)


def complete_job(job: Job) -> None:
    job.state = "done"
    job.finished_at = utcnow()
    job.lease_until = None
    job.last_error = ""


def supersede_job(job: Job) -> None:
    job.state = "superseded"
    job.finished_at = utcnow()
    job.lease_until = None


def analysis_superseded(session: Session, job: Job, study: Study) -> bool:
    """Whether ``job``'s analysis of ``study`` is no longer wanted: images came after it was
    queued (the study is receiving again, and settling queues a fresh job), or a newer job for
    the study is queued, running or done. Lock the study first (``with_for_update``)."""
    if study.state == "receiving":
        return True
    newer = session.scalar(
        select(Job.id)
        .where(Job.study_id == study.id, Job.id > job.id,
               Job.state.in_(("pending", "running", "done")))
        .limit(1)
    )
    return newer is not None


def fail_job(job: Job, error: str, *, max_attempts: int, retry_seconds: float) -> bool:
    """Record a failure; retry later unless attempts are used up. Returns True if final."""
    job.last_error = error
    job.lease_until = None
    if job.attempts >= max_attempts:
        job.state = "failed"
        job.finished_at = utcnow()
        return True
    job.state = "pending"
    job.run_after = utcnow() + timedelta(seconds=retry_seconds)
    return False


def claim_delivery(
    session: Session, worker_id: str, lease_seconds: float, max_attempts: int = 20
) -> Delivery | None:
    delivery_id = _claim(session, Delivery, Delivery.next_attempt_at, active_state="sending",
                         worker_id=worker_id, lease_seconds=lease_seconds,
                         max_attempts=max_attempts)
    return None if delivery_id is None else session.get(Delivery, delivery_id, populate_existing=True)


def retry_delay(attempts: int, initial_seconds: float, max_seconds: float) -> float:
    """Exponential backoff: initial, 2x, 4x, ... capped at max."""
    return float(min(max_seconds, initial_seconds * (2 ** max(0, attempts - 1))))


def _abandoned(
    session: Session, model: type[Job] | type[Delivery], active_state: str, max_attempts: int
) -> list[Any]:
    """Rows whose holder died (lease expired) on their last attempt."""
    return list(
        session.scalars(
            select(model)
            .where(model.state == active_state, model.lease_until < utcnow(),
                   model.attempts >= max_attempts)
            .with_for_update(skip_locked=True)
        )
    )


def give_up_abandoned_jobs(session: Session, max_attempts: int) -> list[Job]:
    """Fail jobs whose worker died on their last attempt: a job that kills its worker every
    time must not be retried forever."""
    jobs: list[Job] = _abandoned(session, Job, "running", max_attempts)
    for job in jobs:
        fail_job(job, f"the worker stopped during each of {job.attempts} attempts (crash or kill)",
                 max_attempts=max_attempts, retry_seconds=0)
    return jobs


def give_up_abandoned_deliveries(session: Session, max_attempts: int) -> list[Delivery]:
    deliveries: list[Delivery] = _abandoned(session, Delivery, "sending", max_attempts)
    for delivery in deliveries:
        delivery.state = "dead"
        delivery.lease_until = None
        delivery.last_error = (
            f"the sender stopped during each of {delivery.attempts} attempts (crash or kill)"
        )
    return deliveries


def expire_leases(session: Session, holders: Sequence[str]) -> int:
    """End the leases held by ``holders`` (processes known to be gone), so their rows are
    claimable now rather than when the leases run out. Returns how many rows were released."""
    if not holders:
        return 0
    now = utcnow()
    released = 0
    for model, state in ((Job, "running"), (Delivery, "sending")):
        result = session.execute(
            update(model)
            .where(model.state == state, model.locked_by.in_(holders), model.lease_until > now)
            .values(lease_until=now)
        )
        released += int(getattr(result, "rowcount", 0) or 0)
    return released


def lease_holders(session: Session) -> list[str]:
    rows = session.scalars(
        select(Job.locked_by).where(Job.state == "running").union(
            select(Delivery.locked_by).where(Delivery.state == "sending")
        )
    )
    return [r for r in rows if r]
