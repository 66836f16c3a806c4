"""The job queue on SQLite and on PostgreSQL (a database of its own on the local server)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import select

from mammogate.config import load_settings
from mammogate.db import Database, Job, Study, utcnow
from mammogate.db.engine import MIGRATIONS_DIR
from mammogate.db.models import AllowedPeer, DestinationRow, RouteRow
from mammogate.db.queue import claim_job, complete_job, fail_job, retry_delay, settle_studies
from mammogate.db.seed import apply_config, seed_if_first_start


def _study(db: Database, uid: str, quiet_for: float) -> None:
    then = utcnow() - timedelta(seconds=quiet_for)
    with db.session() as session:
        session.add(Study(study_instance_uid=uid, first_received_at=then, last_received_at=then,
                          updated_at=then))


def test_migrations_have_one_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert len(ScriptDirectory.from_config(cfg).get_heads()) == 1


def test_only_quiet_studies_settle(db: Database) -> None:
    _study(db, "1.2.3.1", quiet_for=30)
    _study(db, "1.2.3.2", quiet_for=1)
    with db.session() as session:
        settled = [s.study_instance_uid for s, _why in settle_studies(session, settle_seconds=10)]
    assert settled == ["1.2.3.1"]
    with db.session() as session:
        states = {uid: state for uid, state in session.execute(select(Study.study_instance_uid, Study.state))}
        assert states == {"1.2.3.1": "queued", "1.2.3.2": "receiving"}
        assert len(session.scalars(select(Job)).all()) == 1


def test_concurrent_workers_each_claim_a_job_exactly_once(db: Database) -> None:
    for i in range(12):
        _study(db, f"1.2.4.{i}", quiet_for=30)
    with db.session() as session:
        settle_studies(session, settle_seconds=0)
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            with db.session() as session:
                job = claim_job(session, name, lease_seconds=60)
                if job is None:
                    return
                with lock:
                    claimed.append(job.id)
                complete_job(job)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 12
    with db.session() as session:
        assert {j.state for j in session.scalars(select(Job))} == {"done"}


def test_a_job_whose_lease_expired_is_reclaimed(db: Database) -> None:
    _study(db, "1.2.5.1", quiet_for=30)
    with db.session() as session:
        settle_studies(session, 0)
    with db.session() as session:
        first = claim_job(session, "dead-worker", lease_seconds=60)
        assert first is not None
    with db.session() as session:
        assert claim_job(session, "other", lease_seconds=60) is None  # still leased
    with db.session() as session:  # the holder died: its lease runs out
        job = session.get(Job, first.id)
        assert job is not None
        job.lease_until = utcnow() - timedelta(seconds=1)
    with db.session() as session:
        again = claim_job(session, "other", lease_seconds=60)
        assert again is not None and again.id == first.id
        assert again.attempts == 2 and again.locked_by == "other"


def test_failed_job_retries_then_fails_for_good(db: Database) -> None:
    _study(db, "1.2.6.1", quiet_for=30)
    with db.session() as session:
        settle_studies(session, 0)
    for attempt in (1, 2):
        with db.session() as session:
            job = claim_job(session, "w", 60)
            assert job is not None and job.attempts == attempt
            final = fail_job(job, "boom", max_attempts=2, retry_seconds=0)
            assert final is (attempt == 2)
    with db.session() as session:
        assert claim_job(session, "w", 60) is None
        (job,) = session.scalars(select(Job)).all()
        assert job.state == "failed" and job.last_error == "boom"


def test_retry_delay_backs_off_exponentially_to_a_cap() -> None:
    assert [retry_delay(n, 2, 10) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


def test_config_seeds_once_then_the_database_is_the_truth(db: Database, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[dicom]\nallowed_calling_ae_titles = ["MODALITY"]\n'
        '[[destinations]]\nname = "pacs"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = 4242\n'
        '[[routes]]\ndestinations = ["pacs"]\n'
    )
    settings = load_settings(cfg)
    with db.session() as session:
        assert seed_if_first_start(session, settings) is True
    with db.session() as session:
        session.scalars(select(DestinationRow)).one().port = 5555  # edited in the portal
        assert seed_if_first_start(session, settings) is False
    with db.session() as session:
        assert session.scalars(select(DestinationRow)).one().port == 5555
        apply_config(session, settings)  # on purpose: the file wins again
    with db.session() as session:
        assert session.scalars(select(DestinationRow)).one().port == 4242
        assert [p.ae_title for p in session.scalars(select(AllowedPeer))] == ["MODALITY"]
        (route,) = session.scalars(select(RouteRow)).all()
        assert route.destinations == ["pacs"] and route.objects == ["cad_sr"]


def test_database_errors_do_not_carry_patient_data(db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    _study(db, "1.2.7.1", quiet_for=0)
    with pytest.raises(IntegrityError) as info, db.session() as session:
        now = utcnow()
        session.add(Study(study_instance_uid="1.2.7.1", patient_name="Dupré^Hélène",
                          patient_id="PID-SECRET-42", first_received_at=now,
                          last_received_at=now, updated_at=now))
    assert "Dupré" not in str(info.value) and "PID-SECRET-42" not in str(info.value)


def test_a_job_that_kills_its_worker_every_time_is_given_up(db: Database) -> None:
    from mammogate.db.queue import give_up_abandoned_jobs

    _study(db, "1.2.8.1", quiet_for=30)
    with db.session() as session:
        settle_studies(session, 0)
    for _ in range(2):  # two workers die holding it
        with db.session() as session:
            assert claim_job(session, "doomed", lease_seconds=0.2, max_attempts=2) is not None
        time.sleep(0.3)
    with db.session() as session:
        assert claim_job(session, "next", lease_seconds=60, max_attempts=2) is None
        (job,) = give_up_abandoned_jobs(session, max_attempts=2)
        assert job.state == "failed" and "worker stopped" in job.last_error
    with db.session() as session:
        assert give_up_abandoned_jobs(session, max_attempts=2) == []


def test_leases_of_stopped_processes_can_be_released_at_once(db: Database) -> None:
    from mammogate.db.queue import expire_leases, lease_holders

    _study(db, "1.2.9.1", quiet_for=30)
    with db.session() as session:
        settle_studies(session, 0)
    with db.session() as session:
        assert claim_job(session, "host:999999:worker", lease_seconds=600) is not None
    with db.session() as session:
        assert lease_holders(session) == ["host:999999:worker"]
        assert claim_job(session, "other", lease_seconds=60) is None
        assert expire_leases(session, ["host:999999:worker"]) == 1
    time.sleep(0.01)
    with db.session() as session:
        job = claim_job(session, "other", lease_seconds=60)
        assert job is not None and job.attempts == 2


def _reports_to(db: Database, destinations: list[str], count: int) -> dict[str, list[int]]:
    """``count`` reports of one study, each with a pending delivery to every destination named;
    the delivery ids per destination, in creation order."""
    from mammogate.db import Analysis, Report
    from mammogate.db.queue import new_delivery

    now = utcnow()
    ids: dict[str, list[int]] = {name: [] for name in destinations}
    with db.session() as session:
        study = Study(study_instance_uid="1.2.9", first_received_at=now, last_received_at=now,
                      updated_at=now)
        session.add(study)
        rows = {name: DestinationRow(name=name, kind="dimse") for name in destinations}
        session.add_all(rows.values())
        analysis = Analysis(study=study, model_name="m", model_version="1", model_sha256="0" * 64,
                            operating_point=0.5, category="not_flagged", created_at=now)
        session.add(analysis)
        session.flush()
        for n in range(count):
            report = Report(analysis_id=analysis.id, kind="cad_sr", sop_class_uid="1.2",
                            sop_instance_uid=f"1.2.9.{n}", series_instance_uid="1.2.9.0",
                            path="/nonexistent", created_at=now)
            session.add(report)
            session.flush()
            for name in destinations:
                delivery = new_delivery(session, report.id, rows[name].id, "r")
                session.flush()
                ids[name].append(delivery.id)
    return ids


def test_deliveries_to_one_destination_go_in_order_and_a_down_one_holds_up_no_other(db: Database) -> None:
    from mammogate.db import Delivery
    from mammogate.db.queue import claim_delivery, delivery_delivered, delivery_failed

    ids = _reports_to(db, ["down", "up"], 3)
    sent: list[int] = []
    with db.session() as session:  # the first delivery to "down" fails: retried in an hour
        first = claim_delivery(session, "s", 60)
        assert first is not None and first.id == ids["down"][0]
        delay = delivery_failed(first, "unreachable", retryable=True, max_attempts=5,
                                initial_seconds=3600, max_seconds=3600, jitter=0)
        assert delay == 3600
    for _ in range(5):
        with db.session() as session:
            row = claim_delivery(session, "s", 60)
            if row is None:
                break
            sent.append(row.id)
            delivery_delivered(row)
    # every delivery to "up", in order; none to "down" overtakes its waiting first one
    assert sent == ids["up"]
    with db.session() as session:
        states = dict(session.execute(select(Delivery.id, Delivery.state)).all())
    assert [states[i] for i in ids["down"]] == ["pending"] * 3


def test_a_delivery_being_sent_holds_back_the_next_one_to_its_destination(db: Database) -> None:
    from mammogate.db.queue import claim_delivery

    ids = _reports_to(db, ["pacs"], 2)
    with db.session() as session:
        first = claim_delivery(session, "s1", 60)
        assert first is not None and first.id == ids["pacs"][0]
    with db.session() as session:
        assert claim_delivery(session, "s2", 60) is None  # not before the first is recorded


def test_a_dead_delivery_lets_the_next_go_and_resubmit_starts_it_over(db: Database) -> None:
    from mammogate.db import Delivery
    from mammogate.db.admin import RequestRefused, request_resubmission
    from mammogate.db.queue import claim_delivery, delivery_failed

    ids = _reports_to(db, ["pacs"], 2)
    with db.session() as session:
        row = claim_delivery(session, "s", 60)
        assert row is not None
        assert delivery_failed(row, "refused for good", retryable=False, max_attempts=5,
                               initial_seconds=1, max_seconds=1, jitter=0) is None
    with db.session() as session:
        nxt = claim_delivery(session, "s", 60)
        assert nxt is not None and nxt.id == ids["pacs"][1]
    with db.session() as session:
        again = request_resubmission(session, actor="test", dead=True)
        assert [r.id for r in again] == [ids["pacs"][0]]
    with db.session() as session:
        row = session.get(Delivery, ids["pacs"][0])
        assert row is not None and (row.state, row.attempts) == ("pending", 0)
        with pytest.raises(RequestRefused, match="no delivery 999"):
            request_resubmission(session, actor="test", delivery_ids=[999])


def test_retry_delay_with_jitter_stays_within_its_band() -> None:
    import random

    rng = random.Random(1)
    delays = [retry_delay(3, 2, 100, jitter=0.25, rng=rng) for _ in range(200)]
    assert all(6.0 <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # spread, not a constant


def test_config_diff_names_each_difference_and_apply_clears_it(db: Database) -> None:
    from mammogate.db.seed import config_diff

    first = load_settings(None, destinations=[{"name": "pacs", "ae_title": "PACS", "host": "h", "port": 104}],
                          routes=[{"destinations": ["pacs"]}])
    with db.session() as session:
        apply_config(session, first)
    with db.session() as session:
        assert config_diff(session, first) == []
    edited = load_settings(
        None, dicom={"allowed_calling_ae_titles": ["MODALITY1"]},
        destinations=[{"name": "pacs", "ae_title": "PACS", "host": "h2", "port": 104},
                      {"name": "web", "kind": "stow", "url": "http://p/dicom-web"}],
        routes=[{"destinations": ["pacs"], "match": {"manufacturer": "GE*"}}],
    )
    with db.session() as session:
        diff = config_diff(session, edited)
    assert diff == [
        "allowed calling AE title 'MODALITY1': in the file, not in the database",
        "destination 'pacs': host is 'h' in the database, 'h2' in the file",
        "destination 'web': in the file, not in the database",
        "route 'route-1': match is {} in the database, {'manufacturer': ['GE*']} in the file",
    ]
    with db.session() as session:
        assert apply_config(session, edited, actor="test") == diff
    with db.session() as session:
        assert config_diff(session, edited) == []
    bound = edited.model_copy(deep=True)
    bound.dicom = load_settings(None, dicom={
        "allowed_calling_ae_titles": [],
        "peers": [{"ae_title": "MODALITY1", "hosts": ["10.0.0.5", "10.1.0.0/16"]}]}).dicom
    with db.session() as session:
        assert config_diff(session, bound) == [
            "allowed calling AE title 'MODALITY1': hosts are 'any' in the database, "
            "'10.0.0.5,10.1.0.0/16' in the file"]
        apply_config(session, bound, actor="test")
    with db.session() as session:
        peer = session.scalars(select(AllowedPeer)).one()
        assert (peer.ae_title, peer.hosts) == ("MODALITY1", "10.0.0.5,10.1.0.0/16")
        assert config_diff(session, bound) == []


def test_deliveries_to_a_disabled_destination_wait_until_it_is_enabled(db: Database) -> None:
    from mammogate.db.queue import claim_delivery

    ids = _reports_to(db, ["off"], 1)
    with db.session() as session:
        session.scalars(select(DestinationRow)).one().enabled = False
    with db.session() as session:
        assert claim_delivery(session, "s", 60) is None
    with db.session() as session:
        session.scalars(select(DestinationRow)).one().enabled = True
    with db.session() as session:
        row = claim_delivery(session, "s", 60)
        assert row is not None and row.id == ids["off"][0]


def test_a_resubmitted_delivery_waits_while_a_later_one_is_being_sent(db: Database) -> None:
    from mammogate.db.admin import request_resubmission
    from mammogate.db.queue import claim_delivery, delivery_delivered

    ids = _reports_to(db, ["pacs"], 2)
    with db.session() as session:
        first = claim_delivery(session, "s", 60)
        assert first is not None
        delivery_delivered(first)
    with db.session() as session:
        second = claim_delivery(session, "s", 60)  # being sent now
        assert second is not None and second.id == ids["pacs"][1]
    with db.session() as session:
        request_resubmission(session, actor="test", delivery_ids=[ids["pacs"][0]])
    with db.session() as session:  # not two in flight to one destination
        assert claim_delivery(session, "s2", 60) is None


def test_a_loop_gives_back_what_a_failed_answer_left_it_holding_once_the_database_is_back(
    db: Database,
) -> None:
    """A claim whose commit went through while its answer was lost (the server restarting) is
    held by a loop that does not know it: once the database answers again, the loop gives it
    back at once (attempt not counted) rather than leave it to wait out its lease; another
    holder's claim is left alone."""
    from sqlalchemy.exc import OperationalError

    from mammogate.db import Delivery
    from mammogate.db.loop import PollLoop
    from mammogate.db.queue import claim_delivery

    _study(db, "1.2.10.1", quiet_for=30)
    _study(db, "1.2.10.2", quiet_for=30)
    _reports_to(db, ["pacs"], 1)
    with db.session() as session:
        settle_studies(session, 0)
    with db.session() as session:
        others = claim_job(session, "w9", lease_seconds=600)
        assert others is not None
        others_id = others.id

    seen: list[dict[str, tuple[str, str, int]]] = []

    class AnswerLost(PollLoop):
        def run_once(self) -> bool:
            if not seen:
                with db.session() as session:
                    assert claim_job(session, "w1", lease_seconds=600) is not None
                    assert claim_delivery(session, "w1", lease_seconds=600) is not None
                seen.append({})
                raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))
            with db.session() as session:
                seen.append({
                    **{f"job {j.id}": (j.state, j.locked_by, j.attempts)
                       for j in session.scalars(select(Job))},
                    **{f"delivery {d.id}": (d.state, d.locked_by, d.attempts)
                       for d in session.scalars(select(Delivery))},
                })
            self.stop()
            return True

    loop = AnswerLost(0.01, "w1", db=db)
    loop.run()
    after = seen[1]
    assert after[f"job {others_id}"] == ("running", "w9", 1)
    mine = {key: value for key, value in after.items() if key != f"job {others_id}"}
    assert mine and set(mine.values()) == {("pending", "", 0)}, after
    assert loop.unsure_what_is_held is False
    with db.session() as session:  # claimable by another at once, not in ten minutes
        assert claim_job(session, "w2", lease_seconds=60) is not None
        assert claim_delivery(session, "w2", lease_seconds=60) is not None
