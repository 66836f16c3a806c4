"""Retention: which studies' images may go, and the sweep that removes them (SQLite; PostgreSQL
in tests/integration/test_db_postgresql.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mammogate.analysis.retention import RetentionSweep
from mammogate.app import open_database
from mammogate.config import Settings, load_settings
from mammogate.db import (
    Analysis,
    AuditEntry,
    Database,
    Delivery,
    DestinationRow,
    Instance,
    Job,
    Report,
    Study,
    utcnow,
)
from mammogate.db.admin import RequestRefused, request_reanalysis
from mammogate.db.retention import studies_past_retention
from tests.peers import postgres_database
from tests.unit.databases import copy_template

DAY = timedelta(days=1)


@pytest.fixture
def node(db_engine: str, tmp_path: Path, sqlite_template: Path) -> Iterator[tuple[Settings, Database]]:
    """On SQLite here, on PostgreSQL in tests/integration/test_db_postgresql.py."""

    def make(url: str) -> tuple[Settings, Database]:
        settings = load_settings(None, node={"data_dir": str(tmp_path / "var")},
                                 database={"url": url}, storage={"retention_days": 1})
        if not url:  # SQLite: a copy of the migrated template, which open_database finds at head
            copy_template(sqlite_template, settings.database_url)
        return settings, open_database(settings)

    if db_engine == "sqlite":
        settings, db = make("")
        yield settings, db
        db.dispose()
    else:
        with postgres_database() as url:
            settings, db = make(url)
            yield settings, db
            db.dispose()


def _study(db: Database, settings: Settings, uid: str, *, state: str = "done",
           age: timedelta = 2 * DAY, deliveries: tuple[str, ...] = ("delivered",),
           job: str | None = None, removed: bool = False) -> list[Path]:
    """A study received, analysed and delivered ``age`` ago, with one spool file per image."""
    then = utcnow() - age
    files = []
    with db.session() as session:
        study = Study(study_instance_uid=uid, state=state, first_received_at=then,
                      last_received_at=then, updated_at=then,
                      images_removed_at=utcnow() if removed else None)
        session.add(study)
        session.flush()
        for n in range(2):
            path = settings.spool_dir / uid / f"{uid}.{n}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"DICM" * 10)
            files.append(path)
            session.add(Instance(sop_instance_uid=f"{uid}.{n}", study_id=study.id,
                                 series_instance_uid=f"{uid}.9", sop_class_uid="1.2",
                                 transfer_syntax_uid="1.2", path=str(path), size=40,
                                 sha256="0", received_at=then))
        analysis = Analysis(study_id=study.id, model_name="m", model_version="1",
                            model_sha256="0", operating_point=0.5, category="not_flagged",
                            created_at=then)
        session.add(analysis)
        session.flush()
        report = Report(analysis_id=analysis.id, kind="cad_sr", sop_class_uid="1.2",
                        sop_instance_uid=f"{uid}.8", series_instance_uid=f"{uid}.7",
                        path="/nowhere", created_at=then)
        session.add(report)
        destination = session.scalar(select(DestinationRow).where(DestinationRow.name == "pacs"))
        if destination is None:
            destination = DestinationRow(name="pacs", kind="dimse", ae_title="P",
                                         host="127.0.0.1", port=104)
            session.add(destination)
        session.flush()
        for state_ in deliveries:
            session.add(Delivery(report_id=report.id, destination_id=destination.id,
                                 state=state_, next_attempt_at=then, created_at=then,
                                 delivered_at=then if state_ == "delivered" else None))
        if job is not None:
            session.add(Job(kind="analyze", study_id=study.id, state=job, run_after=then,
                            created_at=then))
    return files


def _uids(db: Database, ids: list[int]) -> set[str]:
    with db.session() as session:
        return set(session.scalars(select(Study.study_instance_uid).where(Study.id.in_(ids))))


def test_only_settled_fully_delivered_studies_past_retention_are_selected(
    node: tuple[Settings, Database]
) -> None:
    settings, db = node
    _study(db, settings, "1.1")  # delivered two days ago: due
    _study(db, settings, "1.2", deliveries=("delivered", "dead"))  # one never arrived
    _study(db, settings, "1.3", deliveries=("delivered", "pending"))  # one still to send
    _study(db, settings, "1.4", deliveries=())  # no delivery at all
    _study(db, settings, "1.5", age=timedelta(hours=1))  # delivered within retention
    _study(db, settings, "1.6", state="queued", job="pending")  # re-analysis asked for
    _study(db, settings, "1.7", job="running")  # an analysis running
    _study(db, settings, "1.8", state="receiving")  # more images came
    _study(db, settings, "1.9", removed=True)  # already removed
    _study(db, settings, "1.10", job="done")  # an earlier job is no obstacle
    with db.session() as session:
        due = studies_past_retention(session, utcnow() - DAY)
    assert _uids(db, due) == {"1.1", "1.10"}


def test_sweep_removes_the_spool_files_and_records_it_and_keeps_the_rest(
    node: tuple[Settings, Database]
) -> None:
    settings, db = node
    due = _study(db, settings, "2.1")
    kept = _study(db, settings, "2.2", age=timedelta(hours=1))
    undelivered = _study(db, settings, "2.3", deliveries=("dead",))
    sweep = RetentionSweep(settings, db, "retention:test")
    assert sweep.run_if_due() == 1
    assert not any(p.exists() for p in due) and not due[0].parent.exists()
    assert all(p.exists() for p in kept + undelivered)
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == "2.1"))
        assert study is not None and study.images_removed_at is not None
        assert len(session.scalars(select(Instance).where(Instance.study_id == study.id)).all()) == 2
        (audit,) = session.scalars(select(AuditEntry).where(AuditEntry.action == "study-images-removed"))
        assert audit.target == "2.1" and audit.actor == "retention:test"
        assert audit.detail.startswith("2 spool files (80 bytes) removed")
        with pytest.raises(RequestRefused, match="removed by retention on .*cannot be analysed again"):
            request_reanalysis(session, "2.1", actor="admin")
    assert sweep.run_if_due() == 0, "not due again before retention_check_seconds"
    assert sweep.sweep() == 0, "nothing left to remove"


def test_a_file_outside_the_spool_is_never_removed(
    node: tuple[Settings, Database], tmp_path: Path
) -> None:
    settings, db = node
    _study(db, settings, "3.1")
    outside = tmp_path / "elsewhere.dcm"
    outside.write_bytes(b"x")
    with db.session() as session:
        row = session.scalars(select(Instance).where(Instance.sop_instance_uid == "3.1.0")).one()
        row.path = str(outside)
    assert RetentionSweep(settings, db, "retention:test").sweep() == 1
    assert outside.exists()


def test_retention_off_sweeps_nothing(tmp_path: Path, sqlite_template: Path) -> None:
    settings = load_settings(None, node={"data_dir": str(tmp_path / "var")})
    copy_template(sqlite_template, settings.database_url)
    db = open_database(settings)
    try:
        files = _study(db, settings, "4.1", age=1000 * DAY)
        assert RetentionSweep(settings, db, "retention:test").run_if_due() == 0
        assert all(p.exists() for p in files)
    finally:
        db.dispose()
