"""The worker: settles studies, claims analysis jobs, runs the model, writes the results.

For each job: inference → the result objects the routes ask for, and the portal's overlays, on
disk → in ONE transaction the analysis, image, finding and report rows, one delivery row per
routed (destination, object), the study's new state and the job's completion. A crash anywhere
before that commit leaves the job to be reclaimed when its lease expires; files written by the
lost attempt are orphans that nothing references.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, cast

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mammogate.analysis.retention import RetentionSweep
from mammogate.analysis.routes import route_rules, study_facts
from mammogate.config import Settings
from mammogate.db import (
    Analysis,
    Database,
    DestinationRow,
    Instance,
    Job,
    Report,
    Study,
    heatmap_file,
    utcnow,
)
from mammogate.db.lease import LeaseKeeper
from mammogate.db.loop import PollLoop
from mammogate.db.queue import (
    ANALYZE,
    analysis_superseded,
    claim_job,
    complete_job,
    due_jobs,
    fail_job,
    give_back_job,
    give_up_abandoned_jobs,
    job_held_by,
    jobs_waiting,
    new_delivery,
    next_settle_due,
    queue_ready_studies,
    ready_studies,
    study_analysed,
    study_failed,
    study_processing,
    study_retry_later,
    supersede_job,
)
from mammogate.db.wakeup import ANALYSIS as ANALYSIS_WORK
from mammogate.db.wakeup import DELIVERY as DELIVERY_WORK
from mammogate.imaging import ImagingError
from mammogate.inference.errors import AnalysisInterrupted, InferenceError
from mammogate.inference.results import StudyResult
from mammogate.metrics import analysis_done, analysis_failed, set_model_info
from mammogate.reporting import OBJECT_BUILDERS, PriorDocument, ReportingError, save_report
from mammogate.reporting.store import record_analysis, record_report
from mammogate.routing import PlannedDelivery, plan_deliveries
from mammogate.storage import DiskSpaceLow, FreeSpaceGuard, describe_os_error

log = logging.getLogger(__name__)

# tries at recording a failed attempt (a poll interval apart) before the job is left to its
# lease: on a full disk the database may refuse the write too
RECORD_FAILURE_TRIES = 3


class StudyAnalyzer(Protocol):
    def analyze_study(self, paths: Sequence[Path]) -> StudyResult: ...


class BatchAnalyzer(StudyAnalyzer, Protocol):
    def analyze_studies(self, studies: Sequence[Sequence[Path]]) -> list[StudyResult | Exception]: ...


@dataclass
class _Job:
    """A claimed analysis job of this worker."""

    job_id: int
    study_id: int
    study_uid: str = ""
    paths: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


def _predecessors(session: Session, study: Study, kind: str) -> list[PriorDocument]:
    """The object of ``kind`` this study's new one replaces: the latest one any earlier
    analysis wrote (an analysis in between may have written none, e.g. it analysed no view)."""
    latest = session.scalar(
        select(Report).join(Analysis).where(Analysis.study_id == study.id, Report.kind == kind)
        .order_by(Report.id.desc()).limit(1)
    )
    if latest is None:
        return []
    return [PriorDocument(latest.sop_class_uid, latest.sop_instance_uid,
                          latest.series_instance_uid)]


class AnalysisWorker(PollLoop):
    role = "worker"

    def __init__(
        self,
        settings: Settings,
        db: Database,
        worker_id: str,
        analyzer_factory: Callable[[], StudyAnalyzer],
        *,
        on_idle: Callable[[], None] | None = None,
    ):
        super().__init__(settings.worker.poll_seconds, worker_id, on_idle=on_idle,
                         wakeup=db.wakeup, topic=ANALYSIS_WORK,
                         coalesce_seconds=settings.worker.wake_coalesce_seconds, db=db,
                         outage_seconds=settings.worker.lease_seconds / 2,
                         reconnect_seconds=settings.database.reconnect_seconds)
        self.settings = settings
        self.db = db
        self.analyzer_factory = analyzer_factory
        self.analyzer: StudyAnalyzer | None = None
        self.model_error = "not loaded yet"  # empty once the model has loaded
        storage = settings.storage
        self.results_space = FreeSpaceGuard(
            settings.data_dir, "results", min_free_bytes=storage.results_min_free_bytes,
            bytes_key="storage.results_min_free_bytes",
            check_seconds=storage.free_space_check_seconds,
            report_seconds=storage.refusal_log_seconds,
        )
        self.retention = RetentionSweep(settings, db, f"retention:{worker_id}")

    def start_model(self) -> None:
        """Make the analyzer and load its model now rather than at the first study. A model
        that cannot load (its process exceeds a limit) is not fatal: each study's attempt then
        fails with the reason, and the node keeps receiving."""
        started = time.monotonic()
        self.analyzer = self.analyzer_factory()
        start = getattr(self.analyzer, "start", None)
        if callable(start):
            try:
                start()
            except InferenceError as exc:
                log.critical("worker %s: the model did not load: %s", self.worker_id, exc)
                self.model_error = f"the model did not load: {exc}"
                return
        self.model_error = ""
        log.info("worker %s: model ready in %.1f s", self.worker_id, time.monotonic() - started)

    def stop_model(self) -> None:
        """Stop the analysis process, if the analyzer runs one."""
        stop = getattr(self.analyzer, "stop", None)
        if callable(stop):
            stop()

    def starting(self) -> None:
        if self.analyzer is None:
            self.start_model()

    def run_once(self) -> bool:
        cfg = self.settings.worker
        dicom = self.settings.dicom
        # a read first: the SCP wakes the worker with every image, and a write transaction
        # each time would hold the SQLite write lock the next image needs
        with self.db.read_session() as session:
            ready = ready_studies(session, dicom.settle_seconds, dicom.expected_views)
            waiting = jobs_waiting(session)
        if ready or waiting:
            with self.db.session() as session:
                for study, why in queue_ready_studies(session, ready, dicom.settle_seconds):
                    log.info("study %s ready (%s): analysis queued", study.study_instance_uid, why)
                for abandoned in give_up_abandoned_jobs(session, cfg.max_attempts):
                    log.error("job %d given up: %s", abandoned.id, abandoned.last_error)
                    study_failed(session, abandoned, abandoned.last_error)
                    analysis_failed()
        self.retention.run_if_due()
        if self._results_space_low():
            return False  # the jobs wait (pending) until there is room for their results
        if not (ready or waiting):
            return False
        claimed = self._claim()
        if not claimed:
            return False
        jobs: list[_Job] = []
        try:
            for job_id, kind, study_id in claimed:
                if kind != ANALYZE or study_id is None:
                    self._fail_for_good(job_id, f"unknown job kind {kind!r}")
                    continue
                with self.db.session() as session:  # a transaction of its own: see _still_ours
                    owned = self._still_ours(session, job_id, study_id, "not starting it")
                    if owned is None:
                        continue
                    study_processing(owned[0])
                jobs.append(_Job(job_id, study_id))
        except SQLAlchemyError:
            # the database went away between the claim and the start: the jobs are not left to
            # wait out their leases, if the database is back to hear it
            self._give_back([job_id for job_id, _, _ in claimed])
            raise
        if not jobs:
            return True
        # the leases renewed while the analysis runs: only a worker that stopped loses them
        with LeaseKeeper(self.db, [job.job_id for job in jobs], self.worker_id, cfg.lease_seconds):
            if len(jobs) == 1:
                self._analyze(jobs[0])
            else:
                self._analyze_together(jobs)
        return True

    def _claim(self) -> list[tuple[int, str, int | None]]:
        """The next due job; with a deep queue, more (first attempts only: a study that failed
        once is analysed alone, so a poison study cannot fail a batch twice), as long as more
        than a batch is left waiting for the other workers."""
        cfg = self.settings.worker
        with self.db.session() as session:
            job = claim_job(session, self.worker_id, cfg.lease_seconds, cfg.max_attempts)
            if job is None:
                return []
            claimed = [(job.id, job.kind, job.study_id)]
            batching = (cfg.batch_studies > 1 and job.kind == ANALYZE and job.attempts == 1
                        and callable(getattr(self.analyzer, "analyze_studies", None)))
            if batching:
                # only from a queue more than two batches deep: a short one is left to spread
                # over the other workers, one study each
                more = min(cfg.batch_studies - 1, due_jobs(session) - 2 * cfg.batch_studies)
                for _ in range(more):
                    extra = claim_job(session, self.worker_id, cfg.lease_seconds,
                                      cfg.max_attempts, first_attempt_only=True)
                    if extra is None:
                        break
                    claimed.append((extra.id, extra.kind, extra.study_id))
        return claimed

    def _recorded(self, job: _Job, result: StudyResult) -> None:
        """Record ``job``'s result. The database away (a restart, a failover) is waited for,
        trying again every database.reconnect_seconds for up to half the lease (renewed
        meanwhile), so a short outage costs neither the analysis nor the lease's wait; anything
        else fails the attempt, with the reason."""
        try:
            self.until_database_back(lambda: self._record(job, result),
                                     f"analysis job {job.job_id}: recording the result")
        except Exception as exc:  # noqa: BLE001 -- one bad study must not stop the worker
            self._attempt_failed(job, exc)

    def _attempt_failed(self, job: _Job, exc: BaseException) -> None:
        """The attempt failed: recorded, unless the worker is stopping and ended it (then the
        job is given back, its attempt not counted, for another worker to take at once)."""
        if isinstance(exc, AnalysisInterrupted) or (self.stopping.is_set()
                                                    and isinstance(exc, InferenceError)):
            self._give_back([job.job_id])
            return
        self._job_failed(job.job_id, job.study_id, self._reason(job.job_id, exc))

    def _give_back(self, job_ids: Sequence[int]) -> None:
        try:
            with self.db.session() as session:
                given = [j for j in job_ids if give_back_job(session, j, self.worker_id)]
        except SQLAlchemyError as exc:
            log.error("jobs %s not given back (database error %s): given back when the "
                      "database answers again", list(job_ids), type(exc).__name__)
            self.unsure_what_is_held = True
            return
        if given:
            log.info("jobs %s given back, for another worker to take", given)

    def stop(self) -> None:
        """Stop the loop, and end an analysis under way (its job is given back)."""
        super().stop()
        interrupt = getattr(self.analyzer, "interrupt", None)
        if callable(interrupt):
            interrupt()

    @staticmethod
    def _reason(job_id: int, exc: BaseException) -> str:
        if isinstance(exc, OSError):
            return describe_os_error(exc, "cannot read or write")
        if isinstance(exc, ImagingError | ReportingError | InferenceError | DiskSpaceLow):
            # InferenceError: the analysis process exceeded its memory or time, or died
            return str(exc)
        if isinstance(exc, SQLAlchemyError):
            log.error("analysis job %d: database error", job_id, exc_info=exc)
            return f"database error: {type(exc).__name__}"
        log.error("analysis job %d: unexpected error", job_id, exc_info=exc)
        return f"internal error: {type(exc).__name__}: {exc}"

    def next_due(self) -> datetime | None:
        """When the quietest receiving study settles (the store that would make it ready
        sooner wakes the worker)."""
        with self.db.read_session() as session:
            return next_settle_due(session, self.settings.dicom.settle_seconds)

    def _load(self, job: _Job) -> None:
        """The study's UID and the paths of its instances; the database away is waited for,
        as when recording (a restart costs no attempt)."""
        self.until_database_back(lambda: self._read_study(job),
                                 f"analysis job {job.job_id}: reading its study")
        log.info("analysing study %s (%d instances, job %d)", job.study_uid, len(job.paths),
                 job.job_id)

    def _read_study(self, job: _Job) -> None:
        with self.db.session() as session:
            study = session.get(Study, job.study_id)
            assert study is not None
            job.study_uid = study.study_instance_uid
            job.paths = [
                Path(p)
                for p in session.scalars(
                    select(Instance.path).where(Instance.study_id == job.study_id)
                    .order_by(Instance.id)
                )
            ]

    def _analyze(self, job: _Job) -> None:
        assert self.analyzer is not None
        try:
            self._load(job)
            result = self.analyzer.analyze_study(job.paths)
        except Exception as exc:  # noqa: BLE001 -- one bad study must not stop the worker
            self._attempt_failed(job, exc)
            return
        self._recorded(job, result)

    def _analyze_together(self, jobs: list[_Job]) -> None:
        """Several studies in one model pass; each recorded (or failed) on its own."""
        batchable = cast(BatchAnalyzer, self.analyzer)
        loaded = []
        for job in jobs:
            try:
                self._load(job)
                loaded.append(job)
            except Exception as exc:  # noqa: BLE001 -- that job's failure
                self._attempt_failed(job, exc)
        if not loaded:
            return
        log.info("analysing %d studies together (jobs %s)", len(loaded),
                 ", ".join(str(job.job_id) for job in loaded))
        try:
            results = batchable.analyze_studies([job.paths for job in loaded])
        except Exception as exc:  # noqa: BLE001 -- the whole batch's attempt failed
            for job in loaded:
                self._attempt_failed(job, exc)
            return
        for job, result in zip(loaded, results, strict=True):
            if isinstance(result, Exception):
                self._attempt_failed(job, result)
            else:
                self._recorded(job, result)

    def _record(self, job: _Job, result: StudyResult) -> None:
        """Write the result's objects and overlays, then record everything in one transaction
        (unless the job is no longer this worker's)."""
        job_id, study_id, study_uid, started = job.job_id, job.study_id, job.study_uid, job.started
        # the result objects say which of the views a complete exam has were missing
        result = dataclasses.replace(
            result, expected_views=tuple(self.settings.dicom.expected_views))
        studies = tuple(dict.fromkeys(str(h.get("StudyInstanceUID", "")) for h in result.headers))
        if studies and studies != (study_uid,):
            # an exam assembled from several studies (dicom.group_studies_by_patient_and_date):
            # its results belong to the study it is recorded under, and name the others
            result = dataclasses.replace(result, study_instance_uid=study_uid,
                                         assembled_from=studies)
        reason = self.results_space.shortage()
        if reason is not None:
            raise DiskSpaceLow(f"results not written: {reason}")
        overlays = self._write_overlays(result, job_id)

        with self.db.session() as session:
            # Routes are decided now that the result exists; the objects they want are built
            # and written before the transaction that records them.
            study = session.get(Study, study_id)
            assert study is not None
            facts = study_facts(session, study, result.headers,
                                exam_category=result.category, exam_score=result.exam_score)
            # an upload from the portal is analysed for the person who uploaded it: never routed
            plan = [] if study.source == "upload" else plan_deliveries(route_rules(session), facts)
            built: dict[str, list[tuple[Dataset, Path]]] = {}
            # the CAD SR always (the portal offers it); other kinds when a route asks for them
            for kind in dict.fromkeys(["cad_sr", *(p.object_kind for p in plan)]):
                builder = OBJECT_BUILDERS.get(kind)
                if builder is None:
                    log.error("a route asks for object kind %r, which this node does not build",
                              kind)
                    continue
                datasets = builder(result, result.headers, _predecessors(session, study, kind))
                if datasets:
                    built[kind] = [(ds, save_report(ds, self.settings.reports_dir / study_uid))
                                   for ds in datasets]

        with self.db.session() as session:
            owned = self._still_ours(session, job_id, study_id, "dropping this result")
            if owned is None:
                return
            study, row = owned
            last_received = study.last_received_at  # (for the time to result)
            analysis = record_analysis(
                session, study, result, job_id=job_id, worker=self.worker_id, overlays=overlays
            )
            reports = {kind: [record_report(session, analysis, ds, path, kind=kind)
                              for ds, path in objects]
                       for kind, objects in built.items()}
            session.flush()  # the reports' ids, for their deliveries
            deliveries = self._queue_deliveries(session, plan, reports)
            if deliveries:
                self.db.announce(session, DELIVERY_WORK)
            study_analysed(study, analysed=bool(result.images), failed=bool(result.failed_images),
                           problems=_describe_problems(result))
            complete_job(row)
        analysis_done(time.monotonic() - started, (utcnow() - last_received).total_seconds())
        set_model_info(result.model.name, result.model.version, result.model.sha256)
        log.info(
            "study %s analysed: exam score %s, %d findings, %d deliveries queued (%.2f s)",
            study_uid,
            "n/a" if result.exam_score is None else f"{result.exam_score:.4f}",
            len(result.findings),
            deliveries,
            result.elapsed_seconds,
        )

    @staticmethod
    def _queue_deliveries(
        session: Session, plan: Sequence[PlannedDelivery], reports: dict[str, list[Report]]
    ) -> int:
        """One delivery row per planned (destination, object kind) and object of that kind (a
        Secondary Capture per view). A disabled destination gets its rows too (they wait until
        it is enabled again, or are resubmitted)."""
        destinations = {d.name: d for d in session.scalars(select(DestinationRow))}
        count = 0
        for planned in plan:
            objects = reports.get(planned.object_kind)
            if not objects:
                log.info("route %s: no %s for this result (no view analysed), nothing to send "
                         "to %s", planned.route, planned.object_kind, planned.destination)
                continue
            destination = destinations.get(planned.destination)
            if destination is None:
                log.error("route %s names destination %s, which the database does not have "
                          "(`mammogate config diff`)", planned.route, planned.destination)
                continue
            if not destination.enabled:
                log.warning("route %s: destination %s is disabled; the delivery waits for it",
                            planned.route, planned.destination)
            for report in objects:
                new_delivery(session, report.id, destination.id, planned.route)
                count += 1
        return count

    def _write_overlays(self, result: StudyResult, job_id: int) -> dict[str, Path]:
        """Each analysed image's overlay PNG, and its heatmap beside it
        (``db.heatmap_file`` names it); nothing stays when one fails."""
        out_dir = self.settings.data_dir / "overlays" / result.study_instance_uid / str(job_id)
        written: dict[str, Path] = {}
        extra: list[Path] = []
        for image in result.images:
            if image.overlay_png is None:
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            target = out_dir / f"{image.sop_instance_uid}.png"
            try:
                target.write_bytes(image.overlay_png)
                if image.heatmap_png is not None:
                    extra.append(heatmap_file(target))
                    extra[-1].write_bytes(image.heatmap_png)
            except OSError as exc:
                for path in (target, *written.values(), *extra):  # no half-written overlay stays
                    path.unlink(missing_ok=True)
                raise ReportingError(describe_os_error(exc, "cannot write the overlays")) from exc
            written[image.sop_instance_uid] = target
        return written

    def _results_space_low(self) -> bool:
        """Whether the results' disk is below storage.results_min_free_bytes (said in the log
        at most once per storage.refusal_log_seconds)."""
        reason = self.results_space.shortage()
        if reason is None:
            return False
        if self.results_space.refused() is not None:
            log.error("worker %s: %s: no analysis starts until space is freed under %s",
                      self.worker_id, reason, self.settings.data_dir)
        return True

    def _job_failed(self, job_id: int, study_id: int, error: str) -> None:
        """Record the failed attempt at once (retried later, or failed for good). If the
        database refuses the write (a full disk may stop SQLite too), it is tried again a poll
        interval later; when it still fails the job is left running until its lease expires,
        and said so."""
        log.error("analysis job %d failed: %s", job_id, error)
        analysis_failed()
        for attempt in range(1, RECORD_FAILURE_TRIES + 1):
            try:
                self._record_failure(job_id, study_id, error)
                return
            except SQLAlchemyError as exc:
                log.error("analysis job %d: could not record its failure (try %d of %d): "
                          "database error %s", job_id, attempt, RECORD_FAILURE_TRIES,
                          type(exc).__name__)
                if attempt < RECORD_FAILURE_TRIES:
                    self.stopping.wait(self.settings.worker.poll_seconds)
        log.critical("analysis job %d: its failure is not recorded; it is given back when the "
                     "database answers again, or claimed again when its lease expires "
                     "(worker.lease_seconds = %g)", job_id, self.settings.worker.lease_seconds)
        self.unsure_what_is_held = True

    def _record_failure(self, job_id: int, study_id: int, error: str) -> None:
        cfg = self.settings.worker
        with self.db.session() as session:
            owned = self._still_ours(session, job_id, study_id, "not recording this failure")
            if owned is None:
                return
            study, job = owned
            final = fail_job(job, error, max_attempts=cfg.max_attempts, retry_seconds=cfg.retry_seconds)
            if final:
                study_failed(session, job, error)
            else:
                study_retry_later(study)

    def _still_ours(
        self, session: Session, job_id: int, study_id: int, otherwise: str
    ) -> tuple[Study, Job] | None:
        """The study (locked) and this worker's job on it, if the job still stands; None if its
        lease expired and another worker took it, or if it is superseded (then marked so).

        The study is locked before its job: the SCP locks a study and then its jobs, and the
        same order everywhere keeps PostgreSQL free of deadlocks.
        """
        study = session.get(Study, study_id, with_for_update=True)
        job = session.get(Job, job_id)
        assert study is not None and job is not None
        if not job_held_by(job, self.worker_id):
            log.warning("job %d was taken over (lease expired); %s", job_id, otherwise)
            return None
        if analysis_superseded(session, job, study):
            supersede_job(job)
            log.info("job %d superseded: study %s changed since it was queued; %s",
                     job_id, study.study_instance_uid, otherwise)
            return None
        return study, job

    def _fail_for_good(self, job_id: int, error: str) -> None:
        log.error("job %d cannot be run: %s", job_id, error)
        with self.db.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            fail_job(job, error, max_attempts=1, retry_seconds=0)


def _describe_problems(result: StudyResult) -> str:
    problems = [f"{s.sop_instance_uid}: {s.reason}" for s in result.failed_images]
    if not result.images and not problems:
        problems = [f"{s.sop_instance_uid}: {s.reason}" for s in result.skipped]
        return "no image in this study is a view the model analyses: " + "; ".join(problems)
    if problems:
        prefix = "no view could be analysed: " if not result.images else "views that failed: "
        return prefix + "; ".join(problems)
    return ""
