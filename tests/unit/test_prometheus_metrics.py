"""The Prometheus metrics (``mammogate.metrics``): the exposition parses and names every family,
the queue depths are the database's, and the worker and the sender count what they did, run for
real on a migrated SQLite database (the model and the destination's network are stand-ins)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from mammogate import metrics
from mammogate.analysis import AnalysisWorker
from mammogate.config import load_settings
from mammogate.config.settings import Settings
from mammogate.db import Analysis, Database, Delivery, DestinationRow, Job, Report, Study, utcnow
from mammogate.db.queue import queue_depths
from mammogate.delivery.base import SendError
from mammogate.delivery.outbox import DeliveryLoop
from mammogate.imaging import ImagingError
from mammogate.inference.results import ModelInfo, StudyResult
from mammogate.metrics import (
    QueueDepthCollector,
    exposition,
    instance_received,
    instance_rejected,
    register_queue_depths,
    set_model_info,
)
from tests.unit.databases import migrated_database

FAMILIES = {  # as the parser names them (a counter without its _total)
    "mammogate_instances_received": "counter",
    "mammogate_instances_rejected": "counter",
    "mammogate_associations": "counter",
    "mammogate_analysis_seconds": "histogram",
    "mammogate_analyses": "counter",
    "mammogate_time_to_result_seconds": "histogram",
    "mammogate_delivery_seconds": "histogram",
    "mammogate_deliveries": "counter",
    "mammogate_model_info": "gauge",  # an Info, as the text format has it
    "mammogate_queue_depth": "gauge",
}
CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"


def value(metric: str, /, **labels: str) -> float:
    """A sample's value now (0 where the series has not appeared yet)."""
    return REGISTRY.get_sample_value(metric, labels) or 0.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        None, node={"data_dir": str(tmp_path / "node")},
        database={"url": f"sqlite:///{tmp_path / 'test.sqlite3'}"},
        dicom={"settle_seconds": 1}, worker={"max_attempts": 1},
        sender={"retry_initial_seconds": 0, "max_attempts": 3},
    )


@pytest.fixture
def db(tmp_path: Path, settings: Settings, sqlite_template: Path) -> Iterator[Database]:
    with migrated_database("sqlite", tmp_path, sqlite_template) as database:
        yield database


def _depths(db: Database) -> dict[tuple[str, str], int]:
    with db.read_session() as session:
        return queue_depths(session)


def test_the_exposition_parses_and_has_every_family(db: Database) -> None:
    register_queue_depths(lambda: _depths(db))
    set_model_info("mammogate-cnn", "1.0.0", "0123456789abcdef" * 4)
    body, content_type = exposition()
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert {name: families[name].type for name in FAMILIES if name in families} == FAMILIES
    assert all(f.documentation for name, f in families.items() if name in FAMILIES)
    (model,) = families["mammogate_model_info"].samples
    assert model.labels == {"name": "mammogate-cnn", "version": "1.0.0", "sha256": "0123456789ab"}
    outcomes = {s.labels["outcome"] for s in families["mammogate_associations"].samples}
    assert outcomes == {"accepted", "rejected", "connection_refused"}, "present from the start"


def test_a_reason_outside_the_fixed_categories_is_counted_as_other() -> None:
    before = value("mammogate_instances_rejected_total", calling_ae="MOD", reason="other")
    instance_rejected("MOD", "Modality CT is not MG: 1.2.826.0.1.3680043.2.1125.1")
    assert value("mammogate_instances_rejected_total", calling_ae="MOD", reason="other") == before + 1
    body, _ = exposition()
    assert "1.2.826.0.1.3680043" not in body.decode(), "free text never becomes a label"


