"""The outbox: claims due deliveries and sends each through its destination's backend.

At least once, never lost: a delivery row is written in the transaction that completes its
analysis; it is claimed under a lease, sent, then recorded. A sender that dies between the
peer's acknowledgement and the record sends the object again once the lease expires: the peer
then holds the same SOP Instance UID twice over, which C-STORE SCPs, Orthanc and STOW-RS
servers keep once (Orthanc answers "AlreadyStored"). Nothing in DICOM lets a sender ask
"did you get it?" across a crash more cheaply than sending it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mammogate.config import Settings
from mammogate.db import Database, Delivery, DestinationRow, Job
from mammogate.db.loop import PollLoop
from mammogate.db.queue import (
    claim_delivery,
    claim_job,
    complete_job,
    delivery_delivered,
    delivery_failed,
    delivery_held_by,
    fail_job,
    give_up_abandoned_deliveries,
    give_up_abandoned_jobs,
    job_held_by,
    next_delivery_due,
)
from mammogate.db.states import JobKind
from mammogate.db.wakeup import DELIVERY as DELIVERY_WORK
from mammogate.delivery.base import Destination, SendError, backend_for
from mammogate.metrics import delivery_attempt

log = logging.getLogger(__name__)


class DeliveryLoop(PollLoop):
    """Claims due deliveries and sends them until stopped."""

    role = "sender"

    def __init__(self, settings: Settings, db: Database, worker_id: str,
                 backends: Mapping[str, Destination]):
        super().__init__(settings.sender.poll_seconds, worker_id, wakeup=db.wakeup,
                         topic=DELIVERY_WORK, db=db,
                         outage_seconds=settings.sender.lease_seconds / 2,
                         reconnect_seconds=settings.database.reconnect_seconds)
        self.settings = settings
        self.db = db
        self.backends = dict(backends)

    def run_once(self) -> bool:
        return self._run_test_job() or self._run_delivery()

    def next_due(self) -> datetime | None:
        """When the next retry falls due (new deliveries wake the sender)."""
        with self.db.read_session() as session:
            return next_delivery_due(session)

    def _run_test_job(self) -> bool:
        """A connection test asked for through the portal's API: the sender has the network."""
        cfg = self.settings.sender
        tests = (JobKind.TEST_DESTINATION,)
        with self.db.session() as session:
            # a sender that died during a test: the test failed (one attempt each)
            for abandoned in give_up_abandoned_jobs(session, 1, kinds=tests):
                log.error("connection test %d given up: %s", abandoned.id, abandoned.last_error)
            job = claim_job(session, self.worker_id, cfg.lease_seconds, max_attempts=1,
                            kinds=tests)
            if job is None:
                return False
            job_id, name = job.id, job.target
            destination = session.scalar(select(DestinationRow).where(DestinationRow.name == name))
            if destination is not None:
                session.expunge(destination)
        outcome, failure = "", ""
        try:
            if destination is None:
                raise SendError(f"no destination {name!r}", retryable=False)
            outcome = backend_for(self.backends, destination).test(destination)
        except SendError as exc:
            failure = exc.reason
        except Exception as exc:  # noqa: BLE001 -- an odd answer must not stop the sender
            log.exception("connection test %d: unexpected error", job_id)
            failure = f"internal error: {type(exc).__name__}: {exc}"
        with self.db.session() as session:
            row = session.get(Job, job_id)
            if row is None or not job_held_by(row, self.worker_id):
                return True
            if failure:
                fail_job(row, failure, max_attempts=1, retry_seconds=0)
            else:
                complete_job(row, outcome)
        log.info("destination %s tested (job %d): %s", name, job_id, failure or outcome)
        return True

    def _run_delivery(self) -> bool:
        cfg = self.settings.sender
        with self.db.session() as session:
            for abandoned in give_up_abandoned_deliveries(session, cfg.max_attempts):
                log.error("delivery %d given up: %s", abandoned.id, abandoned.last_error)
                delivery_attempt(abandoned.destination.name, "dead", None)
            delivery = claim_delivery(session, self.worker_id, cfg.lease_seconds, cfg.max_attempts)
            if delivery is None:
                return False
            delivery_id = delivery.id
            destination = delivery.destination
            report = delivery.report
            session.expunge_all()
        started = time.monotonic()
        failure: SendError | None = None
        try:
            backend_for(self.backends, destination).send(Path(report.path), destination)
        except SendError as exc:
            failure = exc
        except Exception as exc:  # noqa: BLE001 -- one bad delivery must not stop the sender
            log.exception("delivery %d: unexpected error", delivery_id)
            failure = SendError(f"internal error: {type(exc).__name__}: {exc}", retryable=True)
        seconds = time.monotonic() - started
        if failure is not None:
            delivery_attempt(destination.name, self._failed(delivery_id, failure), seconds)
            return True
        delivery_attempt(destination.name, "delivered", seconds)  # the peer has it

        def record() -> bool:
            with self.db.session() as session:
                row = self._owned(session, delivery_id)
                if row is not None:
                    delivery_delivered(row)
                return row is not None

        # the peer has it: a database away meanwhile is waited for (half the lease), so a
        # restart does not cost a second sending; past that, the delivery is given back when
        # the database answers (PollLoop) and sent again
        if not self.until_database_back(record, f"delivery {delivery_id}: recording it delivered"):
            return True
        log.info("delivered %s %s to %s (%s)", report.kind, report.sop_instance_uid,
                 destination.name, destination.kind)
        return True

    def _owned(self, session: Session, delivery_id: int) -> Delivery | None:
        # locked: a sender that took over the expired lease meanwhile is not overwritten
        row = session.get(Delivery, delivery_id, with_for_update=True)
        if row is None or not delivery_held_by(row, self.worker_id):
            log.warning("delivery %d was taken over (lease expired); not recording", delivery_id)
            return None
        return row

    def _failed(self, delivery_id: int, exc: SendError) -> str:
        """Record the failed attempt: "failed" (retried later) or "dead" (given up)."""
        cfg = self.settings.sender
        with self.db.session() as session:
            row = self._owned(session, delivery_id)
            if row is None:
                return "failed"
            delay = delivery_failed(
                row, exc.reason, retryable=exc.retryable, max_attempts=cfg.max_attempts,
                initial_seconds=cfg.retry_initial_seconds, max_seconds=cfg.retry_max_seconds,
                jitter=cfg.retry_jitter,
            )
            if delay is None:
                log.error("delivery %d is dead after %d attempts: %s",
                          row.id, row.attempts, exc.reason)
                return "dead"
            log.warning("delivery %d failed (attempt %d), retrying in %.1f s: %s",
                        row.id, row.attempts, delay, exc.reason)
            return "failed"
