"""Announcements of work wake the waiting loops: at commit in process (never on rollback); across
processes through PostgreSQL's NOTIFY in tests/integration/test_db_postgresql.py."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from mammogate.db import Database, Instance, Study, utcnow
from mammogate.db.loop import PollLoop
from mammogate.db.queue import settle_studies
from mammogate.db.wakeup import ANALYSIS, DELIVERY, announce


def test_an_announcement_wakes_its_topic_at_commit_and_not_on_rollback(db: Database) -> None:
    analysis, delivery = threading.Event(), threading.Event()
    db.wakeup.subscribe(ANALYSIS, analysis)
    db.wakeup.subscribe(DELIVERY, delivery)
    with pytest.raises(RuntimeError), db.session() as session:
        db.announce(session, ANALYSIS)
        raise RuntimeError("rolled back")
    assert not analysis.is_set()
    with db.session() as session:
        announce(session, ANALYSIS)  # the module function finds the database's wake-up
        assert not analysis.is_set()  # not before the commit
    assert analysis.is_set() and not delivery.is_set()
    with pytest.raises(ValueError, match="unknown wake-up topic"), db.session() as session:
        db.announce(session, "nonsense")


class Idle(PollLoop):
    def __init__(self, db: Database) -> None:
        super().__init__(600, "test", wakeup=db.wakeup, topic=DELIVERY)
        self.rounds = 0
        self.round_done = threading.Event()

    def run_once(self) -> bool:
        self.rounds += 1
        self.round_done.set()
        return False


def test_an_idle_loop_with_a_long_poll_runs_again_when_work_is_announced(db: Database) -> None:
    loop = Idle(db)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    assert loop.round_done.wait(10)
    loop.round_done.clear()
    with db.session() as session:
        db.announce(session, DELIVERY)
    assert loop.round_done.wait(10), "the announcement did not wake the loop (poll is 600 s)"
    assert loop.rounds == 2
    loop.stop()
    thread.join(10)
    assert not thread.is_alive()


def _study(db: Database, uid: str, views: list[tuple[str, str]], quiet_for: float) -> None:
    then = utcnow() - timedelta(seconds=quiet_for)
    with db.session() as session:
        study = Study(study_instance_uid=uid, first_received_at=then, last_received_at=then,
                      updated_at=then)
        session.add(study)
        session.flush()
        for n, (laterality, view) in enumerate(views):
            session.add(Instance(sop_instance_uid=f"{uid}.{n}", study_id=study.id,
                                 series_instance_uid=f"{uid}.9", sop_class_uid="1.2",
                                 transfer_syntax_uid="1.2", laterality=laterality, view=view,
                                 path="", size=0, sha256="", received_at=then))


def test_a_study_is_ready_when_its_expected_views_are_present_or_it_is_quiet(db: Database) -> None:
    four = [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    _study(db, "1.1", four, quiet_for=1)
    _study(db, "1.2", four[:3], quiet_for=1)
    _study(db, "1.3", four[:3], quiet_for=30)
    _study(db, "1.4", [*four, ("R", "XCCL")], quiet_for=1)
    with db.session() as session:
        ready = {s.study_instance_uid: why
                 for s, why in settle_studies(session, 10, ["RCC", "LCC", "RMLO", "LMLO"])}
    assert ready == {"1.1": "views RCC, LCC, RMLO, LMLO present",
                     "1.3": "quiet for 10 s", "1.4": "views RCC, LCC, RMLO, LMLO present"}
    with db.session() as session:  # without expected views, only quiet counts
        assert [s.study_instance_uid for s, _ in settle_studies(session, 10, [])] == []
