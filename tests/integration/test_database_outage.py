"""The database goes away and comes back: C-STOREs fail with a reason meanwhile, nothing is
lost, and the node goes on by itself (a throwaway PostgreSQL cluster, never the shared one)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from mammogate.analysis import AnalysisWorker
from mammogate.app import destination_backends, open_database
from mammogate.config import load_settings
from mammogate.db import (
    Analysis,
    AnalysisImage,
    Delivery,
    DestinationRow,
    Instance,
    Job,
    Study,
)
from mammogate.delivery.outbox import DeliveryLoop
from mammogate.dicom_node.scp import Scp
from mammogate.dicom_node.spool import Spool
from mammogate.inference.results import StudyResult
from mammogate.training.synthetic import SyntheticStudy, write_study
from tests.integration.test_sender import CAD_SR, Peer, _queue, _sr_file
from tests.integration.test_worker_races import shipped_analyzer
from tests.peers import (
    STORESCU,
    Node,
    Orthanc,
    ThrowawayPostgres,
    free_port,
    require_tool,
    wait_until,
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ThrowawayPostgres]:
    root = Path("/tmp") / f"mammogate-pg-{tmp_path.name}-{tmp_path.stat().st_ino}"
    pg = ThrowawayPostgres(root).init()
    try:
        yield pg
    finally:
        if pg.running():
            pg.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_store_during_an_outage_fails_with_a_reason_and_the_node_recovers(
    tmp_path: Path, orthanc: Orthanc, cluster: ThrowawayPostgres
) -> None:
    study = write_study(tmp_path / "study", seed=7070, lesion=True)
    files = [i.path for i in study.images if i.path is not None]
    node = Node(tmp_path / "node", database_url=cluster.url,
                destinations=[{"name": "pacs", "kind": "dimse", "ae_title": orthanc.aet,
                               "host": "127.0.0.1", "port": orthanc.dicom_port}])
    node.start()
    try:
        cluster.stop()
        during = node.storescu(files[0], options=("-v",))
        assert during.returncode != 0
        output = during.stdout + during.stderr
        assert "Refused: OutOfResources" in output, output
        assert "cannot make it durable" in node.log_text()
        assert list((node.root / "var" / "spool").rglob("*.dcm")) == [], "nothing half-stored"

        cluster.start()
        after = wait_until(lambda: node.storescu(*files).returncode == 0, 60,
                           "C-STORE to succeed once the database is back", interval=1)
        assert after
        found = wait_until(
            lambda: orthanc.find_instances(StudyInstanceUID=study.study_instance_uid, Modality="SR"),
            120, "the CAD SR after the outage")
        assert len(found) == 1
    finally:
        assert node.stop() == 0, node.log_text()[-3000:]


def test_the_roles_apart_ride_out_a_database_restart_under_load_and_lose_nothing(
    tmp_path: Path, orthanc: Orthanc, cluster: ThrowawayPostgres
) -> None:
    """One SCP, two workers and a sender on the throwaway cluster; three modalities push twelve
    studies (a study per association) while the server is stopped and started again. Every
    study the SCP answered Success for is kept; the ones refused meanwhile are sent again, as a
    modality retries; each study is then analysed once and its CAD SR delivered once, and no
    role process died."""
    studies = [write_study(tmp_path / "in" / f"s{n:02d}", seed=8100 + n, lesion=n % 2 == 0,
                           rows=512, columns=416) for n in range(12)]
    node = Node(tmp_path / "node", database_url=cluster.url,
                destinations=[{"name": "pacs", "kind": "dimse", "ae_title": orthanc.aet,
                               "host": "127.0.0.1", "port": orthanc.dicom_port}],
                extra_env={"MAMMOGATE_DATABASE__RECONNECT_SECONDS": "1"})
    roles = [node.start_role(role, name) for role, name in
             [("scp", "scp"), ("worker", "worker-1"), ("worker", "worker-2"), ("sender", "sender")]]
    outcome: dict[str, int] = {}
    try:
        for role in roles:
            wait_until(role.ready, 180, f"{role.name} to be ready")

        def modality(batch: list[SyntheticStudy]) -> None:
            for study in batch:
                sent = node.storescu(*[i.path for i in study.images if i.path is not None])
                outcome[study.study_instance_uid] = sent.returncode
                time.sleep(0.3)

        pushing = [threading.Thread(target=modality, args=(studies[n::3],)) for n in range(3)]
        for thread in pushing:
            thread.start()
        wait_until(lambda: len(outcome) >= 3, 120, "the first studies to be sent")
        cluster.stop()
        time.sleep(2)
        cluster.start()
        for thread in pushing:
            thread.join(300)
        assert len(outcome) == 12
        refused = [uid for uid, code in outcome.items() if code != 0]

        engine = create_engine(cluster.url)
        try:
            def instances() -> Counter[str]:
                with engine.connect() as connection:
                    return Counter(connection.scalars(
                        select(Study.study_instance_uid).join(Instance)))

            accepted = [uid for uid, code in outcome.items() if code == 0]
            # every instance answered Success is kept (from the journal, if its row had to wait)
            wait_until(lambda: all(instances()[uid] == 4 for uid in accepted), 60,
                       "every accepted study's four instances in the database")
            # a refused association may have stored its first images before the refusal: that
            # part can settle and be analysed, and the study again once sent whole; so a study
            # may be analysed once per time it was sent, never more
            sendings = dict.fromkeys(outcome, 1)
            for study in studies:
                uid = study.study_instance_uid
                if uid in refused:
                    files = [i.path for i in study.images if i.path is not None]

                    def taken(files: list[Path] = files, uid: str = uid) -> bool:
                        sendings[uid] += 1
                        return node.storescu(*files).returncode == 0

                    wait_until(taken, 60, "a refused study to be taken when sent again",
                               interval=1)

            def finished() -> bool:
                with engine.connect() as connection:
                    states = Counter(connection.scalars(select(Study.state)))
                    unfinished = connection.scalar(select(func.count()).select_from(Job).where(
                        Job.state.in_(("pending", "running"))))
                    analyses = connection.scalar(select(func.count()).select_from(Analysis))
                    deliveries = Counter(connection.scalars(select(Delivery.state)))
                return (states == {"done": 12} and unfinished == 0
                        and deliveries == {"delivered": analyses})

            try:
                wait_until(finished, 300, "every study analysed and delivered after the restart")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{queue_report(engine, roles)}") from None
            time.sleep(2)
            with engine.connect() as connection:
                per_study = Counter(connection.scalars(
                    select(Study.study_instance_uid).join(Analysis, Analysis.study_id == Study.id)))
                deliveries = connection.execute(select(Delivery.state)).all()
                # each study's newest analysis saw the whole study
                newest = connection.execute(
                    select(Study.study_instance_uid, func.count(AnalysisImage.id))
                    .join(AnalysisImage, AnalysisImage.analysis_id == Study.current_analysis_id)
                    .group_by(Study.study_instance_uid)).all()
            assert set(per_study) == set(outcome)
            # accepted at the first sending: analysed exactly once, the restart notwithstanding
            assert {uid: per_study[uid] for uid in accepted} == dict.fromkeys(accepted, 1)
            assert all(per_study[uid] <= sendings[uid] for uid in refused), (per_study, sendings)
            assert dict(newest) == dict.fromkeys(outcome, 4)
            assert len(deliveries) == sum(per_study.values())
        finally:
            engine.dispose()
        assert len(orthanc.find_instances(Modality="SR")) == sum(per_study.values())
        assert all(role.process.poll() is None for role in roles), "no role died of the restart"
        felt = [role.name for role in roles if "database error" in role.log_text()]
        assert len(felt) >= 2, f"the restart came while the roles worked (felt by {felt})"
    finally:
        codes = [role.stop() for role in roles]
    assert codes == [0, 0, 0, 0]


def queue_report(engine: Any, roles: Sequence[Any]) -> str:
    """What a stuck queue looks like: every job and delivery row, and each role's last lines."""
    with engine.connect() as connection:
        studies = connection.execute(select(Study.id, Study.state)).all()
        jobs = connection.execute(select(Job.id, Job.study_id, Job.state, Job.locked_by,
                                         Job.lease_until, Job.attempts, Job.last_error)).all()
        deliveries = connection.execute(select(Delivery.id, Delivery.state, Delivery.locked_by,
                                               Delivery.lease_until, Delivery.attempts,
                                               Delivery.last_error)).all()
    lines = [f"studies: {studies}", *(f"job {row}" for row in jobs),
             *(f"delivery {row}" for row in deliveries)]
    for role in roles:
        lines += [f"--- {role.name}", *role.log_text().splitlines()[-40:]]
    return "\n".join(lines)


