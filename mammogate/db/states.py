"""The three state machines (study, job, delivery) and their one owner.

The values are stored as strings; every transition is a function in :mod:`mammogate.db.queue`,
never an assignment or an UPDATE written elsewhere.

Study:    receiving → queued → processing → done | failed | skipped
          (any state → receiving when more images arrive; done/failed/skipped → queued on a
          re-analysis)
Job:      pending → running → done | failed | superseded   (running → pending on a retry)
Delivery: pending → sending → delivered | dead            (sending → pending on a retry;
          delivered/dead → pending on a resubmit)
"""

from __future__ import annotations

from enum import StrEnum


class StudyState(StrEnum):
    RECEIVING = "receiving"
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"


class JobKind(StrEnum):
    ANALYZE = "analyze"  # the worker: analyse a study
    TEST_DESTINATION = "test_destination"  # the sender: a destination's connection test


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    DEAD = "dead"


# A job in one of these still stands for its study (a newer one supersedes an older one).
LIVE_JOB_STATES = (JobState.PENDING, JobState.RUNNING, JobState.DONE)
