#!/usr/bin/env python3
"""Load: concurrent modalities against the node, to a CAD SR in the PACS for every study.

``--senders`` DCMTK storescu processes at once (``TCP_NODELAY=1``), each a modality of its own
(calling AE title MODALITY<n>) sending its ``--studies-per-sender`` synthetic 4-view studies one
after another, one association per study (as a modality sends them). The node delivers each
study's CAD SR to a real Orthanc on loopback (the PACS). Modes (``--modes``):

  serve-sqlite      -- ``mammogate serve`` (every role in one process, one worker) on SQLite;
  split-postgresql  -- the roles apart: 1 ``scp``, ``--workers`` ``worker``, ``--senders-roles``
                       ``sender`` and 1 ``web`` on a fresh database of the local PostgreSQL.

Each mode gets a fresh node, data directory and Orthanc. The worker and sender poll at the shipped
1 s; ``dicom.settle_seconds`` is ``--settle`` (the studies hold the four expected views, so each is
ready when its last view is stored). Per study, the clock starts when its storescu call returns
(its last C-STORE answered) and stops at its delivery's ``deliveries.delivered_at`` (set by the
node's sender when the PACS answered the CAD SR's C-STORE; naive UTC, the same machine's clock).
CPU: user + system seconds of the node's processes and all their descendants (the analysis
processes included) from the first push to the last delivery, from ``/proc``; on PostgreSQL
also the server backends of the node's database (sampled twice a second).

    .venv/bin/python benchmarks/load.py [--senders 8 --studies-per-sender 50]
        [--rows 1024 --columns 832] [--workers 4 --senders-roles 2]
        [--modes serve-sqlite,split-postgresql] [--settle 3] [--dir /var/tmp] [--keep]

The studies are written once under ``--dir`` (keyed by their size and the generator's version)
and reused by later runs. Prints a Markdown table, with the machine, the date and the command,
to paste into benchmarks/RESULTS.md; the progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammogate.db import Analysis, Delivery, Job, Report, Study  # noqa: E402
from mammogate.training.synthetic import GENERATOR_VERSION, write_study  # noqa: E402
from tests.peers import (  # noqa: E402
    STORESCU,
    Node,
    Orthanc,
    RoleProcess,
    dcmtk_env,
    postgres_database,
    require_tool,
    wait_until,
)

MODES = ("serve-sqlite", "split-postgresql")
SEED = 70_000
VIEW_FILES = ("R_CC.dcm", "L_CC.dcm", "R_MLO.dcm", "L_MLO.dcm")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
console = Console(stderr=True)


def utcnow() -> datetime:
    """Naive UTC, the convention of the node's tables (``mammogate.db.engine.utcnow``)."""
    return datetime.now(UTC).replace(tzinfo=None)


# -- the studies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedStudy:
    uid: str
    files: tuple[Path, ...]


