"""The one loop the worker and the sender share: run a unit of work; when idle, wait until
work is announced (``mammogate.db.wakeup``), falls due, or ``poll_seconds`` pass.

A database error can leave a loop unsure what it holds: a claim whose commit failed as it was
answered may have been committed all the same, and a job it meant to give back stays held when
the database is away. Between two units of work a loop holds nothing, so once the database
answers again the loop gives back whatever rows still carry its name (``give_back_held``),
instead of leaving them to wait out their leases (minutes)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from mammogate.db.engine import Database, utcnow
from mammogate.db.queue import give_back_held
from mammogate.db.wakeup import Wakeup

log = logging.getLogger(__name__)

T = TypeVar("T")


class PollLoop:
    """Calls :meth:`run_once` until stopped; waits ``poll_seconds`` whenever it found nothing
    to do. A database that is away (restart, network) is reported and polled again; the loop
    never dies of it. With ``db``, the rows the loop holds when the database comes back after
    an error are given back (see the module's docstring)."""

    role = "loop"

    def __init__(self, poll_seconds: float, worker_id: str,
                 *, on_idle: Callable[[], None] | None = None,
                 wakeup: Wakeup | None = None, topic: str = "", coalesce_seconds: float = 0.0,
                 db: Database | None = None, outage_seconds: float = 0.0,
                 reconnect_seconds: float = 1.0):
        self.db_holds = db
        # how long a unit of work in hand waits for the database (until_database_back)
        self.outage_seconds = outage_seconds
        self.reconnect_seconds = reconnect_seconds
        self.unsure_what_is_held = False  # a database error since the last look
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
                if self.unsure_what_is_held:
                    self.give_back_held()
                worked = self.run_once()
                if not worked:
                    if self.on_idle is not None:
                        self.on_idle()
                    wait = max(0.0, min(self.poll_seconds, self.idle_seconds()))
            except SQLAlchemyError as exc:
                log.error("%s: database error, retrying: %s", self.role, exc.__class__.__name__)
                self.unsure_what_is_held = self.db_holds is not None
                worked = False
            if not worked and self.woken.wait(wait) and self.coalesce_seconds:
                # woken: let the rest of a burst of announcements arrive, then look once
                self.stopping.wait(self.coalesce_seconds)
        log.info("%s %s stopped", self.role, self.worker_id)

    def give_back_held(self) -> None:
        """Give back the rows this loop holds (it has nothing in hand between two units of
        work); a database error here leaves it unsure, to try again at the next turn."""
        assert self.db_holds is not None
        with self.db_holds.session() as session:
            jobs, deliveries = give_back_held(session, self.worker_id)
        self.unsure_what_is_held = False
        if jobs or deliveries:
            log.warning("%s %s: gave back jobs %s and deliveries %s it held when the database "
                        "failed, for the next claim", self.role, self.worker_id, jobs, deliveries)

    def until_database_back(self, write: Callable[[], T], what: str) -> T:
        """``write()``; while the database is away (an SQLAlchemyError: a restart, a failover),
        tried again every ``reconnect_seconds`` for up to ``outage_seconds``. The last error is
        raised after that, or at once when the loop is stopping."""
        every = self.reconnect_seconds
        deadline = time.monotonic() + self.outage_seconds
        while True:
            try:
                return write()
            except SQLAlchemyError as exc:
                if self.stopping.is_set() or time.monotonic() + every > deadline:
                    raise
                log.warning("%s: database error %s; trying again in %g s",
                            what, type(exc).__name__, every)
                self.stopping.wait(every)

    def stop(self) -> None:
        self.stopping.set()
        self.woken.set()


class Periodic(PollLoop):
    """Calls ``on_idle`` every ``poll_seconds`` (the SCP's duties: its peers read again, the
    journal's backlog retried), with the same handling of an absent database."""

    role = "duties"

    def run_once(self) -> bool:
        return False
