"""The composition root: the node's four roles, each made by ``build_<role>(settings, db)``,
run under one supervisor (:func:`run_roles`).

``mammogate serve`` runs all four in one process (the one-command default, on SQLite);
``mammogate scp``, ``worker``, ``sender`` and ``web`` run one each, as many of them as a site
needs, on as many machines, against one PostgreSQL database and one shared spool. The roles
never talk to each other: the database is the queue (jobs and deliveries claimed under leases
with ``FOR UPDATE SKIP LOCKED``), and PostgreSQL's ``NOTIFY`` wakes the waiting ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mammogate.config import Settings, StartupError
from mammogate.db import Database, DatabaseError
from mammogate.db.loop import Periodic, PollLoop
from mammogate.db.queue import expire_leases, lease_holders
from mammogate.db.seed import config_diff, seed_if_first_start
from mammogate.metrics import set_model_info

if TYPE_CHECKING:
    from mammogate.delivery import Destination
    from mammogate.dicom_node.scp import Scp
    from mammogate.inference.bundle import ModelBundle
    from mammogate.web.server import PortalServer

log = logging.getLogger(__name__)

SWITCH_INTERVAL_SECONDS = 0.001  # the interpreter's thread switch interval in `serve`


def worker_id(role: str) -> str:
    """Who holds a lease. Host names must be unique per node (they are under Docker and Compose
    by default): a lease of this host and pid that this process did not take is released at
    start, as its holder is an earlier run of the node."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}"


def open_database(settings: Settings) -> Database:
    """The database, migrated to head and seeded from the configuration on first start.
    Roles starting together migrate and seed one at a time: on PostgreSQL under an advisory
    lock, on SQLite under a lock file beside the database."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url, busy_timeout_seconds=settings.database.busy_timeout_seconds)
    with _one_at_a_time(db, settings.data_dir / ".migrate.lock"):
        db.migrate()
        with db.session() as session:
            if seed_if_first_start(session, settings):
                log.info("first start: peers, destinations and routes seeded from the configuration")
    return db


MIGRATION_LOCK = 0x6D616D6D  # PostgreSQL advisory lock key of the migration ("mamm")


@contextlib.contextmanager
def _one_at_a_time(db: Database, lock_file: Path) -> Iterator[None]:
    if db.is_sqlite:
        with lock_file.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield
        return
    import sqlalchemy.exc
    from sqlalchemy import text

    try:
        connection = db.engine.connect()
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()
    except sqlalchemy.exc.OperationalError as exc:
        raise DatabaseError(f"cannot reach the database: {exc.orig}") from exc
    with connection:
        try:
            yield
        finally:  # a session lock outlives a pooled connection's return: unlock it
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()


def destination_backends(settings: Settings) -> dict[str, Destination]:
    """The outbox's backend for each destination kind."""
    from mammogate.delivery.http import OrthancRestDestination, StowRsDestination
    from mammogate.dicom_node.scu import DimseDestination

    return {"dimse": DimseDestination(settings), "orthanc": OrthancRestDestination(),
            "stow": StowRsDestination()}


def warn_config_drift(settings: Settings, db: Database) -> list[str]:
    """The database is the truth at run time; say at start, line by line, where the file
    differs from it, so an edit of the file is never ignored silently."""
    with db.read_session() as session:
        differences = config_diff(session, settings)
    if differences:
        log.warning(
            "the configuration file differs from the database, which is what this node uses "
            "(`mammogate config diff` shows this, `mammogate config apply` makes the database "
            "follow the file):\n  %s", "\n  ".join(differences),
        )
    return differences


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_leases_of_dead_processes(db: Database) -> None:
    """Jobs and deliveries held by a process of this host that is gone (a crash, a kill) are
    claimable at once instead of when their leases run out."""
    host = socket.gethostname()
    with db.session() as session:
        dead = []
        for holder in lease_holders(session):
            parts = holder.split(":")
            if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
                # This process's own pid counts too: in a container every start is pid 1, and
                # nothing of this process holds a lease before its threads start.
                if int(parts[1]) == os.getpid() or not _pid_alive(int(parts[1])):
                    dead.append(holder)
        released = expire_leases(session, dead)
    if released:
        log.warning("released %d leases held by stopped processes of this host", released)



