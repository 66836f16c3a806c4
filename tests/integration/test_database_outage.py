"""The database goes away and comes back: C-STOREs fail with a reason meanwhile, nothing is
lost, and the node goes on by itself (a throwaway PostgreSQL cluster, never the shared one)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mammogate.training.synthetic import write_study
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
