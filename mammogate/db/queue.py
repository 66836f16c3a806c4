"""The job and delivery queues, and every state transition of studies, jobs and deliveries.

A claim is one statement: ``UPDATE ... WHERE id = (SELECT id ... LIMIT 1 [FOR UPDATE SKIP LOCKED])
RETURNING id``. On PostgreSQL the row lock makes concurrent workers skip each other's rows; on
SQLite the statement runs inside ``BEGIN IMMEDIATE`` so it is atomic by construction. A claimed
row carries a lease; a row whose lease expired (its worker died) is claimable again.

This module is the one owner of the state machines in :mod:`mammogate.db.states`: no other
module assigns a ``state``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from mammogate.db.engine import utcnow
from mammogate.db.models import Delivery, DestinationRow, Instance, Job, Study
from mammogate.db.states import LIVE_JOB_STATES, DeliveryState, JobKind, JobState, StudyState

ANALYZE = JobKind.ANALYZE


# -- studies -------------------------------------------------------------------------------

def enqueue_analysis(session: Session, study: Study) -> Job:
    """Queue an analysis of ``study`` (settled, or asked for again); the study is queued."""
    now = utcnow()
    job = Job(kind=JobKind.ANALYZE, study_id=study.id, state=JobState.PENDING, run_after=now,
              created_at=now)
    session.add(job)
    study.state = StudyState.QUEUED
    study.updated_at = now
    return job


def settle_studies(
    session: Session, settle_seconds: float, expected_views: Sequence[str] = ()
) -> list[tuple[Study, str]]:
    """Queue an analysis for every receiving study that is ready: all of ``expected_views``
    (e.g. RCC, LCC, RMLO, LMLO) are present, or it has been quiet for ``settle_seconds``.
    Returns each study with why it is ready."""
    return queue_ready_studies(session, ready_studies(session, settle_seconds, expected_views),
                               settle_seconds)


def ready_studies(
    session: Session, settle_seconds: float, expected_views: Sequence[str] = ()
) -> dict[int, str]:
    """The receiving studies that are ready, by id, with why: a read that locks nothing (the
    worker asks this in a read transaction, and writes only when the answer is not empty)."""
    cutoff = utcnow() - timedelta(seconds=settle_seconds)
    receiving = session.execute(
        select(Study.id, Study.last_received_at).where(Study.state == StudyState.RECEIVING)
    ).all()
    why: dict[int, str] = {}
    waiting = []
    for study_id, last in receiving:
        if last <= cutoff:
            why[study_id] = f"quiet for {settle_seconds:g} s"
        else:
            waiting.append(study_id)
    if expected_views and waiting:
        for study_id, views in views_present(session, waiting).items():
            if set(expected_views) <= views:
                why[study_id] = f"views {', '.join(expected_views)} present"
    return why


def queue_ready_studies(
    session: Session, ready: dict[int, str], settle_seconds: float
) -> list[tuple[Study, str]]:
    """Queue an analysis of each study of ``ready_studies`` that is still receiving (locked:
    another worker may have queued it, and a quiet one may have received an image since)."""
    if not ready:
        return []
    cutoff = utcnow() - timedelta(seconds=settle_seconds)
    studies = session.scalars(
        select(Study)
        .where(Study.id.in_(list(ready)), Study.state == StudyState.RECEIVING)
        .with_for_update(skip_locked=True)
    )
    queued = []
    for study in studies:
        if study.last_received_at > cutoff and ready[study.id].startswith("quiet"):
            continue  # an image came meanwhile
        enqueue_analysis(session, study)
        queued.append((study, ready[study.id]))
    return queued


def jobs_waiting(session: Session, kinds: Sequence[str] = (JobKind.ANALYZE,)) -> bool:
    """Whether a job of ``kinds`` is due, or running on an expired lease (claimable again or
    to be given up): the worker opens a write transaction only then."""
    now = utcnow()
    return session.scalar(
        select(Job.id).where(
            Job.kind.in_(kinds),
            or_(and_(Job.state == JobState.PENDING, Job.run_after <= now),
                and_(Job.state == JobState.RUNNING, Job.lease_until < now)),
        ).limit(1)
    ) is not None


def views_present(session: Session, study_ids: Sequence[int]) -> dict[int, set[str]]:
    """Laterality + view (e.g. "RMLO") of the images each study holds."""
    present: dict[int, set[str]] = {}
    rows = session.execute(
        select(Instance.study_id, Instance.laterality, Instance.view)
        .where(Instance.study_id.in_(study_ids))
        .distinct()
    )
    for study_id, laterality, view in rows:
        if laterality and view:
            present.setdefault(study_id, set()).add(f"{laterality}{view}")
    return present


def next_delivery_due(session: Session) -> datetime | None:
    """When the earliest pending delivery is due (a retry's backoff)."""
    return session.scalar(
        select(func.min(Delivery.next_attempt_at)).where(Delivery.state == DeliveryState.PENDING)
    )


def next_settle_due(session: Session, settle_seconds: float) -> datetime | None:
    """When the quietest receiving study will have been quiet for ``settle_seconds``."""
    last = session.scalar(
        select(func.min(Study.last_received_at)).where(Study.state == StudyState.RECEIVING)
    )
    return None if last is None else last + timedelta(seconds=settle_seconds)


_STUDIES = cast(Table, Study.__table__)
# built once (the statement of every image but a study's first): the values are bound per call
_ANOTHER_IMAGE = (
    update(_STUDIES)
    .where(_STUDIES.c.study_instance_uid == bindparam("uid"),
           _STUDIES.c.state == StudyState.RECEIVING, _STUDIES.c.images_removed_at.is_(None))
    .values(instance_count=_STUDIES.c.instance_count + bindparam("count"),
            last_received_at=bindparam("now"),
            updated_at=bindparam("now"))
    .returning(_STUDIES.c.id)
)


def another_image_of_receiving_study(
    connection: Connection, study_instance_uid: str, now: datetime, count: int = 1
) -> int | None:
    """Count ``count`` more images of a study that is receiving (and whose images retention
    has not removed), in one statement that also locks its row; its id, or None when the study
    is new or in another state (then :func:`study_receives_images` on the locked row)."""
    # Core, on the caller's connection: the ORM's bulk-update machinery costs more than the
    # statement on this per-image path
    found: int | None = connection.execute(
        _ANOTHER_IMAGE, {"uid": study_instance_uid, "now": now, "count": count}
    ).scalar_one_or_none()
    return found


def study_receives_images(session: Session, study: Study) -> str | None:
    """An image arrived for ``study`` (locked): it is receiving until it settles again. Its
    pending analyses are superseded (settling queues a fresh one). Returns the state it left,
    or None if it was already receiving."""
    if study.state == StudyState.RECEIVING:
        return None
    previous = study.state
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.study_id == study.id, Job.state == JobState.PENDING)
        .values(state=JobState.SUPERSEDED, finished_at=now)
    )
    study.state = StudyState.RECEIVING
    study.updated_at = now
    return previous