def _write_one(out: Path, seed: int, rows: int, columns: int) -> str:
    """One study into ``out`` (via a partial folder, renamed when complete); its UID."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    study = write_study(partial, seed=seed, lesion=seed % 2 == 1, rows=rows, columns=columns)
    (partial / "uid").write_text(study.study_instance_uid)
    partial.rename(out)
    return study.study_instance_uid


def studies(root: Path, count: int, rows: int, columns: int) -> list[CachedStudy]:
    """``count`` studies under ``root`` (written now unless an earlier run left them there)."""
    root.mkdir(parents=True, exist_ok=True)
    dirs = [root / f"{SEED + n}" for n in range(count)]
    missing = [d for d in dirs if not (d / "uid").exists()]
    for d in missing:
        shutil.rmtree(d, ignore_errors=True)
    if missing:
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # forks before rich
            futures = [pool.submit(_write_one, d, int(d.name), rows, columns) for d in missing]
            with _progress() as progress:
                task = progress.add_task(f"writing studies ({rows}x{columns})", total=len(missing))
                for future in as_completed(futures):
                    future.result()
                    progress.advance(task)
    else:
        console.print(f"{count} studies ({rows}x{columns}) reused from {root}")
    return [CachedStudy((d / "uid").read_text(), tuple(d / name for name in VIEW_FILES))
            for d in dirs]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


# -- processes and their CPU time ----------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in task.read_text().split()]
    return found


@dataclass
class Tree:
    """A process and its descendants: CPU seconds, and every (pid, start time) seen."""

    root: int
    seen: set[tuple[int, str]] = field(default_factory=set)

    def cpu(self) -> float:
        """utime + stime of each live process, + cutime + cstime (its reaped children)."""
        total, todo = 0.0, [self.root]
        while todo:
            pid = todo.pop()
            fields = _stat(pid)
            if fields is None:
                continue
            self.seen.add((pid, fields[19]))
            total += sum(int(v) for v in fields[11:15]) / CLOCK_TICKS
            todo += _children(pid)
        return total

    def leftovers(self) -> list[int]:
        """Processes seen in the tree that still run (the same process: same start time)."""
        return [pid for pid, started in self.seen
                if (fields := _stat(pid)) is not None and fields[19] == started
                and fields[0] != "Z"]


class Backends:
    """CPU seconds of the PostgreSQL backends serving one database, sampled."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.first: dict[tuple[int, str], float] = {}
        self.last: dict[tuple[int, str], float] = {}
        self.counting = False

    def sample(self) -> None:
        with self.engine.connect() as connection:
            pids = connection.scalars(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).all()
        for pid in pids:
            fields = _stat(int(pid))
            if fields is None:
                continue
            key = (int(pid), fields[19])
            seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            # a backend that appears while counting was born after the baseline
            self.first.setdefault(key, seconds if not self.counting else 0.0)
            self.last[key] = seconds

    def start(self) -> None:
        self.sample()
        self.counting = True

    def seconds(self) -> float:
        return sum(self.last[key] - self.first[key] for key in self.last)

    def count(self) -> int:
        return len(self.last)


# -- the pushes ----------------------------------------------------------------------------------


@dataclass
class Push:
    sender: int
    study: CachedStudy
    started: datetime  # naive UTC
    returned: datetime  # naive UTC: its storescu call returned
    returncode: int
    output: str


class Senders:
    """``len(batches)`` threads, each a modality: one storescu call (association) per study."""

    def __init__(self, batches: Sequence[Sequence[CachedStudy]], ae_title: str, port: int):
        self.batches, self.ae_title, self.port = batches, ae_title, port
        self.pushes: list[Push] = []
        self.stopping = threading.Event()
        self.running: dict[int, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send, args=(n, batch), daemon=True)
                        for n, batch in enumerate(batches)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def done(self) -> bool:
        return not any(thread.is_alive() for thread in self.threads)

    def _send(self, n: int, batch: Sequence[CachedStudy]) -> None:
        for study in batch:
            with self.lock:
                if self.stopping.is_set():
                    return
                started = utcnow()
                process = subprocess.Popen(
                    [STORESCU, "-aet", f"MODALITY{n + 1}", "-aec", self.ae_title, "127.0.0.1",
                     str(self.port), *map(str, study.files)],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dcmtk_env())
                self.running[process.pid] = process
            try:
                out, _ = process.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
            returned = utcnow()
            with self.lock:
                del self.running[process.pid]
                self.pushes.append(Push(n, study, started, returned, process.returncode,
                                        out.decode(errors="replace")[-1000:]))

    def stop(self) -> None:
        """No new calls; the ones under way ended, by pid."""
        with self.lock:
            self.stopping.set()
            for process in self.running.values():
                if process.poll() is None:
                    process.kill()
        for thread in self.threads:
            thread.join(30)


# -- one mode -------------------------------------------------------------------------------------


@dataclass
class Result:
    mode: str
    processes: str
    studies: int
    images: int
    pushes: list[Push]
    delivered: dict[str, datetime]  # study UID -> its CAD SR's delivered_at
    analyses: list[tuple[str, float, datetime]]  # study UID, elapsed_seconds, created_at
    node_cpu: dict[str, float]  # role -> CPU seconds
    database_cpu: float | None
    database_backends: int
    orthanc_srs: int
    notes: list[str]
    completed: bool


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


@dataclass(frozen=True)
class Look:
    studies: int  # recorded by the node
    delivered: int  # deliveries delivered
    in_flight: int  # studies not yet analysed (or failed), deliveries pending or sending