def test_calling_ae_titles_past_the_label_bound_are_counted_as_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node that accepts any caller: made-up AE titles do not grow the registry for ever."""
    monkeypatch.setattr(metrics, "_calling_aes", set())
    monkeypatch.setattr(metrics, "MAX_CALLING_AE_LABELS", 3)
    for title in ("AE1", "AE2", "AE3"):
        instance_received(title)
    before = value("mammogate_instances_received_total", calling_ae="other")
    for n in range(10):
        instance_received(f"MADEUP{n}")
    instance_received("AE1")
    assert value("mammogate_instances_received_total", calling_ae="other") == before + 10
    assert REGISTRY.get_sample_value("mammogate_instances_received_total",
                                     {"calling_ae": "MADEUP0"}) is None
    assert value("mammogate_instances_received_total", calling_ae="AE1") >= 2


def _study(db: Database, *, received_ago: float = 120) -> int:
    then = utcnow() - timedelta(seconds=received_ago)
    with db.session() as session:
        study = Study(study_instance_uid=f"1.2.3.{then.timestamp()}", first_received_at=then,
                      last_received_at=then, updated_at=then)
        session.add(study)
        session.flush()
        return study.id


def _delivery(db: Database, destination: str, tmp_path: Path) -> int:
    """A delivery of a CAD SR (a file the stand-in backend does not read) to ``destination``."""
    now = utcnow()
    study_id = _study(db)
    with db.session() as session:
        analysis = Analysis(study_id=study_id, model_name="m", model_version="1", model_sha256="0",
                            operating_point=0.5, category="not_flagged", created_at=now)
        session.add(analysis)
        session.flush()
        report = Report(analysis_id=analysis.id, kind="cad_sr", sop_class_uid=CAD_SR,
                        sop_instance_uid=f"1.2.4.{now.timestamp()}.{destination}",
                        series_instance_uid="1.2.5", path=str(tmp_path / "sr.dcm"), created_at=now)
        row = session.query(DestinationRow).filter_by(name=destination).one_or_none()
        if row is None:
            row = DestinationRow(name=destination, kind="dimse", ae_title="PACS",
                                 host="127.0.0.1", port=11112)
        session.add_all([report, row])
        session.flush()
        delivery = Delivery(report_id=report.id, destination_id=row.id, next_attempt_at=now,
                            created_at=now)
        session.add(delivery)
        session.flush()
        return delivery.id


def test_the_queue_depths_are_the_databases_rows_by_state(db: Database, tmp_path: Path) -> None:
    now = utcnow()
    study_id = _study(db)
    with db.session() as session:
        for state in ("pending", "pending", "running", "done"):
            session.add(Job(kind="analyze", study_id=study_id, state=state, run_after=now,
                            created_at=now))
        session.add(Job(kind="test_destination", target="pacs", state="pending", run_after=now,
                        created_at=now))  # a connection test: not an analysis
    _delivery(db, "pacs", tmp_path)
    dead = _delivery(db, "pacs", tmp_path)
    with db.session() as session:
        row = session.get(Delivery, dead)
        assert row is not None
        row.state = "dead"

    depths = _depths(db)
    assert depths[("analysis", "pending")] == 2 and depths[("analysis", "running")] == 1
    assert depths[("analysis", "done")] == 1 and depths[("analysis", "failed")] == 0
    assert depths[("delivery", "pending")] == 1 and depths[("delivery", "dead")] == 1
    assert depths[("delivery", "sending")] == 0, "every state present, 0 when empty"

    register_queue_depths(lambda: _depths(db))
    assert value("mammogate_queue_depth", queue="analysis", state="pending") == 2
    assert value("mammogate_queue_depth", queue="delivery", state="dead") == 1
    # registered once a process: a second call replaces the callable, no duplicate collector
    register_queue_depths(lambda: {("analysis", "pending"): 7})
    assert value("mammogate_queue_depth", queue="analysis", state="pending") == 7
    register_queue_depths(lambda: _depths(db))


def test_a_database_that_does_not_answer_leaves_the_gauge_empty_not_the_scrape_failed() -> None:
    def away() -> dict[tuple[str, str], int]:
        raise ConnectionError("database is away")

    (family,) = QueueDepthCollector(away).collect()
    assert family.name == "mammogate_queue_depth" and family.samples == []


class StandInAnalyzer:
    """The model's stand-in: a result without analysable views, or a failure."""

    def __init__(self, fail: bool):
        self.fail = fail

    def analyze_study(self, paths: Sequence[Path]) -> StudyResult:
        if self.fail:
            raise ImagingError("pixel data does not decode")
        return StudyResult(
            study_instance_uid="", model=ModelInfo("stand-in", "0.0.1", "fe" * 32, 0.5),
            images=(), skipped=(), breast_scores={}, exam_score=None, category="skipped",
        )


@pytest.mark.parametrize("fail", [False, True], ids=["done", "failed"])
def test_the_worker_counts_and_times_each_analysis(settings: Settings, db: Database,
                                                   fail: bool) -> None:
    _study(db, received_ago=120)
    done = value("mammogate_analyses_total", outcome="done")
    failed = value("mammogate_analyses_total", outcome="failed")
    timed = value("mammogate_analysis_seconds_count")
    waited = value("mammogate_time_to_result_seconds_count")
    waited_long = value("mammogate_time_to_result_seconds_bucket", le="90.0")
    worker = AnalysisWorker(settings, db, "test-worker", lambda: StandInAnalyzer(fail))
    worker.start_model()
    assert worker.run_once() is True
    assert value("mammogate_analyses_total", outcome="failed") == failed + fail
    assert value("mammogate_analyses_total", outcome="done") == done + (not fail)
    assert value("mammogate_analysis_seconds_count") == timed + (not fail)
    assert value("mammogate_time_to_result_seconds_count") == waited + (not fail)
    # the study's last image came 120 s before: not in the 90 s bucket
    assert value("mammogate_time_to_result_seconds_bucket", le="90.0") == waited_long
    if not fail:
        assert value("mammogate_model_info", name="stand-in", version="0.0.1",
                     sha256="fe" * 6) == 1


class StandInBackend:
    """The destination's network: accepts, or fails the way a peer would."""

    def __init__(self, error: SendError | None):
        self.error = error

    def send(self, path: Path, destination: DestinationRow) -> None:
        if self.error is not None:
            raise self.error

    def test(self, destination: DestinationRow) -> str:
        return "answers"


@pytest.mark.parametrize(("error", "outcome"), [
    (None, "delivered"),
    (SendError("0xA700 out of resources", retryable=True), "failed"),
    (SendError("0xC000 refused", retryable=False), "dead"),
])
def test_the_sender_counts_and_times_each_attempt_by_destination(
    settings: Settings, db: Database, tmp_path: Path, error: SendError | None, outcome: str
) -> None:
    destination = f"pacs-{outcome}"
    delivery_id = _delivery(db, destination, tmp_path)
    before = {o: value("mammogate_deliveries_total", destination=destination, outcome=o)
              for o in ("delivered", "failed", "dead")}
    timed = value("mammogate_delivery_seconds_count", destination=destination)
    sender = DeliveryLoop(settings, db, "test-sender", {"dimse": StandInBackend(error)})
    assert sender.run_once() is True
    with db.session() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        assert row.state == {"delivered": "delivered", "failed": "pending", "dead": "dead"}[outcome]
    after = {o: value("mammogate_deliveries_total", destination=destination, outcome=o)
             for o in before}
    assert after == {o: before[o] + (o == outcome) for o in before}
    assert value("mammogate_delivery_seconds_count", destination=destination) == timed + 1
