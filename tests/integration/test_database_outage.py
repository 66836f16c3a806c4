"""The database goes away and comes back: C-STOREs fail with a reason meanwhile, nothing is
lost, and the node goes on by itself (a throwaway PostgreSQL cluster, never the shared one)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from mammogate.db import Analysis, Delivery, Instance, Study
from mammogate.training.synthetic import SyntheticStudy, write_study
from tests.peers import Node, Orthanc, ThrowawayPostgres, wait_until


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
            for study in studies:
                if study.study_instance_uid in refused:
                    files = [i.path for i in study.images if i.path is not None]
                    wait_until(lambda files=files: node.storescu(*files).returncode == 0, 60,
                               "a refused study to be taken when sent again", interval=1)

            def finished() -> tuple[int, int]:
                with engine.connect() as connection:
                    done = connection.scalar(select(func.count()).select_from(Study)
                                             .where(Study.state == "done"))
                    delivered = connection.scalar(select(func.count()).select_from(Delivery)
                                                  .where(Delivery.state == "delivered"))
                return done or 0, delivered or 0

            wait_until(lambda: finished() == (12, 12), 300,
                       "every study analysed and delivered after the restart")
            time.sleep(2)
            with engine.connect() as connection:
                per_study = Counter(connection.scalars(select(Analysis.study_id)))
                deliveries = connection.execute(select(Delivery.state)).all()
            assert len(per_study) == 12 and set(per_study.values()) == {1}
            assert len(deliveries) == 12
        finally:
            engine.dispose()
        assert len(orthanc.find_instances(Modality="SR")) == 12
        assert all(role.process.poll() is None for role in roles), "no role died of the restart"
        felt = [role.name for role in roles if "database error" in role.log_text()]
        assert len(felt) >= 2, f"the restart came while the roles worked (felt by {felt})"
    finally:
        codes = [role.stop() for role in roles]
    assert codes == [0, 0, 0, 0]
