"""The one poll loop the worker and the sender share: run a unit of work, wait when idle."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)


class PollLoop:
    """Calls :meth:`run_once` until stopped; waits ``poll_seconds`` whenever it found nothing
    to do. A database that is away (restart, network) is reported and polled again; the loop
    never dies of it."""

    role = "loop"

    def __init__(self, poll_seconds: float, worker_id: str,
                 *, on_idle: Callable[[], None] | None = None):
        self.poll_seconds = poll_seconds
        self.worker_id = worker_id
        self.on_idle = on_idle
        self.stopping = threading.Event()

    def run_once(self) -> bool:
        """Do one unit of work; False when there was none."""
        raise NotImplementedError

    def starting(self) -> None:
        """Called once in the loop's thread before the first unit of work."""

    def run(self) -> None:
        self.starting()
        log.info("%s %s started", self.role, self.worker_id)
        while not self.stopping.is_set():
            try:
                worked = self.run_once()
                if not worked and self.on_idle is not None:
                    self.on_idle()
            except SQLAlchemyError as exc:
                log.error("%s: database error, retrying: %s", self.role, exc.__class__.__name__)
                worked = False
            if not worked:
                self.stopping.wait(self.poll_seconds)
        log.info("%s %s stopped", self.role, self.worker_id)

    def stop(self) -> None:
        self.stopping.set()