# -- the roles ------------------------------------------------------------------------------

ROLES = ("scp", "worker", "sender", "web")

# A thread of a role that must not die quietly: wrapped so that its death stops the process.
Guard = Callable[[str, Callable[[], None]], Callable[[], None]]


class Role(Protocol):
    name: str

    def start(self, guard: Guard) -> None:
        """Start serving (threads made through ``guard``); raise StartupError if it cannot."""

    def request_stop(self) -> None:
        """Ask the role's loops to stop, without waiting (every role is asked first, so they
        wind down together within the grace)."""

    def stop(self) -> None:
        """Stop serving and wait for the role's threads (bounded)."""

    def readiness(self) -> dict[str, str]:
        """Each of the role's own conditions of readiness: "ok", or why not (the database,
        which every role needs, is checked once for all by the supervisor's readiness)."""


class LoopRole:
    """A poll loop (the worker, the sender, the SCP's duties) in a thread of its own."""

    def __init__(self, name: str, loop: PollLoop, checks: Callable[[], dict[str, str]],
                 *, after_stop: Callable[[], None] | None = None):
        self.name, self.loop, self.checks, self.after_stop = name, loop, checks, after_stop
        self.thread: threading.Thread | None = None

    def start(self, guard: Guard) -> None:
        self.thread = threading.Thread(target=guard(self.name, self.loop.run), name=self.name,
                                       daemon=True)
        self.thread.start()

    def request_stop(self) -> None:
        self.loop.stop()

    def stop(self) -> None:
        self.loop.stop()
        if self.thread is not None:
            self.thread.join()  # bounded by the supervisor's deadline (node.stop_grace_seconds)
        if self.after_stop is not None:
            self.after_stop()

    def readiness(self) -> dict[str, str]:
        return self.checks()


class ScpRole:
    """The DICOM SCP and its duties loop: the peers re-read and the journal's backlog retried
    every dicom.refresh_seconds, whatever else runs in this process."""

    name = "scp"

    def __init__(self, settings: Settings, scp: Scp):
        self.scp = scp
        self.duties = LoopRole("scp-duties", Periodic(settings.dicom.refresh_seconds,
                                                      worker_id("scp"), on_idle=scp.on_idle),
                               dict)

    def start(self, guard: Guard) -> None:
        self.scp.start()
        self.duties.start(guard)

    def request_stop(self) -> None:
        self.duties.request_stop()

    def stop(self) -> None:
        self.duties.stop()  # first: its retries use the journal that scp.stop() closes
        self.scp.stop()

    def readiness(self) -> dict[str, str]:
        spool = self.scp.service.spool.root
        if not (spool.is_dir() and os.access(spool, os.W_OK | os.X_OK)):
            space = f"{spool} is not a writable folder"
        else:  # below the free-space minimum the SCP refuses images
            space = self.scp.service.spool_space.shortage() or "ok"
        return {"spool": space, "dicom": "ok" if self.scp.server is not None else "not listening"}


class HttpRole:
    """The portal (the web role) or a status server: uvicorn in a thread. Its /ready answers
    for the other roles of the process; it adds no check of its own."""

    def __init__(self, name: str, server: PortalServer):
        self.name, self.server = name, server

    def start(self, guard: Guard) -> None:
        try:
            self.server.start(timeout=60)
        except RuntimeError as exc:
            raise StartupError(f"{self.name}: {exc}") from exc

    def request_stop(self) -> None:
        """(uvicorn is stopped first, in :meth:`stop`: nothing to ask.)"""

    def stop(self) -> None:
        self.server.stop()

    def readiness(self) -> dict[str, str]:
        return {}

    def stopped_by_itself(self) -> bool:
        return self.server.stopped_by_itself()


def build_scp(settings: Settings, db: Database) -> ScpRole:
    from mammogate.dicom_node.scp import Scp
    from mammogate.dicom_node.spool import Spool

    spool = Spool(settings.spool_dir)
    swept = spool.sweep_incoming(settings.dicom.stale_incoming_seconds)
    if swept:
        log.warning("removed %d half-received files an earlier run left in the spool", swept)
    scp = Scp(settings, db, spool)
    scp.check_policy()
    return ScpRole(settings, scp)


