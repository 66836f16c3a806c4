"""The roles apart: ``mammogate scp``, ``worker``, ``sender`` and ``web`` as processes of their
own against one PostgreSQL database and one spool, fed by several DCMTK ``storescu`` at once,
delivering to a real Orthanc; a worker killed with SIGKILL in the middle of an analysis; and
a slow analysis that outlives its lease without being taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from mammogate.analysis import AnalysisWorker
from mammogate.db import Analysis, Delivery, Job, Study
from mammogate.inference.results import StudyResult
from mammogate.training.synthetic import write_study
from tests.integration.test_worker_races import _node, shipped_analyzer
from tests.peers import (
    STORESCU,
    Node,
    Orthanc,
    RoleProcess,
    dcmtk_env,
    postgres_database,
    require_tool,
    wait_until,
)

COUNTED = {"mammogate_instances_received_total", "mammogate_analyses_total",
           "mammogate_deliveries_total"}


@pytest.fixture
def database() -> Iterator[str]:
    with postgres_database() as url:
        yield url


def _split_node(tmp_path: Path, url: str, orthanc: Orthanc, **env: str) -> Node:
    return Node(
        tmp_path / "node", database_url=url,
        destinations=[{"name": "pacs", "kind": "dimse", "ae_title": orthanc.aet,
                       "host": "127.0.0.1", "port": orthanc.dicom_port}],
        extra_env=env,
    )


def _start(node: Node, roles: Sequence[tuple[str, str]]) -> list[RoleProcess]:
    started: list[RoleProcess] = []
    try:
        for role, name in roles:
            started.append(node.start_role(role, name))
        for process in started:
            wait_until(process.ready, 180, f"mammogate {process.name} to be ready")
    except BaseException:
        _stop(started)
        raise
    return started


def _stop(processes: Sequence[RoleProcess]) -> list[int]:
    return [process.stop() for process in processes]


def _push(node: Node, batches: Sequence[Sequence[Path]]) -> None:
    """Each batch in a storescu process (one association) of its own, all at once."""
    require_tool(STORESCU)
    running = [
        subprocess.Popen([STORESCU, "-aet", "MODALITY", "-aec", node.ae_title, "127.0.0.1",
                          str(node.dicom_port), *map(str, batch)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dcmtk_env())
        for batch in batches
    ]
    for process in running:
        out, _ = process.communicate(timeout=600)
        assert process.returncode == 0, out.decode(errors="replace")[-2000:]


def _engine(url: str) -> Engine:
    return create_engine(url)


def _counts(engine: Engine) -> tuple[int, int]:
    """(studies with a finished analysis, deliveries delivered)."""
    with engine.connect() as connection:
        analysed = connection.scalar(select(func.count()).select_from(Study)
                                     .where(Study.state == "done")) or 0
        delivered = connection.scalar(select(func.count()).select_from(Delivery)
                                      .where(Delivery.state == "delivered")) or 0
    return analysed, delivered


def test_one_scp_four_workers_two_senders_analyse_and_deliver_each_study_exactly_once(
    tmp_path: Path, orthanc: Orthanc, database: str
) -> None:
    studies = [write_study(tmp_path / "in" / f"s{n:03d}", seed=5000 + n, lesion=n % 3 == 0,
                           rows=512, columns=416) for n in range(100)]
    files = [image.path for study in studies for image in study.images if image.path is not None]
    assert len(files) == 400
    node = _split_node(tmp_path, database, orthanc)
    roles = _start(node, [("scp", "scp"), *[("worker", f"worker-{n}") for n in range(4)],
                          ("sender", "sender-1"), ("sender", "sender-2"), ("web", "web")])
    engine = _engine(database)
    try:
        # four storescu at once, each a quarter of the studies in one association
        _push(node, [files[n::4] for n in range(4)])
        wait_until(lambda: _counts(engine) == (100, 100), 900,
                   "every study analysed and its CAD SR delivered")
        time.sleep(2)  # a second analysis or delivery, were there one, would show meanwhile

        with engine.connect() as connection:
            per_study = Counter(connection.scalars(select(Analysis.study_id)))
            assert len(per_study) == 100 and set(per_study.values()) == {1}, \
                "every study analysed exactly once"
            workers = Counter(connection.scalars(select(Analysis.worker)))
            jobs = connection.execute(select(Job.state, Job.attempts, Job.locked_by,
                                             Job.lease_until)).all()
            deliveries = connection.execute(select(Delivery.state, Delivery.attempts)).all()
        assert all(state == "done" for state, *_ in jobs), Counter(j[0] for j in jobs)
        assert len(jobs) == 100, "one analysis job per study"
        assert {attempts for _, attempts, _, _ in jobs} == {1}, "no job was run twice"
        assert len(deliveries) == 100 and {(s, a) for s, a in deliveries} == {("delivered", 1)}, \
            "every result delivered exactly once"
        assert len(workers) >= 2, f"the analyses were shared between the workers: {workers}"

        # what the PACS holds: one CAD SR per study, every one of the 100 studies
        srs = orthanc.find_instances(Modality="SR")
        assert len(srs) == 100
        sent = sum(p.log_text().count("delivered cad_sr") for p in roles if "sender" in p.name)
        assert sent == 100, "each CAD SR sent once by one of the senders"
        for process in roles:
            health = process.get("/healthz")
            assert health is not None and health.status_code == 200, process.name
        # each process's own counters, at its status server (the portal's, for web)
        totals: Counter[str] = Counter()
        for process in roles:
            exposition = process.get("/metrics")
            assert exposition is not None and exposition.status_code == 200, process.name
            for family in text_string_to_metric_families(exposition.text):
                for sample in family.samples:
                    if sample.name in COUNTED:
                        totals[f"{process.name.split('-')[0]}:{sample.name}"] += sample.value
                    if sample.name == "mammogate_queue_depth" and process.name == "scp":
                        totals[f"queue:{sample.labels['queue']}:{sample.labels['state']}"] += \
                            sample.value
        assert totals["scp:mammogate_instances_received_total"] == 400
        assert totals["worker:mammogate_analyses_total"] == 100
        assert totals["sender:mammogate_deliveries_total"] == 100
        assert totals["queue:analysis:done"] == 100 and totals["queue:delivery:delivered"] == 100
    finally:
        codes = _stop(roles)
        engine.dispose()
    assert codes == [0] * len(roles), "each role stops cleanly on SIGTERM"


def _children(pid: int) -> list[int]:
    found = []
    for tasks in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in tasks.read_text().split()]
    return found


def test_a_worker_killed_mid_analysis_loses_its_job_to_another_after_the_lease(
    tmp_path: Path, orthanc: Orthanc, database: str
) -> None:
    study = write_study(tmp_path / "study", seed=6161, lesion=True)
    files = [image.path for image in study.images if image.path is not None]
    lease = 4.0
    node = _split_node(tmp_path, database, orthanc,
                       MAMMOGATE_WORKER__LEASE_SECONDS=str(lease))
    roles = _start(node, [("scp", "scp"), ("worker", "worker-a"), ("worker", "worker-b"),
                          ("sender", "sender")])
    by_pid = {p.process.pid: p for p in roles}
    engine = _engine(database)
    orphans: list[int] = []
    try:
        _push(node, [files])

        def running_job() -> tuple[int, str] | None:
            with engine.connect() as connection:
                row = connection.execute(select(Job.id, Job.locked_by)
                                         .where(Job.state == "running")).first()
            return None if row is None else (row[0], row[1])

        job_id, holder = wait_until(running_job, 120, "a worker to claim the analysis", 0.02)
        victim = by_pid[int(holder.split(":")[1])]
        orphans = _children(victim.process.pid)  # its analysis process
        killed_at = time.monotonic()
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(10)

        wait_until(lambda: _counts(engine) == (1, 1), 120,
                   "the study analysed by the other worker and delivered")
        taken_after = time.monotonic() - killed_at
        with engine.connect() as connection:
            job = connection.execute(select(Job.state, Job.attempts, Job.locked_by)
                                     .where(Job.id == job_id)).one()
            analyses = connection.execute(select(Analysis.worker, Analysis.job_id)).all()
            deliveries = connection.execute(select(Delivery.state, Delivery.attempts)).all()
        assert job.state == "done" and job.attempts == 2, job
        assert job.locked_by != holder, "completed by another worker"
        assert [(w, j) for w, j in analyses] == [(job.locked_by, job_id)], \
            "one result, from the worker that took the job over"
        assert deliveries == [("delivered", 1)]
        assert taken_after >= lease * 0.5, "taken over only once the lease had run out"
        # the killed worker's analysis process does not outlive it
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in orphans), 60,
                   "the killed worker's analysis process to exit")
    finally:
        codes = _stop([p for p in roles if p.process.poll() is None])
        for pid in orphans:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        engine.dispose()
    assert set(codes) == {0}


class SlowAnalyzer:
    """The shipped model, then a wait of several leases."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.calls = 0

    def analyze_study(self, paths: Sequence[Path]) -> StudyResult:
        self.calls += 1
        result = shipped_analyzer().analyze_study(paths)
        time.sleep(self.seconds)
        return result


