"""The one loop the worker and the sender share: run a unit of work; when idle, wait until
work is announced (``mammogate.db.wakeup``), falls due, or ``poll_seconds`` pass."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from mammogate.db.engine import utcnow
from mammogate.db.wakeup import Wakeup

log = logging.getLogger(__name__)


class PollLoop:
    """Calls :meth:`run_once` until stopped; waits ``poll_seconds`` whenever it found nothing
    to do. A database that is away (restart, network) is reported and polled again; the loop
    never dies of it."""

    role = "loop"

    def __init__(self, poll_seconds: float, worker_id: str,
                 *, on_idle: Callable[[], None] | None = None,
                 wakeup: Wakeup | None = None, topic: str = "", coalesce_seconds: float = 0.0):
        self.poll_seconds = poll_seconds
        self.coalesce_seconds = coalesce_seconds
        self.worker_id = worker_id
        self.on_idle = on_idle
        self.stopping = threading.Event()
        self.woken = threading.Event()  # set by an announcement of work (or by stop)
        if wakeup is not None and topic:
            wakeup.subscribe(topic, self.woken)

    def next_due(self) -> datetime | None:
        """When the loop's next work falls due, if it knows (the base class does not)."""
        return None

    def idle_seconds(self) -> float:
        """How long to wait when idle, unless woken: until :meth:`next_due`, at most
        ``poll_seconds``."""
        due = self.next_due()
        if due is None:
            return self.poll_seconds
        left = (due - utcnow()).total_seconds()
        # due already but not claimable (held back behind another, or locked): poll
        return left + 0.01 if left > 0 else self.poll_seconds

    def run_once(self) -> bool:
        """Do one unit of work; False when there was none."""
        raise NotImplementedError

    def starting(self) -> None:
        """Called once in the loop's thread before the first unit of work."""

    def run(self) -> None:
        self.starting()
        log.info("%s %s started", self.role, self.worker_id)
        while not self.stopping.is_set():
            self.woken.clear()  # an announcement from here on wakes the wait below
            wait = self.poll_seconds
            try:
                worked = self.run_once()
                if not worked:
                    if self.on_idle is not None:
                        self.on_idle()
                    wait = max(0.0, min(self.poll_seconds, self.idle_seconds()))
            except SQLAlchemyError as exc:
                log.error("%s: database error, retrying: %s", self.role, exc.__class__.__name__)
                worked = False
            if not worked and self.woken.wait(wait) and self.coalesce_seconds:
                # woken: let the rest of a burst of announcements arrive, then look once
                self.stopping.wait(self.coalesce_seconds)
        log.info("%s %s stopped", self.role, self.worker_id)

    def stop(self) -> None:
        self.stopping.set()
        self.woken.set()


class Periodic(PollLoop):
    """Calls ``on_idle`` every ``poll_seconds`` (the SCP's duties: its peers read again, the
    journal's backlog retried), with the same handling of an absent database."""

    role = "duties"

    def run_once(self) -> bool:
        return False