class OutageAfterAnalysis:
    """The shipped model; then (given a cluster) the database server stops, and starts again
    2 s later, before the worker records the result."""

    def __init__(self, cluster: ThrowawayPostgres | None):
        self.cluster = cluster
        self.calls = 0
        self.restarted = threading.Event()

    def analyze_study(self, paths: Sequence[Path]) -> StudyResult:
        self.calls += 1
        result = shipped_analyzer().analyze_study(paths)
        if self.cluster is not None:
            restart_meanwhile(self.cluster, self.restarted)
        return result


def restart_meanwhile(cluster: ThrowawayPostgres, restarted: threading.Event) -> None:
    """Stop the database server now, and start it again 2 s later in a thread (``restarted``
    set then): the caller goes on while it is away."""
    cluster.stop()

    def start_again() -> None:
        time.sleep(2)
        cluster.start()
        restarted.set()

    threading.Thread(target=start_again, daemon=True).start()


class OutageBeforeReading(AnalysisWorker):
    """A worker whose database stops (and starts again 2 s later) just as it first reads the
    study of a job it claimed."""

    def __init__(self, *args: Any, cluster: ThrowawayPostgres, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.cluster = cluster
        self.restarted = threading.Event()
        self.stopped = False

    def _read_study(self, job: Any) -> None:
        if not self.stopped:
            self.stopped = True
            restart_meanwhile(self.cluster, self.restarted)
        super()._read_study(job)


@pytest.mark.parametrize("when", ["before the study is read", "after the analysis"])
def test_a_job_held_while_the_database_is_away_is_finished_once_it_is_back(
    tmp_path: Path, cluster: ThrowawayPostgres, when: str
) -> None:
    """The database restarts while a worker holds a job (before it reads the study, or with the
    result in hand): the worker waits for it, and the job ends done at its first attempt,
    analysed once."""
    settings = load_settings(
        None, node={"data_dir": str(tmp_path / "var")}, database={
            "url": cluster.url, "reconnect_seconds": 0.5},
        dicom={"port": free_port(), "settle_seconds": 0.3},
    )
    db = open_database(settings)
    scp = Scp(settings, db, Spool(settings.spool_dir))
    scp.start()
    try:
        study = write_study(tmp_path / "study", seed=8300, lesion=True, rows=512, columns=416)
        require_tool(STORESCU)
        sent = subprocess.run([STORESCU, "-aec", "MAMMOGATE", "127.0.0.1",
                               str(settings.dicom.port), *[str(i.path) for i in study.images]],
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        if when == "after the analysis":
            analyzer = OutageAfterAnalysis(cluster)
            worker = AnalysisWorker(settings, db, "worker-outage", lambda: analyzer)
            restarted = analyzer.restarted
        else:
            analyzer = OutageAfterAnalysis(cluster=None)
            before = OutageBeforeReading(settings, db, "worker-outage", lambda: analyzer,
                                         cluster=cluster)
            worker, restarted = before, before.restarted
        worker.start_model()
        assert wait_until(worker.run_once, 30, "the worker to take the study")
        assert restarted.is_set()
        with db.session() as session:
            (job,) = session.scalars(select(Job)).all()
            assert (job.state, job.attempts) == ("done", 1), (job.state, job.last_error)
            assert session.scalar(select(func.count()).select_from(Analysis)) == 1
        assert analyzer.calls == 1, "the analysis was not done again"
    finally:
        scp.stop()
        db.dispose()


class OutageAfterSending:
    """The real C-STORE backend; then the database server stops, and starts again 2 s later,
    before the sender records the delivery."""

    def __init__(self, cluster: ThrowawayPostgres, backend: Any):
        self.cluster = cluster
        self.backend = backend
        self.sent = 0
        self.restarted = threading.Event()

    def send(self, path: Path, destination: DestinationRow) -> None:
        self.backend.send(path, destination)
        self.sent += 1
        restart_meanwhile(self.cluster, self.restarted)

    def test(self, destination: DestinationRow) -> str:
        return str(self.backend.test(destination))


def test_a_delivery_sent_while_the_database_is_away_is_recorded_once_it_is_back_not_sent_again(
    tmp_path: Path, cluster: ThrowawayPostgres
) -> None:
    settings = load_settings(None, node={"data_dir": str(tmp_path / "var")},
                             database={"url": cluster.url, "reconnect_seconds": 0.5})
    db = open_database(settings)
    peer = Peer(CAD_SR, 0x0000)
    try:
        delivery_id = _queue(db, _sr_file(tmp_path / "sr.dcm"), peer.port)
        backend = OutageAfterSending(cluster, destination_backends(settings)["dimse"])
        sender = DeliveryLoop(settings, db, "sender-outage", {"dimse": backend})
        assert sender.run_once() is True
        assert backend.restarted.is_set()
        with db.session() as session:
            row = session.get(Delivery, delivery_id)
            assert row is not None
            assert (row.state, row.attempts, row.locked_by) == ("delivered", 1, "sender-outage")
        assert sender.run_once() is False, "nothing left to send"
        assert backend.sent == 1 and len(peer.received) == 1, "the peer got it once"
    finally:
        peer.stop()
        db.dispose()