def study_processing(study: Study) -> None:
    study.state = StudyState.PROCESSING
    study.updated_at = utcnow()


def study_analysed(study: Study, *, analysed: bool, failed: bool, problems: str) -> None:
    """The analysis of ``study`` is recorded: done when a view was analysed, else failed when
    one failed, else skipped (nothing the model analyses)."""
    study.last_error = problems
    if study.state == StudyState.PROCESSING:
        study.state = (
            StudyState.DONE if analysed else StudyState.FAILED if failed else StudyState.SKIPPED
        )
    study.updated_at = utcnow()


def study_retry_later(study: Study) -> None:
    """A failed attempt that will be retried: the study waits in the queue again."""
    if study.state == StudyState.PROCESSING:
        study.state = StudyState.QUEUED
        study.updated_at = utcnow()


def study_failed(session: Session, job: Job, error: str) -> None:
    """The study of a job that failed for good ends failed, unless another analysis of it
    follows (new images came) or a newer one is queued, running or done."""
    study = (None if job.study_id is None
             else session.get(Study, job.study_id, with_for_update=True))
    if study is None or analysis_superseded(session, job, study):
        return
    study.last_error = error
    # queued too: a worker may die between claiming the job and marking the study
    if study.state in (StudyState.QUEUED, StudyState.PROCESSING):
        study.state = StudyState.FAILED
    study.updated_at = utcnow()