def load_model_bundle(settings: Settings) -> ModelBundle:
    """The configured bundle at its operating point; refuses a broken or tampered one (before
    any port opens)."""
    from mammogate.inference import load_bundle
    from mammogate.inference.bundle import with_operating_point

    bundle = load_bundle(Path(settings.model.bundle) if settings.model.bundle else None)
    bundle = with_operating_point(bundle, settings.model.operating_point)
    info = bundle.model_info
    log.info("model bundle %s %s (sha256 %s)", info.name, info.version, info.sha256[:12])
    set_model_info(info.name, info.version, info.sha256)
    return bundle


def build_worker(settings: Settings, db: Database, bundle: ModelBundle | None = None) -> LoopRole:
    from mammogate.analysis import AnalysisWorker
    from mammogate.inference.isolated import IsolatedAnalyzer

    model = bundle if bundle is not None else load_model_bundle(settings)

    def make_analyzer() -> IsolatedAnalyzer:
        # TensorFlow runs in a watched child process: a poison study costs an attempt, not the node
        return IsolatedAnalyzer(
            model, max_memory_bytes=settings.worker.max_memory_bytes,
            timeout_seconds=settings.worker.analysis_timeout_seconds,
            start_timeout_seconds=settings.worker.model_start_timeout_seconds,
        )

    worker = AnalysisWorker(settings, db, worker_id("worker"), make_analyzer)

    def checks() -> dict[str, str]:
        return {"model": worker.model_error or "ok"}

    return LoopRole("worker", worker, checks, after_stop=worker.stop_model)


def build_sender(settings: Settings, db: Database) -> LoopRole:
    from mammogate.delivery.outbox import DeliveryLoop

    sender = DeliveryLoop(settings, db, worker_id("sender"), destination_backends(settings))
    return LoopRole("sender", sender, dict)


def build_web(settings: Settings, db: Database,
              readiness: Callable[[], dict[str, str]] | None = None) -> HttpRole:
    from mammogate.web.app import create_app
    from mammogate.web.server import PortalServer

    web = settings.web
    _check_port(web.bind, web.port, "web port", "web.port (MAMMOGATE_WEB__PORT)")
    if web.exposure_warning:
        log.warning("%s", web.exposure_warning)

    server = PortalServer(create_app(settings, db, readiness=readiness), host=web.bind,
                          port=web.port, graceful_seconds=_graceful(settings))
    return HttpRole("web", server)


def build_status(settings: Settings, db: Database, names: Sequence[str],
                 readiness: Callable[[], dict[str, str]], port: int | None = None) -> HttpRole:
    """The status server (/healthz, /ready, /metrics) of roles run without the portal."""
    from mammogate.web.server import PortalServer
    from mammogate.web.status import create_status_app

    status = settings.status
    port = status.port if port is None else port
    if port:
        _check_port(status.bind, port, "status port",
                    "status.port (MAMMOGATE_STATUS__PORT, or --status-port)")
    server = PortalServer(create_status_app("+".join(names), db, readiness), host=status.bind,
                          port=port, graceful_seconds=_graceful(settings))
    return HttpRole("status", server)


def _graceful(settings: Settings) -> int:
    return max(1, int(settings.node.stop_grace_seconds / 2))


