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

from mammogate.db.engine import Database
from mammogate.db.queue import lease_state, renew_job_lease

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
        wait = self.every
        while self.job_ids and not self._done.wait(wait):
            try:
                with self.db.session() as session:
                    missed = [job_id for job_id in self.job_ids
                              if not renew_job_lease(session, job_id, self.holder, self.lease_seconds)]
                    states = {job_id: lease_state(session, job_id, self.holder) for job_id in missed}
            except Exception as exc:  # noqa: BLE001 -- never stop renewing for a passing error
                # the database is away: try again soon, the lease may still be saved
                wait = max(0.1, self.every / 4)
                log.warning("jobs %s: leases not renewed (%s); retrying in %g s",
                            self.job_ids, type(exc).__name__, wait)
                continue
            wait = self.every
            for job_id, state in states.items():
                if state == "taken":
                    log.warning("job %d: lease lost to another worker; its result will be "
                                "dropped", job_id)
                self.job_ids.remove(job_id)  # taken, or already finished here
