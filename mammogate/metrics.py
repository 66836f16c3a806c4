"""Prometheus metrics: what the node received, refused, analysed and delivered, and how long it
took; served by the portal at ``/metrics``.

A bottom-layer module (it imports only ``prometheus_client`` and the standard library) so that
every role counts into the one default registry of the process: ``mammogate serve`` runs the
SCP, the worker, the sender and the portal in one process, so the portal's ``/metrics`` shows
all of them.

Labels are bounded on purpose: calling AE titles (the allowed peers), destination names (the
configured ones), and short fixed categories. Never a UID (one series per study would grow
without end) and never anything of the patient. A caller that hands a category this module does
not know gets ``other``, so a typo can never open an unbounded label.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# -- the SCP ---------------------------------------------------------------------------------

# Why a C-STORE was answered with a failure status (the Error Comment has the details).
REJECT_REASONS: Final = (
    "sop_class",  # 0xA900: not a mammogram (Modality not MG), or a SOP Class other than the context's
    "too_large",  # 0xC000: past a dicom limit (max_dataset_bytes, frames, elements, pixel size)
    "invalid",  # 0xC000: does not parse, UIDs missing or invalid, no pixel data
    "study_removed",  # 0xC000: the study's images were removed by retention; it takes none again
    "disk_full",  # 0xA700: the spool's disk is below a [storage] minimum, or full
    "spool",  # 0xA700: the spool or the ingest journal could not be written
    "database",  # 0xA700: the database could not record the instance
    "other",  # 0xC000: an internal error (logged with its traceback)
)
ASSOCIATION_OUTCOMES: Final = ("accepted", "rejected", "connection_refused")

INSTANCES_RECEIVED = Counter(
    "mammogate_instances_received",
    "Instances (images) received by C-STORE and answered Success, by the sender's calling AE "
    "title. A re-sent instance counts again (it is answered Success, the first copy is kept).",
    ["calling_ae"],
)
INSTANCES_REJECTED = Counter(
    "mammogate_instances_rejected",
    "C-STOREs answered with a failure status, by the sender's calling AE title and why: "
    + ", ".join(REJECT_REASONS) + " (the audit log and the node's log have each one's reason).",
    ["calling_ae", "reason"],
)
ASSOCIATIONS = Counter(
    "mammogate_associations",
    "DICOM associations requested of the node: accepted, rejected (calling or called AE title "
    "not allowed, or an association limit reached), or connection_refused (too many open "
    "connections, or the TLS handshake failed, before any association).",
    ["outcome"],
)

# -- the worker ------------------------------------------------------------------------------

ANALYSIS_OUTCOMES: Final = ("done", "failed")

ANALYSIS_SECONDS = Histogram(
    "mammogate_analysis_seconds",
    "Time to analyse one study and record its results, from the job's start to its commit "
    "(reading the images, the model, building the result objects); analyses that completed.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
ANALYSES = Counter(
    "mammogate_analyses",
    "Analysis attempts of a study: done (results recorded) or failed (an attempt that failed; "
    "it is retried up to worker.max_attempts, so a study may count several times).",
    ["outcome"],
)
TIME_TO_RESULT_SECONDS = Histogram(
    "mammogate_time_to_result_seconds",
    "From the last image of a study received to its analysis recorded: what a reader waits "
    "for the result (includes dicom.settle_seconds and the time the study waited in the queue).",
    buckets=(5, 10, 30, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600, 7200, 14400),
)
MODEL = Info(
    "mammogate_model",
    "The model bundle the node analyses with: name, version and the first 12 hex digits of "
    "its SHA-256 (the value is always 1).",
)

# -- the sender ------------------------------------------------------------------------------

DELIVERY_OUTCOMES: Final = ("delivered", "failed", "dead")

DELIVERY_SECONDS = Histogram(
    "mammogate_delivery_seconds",
    "Time of one attempt to send a result object to a destination (C-STORE, Orthanc REST or "
    "STOW-RS), delivered or not.",
    ["destination"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DELIVERIES = Counter(
    "mammogate_deliveries",
    "Delivery attempts of result objects, by destination: delivered, failed (retried later) "
    "or dead (given up: refused for good, sender.max_attempts reached, or the sender died "
    "during each attempt; resubmit from the portal).",
    ["destination", "outcome"],
)


# The series of fixed outcomes exist from the start, at 0: a rate or an alert on them needs
# no first event (the labels of AE titles and destinations appear with their first count).
for _outcome in ASSOCIATION_OUTCOMES:
    ASSOCIATIONS.labels(outcome=_outcome)
for _outcome in ANALYSIS_OUTCOMES:
    ANALYSES.labels(outcome=_outcome)


def _known(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else "other"


# Distinct calling AE titles kept as labels; past this, "other". The allow-list bounds them, but
# a node that accepts any caller would otherwise grow a series for every title a peer makes up.
MAX_CALLING_AE_LABELS = 200
_calling_aes: set[str] = set()
_calling_aes_lock = threading.Lock()


def _calling_ae(title: str) -> str:
    if title in _calling_aes:  # the C-STORE path: a known title needs no lock
        return title
    with _calling_aes_lock:
        if title in _calling_aes:
            return title
        if len(_calling_aes) < MAX_CALLING_AE_LABELS:
            _calling_aes.add(title)
            return title
    return "other"


def instance_received(calling_ae: str) -> None:
    INSTANCES_RECEIVED.labels(calling_ae=_calling_ae(calling_ae)).inc()


def instance_rejected(calling_ae: str, reason: str) -> None:
    INSTANCES_REJECTED.labels(calling_ae=_calling_ae(calling_ae),
                              reason=_known(reason, REJECT_REASONS)).inc()


def association(outcome: str) -> None:
    if outcome in ASSOCIATION_OUTCOMES:
        ASSOCIATIONS.labels(outcome=outcome).inc()


def analysis_done(seconds: float, time_to_result: float | None) -> None:
    """One analysis recorded: how long it took, and (when the study's last image time is
    known) how long since the study's last image came."""
    ANALYSES.labels(outcome="done").inc()
    ANALYSIS_SECONDS.observe(max(seconds, 0.0))
    if time_to_result is not None:
        TIME_TO_RESULT_SECONDS.observe(max(time_to_result, 0.0))


