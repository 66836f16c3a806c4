"""Starting the node's roles: ``serve`` runs SCP, worker, sender and web in one process."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mammogate.config import Settings, StartupError
from mammogate.db import Database
from mammogate.db.queue import expire_leases, lease_holders
from mammogate.db.seed import config_diff, seed_if_first_start

if TYPE_CHECKING:
    from mammogate.analysis import AnalysisWorker
    from mammogate.delivery import Destination
    from mammogate.dicom_node.scp import Scp
    from mammogate.dicom_node.spool import Spool

log = logging.getLogger(__name__)

SWITCH_INTERVAL_SECONDS = 0.001  # the interpreter's thread switch interval in `serve`


def worker_id(role: str) -> str:
    """Who holds a lease. Host names must be unique per node (they are under Docker and Compose
    by default): a lease of this host and pid that this process did not take is released at
    start, as its holder is an earlier run of the node."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}"


def open_database(settings: Settings) -> Database:
    """The database, migrated to head and seeded from the configuration on first start."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url, busy_timeout_seconds=settings.database.busy_timeout_seconds)
    db.migrate()
    with db.session() as session:
        if seed_if_first_start(session, settings):
            log.info("first start: peers, destinations and routes seeded from the configuration")
    return db


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


def check_calling_ae_policy(settings: Settings, allowed: list[str]) -> None:
    """The bind/allow-list rule against the database's list, which is the one enforced."""
    if settings.dicom.accept_any_calling_ae or allowed or settings.dicom.binds_loopback:
        return
    raise PolicyError(
        f"dicom.bind = {settings.dicom.bind!r} but the database lists no allowed calling AE "
        "titles (the file's dicom.allowed_calling_ae_titles seeds the database only on first "
        "start: run `mammogate config apply`), and dicom.accept_any_calling_ae is false"
    )


class PolicyError(Exception):
    """A safety rule refuses to start the node."""



def check_web_port(settings: Settings) -> None:
    """Refuse at once, naming the setting, when the portal's port is taken (uvicorn would
    only log a bare errno after the other roles had started)."""
    web = settings.web
    family = socket.AF_INET6 if ":" in web.bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((web.bind, web.port))
        except OSError as exc:
            raise StartupError(
                f"web port {web.port} on {web.bind} is not available ({exc.strerror}): stop "
                "what uses it, or set web.port (MAMMOGATE_WEB__PORT)"
            ) from exc


def readiness(db: Database, spool: Spool, scp: Scp, worker: AnalysisWorker) -> dict[str, str]:
    """Each condition of readiness: "ok", or why not."""
    checks = {"database": db.reachable()}
    root = spool.root
    if not (root.is_dir() and os.access(root, os.W_OK | os.X_OK)):
        checks["spool"] = f"{root} is not a writable folder"
    else:  # below the free-space minimum the SCP refuses images
        checks["spool"] = scp.service.spool_space.shortage() or "ok"
    checks["dicom"] = "ok" if scp.server is not None else "not listening"
    checks["model"] = worker.model_error or "ok"
    return checks


def serve(settings: Settings) -> int:
    """Run every role in this process until SIGINT/SIGTERM. Returns the exit status."""
    import uvicorn

    from mammogate.analysis import AnalysisWorker
    from mammogate.delivery.outbox import DeliveryLoop
    from mammogate.dicom_node.scp import Scp
    from mammogate.dicom_node.spool import Spool
    from mammogate.inference import load_bundle
    from mammogate.inference.bundle import with_operating_point
    from mammogate.inference.isolated import IsolatedAnalyzer
    from mammogate.web.app import create_app

    # One process runs the DICOM service beside the portal: a thread waiting on the network or
    # the disk waits for the interpreter lock again each time it returns, up to the switch
    # interval while another thread computes (rendering a page). At Python's 5 ms, a C-STORE's
    # few dozen system calls can add up to a second under a portal crowd; at 1 ms, a fifth.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    # Refuse a broken or tampered bundle before opening any port.
    bundle = load_bundle(Path(settings.model.bundle) if settings.model.bundle else None)
    bundle = with_operating_point(bundle, settings.model.operating_point)
    info = bundle.model_info
    log.info("model bundle %s %s (sha256 %s)", info.name, info.version, info.sha256[:12])

    log.info("data directory %s (node.data_dir; database, spool, reports and renderings)",
             settings.data_dir)
    check_web_port(settings)
    db = open_database(settings)
    warn_config_drift(settings, db)
    release_leases_of_dead_processes(db)
    spool = Spool(settings.spool_dir)
    swept = spool.sweep_incoming(settings.dicom.stale_incoming_seconds)
    if swept:
        log.warning("removed %d half-received files an earlier run left in the spool", swept)
    scp = Scp(settings, db, spool)
    check_calling_ae_policy(settings, [] if scp.policy.accepts_any_caller else list(scp.policy.peers))
    if settings.web.exposure_warning:
        log.warning("%s", settings.web.exposure_warning)
    def make_analyzer() -> IsolatedAnalyzer:
        # TensorFlow runs in a watched child process: a poison study costs an attempt, not the node
        return IsolatedAnalyzer(
            bundle, max_memory_bytes=settings.worker.max_memory_bytes,
            timeout_seconds=settings.worker.analysis_timeout_seconds,
        )

    worker = AnalysisWorker(
        settings, db, worker_id("worker"), make_analyzer, on_idle=scp.on_idle
    )
    sender = DeliveryLoop(settings, db, worker_id("sender"), destination_backends(settings))
    grace = settings.node.stop_grace_seconds

    def out_of_time() -> None:
        log.critical("not stopped %g s after the signal (node.stop_grace_seconds): exiting now", grace)
        logging.shutdown()
        os._exit(1)

    deadline = threading.Timer(grace, out_of_time)
    deadline.daemon = True

    class WebServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The node, not uvicorn, owns the signals: a graceful stop of every role, then a
            # normal exit (uvicorn would re-raise the signal after its own shutdown).
            def stop(signum: int, _frame: object) -> None:
                log.info("signal %d: stopping (at most %g s)", signum, grace)
                self.should_exit = True
                if deadline.ident is None:  # the first signal starts the clock
                    deadline.start()

            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    web = WebServer(
        uvicorn.Config(
            create_app(settings, db, readiness=lambda: readiness(db, spool, scp, worker)),
            host=settings.web.bind,
            port=settings.web.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=max(1, int(grace / 2)),
        )
    )
    failure: list[BaseException] = []

    def essential(name: str, run: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            try:
                run()
            except BaseException as exc:  # noqa: BLE001 -- a role died: stop the node, loudly
                log.critical("%s died: %s", name, exc, exc_info=True)
                failure.append(exc)
                web.should_exit = True

        return guarded

    scp.start()
    listener = db.listen(settings.database.reconnect_seconds)
    threads = [
        threading.Thread(target=essential("worker", worker.run), name="worker", daemon=True),
        threading.Thread(target=essential("sender", sender.run), name="sender", daemon=True),
    ]
    for thread in threads:
        thread.start()
    log.info(
        "mammogate serving: DICOM %s on %s:%d, web on http://%s:%d/",
        settings.dicom.ae_title, settings.dicom.bind, settings.dicom.port,
        settings.web.bind, settings.web.port,
    )
    try:
        web.run()
    finally:
        log.info("mammogate stopping")
        scp.stop()
        worker.stop()
        sender.stop()
        for thread in threads:
            thread.join(timeout=30)
        worker.stop_model()
        if listener is not None:
            listener.stop()
        db.dispose()
        deadline.cancel()
    if failure or not web.started:
        return 1
    return 0
