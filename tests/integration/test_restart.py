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


def test_instances_answered_from_the_journal_survive_a_kill_before_their_rows(tmp_path: Path) -> None:
    """Success for a small instance means it is in the ingest journal (fdatasynced); its row
    and spool file come a moment later. A node killed in between records them at its next
    start, from the journal: nothing answered Success is lost, nothing is recorded twice."""
    import hashlib

    import pydicom
    from pynetdicom import AE

    from mammogate.db import Instance

    study = write_study(tmp_path / "study", seed=6161, lesion=False)
    paths = [i.path for i in study.images if i.path is not None]
    node = Node(tmp_path / "node", settle_seconds=3600,
                # no flush until the association ends: the kill comes before any row
                dicom={"expected_views": [], "store_batch_idle_seconds": 600,
                       "store_batch_max_seconds": 600, "store_batch_max": 1000})
    node.start()
    ae = AE(ae_title="MODALITY")
    datasets = [pydicom.dcmread(p) for p in paths]
    for ds in datasets:  # small images: the journal's (large ones are fsynced into the spool)
        ds.Rows, ds.Columns = 64, 52
        ds.PixelData = bytes(64 * 52 * ds.BitsAllocated // 8)
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
    assert assoc.is_established
    try:
        statuses = [assoc.send_c_store(ds).Status for ds in datasets]
        assert statuses == [0x0000] * len(datasets)
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(30)
        node.process = None
    finally:
        assoc.abort()
    db_path = node.root / "var" / "mammogate.sqlite3"
    journal = node.root / "var" / "spool" / ".journal"
    assert len(list(journal.glob("*.seg"))) == 1

    def instances() -> list[Instance]:
        db = Database(f"sqlite:///{db_path}")
        try:
            with db.session() as session:
                return list(session.scalars(select(Instance)))
        finally:
            db.dispose()

    assert instances() == []  # answered Success, not yet recorded: only the journal has them

    node.start()
    try:
        rows = instances()
        assert sorted(r.sop_instance_uid for r in rows) == sorted(ds.SOPInstanceUID for ds in datasets)
        for row in rows:
            assert hashlib.sha256(Path(row.path).read_bytes()).hexdigest() == row.sha256
            assert pydicom.dcmread(row.path).SOPInstanceUID == row.sop_instance_uid
        assert list(journal.glob("*.seg")) == []  # replayed, flushed and removed
        db = Database(f"sqlite:///{db_path}")
        try:
            with db.session() as session:
                (row,) = session.scalars(select(Study)).all()
                assert row.instance_count == len(datasets) and row.calling_ae_title == "MODALITY"
        finally:
            db.dispose()
        assert "recorded from the ingest journal" in node.log_text()
    finally:
        assert node.stop() == 0
    # a second start finds nothing to replay and records nothing twice
    node.start()
    try:
        assert len(instances()) == len(datasets)
    finally:
        assert node.stop() == 0