def reanalysable(study: Study) -> str | None:
    """Why ``study`` cannot be analysed again now, or None if it can."""
    if study.state == StudyState.RECEIVING:
        return "it is still receiving images (it is analysed when it settles)"
    if study.state in (StudyState.QUEUED, StudyState.PROCESSING):
        return f"an analysis of it is already {study.state}"
    return None


# -- claims ---------------------------------------------------------------------------------

def _claim(
    session: Session,
    model: type[Job] | type[Delivery],
    due: Any,
    *,
    active_state: str,
    worker_id: str,
    lease_seconds: float,
    max_attempts: int,
    extra: Any = None,
) -> int | None:
    """Claim the first due row: pending and due, or active with an expired lease and attempts
    left (one whose attempts are used up is given up by ``give_up_abandoned``)."""
    now = utcnow()
    where = or_(
        and_(model.state == "pending", due <= now),
        and_(
            model.state == active_state,
            model.lease_until < now,
            model.attempts < max_attempts,
        ),
    )
    if extra is not None:
        where = and_(where, extra)
    candidate = (
        select(model.id)
        .where(where)
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


# -- jobs -----------------------------------------------------------------------------------

def claim_job(
    session: Session, worker_id: str, lease_seconds: float, max_attempts: int = 3,
    kinds: Sequence[str] = (JobKind.ANALYZE,), *, first_attempt_only: bool = False,
) -> Job | None:
    """Claim the next due job of one of ``kinds`` (each role runs its own kinds);
    ``first_attempt_only``: only a job never tried (a batch leaves retried ones alone)."""
    extra: Any = Job.kind.in_(kinds)
    if first_attempt_only:
        extra = and_(extra, Job.attempts == 0)
    job_id = _claim(session, Job, Job.run_after, active_state=JobState.RUNNING,
                    worker_id=worker_id, lease_seconds=lease_seconds, max_attempts=max_attempts,
                    extra=extra)
    return None if job_id is None else session.get(Job, job_id, populate_existing=True)


def give_back_job(session: Session, job_id: int, worker_id: str) -> bool:
    """A job this worker claimed but will not run (the node is stopping, or the database failed
    before it started): claimable again at once, its attempt not counted, its study queued."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or not job_held_by(job, worker_id):
        return False
    job.state = JobState.PENDING
    job.locked_by = ""
    job.lease_until = None
    job.attempts = max(0, job.attempts - 1)
    job.run_after = utcnow()
    if job.study_id is not None:
        study = session.get(Study, job.study_id)
        if study is not None:
            study_retry_later(study)
    return True


def give_back_held(session: Session, holder: str) -> tuple[list[int], list[int]]:
    """Give back every job and delivery ``holder`` holds; for a loop between two units of work,
    which holds nothing in hand. Such rows are claims whose commit the loop never heard of (the
    database failed while answering it) or that it could not give back while the database was
    away: claimable again at once, their attempts not counted, rather than when their leases
    expire. Returns the ids given back, (jobs, deliveries)."""
    held_jobs = list(session.scalars(  # locked: a claim of another cannot slip in between
        select(Job.id).where(Job.state == JobState.RUNNING, Job.locked_by == holder)
        .with_for_update()))
    jobs = [job_id for job_id in held_jobs if give_back_job(session, job_id, holder)]
    deliveries = list(session.scalars(
        select(Delivery).where(Delivery.state == DeliveryState.SENDING,
                               Delivery.locked_by == holder).with_for_update()))
    for delivery in deliveries:
        delivery.state = DeliveryState.PENDING
        delivery.locked_by = ""
        delivery.lease_until = None
        delivery.attempts = max(0, delivery.attempts - 1)
        delivery.next_attempt_at = utcnow()
    return jobs, [delivery.id for delivery in deliveries]


def lease_state(session: Session, job_id: int, worker_id: str) -> str:
    """Whether a job whose lease could not be renewed is "finished" (by this worker: done,
    failed, given back or superseded) or "taken" by another."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.locked_by in (worker_id, "") or job.state != JobState.RUNNING:
        return "finished"
    return "taken"


def due_jobs(session: Session, kinds: Sequence[str] = (JobKind.ANALYZE,)) -> int:
    """How many jobs of ``kinds`` wait, due, for a worker."""
    return session.scalar(
        select(func.count()).select_from(Job).where(
            Job.kind.in_(kinds), Job.state == JobState.PENDING, Job.run_after <= utcnow())
    ) or 0


def job_held_by(job: Job, worker_id: str) -> bool:
    """Whether ``worker_id`` still holds ``job`` (its lease did not expire into another's)."""
    return job.state == JobState.RUNNING and job.locked_by == worker_id


def renew_job_lease(session: Session, job_id: int, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease of a job ``worker_id`` still holds; False if it holds it no more (the
    lease ran out and another worker took the job)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.locked_by == worker_id)
        .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
    )
    return bool(getattr(result, "rowcount", 0))


