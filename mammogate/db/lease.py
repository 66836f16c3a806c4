"""Keeping a claimed job's lease while its work runs.

A lease (``worker.lease_seconds``) is how another worker knows a job's holder is gone: past
it, the job is claimable again. An analysis that takes longer than the lease must therefore
say, while it runs, that its worker is alive; ``LeaseKeeper`` renews the lease every third of
it, so only a worker that stopped (killed, frozen, cut off from the database) loses its job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from types import TracebackType

from sqlalchemy.exc import SQLAlchemyError

from mammogate.db.engine import Database
from mammogate.db.queue import renew_job_lease

log = logging.getLogger(__name__)


class LeaseKeeper:
    """``with LeaseKeeper(db, job_ids, holder, lease_seconds):`` renews the jobs' leases in a
    thread until the block ends. A job found held by another is renewed no more (its result
    is dropped when recorded: ``AnalysisWorker._still_ours``)."""

    def __init__(self, db: Database, job_ids: Sequence[int], holder: str, lease_seconds: float):
        self.db = db
        self.job_ids = list(job_ids)
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.every = lease_seconds / 3
        self.renewals = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join(timeout=self.every + 5)

    def _run(self) -> None:
        while self.job_ids and not self._done.wait(self.every):
            try:
                with self.db.session() as session:
                    lost = [job_id for job_id in self.job_ids
                            if not renew_job_lease(session, job_id, self.holder, self.lease_seconds)]
            except SQLAlchemyError as exc:
                # the database is away: the next renewal may still come in time
                log.warning("jobs %s: leases not renewed (database error %s); retrying in %g s",
                            self.job_ids, type(exc).__name__, self.every)
                continue
            for job_id in lost:
                log.warning("job %d: lease lost to another worker; its result will be dropped",
                            job_id)
                self.job_ids.remove(job_id)
            self.renewals += 1