def _look(engine: Engine) -> Look:
    with engine.connect() as connection:
        studies = dict(connection.execute(select(Study.state, func.count())
                                          .group_by(Study.state)).all())
        deliveries = dict(connection.execute(select(Delivery.state, func.count())
                                             .group_by(Delivery.state)).all())
    return Look(sum(studies.values()), deliveries.get("delivered", 0),
                     sum(n for state, n in studies.items()
                         if state in ("receiving", "queued", "processing"))
                     + sum(n for state, n in deliveries.items() if state in ("pending", "sending")))


def _orthanc_srs(pacs: Orthanc) -> int:
    r = httpx.post(f"{pacs.url}/tools/find",
                   json={"Level": "Instance", "Query": {"Modality": "SR"}}, timeout=60)
    r.raise_for_status()
    return len(r.json())


def _log_problems(paths: Sequence[Path]) -> list[str]:
    lines = []
    for path in paths:
        if path.exists():
            lines += [f"{path.name}: {line.strip()[:240]}"
                      for line in path.read_text(errors="replace").splitlines()
                      if " ERROR " in line or " CRITICAL " in line or "Traceback" in line]
    return lines


def _destination(pacs: Orthanc) -> dict[str, Any]:
    return {"name": "pacs", "kind": "dimse", "ae_title": pacs.aet, "host": "127.0.0.1",
            "port": pacs.dicom_port}


