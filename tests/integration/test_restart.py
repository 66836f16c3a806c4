"""A crash loses nothing: the node killed right after storing a study, restarted, finishes it."""

from __future__ import annotations

import signal
from pathlib import Path

from sqlalchemy import select

from mammogate.db import Database, Study
from mammogate.training.synthetic import write_study
from tests.peers import Node, Orthanc, wait_until


def test_study_stored_before_a_kill_is_analysed_and_delivered_after_restart(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    study = write_study(tmp_path / "study", seed=6060, lesion=True)
    node = Node(
        tmp_path / "node",
        settle_seconds=30,  # long enough that the kill comes before the analysis
        dicom={"expected_views": []},  # ... which four views would otherwise start at once
        destinations=[{"name": "pacs", "kind": "dimse", "ae_title": orthanc.aet,
                       "host": "127.0.0.1", "port": orthanc.dicom_port}],
    )
    node.start()
    stored = node.storescu(*[i.path for i in study.images if i.path is not None])
    assert stored.returncode == 0, stored.stderr
    assert node.process is not None
    node.process.send_signal(signal.SIGKILL)
    node.process.wait(30)
    node.process = None

    db = Database(f"sqlite:///{node.root / 'var' / 'mammogate.sqlite3'}")
    try:
        with db.session() as session:
            row = session.scalar(select(Study).where(
                Study.study_instance_uid == study.study_instance_uid))
            assert row is not None and row.instance_count == 4 and row.state == "receiving"
    finally:
        db.dispose()

    node.settle_seconds = 0.5
    node.write_config()
    node.start()
    try:
        found = wait_until(
            lambda: orthanc.find_instances(StudyInstanceUID=study.study_instance_uid, Modality="SR"),
            120, "the CAD SR after the restart")
        assert len(found) == 1
    finally:
        assert node.stop() == 0


def test_leases_held_by_a_dead_process_of_this_host_are_released_at_start(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    from datetime import timedelta

    from mammogate.app import open_database, release_leases_of_dead_processes
    from mammogate.config import load_settings
    from mammogate.db import Job, utcnow
    from mammogate.db.queue import claim_job, settle_studies

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_holder = f"{socket.gethostname()}:{int(gone.stdout)}:worker"
    live_holder = f"{socket.gethostname()}:1:worker"  # pid 1 is alive
    # A container restarted: the new process has the pid the old one had (1, usually).
    same_pid_holder = f"{socket.gethostname()}:{os.getpid()}:worker"
    settings = load_settings(None, node={"data_dir": str(tmp_path)})
    db = open_database(settings)
    try:
        then = utcnow() - timedelta(seconds=60)
        with db.session() as session:
            for uid in ("1.2.3.1", "1.2.3.2", "1.2.3.3"):
                session.add(Study(study_instance_uid=uid, first_received_at=then,
                                  last_received_at=then, updated_at=then))
        with db.session() as session:
            settle_studies(session, 0)
        for holder in (dead_holder, same_pid_holder, live_holder):
            with db.session() as session:
                assert claim_job(session, holder, lease_seconds=600) is not None
        release_leases_of_dead_processes(db)
        with db.session() as session:
            for _ in range(2):
                job = claim_job(session, "restarted", lease_seconds=600)
                assert job is not None and job.attempts == 2
            assert claim_job(session, "restarted", lease_seconds=600) is None, "live lease kept"
            assert {j.locked_by for j in session.scalars(select(Job))} == {"restarted", live_holder}
    finally:
        db.dispose()