def _check_port(bind: str, port: int, what: str, key: str) -> None:
    """Refuse at once, naming the setting, when a port is taken (uvicorn would only log a bare
    errno from its thread)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind, port))
        except OSError as exc:
            raise StartupError(
                f"{what} {port} on {bind} is not available ({exc.strerror}): stop what uses it, "
                f"or set {key}"
            ) from exc


# -- the supervisor -------------------------------------------------------------------------

def run_roles(settings: Settings, names: Sequence[str], *, status_port: int | None = None) -> int:
    """Run ``names`` (of :data:`ROLES`) in this process until SIGINT/SIGTERM or until one of
    them dies. Returns the exit status: 0 after a requested stop, 1 after a role's death."""
    unknown = set(names) - set(ROLES)
    if unknown or not names:
        raise ValueError(f"roles must be among {ROLES}, not {sorted(unknown) or 'none'}")
    names = [n for n in ROLES if n in names]
    # One process running the DICOM service beside other roles: a thread waiting on the network
    # or the disk waits for the interpreter lock again each time it returns, up to the switch
    # interval while another thread computes (rendering a page). At Python's 5 ms, a C-STORE's
    # few dozen system calls can add up to a second under a portal crowd; at 1 ms, a fifth.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    bundle = load_model_bundle(settings) if "worker" in names else None
    log.info("data directory %s (node.data_dir; database, spool, reports and renderings)",
             settings.data_dir)
    db = open_database(settings)
    warn_config_drift(settings, db)
    if "worker" in names or "sender" in names:
        release_leases_of_dead_processes(db)
    builders: dict[str, Callable[[], Role]] = {
        "scp": lambda: build_scp(settings, db),
        "worker": lambda: build_worker(settings, db, bundle),
        "sender": lambda: build_sender(settings, db),
    }
    # the web role last (below): its /ready asks every role of the process
    roles = [builders[name]() for name in names if name != "web"]

    def readiness() -> dict[str, str]:
        checks: dict[str, str] = {"database": db.reachable()}  # once, for every role
        for role in roles:
            for key, value in role.readiness().items():
                if checks.get(key, "ok") == "ok":  # a problem any role sees is said
                    checks[key] = value
        return checks

    http = (build_web(settings, db, readiness) if "web" in names
            else build_status(settings, db, names, readiness, status_port))
    return Supervisor(settings, db, [*roles, http], http).run(names)


def serve(settings: Settings) -> int:
    """Every role in this process: the one-command node."""
    return run_roles(settings, ROLES)


class Supervisor:
    """Starts the roles in order, owns the signals, stops them all in reverse when a signal
    comes or any role's thread dies (then the exit status is 1, for a restart by systemd,
    Compose or Kubernetes), and exits anyway ``node.stop_grace_seconds`` after the signal."""

    def __init__(self, settings: Settings, db: Database, roles: list[Role], http: HttpRole):
        self.settings, self.db, self.roles, self.http = settings, db, roles, http
        self.stopping = threading.Event()
        self.failure: list[BaseException] = []
        self.grace = settings.node.stop_grace_seconds
        self.deadline = threading.Timer(self.grace, self._out_of_time)
        self.deadline.daemon = True

    def guard(self, name: str, run: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            try:
                run()
            except BaseException as exc:  # noqa: BLE001 -- a role died: stop the node, loudly
                log.critical("%s died: %s", name, exc, exc_info=True)
                self.failure.append(exc)
                self.stopping.set()

        return guarded

    def _out_of_time(self) -> None:
        log.critical("not stopped within %g s (node.stop_grace_seconds): exiting now",
                     self.grace)
        logging.shutdown()
        os._exit(1)

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("signal %d: stopping (at most %g s)", signum, self.grace)
        self.stopping.set()
        if self.deadline.ident is None:  # the first signal starts the clock
            self.deadline.start()

    def run(self, names: Sequence[str]) -> int:
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        listener = (self.db.listen(self.settings.database.reconnect_seconds)
                    if "worker" in names or "sender" in names else None)
        started: list[Role] = []
        try:
            for role in self.roles:
                if self.stopping.is_set():  # a signal, or a role died, while starting
                    break
                role.start(self.guard)
                started.append(role)
            else:
                self._say_serving(names)
            while not self.stopping.wait(0.5):
                if self.http.stopped_by_itself():
                    log.critical("the HTTP server stopped by itself")
                    self.failure.append(RuntimeError("HTTP server stopped"))
                    break
        finally:
            log.info("mammogate stopping")
            if self.deadline.ident is None:  # a role died, or no signal came: the clock too
                self.deadline.start()
            for role in started:
                role.request_stop()
            for role in reversed(started):
                role.stop()
            if listener is not None:
                listener.stop()
            self.db.dispose()
            self.deadline.cancel()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if self.failure else 0

    def _say_serving(self, names: Sequence[str]) -> None:
        parts = []
        if "scp" in names:
            dicom = self.settings.dicom
            parts.append(f"DICOM {dicom.ae_title} on {dicom.bind}:{dicom.port}")
        for name in names:
            if name in ("worker", "sender"):
                parts.append(name)
        what = "web" if "web" in names else "status"
        parts.append(f"{what} on {self.http.server.url}/")
        log.info("mammogate serving (%s): %s", "+".join(names), ", ".join(parts))