def run_mode(mode: str, batches: list[list[CachedStudy]], args: argparse.Namespace,
             root: Path) -> Result:
    expected = sum(len(b) for b in batches)
    aets = [f"MODALITY{n + 1}" for n in range(len(batches))]
    dicom: dict[str, Any] = {}
    if len(batches) > 8:  # the defaults: 8 associations per host, 10 in all
        dicom = {"maximum_associations_per_host": len(batches),
                 "maximum_associations": len(batches) + 2}
    trees: dict[str, Tree] = {}
    notes: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            pacs = Orthanc(root / "pacs")
            stack.callback(pacs.stop)
            pacs.start()

            def new_node(database_url: str = "") -> Node:  # the worker and sender poll: shipped 1 s
                return Node(root / "node", destinations=[_destination(pacs)],
                            database_url=database_url, settle_seconds=args.settle,
                            allowed_calling_ae_titles=aets, dicom=dicom, poll_seconds=1.0)

            logs: list[Path]
            alive: Callable[[], bool]
            backends: Backends | None = None
            if mode == "serve-sqlite":
                node = new_node()
                stack.callback(node.stop)
                with console.status("starting mammogate serve"):
                    node.start(timeout=300)
                assert node.process is not None
                trees["serve"] = Tree(node.process.pid)
                serve = node.process
                alive = lambda: serve.poll() is None  # noqa: E731
                logs = [node.log_path]
                url = f"sqlite:///{root / 'node' / 'var' / 'mammogate.sqlite3'}"
                processes = "`mammogate serve` (1 worker), SQLite"
            else:
                url = stack.enter_context(postgres_database())
                node = new_node(url)
                roles: list[RoleProcess] = []
                stack.callback(lambda: [role.stop() for role in roles])
                names = [("scp", "scp"),
                         *[("worker", f"worker-{n + 1}") for n in range(args.workers)],
                         *[("sender", f"sender-{n + 1}") for n in range(args.senders_roles)],
                         ("web", "web")]
                with console.status(f"starting {len(names)} role processes"):
                    for role, name in names:
                        roles.append(node.start_role(role, name))
                    for process in roles:
                        wait_until(process.ready, 300, f"mammogate {process.name} to be ready")
                for process in roles:
                    trees[process.name] = Tree(process.process.pid)
                alive = lambda: all(r.process.poll() is None for r in roles)  # noqa: E731
                logs = [r.log_path for r in roles]
                processes = (f"1 `scp` + {args.workers} `worker` + {args.senders_roles} `sender` "
                             "+ 1 `web`, PostgreSQL")
            engine = create_engine(url)
            stack.callback(engine.dispose)
            if mode == "split-postgresql":
                backends = Backends(engine)
                backends.start()
            senders = Senders(batches, node.ae_title, node.dicom_port)
            stack.callback(senders.stop)

            cpu_before = {name: tree.cpu() for name, tree in trees.items()}
            senders.start()
            deadline = time.monotonic() + args.timeout
            completed = False
            idle = 0  # looks in a row with every study recorded and nothing in flight
            with _progress() as progress:
                stored_task = progress.add_task(f"{mode}: studies sent", total=expected)
                delivered_task = progress.add_task(f"{mode}: CAD SRs delivered", total=expected)
                while True:
                    look = _look(engine)
                    delivered = look.delivered
                    if backends is not None:
                        backends.sample()
                    for tree in trees.values():
                        tree.cpu()  # notes the descendants of the moment
                    progress.update(stored_task, completed=len(senders.pushes))
                    progress.update(delivered_task, completed=delivered)
                    if delivered >= expected and senders.done():
                        completed = True
                        break
                    if not alive():
                        notes.append("a node process exited during the run")
                        break
                    sent = sum(p.returncode == 0 for p in senders.pushes)
                    idle = idle + 1 if (senders.done() and look.studies >= sent
                                        and look.in_flight == 0) else 0
                    if idle >= 6:  # 3 s: what will never be delivered (failed, dead) is over
                        notes.append(f"stopped waiting: nothing in flight, {delivered} of "
                                     f"{expected} CAD SRs delivered")
                        break
                    if time.monotonic() > deadline:
                        notes.append(f"timed out after {args.timeout:g} s: {delivered} of "
                                     f"{expected} CAD SRs delivered")
                        break
                    time.sleep(0.5)
            cpu = {name: tree.cpu() - cpu_before[name] for name, tree in trees.items()}
            if backends is not None:
                backends.sample()
            senders.stop()
            if completed:
                time.sleep(2)  # a second analysis or delivery, were there one, would show meanwhile

            with engine.connect() as connection:
                deliveries = connection.execute(
                    select(Study.study_instance_uid, Delivery.state, Delivery.attempts,
                           Delivery.delivered_at)
                    .join(Report, Delivery.report_id == Report.id)
                    .join(Analysis, Report.analysis_id == Analysis.id)
                    .join(Study, Analysis.study_id == Study.id)).all()
                analyses = [(uid, elapsed, created) for uid, elapsed, created in connection.execute(
                    select(Study.study_instance_uid, Analysis.elapsed_seconds, Analysis.created_at)
                    .join(Study, Analysis.study_id == Study.id)).all()]
                jobs = connection.execute(select(Job.kind, Job.state, Job.attempts)).all()
                study_states = Counter(connection.scalars(select(Study.state)))
            srs = _orthanc_srs(pacs)
    finally:  # everything this mode started is stopped (the stack): anything of the node left?
        for name, tree in trees.items():
            for pid in tree.leftovers():
                notes.append(f"{name}: process {pid} still ran after the node stopped; killed")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    by_study: dict[str, datetime] = {}
    for uid, state, _attempts, delivered_at in deliveries:
        if state == "delivered" and delivered_at is not None:
            by_study[uid] = min(delivered_at, by_study.get(uid, delivered_at))
    failed = [p for p in senders.pushes if p.returncode != 0]
    for push in failed[:5]:
        notes.append(f"storescu of MODALITY{push.sender + 1} failed ({push.returncode}): "
                     f"{push.output[-300:]!r}")
    if len(failed) > 5:
        notes.append(f"... {len(failed) - 5} more storescu calls failed")
    per_study = Counter(uid for uid, _, _ in analyses)
    if twice := {uid: n for uid, n in per_study.items() if n > 1}:
        notes.append(f"{len(twice)} studies analysed more than once: {twice}")
    per_delivery = Counter(uid for uid, *_ in deliveries)
    if more := {uid: n for uid, n in per_delivery.items() if n > 1}:
        notes.append(f"{len(more)} studies with more than one delivery: {more}")
    if retried := Counter(f"{kind} {state} attempts={attempts}"
                          for kind, state, attempts in jobs if attempts != 1 or state != "done"):
        notes.append(f"jobs not done at the first attempt: {dict(retried)}")
    if retried := Counter(f"{state} attempts={attempts}"
                          for _, state, attempts, _ in deliveries
                          if attempts != 1 or state != "delivered"):
        notes.append(f"deliveries not delivered at the first attempt: {dict(retried)}")
    if set(study_states) != {"done"}:
        notes.append(f"study states: {dict(study_states)}")
    sent_uids = {p.study.uid for p in senders.pushes}
    if missing := sent_uids - set(by_study):
        notes.append(f"{len(missing)} studies sent have no delivered CAD SR")
    if srs != expected:
        notes.append(f"Orthanc holds {srs} SR instances, expected {expected}")
    problems = _log_problems(logs)
    if problems:
        notes.append(f"{len(problems)} ERROR/CRITICAL/Traceback lines in the node's logs; first: "
                     + " | ".join(problems[:3]))
    roles_cpu: dict[str, float] = {}
    for name, seconds in cpu.items():  # worker-1, worker-2, ... -> worker
        roles_cpu[name.split("-")[0]] = roles_cpu.get(name.split("-")[0], 0.0) + seconds
    return Result(mode, processes, len(senders.pushes), sum(len(p.study.files)
                  for p in senders.pushes), senders.pushes, by_study, analyses, roles_cpu,
                  backends.seconds() if backends is not None else None,
                  backends.count() if backends is not None else 0, srs, notes,
                  completed and not failed and srs == expected)