def test_the_second_worker_finds_no_job_while_the_first_renews_its_lease(
    tmp_path: Path, database_url: str
) -> None:
    lease = 0.9
    db, scp, port = _node(tmp_path, database_url)
    try:
        study = write_study(tmp_path / "study", seed=4343, lesion=False, rows=512, columns=416)
        require_tool(STORESCU)
        sent = subprocess.run([STORESCU, "-aec", "MAMMOGATE", "127.0.0.1", str(port),
                               *[str(i.path) for i in study.images]],
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        settings = scp.settings.model_copy(update={"worker": scp.settings.worker.model_copy(
            update={"lease_seconds": lease})})
        slow, other = SlowAnalyzer(4 * lease), SlowAnalyzer(0)
        first = AnalysisWorker(settings, db, "worker-slow", lambda: slow)
        second = AnalysisWorker(settings, db, "worker-other", lambda: other)
        first.start_model()
        second.start_model()
        outcome: list[bool] = []
        runner = threading.Thread(target=lambda: outcome.append(first.run_once()))
        runner.start()
        wait_until(lambda: slow.calls == 1, 60, "the first worker to start its analysis", 0.05)
        tries = 0
        while runner.is_alive():
            assert not second.run_once(), "the second worker took a job whose holder is alive"
            tries += 1
            time.sleep(0.1)
        runner.join()
        assert outcome == [True] and other.calls == 0
        assert tries >= 10, "the second worker kept looking through several leases"
        with db.session() as session:
            (job,) = session.scalars(select(Job)).all()
            assert (job.state, job.attempts, job.locked_by) == ("done", 1, "worker-slow")
            assert session.scalar(select(func.count()).select_from(Analysis)) == 1
    finally:
        scp.stop()
        db.dispose()


def test_an_scp_alone_hears_of_a_new_peer_without_any_other_role(
    tmp_path: Path, database: str
) -> None:
    node = Node(tmp_path / "node", database_url=database, allowed_calling_ae_titles=["MODALITY"],
                dicom={"refresh_seconds": 0.2})
    (scp,) = _start(node, [("scp", "scp")])
    try:
        refused = node.echoscu(calling="NEWROOM")
        assert refused.returncode != 0
        node.allowed_calling_ae_titles = ["MODALITY", "NEWROOM"]
        node.write_config()
        node.run_cli("config", "apply")
        wait_until(lambda: node.echoscu(calling="NEWROOM").returncode == 0, 30,
                   "the SCP to accept the peer the database now lists")
        assert node.echoscu(calling="MODALITY").returncode == 0
    finally:
        codes = _stop([scp])
    assert codes == [0]
    assert "allowed calling AE titles now: " in scp.log_text()


def test_a_worker_stopped_mid_analysis_gives_its_job_back_at_once(
    tmp_path: Path, orthanc: Orthanc, database: str
) -> None:
    """SIGTERM (a rolling upgrade, a scale-down) during an analysis: the worker ends it, gives
    the job back without counting the attempt, and exits 0 well within its grace; the next
    worker takes the job at once, not after the lease (600 s here)."""
    study = write_study(tmp_path / "study", seed=6262, lesion=False)
    files = [image.path for image in study.images if image.path is not None]
    node = _split_node(tmp_path, database, orthanc)
    roles = _start(node, [("scp", "scp"), ("worker", "worker-a")])
    engine = _engine(database)
    try:
        _push(node, [files])

        def running() -> bool:
            with engine.connect() as connection:
                return bool(connection.scalar(select(func.count()).select_from(Job)
                                              .where(Job.state == "running")))

        wait_until(running, 120, "the worker to start the analysis", 0.02)
        stopping = time.monotonic()
        assert roles[1].stop() == 0
        assert time.monotonic() - stopping < 20
        with engine.connect() as connection:
            job = connection.execute(select(Job.state, Job.attempts, Job.lease_until)).one()
            state = connection.scalar(select(Study.state))
        assert (job.state, job.attempts, job.lease_until) == ("pending", 0, None), job
        assert state == "queued"
        assert "given back" in roles[1].log_text()

        roles.append(node.start_role("worker", "worker-b"))
        roles.append(node.start_role("sender", "sender"))
        wait_until(lambda: _counts(engine) == (1, 1), 180,
                   "the next worker to analyse the study and the sender to deliver it")
        with engine.connect() as connection:
            attempts = connection.scalar(select(Job.attempts))
        assert attempts == 1
    finally:
        codes = _stop([p for p in roles if p.process.poll() is None])
        engine.dispose()
    assert set(codes) <= {0}