def enqueue_destination_test(session: Session, destination: str) -> Job:
    now = utcnow()
    job = Job(kind=JobKind.TEST_DESTINATION, target=destination, state=JobState.PENDING,
              run_after=now, created_at=now)
    session.add(job)
    return job


def complete_job(job: Job, result: str = "") -> None:
    job.result = result
    job.state = JobState.DONE
    job.finished_at = utcnow()
    job.lease_until = None
    job.last_error = ""


def supersede_job(job: Job) -> None:
    job.state = JobState.SUPERSEDED
    job.finished_at = utcnow()
    job.lease_until = None


def analysis_superseded(session: Session, job: Job, study: Study) -> bool:
    """Whether ``job``'s analysis of ``study`` is no longer wanted: images came after it was
    queued (the study is receiving again, and settling queues a fresh job), or a newer job for
    the study is queued, running or done. Lock the study first (``with_for_update``)."""
    if study.state == StudyState.RECEIVING:
        return True
    newer = session.scalar(
        select(Job.id)
        .where(Job.study_id == study.id, Job.id > job.id, Job.state.in_(LIVE_JOB_STATES))
        .limit(1)
    )
    return newer is not None


def fail_job(job: Job, error: str, *, max_attempts: int, retry_seconds: float) -> bool:
    """Record a failure; retry later unless attempts are used up. Returns True if final."""
    job.last_error = error
    job.lease_until = None
    if job.attempts >= max_attempts:
        job.state = JobState.FAILED
        job.finished_at = utcnow()
        return True
    job.state = JobState.PENDING
    job.run_after = utcnow() + timedelta(seconds=retry_seconds)
    return False


# -- deliveries -----------------------------------------------------------------------------

def new_delivery(session: Session, report_id: int, destination_id: int, route: str) -> Delivery:
    now = utcnow()
    delivery = Delivery(report_id=report_id, destination_id=destination_id, route=route,
                        state=DeliveryState.PENDING, next_attempt_at=now, created_at=now)
    session.add(delivery)
    return delivery


def claim_delivery(
    session: Session, worker_id: str, lease_seconds: float, max_attempts: int = 20
) -> Delivery | None:
    """Claim the next due delivery. Deliveries to one destination go one at a time and in
    order: one waits while any delivery to its destination is being sent, or an earlier one is
    pending (waiting for a retry); deliveries to other destinations are not held up. Deliveries
    to a disabled destination wait (pending) until it is enabled again."""
    other = aliased(Delivery)
    in_order = and_(
        ~exists(
            select(other.id).where(
                other.destination_id == Delivery.destination_id,
                or_(
                    and_(other.id < Delivery.id, other.state == DeliveryState.PENDING),
                    and_(other.id != Delivery.id, other.state == DeliveryState.SENDING),
                ),
            )
        ),
        Delivery.destination_id.in_(select(DestinationRow.id).where(DestinationRow.enabled)),
    )
    delivery_id = _claim(session, Delivery, Delivery.next_attempt_at,
                         active_state=DeliveryState.SENDING, worker_id=worker_id,
                         lease_seconds=lease_seconds, max_attempts=max_attempts, extra=in_order)
    return None if delivery_id is None else session.get(Delivery, delivery_id, populate_existing=True)


def delivery_held_by(delivery: Delivery, worker_id: str) -> bool:
    return delivery.state == DeliveryState.SENDING and delivery.locked_by == worker_id


def delivery_delivered(delivery: Delivery) -> None:
    delivery.state = DeliveryState.DELIVERED
    delivery.delivered_at = utcnow()
    delivery.lease_until = None
    delivery.last_error = ""