def analysis_failed() -> None:
    ANALYSES.labels(outcome="failed").inc()


def delivery_attempt(destination: str, outcome: str, seconds: float | None) -> None:
    """One delivery attempt's outcome (delivered / failed / dead) and, when it sent anything,
    how long the send took (None: given up without an attempt, e.g. the sender died)."""
    if outcome not in DELIVERY_OUTCOMES:
        return
    DELIVERIES.labels(destination=destination, outcome=outcome).inc()
    if seconds is not None:
        DELIVERY_SECONDS.labels(destination=destination).observe(max(seconds, 0.0))


def set_model_info(name: str, version: str, sha256: str) -> None:
    """The model bundle in use (the composition root calls it when the bundle is loaded; the
    worker again with each result, whose provenance names the bundle that produced it)."""
    MODEL.info({"name": name, "version": version, "sha256": sha256[:12]})


# -- queue depths ----------------------------------------------------------------------------

QueueDepths = Callable[[], dict[tuple[str, str], int]]


class QueueDepthCollector(Collector):
    """``mammogate_queue_depth{queue, state}``: rows of the analysis jobs and the deliveries in
    each state, read from the database at each scrape (``depths``, e.g. over
    ``db.queue.queue_depths``). The queues are the database's, shared by every process on it, so
    a gauge kept by one process would be wrong: the count is asked for when it is wanted."""

    NAME = "mammogate_queue_depth"
    HELP = ("Analysis jobs and deliveries in the database, by queue (analysis, delivery) and "
            "state (pending and running/sending are the work ahead; the others are kept rows).")

    def __init__(self, depths: QueueDepths):
        self.depths = depths

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # (without it the registry would call collect(), and so the database, to register)
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["queue", "state"])]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["queue", "state"])
        try:
            depths = self.depths()
        except Exception as exc:  # noqa: BLE001 -- a scrape answers what it can, never fails
            log.warning("metrics: queue depths not read: %s: %s", type(exc).__name__, exc)
            depths = {}
        for (queue, state), count in sorted(depths.items()):
            family.add_metric([queue, state], count)
        return [family]


_queue_collector: QueueDepthCollector | None = None
_queue_lock = threading.Lock()


def register_queue_depths(depths: QueueDepths) -> QueueDepthCollector:
    """Report ``depths()`` as ``mammogate_queue_depth`` in the default registry: registered once
    per process; a later call (another portal app, another database) replaces the callable."""
    global _queue_collector
    with _queue_lock:
        if _queue_collector is None:
            _queue_collector = QueueDepthCollector(depths)
            REGISTRY.register(_queue_collector)
        else:
            _queue_collector.depths = depths
        return _queue_collector


def exposition() -> tuple[bytes, str]:
    """The default registry in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
