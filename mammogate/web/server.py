"""Serving the portal (or a role's status server) with uvicorn in a background thread, with a
graceful stop: the node's one uvicorn server class."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

import uvicorn
from litestar import Litestar

log = logging.getLogger(__name__)


class PortalServer:
    """uvicorn in a daemon thread. ``port=0`` binds a free port; read it from ``.port``.

    ``stop()`` asks uvicorn to finish in-flight requests and run the app's shutdown hooks,
    then joins the thread. Signals stay with the main thread (the caller's entry point).
    """

    def __init__(
        self, app: Litestar, host: str = "127.0.0.1", port: int = 8080, *, access_log: bool = False,
        graceful_seconds: int = 10,
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,  # logging is configured by the entry point
            access_log=access_log,
            lifespan="on",
            timeout_graceful_shutdown=graceful_seconds,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Start serving; return once the socket listens (RuntimeError if it does not)."""
        if self._thread is not None:
            raise RuntimeError("the portal server is already started")
        self._thread = threading.Thread(target=self._server.run, name="portal", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the portal server stopped while starting (see the log)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the portal server did not start within {timeout:.0f} s")
            time.sleep(0.02)
        log.info("HTTP listening on http://%s:%d", self.host, self.port)

    def stopped_by_itself(self) -> bool:
        """Whether the server's thread ended without :meth:`stop` (uvicorn gave up)."""
        return self._thread is not None and not self._thread.is_alive()

    @property
    def host(self) -> str:
        return self._server.config.host

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with ``port=0``)."""
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self._server.config.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 15.0) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5.0)
        self._thread = None

    def __enter__(self) -> PortalServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