# -- the report -----------------------------------------------------------------------------------


def _machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB"
    return (f"{platform.node()}: {model} ({platform.machine()}), {os.cpu_count()} cores{memory}, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


def _versions() -> str:
    parts = []
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        out = subprocess.run([STORESCU, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
        parts.append(out.strip().splitlines()[0].strip("$ ").removeprefix("dcmtk: "))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        repo = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, timeout=10).stdout
        parts.insert(0, f"mammogate {commit}{' (+ uncommitted changes)' if dirty else ''}")
    return "; ".join(parts)


def _batch_studies() -> str:
    """The shipped ``worker.batch_studies`` (studies analysed together when the queue is deep)."""
    with contextlib.suppress(ImportError, AttributeError):
        from mammogate.config.settings import WorkerSettings

        found = WorkerSettings.model_fields.get("batch_studies")
        if found is not None:
            return f", worker.batch_studies {found.default} (shipped)"
    return ""


def _command() -> str:
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    return shlex.join([str(python), *sys.argv])


def _seconds(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def report(results: list[Result], args: argparse.Namespace) -> None:
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, values: list[str]) -> None:
        rows.append((label, values))

    ttr: list[list[float]] = []
    walls: list[float] = []
    for r in results:
        ttr.append([(r.delivered[p.study.uid] - p.returned).total_seconds()
                    for p in r.pushes if p.study.uid in r.delivered])
        ends = list(r.delivered.values())
        walls.append((max(ends) - min(p.started for p in r.pushes)).total_seconds()
                     if ends and r.pushes else math.nan)
    row("processes", [r.processes for r in results])
    row("studies (images)", [f"{r.studies} ({r.images})" for r in results])
    row("CAD SRs delivered (SR instances in Orthanc)",
        [f"{len(r.delivered)} ({r.orthanc_srs})" for r in results])
    row("pushing: first storescu call → last one returned, s",
        [_seconds((max(p.returned for p in r.pushes) - min(p.started for p in r.pushes))
                  .total_seconds()) if r.pushes else "–" for r in results])
    row("first push → last delivery, s", [_seconds(w) for w in walls])
    row("throughput, studies/hour", [f"{len(r.delivered) / w * 3600:.0f}" if w > 0 else "–"
                                     for r, w in zip(results, walls, strict=True)])
    row("throughput, images/s",
        [f"{sum(len(p.study.files) for p in r.pushes if p.study.uid in r.delivered) / w:.2f}"
         if w > 0 else "–" for r, w in zip(results, walls, strict=True)])
    for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        row(f"time to result {label}, s", [_seconds(_percentile(t, q)) for t in ttr])
    row("analysis (`analyses.elapsed_seconds`; batched: from the batch's start) p50 / p90, s",
        [f"{_seconds(_percentile([a[1] for a in r.analyses], 0.5))} / "
         f"{_seconds(_percentile([a[1] for a in r.analyses], 0.9))}" for r in results])
    row("storescu returned → analysis stored (`analyses.created_at`) p50, s",
        [_seconds(_percentile(_since_return(r), 0.5)) for r in results])
    row("analysis stored → delivered p50, s",
        [_seconds(_percentile([(r.delivered[uid] - created).total_seconds()
                               for uid, _, created in r.analyses if uid in r.delivered], 0.5))
         for r in results])
    row("node CPU s (by role)",
        [f"{_seconds(sum(r.node_cpu.values()))} (" + ", ".join(
            f"{name} {_seconds(seconds)}" for name, seconds in r.node_cpu.items()) + ")"
         for r in results])
    row("PostgreSQL backends CPU s (backends seen)",
        ["–" if r.database_cpu is None else f"{_seconds(r.database_cpu)} ({r.database_backends})"
         for r in results])
    row("studies/hour per core (node CPU)",
        [_per_core(len(r.delivered), sum(r.node_cpu.values())) for r in results])
    row("studies/hour per core (node + database server CPU)",
        [_per_core(len(r.delivered), sum(r.node_cpu.values()) + (r.database_cpu or 0.0))
         for r in results])

    print(f"machine: {_machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; {_versions()}")
    print(f"command: `{_command()}`")
    print()
    print(f"{args.senders} storescu at once (one modality each), {args.studies_per_sender} "
          f"studies each, one association per study; 4 views {args.rows}x{args.columns}, 16-bit; "
          f"settle_seconds {args.settle:g}, worker and sender poll 1 s{_batch_studies()}; "
          "CAD SR to an Orthanc "
          "on loopback (DIMSE).")
    print()
    print("| measure | " + " | ".join(r.mode for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for label, values in rows:
        print(f"| {label} | " + " | ".join(values) + " |")
    print()
    print("Time to result: the study's `deliveries.delivered_at` (written by the node's sender "
          "when the PACS answered the CAD SR's C-STORE; naive UTC) minus the moment its storescu "
          "call returned (its last C-STORE answered; same clock). Percentiles: nearest rank. "
          "CPU: user + system of the node's processes and their descendants (analysis "
          "processes included), /proc, first push to last delivery.")
    for r in results:
        for note in r.notes:
            print(f"- {r.mode}: {note}")


def _since_return(r: Result) -> list[float]:
    returned = {p.study.uid: p.returned for p in r.pushes}
    return [(created - returned[uid]).total_seconds()
            for uid, _, created in r.analyses if uid in returned]


def _per_core(studies: int, cpu: float) -> str:
    return f"{studies / (cpu / 3600):.0f}" if cpu > 0 else "–"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=8, help="storescu processes at once")
    parser.add_argument("--studies-per-sender", type=int, default=50)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--columns", type=int, default=832)
    parser.add_argument("--workers", type=int, default=4,
                        help="worker processes (split-postgresql; serve runs one)")
    parser.add_argument("--senders-roles", type=int, default=2,
                        help="sender processes (split-postgresql)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, of: {', '.join(MODES)}")
    parser.add_argument("--settle", type=float, default=3.0, help="dicom.settle_seconds")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds to wait for every CAD SR, per mode")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"),
                        help="where the studies (kept, reused) and the nodes' data go")
    parser.add_argument("--keep", action="store_true",
                        help="keep each mode's data directory (node, logs, Orthanc)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if min(args.senders, args.studies_per_sender, args.workers, args.senders_roles) < 1:
        parser.error("--senders, --studies-per-sender, --workers and --senders-roles must be >= 1")
    require_tool(STORESCU)

    cache = args.dir / "mammogate-load-studies" / f"{args.rows}x{args.columns}-v{GENERATOR_VERSION}"
    all_studies = studies(cache, args.senders * args.studies_per_sender, args.rows, args.columns)
    batches = [all_studies[n * args.studies_per_sender:(n + 1) * args.studies_per_sender]
               for n in range(args.senders)]
    results = []
    for mode in modes:
        root = Path(tempfile.mkdtemp(prefix=f"mammogate-load-{mode}-", dir=args.dir))
        try:
            results.append(run_mode(mode, batches, args, root))
        except KeyboardInterrupt:
            console.print(f"{mode}: interrupted; everything it started is stopped")
            return 130
        finally:
            if args.keep:
                console.print(f"{mode}: data kept in {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    report(results, args)
    return 0 if all(r.completed for r in results) else 1


if __name__ == "__main__":
    os.environ["TCP_NODELAY"] = "1"  # Orthanc (and DCMTK) leave Nagle on without it
    raise SystemExit(main())
