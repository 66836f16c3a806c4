"""Engine, sessions and migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from mammogate.db.wakeup import PgListener, wakeup_for

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class DatabaseError(Exception):
    """The database cannot be reached, opened or migrated."""


def utcnow() -> datetime:
    """Naive UTC now: the one time convention of every table."""
    return datetime.now(UTC).replace(tzinfo=None)


class Database:
    """An engine plus a session factory. One per process role; share it between threads."""

    def __init__(self, url: str, *, busy_timeout_seconds: float = 30.0, echo: bool = False):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.busy_timeout_seconds = busy_timeout_seconds
        # hide_parameters: SQL errors are logged, and their parameters hold patient data.
        kwargs: dict[str, Any] = {"echo": echo, "future": True, "hide_parameters": True}
        if self.is_sqlite:
            if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": busy_timeout_seconds,
                # Let SQLAlchemy's "begin" event emit BEGIN IMMEDIATE: the pysqlite driver's
                # deferred transactions would otherwise fail at once with SQLITE_BUSY when a
                # reader upgrades to a writer while another thread writes.
                "isolation_level": None,
            }
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        # Reads get an engine of their own: on SQLite its transactions begin DEFERRED, so a
        # portal page never takes the write lock that the SCP's commits need (WAL: readers and
        # one writer run side by side). On PostgreSQL it is the same engine.
        self.read_engine: Engine = create_engine(url, **kwargs) if self.is_sqlite else self.engine
        if self.is_sqlite:
            self._configure_sqlite(self.engine, busy_timeout_seconds, "BEGIN IMMEDIATE")
            self._configure_sqlite(self.read_engine, busy_timeout_seconds, "BEGIN DEFERRED")
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        self.wakeup = wakeup_for(self.engine.url)

    def announce(self, session: Session, topic: str) -> None:
        """New work on ``topic`` (``wakeup.ANALYSIS``, ``wakeup.DELIVERY``) once ``session``
        commits: the waiting loops wake (every node's, on PostgreSQL)."""
        self.wakeup.announce(session, topic)

    def listen(self, retry_seconds: float = 5.0) -> PgListener | None:
        """On PostgreSQL, start hearing other processes' announcements; None on SQLite (one
        node per database file: its announcements are all in process)."""
        if self.is_sqlite:
            return None
        return PgListener(self.url, self.wakeup, retry_seconds=retry_seconds).start()

    @contextmanager
    def write_within(self, seconds: float) -> Iterator[Connection]:
        """A write transaction on one connection (committed when the block ends) that waits at
        most ``seconds`` for another writer's lock (SQLite's database lock, PostgreSQL's row
        locks): past that it raises ``OperationalError``, for a caller that can do its write
        later rather than wait now."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                raw = conn.connection.dbapi_connection
                assert raw is not None
                raw.execute(f"PRAGMA busy_timeout={max(1, int(seconds * 1000))}")
                try:
                    with conn.begin():
                        yield conn
                finally:
                    raw.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_seconds * 1000)}")
            else:
                with conn.begin():
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, int(seconds * 1000))}")
                    yield conn

    @staticmethod
    def _configure_sqlite(engine: Engine, busy_timeout_seconds: float, begin: str) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A read-only transaction (SQLite: deferred, no write lock; never write in it: use
        ``session()`` for that). Rolled back when the block ends."""
        with self.read_sessions() as session:  # closing it rolls the transaction back
            yield session

    def reachable(self) -> str:
        """"ok" when a query answers, else why not (for readiness checks)."""
        try:
            with self.read_session() as session:
                session.execute(text("SELECT 1"))
        except sqlalchemy.exc.SQLAlchemyError as exc:
            return f"unreachable ({type(exc).__name__})"
        return "ok"

    def migrate(self) -> None:
        """Bring the schema to the one head revision (Alembic, package data)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self.engine.connect() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
                if connection.in_transaction():
                    connection.commit()
        except sqlalchemy.exc.OperationalError as exc:
            raise DatabaseError(f"cannot migrate the database: {exc.orig}") from exc
        log.info("database schema at head (%s)", "sqlite" if self.is_sqlite else "postgresql")

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()