def retry_delay(
    attempts: int, initial_seconds: float, max_seconds: float, jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff: initial, 2x, 4x, ... capped at max; with ``jitter`` = j the delay
    is drawn uniformly from [(1 - j) x, x], so senders that failed together do not retry
    together."""
    delay = float(min(max_seconds, initial_seconds * (2 ** max(0, attempts - 1))))
    if jitter > 0:
        delay *= 1.0 - jitter * (rng or random).random()
    return delay


def delivery_failed(
    delivery: Delivery, reason: str, *, retryable: bool, max_attempts: int,
    initial_seconds: float, max_seconds: float, jitter: float,
) -> float | None:
    """Record a failed attempt: pending again after a backoff (returned), or dead (None) when
    the failure is final or the attempts are used up."""
    delivery.last_error = reason
    delivery.lease_until = None
    if not retryable or delivery.attempts >= max_attempts:
        delivery.state = DeliveryState.DEAD
        return None
    delay = retry_delay(delivery.attempts, initial_seconds, max_seconds, jitter)
    delivery.state = DeliveryState.PENDING
    delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
    return delay


def resubmit_delivery(delivery: Delivery) -> bool:
    """Send a delivery again from scratch (attempts reset). A delivery being sent right now is
    left alone (returns False)."""
    if delivery.state == DeliveryState.SENDING:
        return False
    delivery.state = DeliveryState.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    delivery.lease_until = None
    delivery.locked_by = ""
    delivery.delivered_at = None
    delivery.last_error = ""
    return True


# -- abandoned work and leases ----------------------------------------------------------------

def _abandoned(
    session: Session, model: type[Job] | type[Delivery], active_state: str, max_attempts: int,
    *extra: Any,
) -> list[Any]:
    """Rows whose holder died (lease expired) on their last attempt."""
    return list(
        session.scalars(
            select(model)
            .where(model.state == active_state, model.lease_until < utcnow(),
                   model.attempts >= max_attempts, *extra)
            .with_for_update(skip_locked=True)
        )
    )


def give_up_abandoned_jobs(
    session: Session, max_attempts: int, kinds: Sequence[str] = (JobKind.ANALYZE,)
) -> list[Job]:
    """Fail jobs of ``kinds`` whose worker died on their last attempt: a job that kills its
    worker every time must not be retried forever."""
    jobs: list[Job] = _abandoned(session, Job, JobState.RUNNING, max_attempts,
                                 Job.kind.in_(kinds))
    for job in jobs:
        fail_job(job, f"the worker stopped during each of {job.attempts} attempts (crash or kill)",
                 max_attempts=max_attempts, retry_seconds=0)
    return jobs


def give_up_abandoned_deliveries(session: Session, max_attempts: int) -> list[Delivery]:
    deliveries: list[Delivery] = _abandoned(session, Delivery, DeliveryState.SENDING, max_attempts)
    for delivery in deliveries:
        delivery.state = DeliveryState.DEAD
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
    for model, state in ((Job, JobState.RUNNING), (Delivery, DeliveryState.SENDING)):
        result = session.execute(
            update(model)
            .where(model.state == state, model.locked_by.in_(holders), model.lease_until > now)
            .values(lease_until=now)
        )
        released += int(getattr(result, "rowcount", 0) or 0)
    return released


def lease_holders(session: Session) -> list[str]:
    rows = session.scalars(
        select(Job.locked_by).where(Job.state == JobState.RUNNING).union(
            select(Delivery.locked_by).where(Delivery.state == DeliveryState.SENDING)
        )
    )
    return [r for r in rows if r]


def queue_depths(session: Session) -> dict[tuple[str, str], int]:
    """The analysis jobs and the deliveries in each state, by (queue, state), every state
    present (0 when no row is in it, so a monitoring rule never sees a series vanish): one
    GROUP BY over each table, for ``metrics.QueueDepthCollector``."""
    depths = {("analysis", str(state)): 0 for state in JobState}
    depths.update({("delivery", str(state)): 0 for state in DeliveryState})
    for state, count in session.execute(
        select(Job.state, func.count()).where(Job.kind == JobKind.ANALYZE).group_by(Job.state)
    ):
        depths[("analysis", str(state))] = int(count)
    for state, count in session.execute(
        select(Delivery.state, func.count()).group_by(Delivery.state)
    ):
        depths[("delivery", str(state))] = int(count)
    return depths
