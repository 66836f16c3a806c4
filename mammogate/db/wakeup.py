"""Waking the loops that wait for work, instead of letting them poll.

A writer announces new work on a topic inside its transaction (``Wakeup.announce``). Within
the process the waiting loops wake the moment the transaction commits; on PostgreSQL the
announcement is also a ``NOTIFY`` (sent by the server at commit, to every node sharing the
database), which a listener thread (``PgListener``) turns into the same wake-up. Polling stays
as the fallback: a loop that hears nothing still looks every ``poll_seconds``.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CHANNEL = "mammogate_work"
ANALYSIS = "analysis"  # a study may be ready, or an analysis was asked for
DELIVERY = "delivery"  # a delivery or a connection test is due
TOPICS = (ANALYSIS, DELIVERY)


class Wakeup:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, list[threading.Event]] = defaultdict(list)

    def subscribe(self, topic: str, wake: threading.Event) -> None:
        if topic not in TOPICS:
            raise ValueError(f"unknown wake-up topic {topic!r}")
        with self._lock:
            self._events[topic].append(wake)

    def wake(self, topic: str) -> None:
        with self._lock:
            events = list(self._events.get(topic, ()))
        for wake in events:
            wake.set()

    def announce(self, session: Session, topic: str) -> None:
        """New work on ``topic`` once ``session``'s transaction commits (nothing if it rolls
        back): this process's loops wake, and on PostgreSQL every node's."""
        if topic not in TOPICS:
            raise ValueError(f"unknown wake-up topic {topic!r}")
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_notify(:channel, :topic)"),
                            {"channel": CHANNEL, "topic": topic})
        pending: set[str] = session.info.setdefault("mammogate_wakeup", set())
        if not pending:
            event.listen(session, "after_commit", self._after_commit, once=True)
            event.listen(session, "after_rollback", self._after_rollback, once=True)
        pending.add(topic)

    def notify(self, connection: Connection, topic: str) -> None:
        """``announce`` for Core statements on ``connection``: on PostgreSQL the NOTIFY that
        other nodes hear at commit. The caller wakes this process's loops (``wake``) once its
        transaction has committed."""
        if topic not in TOPICS:
            raise ValueError(f"unknown wake-up topic {topic!r}")
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_notify(:channel, :topic)"),
                               {"channel": CHANNEL, "topic": topic})

    def _after_commit(self, session: Session) -> None:
        for topic in session.info.pop("mammogate_wakeup", set()):
            self.wake(topic)

    @staticmethod
    def _after_rollback(session: Session) -> None:
        session.info.pop("mammogate_wakeup", None)


_wakeups: dict[str, Wakeup] = {}
_wakeups_lock = threading.Lock()


def _key(url: str | URL) -> str:
    return (make_url(url) if isinstance(url, str) else url).render_as_string(hide_password=False)


def wakeup_for(url: str | URL) -> Wakeup:
    """The process's one Wakeup for a database (every engine of one URL shares it)."""
    key = _key(url)
    with _wakeups_lock:
        return _wakeups.setdefault(key, Wakeup())


def announce(session: Session, topic: str) -> None:
    """New work on ``topic`` once ``session`` commits (see :meth:`Wakeup.announce`)."""
    wakeup_for(session.get_bind().engine.url).announce(session, topic)


class PgListener:
    """``LISTEN mammogate_work`` on a connection of its own; each notification wakes the
    loops of its topic. A lost connection is reported and made again after
    ``retry_seconds`` (the loops poll meanwhile)."""

    def __init__(self, url: str, wakeup: Wakeup, *, retry_seconds: float = 5.0,
                 check_seconds: float = 1.0):
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        self.wakeup = wakeup
        self.retry_seconds = retry_seconds
        self.check_seconds = check_seconds
        self.stopping = threading.Event()
        self.listening = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PgListener:
        self._thread = threading.Thread(target=self._run, name="pg-listener", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.check_seconds + 5)

    def _run(self) -> None:
        import psycopg

        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True,
                                     connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    log.info("listening for work notifications (PostgreSQL %s)", CHANNEL)
                    # the loops may have missed work while this was down
                    for topic in TOPICS:
                        self.wakeup.wake(topic)
                    while not self.stopping.is_set():
                        self._drain(conn)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("work notifications unavailable (%s); polling meanwhile, "
                            "reconnecting in %g s", type(exc).__name__, self.retry_seconds)
                self.stopping.wait(self.retry_seconds)

    def _drain(self, conn: Any) -> None:
        for notice in conn.notifies(timeout=self.check_seconds):
            if notice.payload in TOPICS:
                self.wakeup.wake(notice.payload)
            if self.stopping.is_set():
                break
