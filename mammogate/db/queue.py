"""The job and delivery queues: claim, complete, retry, lease.

A claim is one statement: ``UPDATE ... WHERE id = (SELECT id ... LIMIT 1 [FOR UPDATE SKIP LOCKED])
RETURNING id``. On PostgreSQL the row lock makes concurrent workers skip each other's rows; on
SQLite the statement runs inside ``BEGIN IMMEDIATE`` so it is atomic by construction. A claimed
row carries a lease; a row whose lease expired (its worker died) is claimable again.
"""

from __future__ import annotations

from datetime import timedelta

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


def claim_job(session: Session, worker_id: str, lease_seconds: float) -> Job | None:
    now = utcnow()
    candidate = (
        select(Job.id)
        .where(
            or_(
                and_(Job.state == "pending", Job.run_after <= now),
                and_(Job.state == "running", Job.lease_until < now),
            )
        )
        .order_by(Job.run_after, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    job_id = session.execute(
        update(Job)
        .where(Job.id == candidate)
        .values(
            state="running",
            locked_by=worker_id,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
        )
        .returning(Job.id)
    ).scalar_one_or_none()
    if job_id is None:
        return None
    return session.get(Job, job_id, populate_existing=True)


def complete_job(job: Job) -> None:
    job.state = "done"
    job.finished_at = utcnow()
    job.lease_until = None
    job.last_error = ""


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


def claim_delivery(session: Session, worker_id: str, lease_seconds: float) -> Delivery | None:
    now = utcnow()
    candidate = (
        select(Delivery.id)
        .where(
            or_(
                and_(Delivery.state == "pending", Delivery.next_attempt_at <= now),
                and_(Delivery.state == "sending", Delivery.lease_until < now),
            )
        )
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    delivery_id = session.execute(
        update(Delivery)
        .where(Delivery.id == candidate)
        .values(
            state="sending",
            locked_by=worker_id,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=Delivery.attempts + 1,
        )
        .returning(Delivery.id)
    ).scalar_one_or_none()
    if delivery_id is None:
        return None
    return session.get(Delivery, delivery_id, populate_existing=True)


def retry_delay(attempts: int, initial_seconds: float, max_seconds: float) -> float:
    """Exponential backoff: initial, 2x, 4x, ... capped at max."""
    return float(min(max_seconds, initial_seconds * (2 ** max(0, attempts - 1))))
