"""The worker against images that arrive while a study is being analysed: one analysis, one SR.

A real SCP on 127.0.0.1 receives the images from DCMTK's storescu; the worker runs the shipped
model, step by step, on SQLite and on a PostgreSQL database of its own.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from mammogate.analysis import AnalysisWorker
from mammogate.app import open_database
from mammogate.config import load_settings
from mammogate.db import Analysis, Database, Instance, Job, Study, utcnow
from mammogate.db.queue import claim_job, settle_studies
from mammogate.dicom_node.scp import Scp
from mammogate.dicom_node.spool import Spool
from mammogate.inference import Analyzer, load_bundle
from mammogate.inference.results import StudyResult
from mammogate.training.synthetic import SyntheticStudy, write_study
from tests.peers import STORESCU, free_port, require_tool

SETTLE = 0.3
_analyzer: Analyzer | None = None


def shipped_analyzer() -> Analyzer:
    global _analyzer
    if _analyzer is None:
        _analyzer = Analyzer(load_bundle(None))
    return _analyzer


class LateImage:
    """The shipped model, except that the study's last image arrives while it runs, and the
    first analysis may fail afterwards (as a decoding error would)."""

    def __init__(self, port: int, late: Path, *, then_fail: bool):
        self.port, self.late, self.then_fail = port, late, then_fail
        self.calls = 0

    def analyze_study(self, paths: Sequence[Path]) -> StudyResult:
        self.calls += 1
        result = shipped_analyzer().analyze_study(paths)
        if self.calls == 1:
            require_tool(STORESCU)
            sent = subprocess.run([STORESCU, "-aec", "MAMMOGATE", "127.0.0.1", str(self.port),
                                   str(self.late)], capture_output=True, text=True, timeout=60)
            assert sent.returncode == 0, sent.stderr
            if self.then_fail:
                raise OSError("simulated read error after the late image")
        return result


@pytest.fixture
def study(tmp_path: Path) -> SyntheticStudy:
    return write_study(tmp_path / "study", seed=777, lesion=True)


def _node(tmp_path: Path, database_url: str) -> tuple[Database, Scp, int]:
    port = free_port()
    settings = load_settings(
        None, node={"data_dir": str(tmp_path / "var")}, database={"url": database_url},
        dicom={"port": port, "settle_seconds": SETTLE}, worker={"retry_seconds": 0},
    )
    db = open_database(settings)
    scp = Scp(settings, db, Spool(settings.spool_dir))
    scp.start()
    return db, scp, port


def _run_until_idle(worker: AnalysisWorker) -> None:
    """Run the worker's steps until nothing is left, even after a study had time to settle."""
    idle = 0
    for _ in range(20):
        if worker.run_once():
            idle = 0
            continue
        idle += 1
        if idle == 2:
            return
        time.sleep(SETTLE * 3)
    raise AssertionError("the worker kept finding work")


