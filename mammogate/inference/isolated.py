"""Analysis in a child process with a memory and a time limit, so one poison study cannot take
the node down.

``IsolatedAnalyzer`` keeps one child (started with ``spawn``: TensorFlow is imported there,
never in the parent) that loads the model once and analyses one study per request. The parent
watches it while it works: resident memory above ``max_memory_bytes`` (read from /proc), a
study taking longer than ``timeout_seconds``, or a child that dies (killed by the kernel, a
crash in a decoder) ends that attempt with ``AnalysisAborted`` and the reason; the child is
killed and a fresh one started for the next study. The SCP, the sender and the portal, in the
parent, never notice.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammogate.inference.bundle import ModelBundle
from mammogate.inference.errors import AnalysisAborted, AnalysisInterrupted
from mammogate.inference.results import StudyResult

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.05


@dataclass(frozen=True)
class _Failure:
    kind: str
    message: str


@dataclass(frozen=True)
class _Batch:
    """Several studies for one model pass (``Analyzer.analyze_studies``)."""

    studies: list[list[str]]


def _serve(connection: multiprocessing.connection.Connection, bundle: ModelBundle, batch_size: int) -> None:
    """The child: load the model, then analyse what the parent sends until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the child stops
    from mammogate.inference.analyzer import Analyzer

    analyzer = Analyzer(bundle, batch_size=batch_size)
    analyzer.model  # noqa: B018 -- load TensorFlow and the weights before saying ready
    connection.send("ready")
    # trace the graph now, while the node waits for its first study to settle: that study then
    # runs as fast as the next, and readiness does not wait for it
    analyzer.warm_up()
    while True:
        try:
            paths = connection.recv()
        except (EOFError, OSError):
            return
        if paths is None:
            return
        if isinstance(paths, _Batch):
            try:
                connection.send([_Failure(type(r).__name__, str(r)) if isinstance(r, Exception)
                                 else r for r in analyzer.analyze_studies(
                                     [[Path(p) for p in study] for study in paths.studies])])
            except Exception as exc:  # noqa: BLE001 -- reported to the parent, which decides
                connection.send(_Failure(type(exc).__name__, str(exc)))
            continue
        try:
            connection.send(analyzer.analyze_study([Path(p) for p in paths]))
        except Exception as exc:  # noqa: BLE001 -- reported to the parent, which decides
            connection.send(_Failure(type(exc).__name__, str(exc)))


def resident_bytes(pid: int) -> int:
    """The resident set size of a process (0 when it is gone or /proc is not there)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0
    return 0


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class IsolatedAnalyzer:
    """``analyze_study`` in a watched child process. Not thread-safe: one per worker loop."""

    def __init__(
        self, bundle: ModelBundle, *, max_memory_bytes: int, timeout_seconds: float,
        start_timeout_seconds: float = 120.0, batch_size: int = 8,
    ) -> None:
        self.bundle = bundle
        self.max_memory_bytes = max_memory_bytes
        self.timeout_seconds = timeout_seconds
        self.start_timeout_seconds = start_timeout_seconds
        self.batch_size = batch_size
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._connection: multiprocessing.connection.Connection | None = None
        self._interrupted = threading.Event()
        self.peak_memory_bytes = 0

    def interrupt(self) -> None:
        """From another thread: end the analysis under way (its child is killed by the thread
        that waits for it, which raises ``AnalysisInterrupted``) and any later one at once."""
        self._interrupted.set()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child and wait until its model is loaded (within the same limits)."""
        if self._process is not None and self._process.is_alive():
            return
        self.stop()
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(child, self.bundle, self.batch_size), name="mammogate-analysis", daemon=True
        )
        process.start()
        child.close()
        self._process, self._connection = process, parent
        self._wait_for(self.start_timeout_seconds, "loading the model", "worker.model_start_timeout_seconds")
        log.info("analysis process %d ready (model %s %s)", process.pid, self.bundle.name, self.bundle.version)

    def analyze_study(self, paths: Sequence[Path]) -> StudyResult:
        self.start()
        assert self._connection is not None
        self._connection.send([str(p) for p in paths])
        answer = self._wait_for(self.timeout_seconds, "the analysis")
        if isinstance(answer, _Failure):
            raise AnalysisAborted(f"analysis failed in the analysis process: {answer.kind}: {answer.message}")
        if not isinstance(answer, StudyResult):
            raise AnalysisAborted(f"the analysis process answered {type(answer).__name__}")
        return answer

    def analyze_studies(self, studies: Sequence[Sequence[Path]]) -> list[StudyResult | Exception]:
        """Several studies in one request, their views through the model together: each
        study's result or its error. The time limit is ``timeout_seconds`` per study; a limit
        exceeded or a child that dies raises ``AnalysisAborted`` for the whole batch."""
        self.start()
        assert self._connection is not None
        self._connection.send(_Batch([[str(p) for p in study] for study in studies]))
        answer = self._wait_for(self.timeout_seconds * len(studies),
                                f"the analysis of {len(studies)} studies together")
        if isinstance(answer, _Failure):
            raise AnalysisAborted(f"analysis failed in the analysis process: {answer.kind}: {answer.message}")
        if not isinstance(answer, list) or len(answer) != len(studies):
            raise AnalysisAborted(f"the analysis process answered {type(answer).__name__}")
        return [AnalysisAborted(f"analysis failed in the analysis process: {r.kind}: {r.message}")
                if isinstance(r, _Failure) else r for r in answer]

    def _wait_for(self, timeout: float, what: str, timeout_key: str = "worker.analysis_timeout_seconds") -> Any:
        assert self._process is not None and self._connection is not None
        deadline = time.monotonic() + timeout
        pid = self._process.pid
        while True:
            if self._interrupted.is_set():
                self.stop(kill=True)
                raise AnalysisInterrupted(f"{what} was interrupted: the worker is stopping")
            if self._connection.poll(WATCH_INTERVAL):
                try:
                    return self._connection.recv()
                except (EOFError, OSError):
                    self._abort(f"the analysis process {_describe_exit(self._wait_exit())} during {what}")
            used = resident_bytes(pid)
            self.peak_memory_bytes = max(self.peak_memory_bytes, used)
            if used > self.max_memory_bytes:
                self._abort(
                    f"{what} exceeded worker.max_memory_bytes ({_gib(self.max_memory_bytes)}): "
                    f"{_gib(used)} in use"
                )
            if not self._process.is_alive():
                self._abort(f"the analysis process {_describe_exit(self._process.exitcode)} during {what}")
            if time.monotonic() > deadline:
                self._abort(f"{what} exceeded {timeout_key} ({timeout:g} s)")

    def _wait_exit(self) -> int | None:
        assert self._process is not None
        self._process.join(2.0)
        return self._process.exitcode

    def _abort(self, reason: str) -> None:
        log.error("%s; the analysis process is stopped and a new one will start", reason)
        self.stop(kill=True)
        raise AnalysisAborted(reason)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the child: asked to finish, or (``kill``) killed at once."""
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if kill and process is not None and process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        if connection is not None:
            try:
                connection.send(None)
            except (OSError, ValueError, BrokenPipeError):
                log.debug("analysis process already gone")
            connection.close()
        if process is not None:
            process.join(1.0)
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
                process.join(5.0)


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"