@pytest.mark.parametrize("then_fail", [False, True], ids=["analysis-succeeds", "analysis-fails"])
def test_an_image_arriving_during_the_analysis_gives_one_analysis_of_all_images(
    tmp_path: Path, database_url: str, study: SyntheticStudy, then_fail: bool
) -> None:
    db, scp, port = _node(tmp_path, database_url)
    try:
        *first, last = [image.path for image in study.images]
        assert last is not None and all(first)
        require_tool(STORESCU)
        sent = subprocess.run([STORESCU, "-aec", "MAMMOGATE", "127.0.0.1", str(port),
                               *map(str, first)], capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        analyzer = LateImage(port, last, then_fail=then_fail)
        settings = scp.settings
        worker = AnalysisWorker(settings, db, "test-worker", lambda: analyzer)
        worker.start_model()
        _run_until_idle(worker)

        assert analyzer.calls == 2, "the study is analysed again once the late image settled"
        with db.session() as session:
            jobs = [(j.state, j.last_error) for j in session.scalars(select(Job).order_by(Job.id))]
            analyses = session.scalars(select(Analysis)).all()
            (row,) = session.scalars(select(Study)).all()
            analysed = {i.sop_instance_uid for a in analyses for i in a.images if i.status == "analysed"}
            assert [state for state, _ in jobs] == ["superseded", "done"], jobs
            assert len(analyses) == 1, "exactly one analysis (and so one SR) for the study"
            assert row.state == "done" and row.instance_count == 4
            assert analysed == {image.sop_instance_uid for image in study.images}
    finally:
        scp.stop()
        db.dispose()


def test_a_spool_file_that_no_longer_reads_fails_its_view_not_the_study(
    tmp_path: Path, study: SyntheticStudy
) -> None:
    db, scp, port = _node(tmp_path, "")
    try:
        require_tool(STORESCU)
        sent = subprocess.run([STORESCU, "-aec", "MAMMOGATE", "127.0.0.1", str(port),
                               *[str(i.path) for i in study.images]],
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        with db.session() as session:
            damaged = session.scalars(select(Instance).order_by(Instance.id)).first()
            assert damaged is not None
            Path(damaged.path).write_bytes(b"not DICOM any more")  # a disk error, say
        worker = AnalysisWorker(scp.settings, db, "test-worker", shipped_analyzer)
        worker.start_model()
        _run_until_idle(worker)
        with db.session() as session:
            (row,) = session.scalars(select(Study)).all()
            (analysis,) = session.scalars(select(Analysis)).all()
            statuses = sorted(i.status for i in analysis.images)
            reports = [r.path for r in analysis.reports]
            assert row.state == "done", row.last_error
            assert statuses == ["analysed", "analysed", "analysed", "failed"]
            assert len(reports) == 1
        sr = pydicom.dcmread(reports[0])
        referenced = {item.ReferencedSOPInstanceUID
                      for entry in sr.CurrentRequestedProcedureEvidenceSequence
                      for series in entry.ReferencedSeriesSequence
                      for item in series.ReferencedSOPSequence}
        assert referenced == {i.sop_instance_uid for i in study.images} - {damaged.sop_instance_uid}
    finally:
        scp.stop()
        db.dispose()


@pytest.mark.parametrize("newer_job", [False, True], ids=["only-job", "newer-job-done"])
def test_a_worker_dying_right_after_its_last_claim_fails_the_study_unless_a_newer_job_has_it(
    tmp_path: Path, database_url: str, newer_job: bool
) -> None:
    settings = load_settings(
        None, node={"data_dir": str(tmp_path / "var")}, database={"url": database_url},
        worker={"max_attempts": 1},
    )
    db = open_database(settings)
    try:
        then = utcnow() - timedelta(seconds=60)
        with db.session() as session:
            session.add(Study(study_instance_uid="1.2.3.9", first_received_at=then,
                              last_received_at=then, updated_at=then))
        with db.session() as session:
            settle_studies(session, 0)
        with db.session() as session:  # claimed; the holder dies before it marks the study
            dead = claim_job(session, "gone:1:worker", lease_seconds=60, max_attempts=1)
            assert dead is not None
            dead.lease_until = utcnow() - timedelta(seconds=1)
            if newer_job:
                study = session.get(Study, dead.study_id)
                assert study is not None
                session.add(Job(kind=dead.kind, study_id=study.id, state="done", run_after=then,
                                created_at=then))
                study.state = "done"

        def no_model() -> Analyzer:
            raise AssertionError("nothing is left to analyse")

        worker = AnalysisWorker(settings, db, "test-worker", no_model)
        assert worker.run_once() is False
        with db.session() as session:
            (row,) = session.scalars(select(Study)).all()
            states = [j.state for j in session.scalars(select(Job).order_by(Job.id))]
            if newer_job:
                assert (row.state, row.last_error) == ("done", "")
                assert states == ["failed", "done"]
            else:
                assert row.state == "failed" and "worker stopped" in row.last_error
                assert states == ["failed"]
    finally:
        db.dispose()
