"""The C-ECHO and C-STORE SCP: association policy and the store handler.

The store handler never runs the model. It makes the instance durable in the spool, records
it (and its study) in the database, and answers. Everything after that is a job.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from mammogate.config import PolicyError, Settings, StartupError
from mammogate.config.settings import DicomSettings
from mammogate.db import (
    AllowedPeer,
    AssociationRecord,
    Database,
    Instance,
    Study,
    audit,
    utcnow,
)
from mammogate.db.queue import another_image_of_receiving_study, study_receives_images
from mammogate.db.retention import removed_reason
from mammogate.db.states import StudyState
from mammogate.db.wakeup import ANALYSIS as ANALYSIS_WORK
from mammogate.dicom_node import header
from mammogate.dicom_node.guard import AssociationLimits, GuardedRequestHandler, GuardedServer
from mammogate.dicom_node.journal import Journal, JournalError, JournalRecord, sync_filesystem
from mammogate.dicom_node.limits import LimitExceeded, read_bounded, read_bounded_file
from mammogate.dicom_node.policy import AssociationPolicy, peer_rule
from mammogate.dicom_node.receive import ReceivedDataset, SpoolingDIMSE, StoreRequest
from mammogate.dicom_node.spool import InvalidUIDError, Spool, SpooledFile, SpoolError, check_uid
from mammogate.dicom_node.tls import describe as describe_tls
from mammogate.dicom_node.tls import peer_summary, server_context
from mammogate.imaging.views import patient_stem, view_info
from mammogate.metrics import association as count_association
from mammogate.metrics import instance_received, instance_rejected
from mammogate.storage import FreeSpaceGuard

log = logging.getLogger(__name__)

INSTANCES = cast(Table, Instance.__table__)  # inserted with Core: the per-image path
JOURNAL_FOLDER = ".journal"  # under the spool: the ingest journal's segments
OPEN_STUDY_SECONDS = 60.0  # a study's retention state, read before Success, is trusted this long
MAX_LOGGED_STUDIES = 25  # study UIDs named in a batch's log line
INSERT_INSTANCE = insert(INSTANCES)  # built once; the values are bound per image

# SOP classes whose images are mammograms by definition.
MAMMOGRAPHY_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
}
# General SOP classes accepted only when Modality is MG.
MG_ONLY_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}
ACCEPTED_SOP_CLASSES = {**MAMMOGRAPHY_SOP_CLASSES, **MG_ONLY_SOP_CLASSES}

# Every transfer syntax pydicom decodes natively or with python-gdcm / pylibjpeg-openjpeg.
TRANSFER_SYNTAXES: list[UID] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
]

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _status(code: int, comment: str) -> Dataset:
    """A status dataset with an Error Comment (LO: at most 64 characters)."""
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    value = header.text(ds, keyword)
    # PostgreSQL text cannot hold NUL, which some senders pad with
    return ("" if value is None else value).replace("\x00", "")[:limit]


def _uid(ds: Dataset, keyword: str) -> str:
    return header.text(ds, keyword) or ""


# the metrics' category of a refusal (``metrics.REJECT_REASONS``), where not given
_CATEGORY_OF_STATUS = {DATASET_DOES_NOT_MATCH_SOP_CLASS: "sop_class",
                       OUT_OF_RESOURCES: "disk_full", CANNOT_UNDERSTAND: "invalid"}


class StoreRefused(Exception):
    """A C-STORE we answer with a failure status and a reason. ``category`` is the reason's
    fixed category for the metrics (``metrics.REJECT_REASONS``; by default the status's)."""

    def __init__(self, status: int, reason: str, category: str = ""):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.category = category or _CATEGORY_OF_STATUS.get(status, "other")


def parse_dataset(data: bytes | Path, limits: DicomSettings) -> Dataset:
    """The received Part-10 bytes (or a received file, whose pixels stay there) as a dataset,
    parsed through the pixel data (not decoded), within the limits of ``dicom_node.limits``."""
    try:
        if isinstance(data, Path):
            ds = read_bounded_file(data, limits)
        else:
            ds = read_bounded(data, limits)
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Modality"):
            header.text(ds, keyword)
        if not isinstance(data, Path):  # (in a file, the pixels are read by the analysis)
            for keyword in PIXEL_KEYWORDS:
                header.convert_if_ambiguous(ds, keyword)
    except LimitExceeded as exc:
        raise StoreRefused(CANNOT_UNDERSTAND, str(exc), "too_large") from exc
    except Exception as exc:  # noqa: BLE001 -- pydicom raises many types on bad input
        raise StoreRefused(
            CANNOT_UNDERSTAND, f"dataset does not parse: {type(exc).__name__}: {exc}"
        ) from exc
    return ds


def check_dataset(ds: Dataset, sop_class_uid: str, sop_instance_uid: str) -> None:
    """Raise StoreRefused if the dataset is not a mammography image we can take."""
    for keyword in ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = _uid(ds, keyword)
        if not value:
            raise StoreRefused(CANNOT_UNDERSTAND, f"{keyword} is missing")
        try:
            check_uid(value, keyword)
        except InvalidUIDError as exc:
            raise StoreRefused(CANNOT_UNDERSTAND, f"{keyword} is not a valid UID") from exc
    if _uid(ds, "SOPClassUID") != sop_class_uid:
        raise StoreRefused(
            DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOP Class UID differs from the presentation context"
        )
    if _uid(ds, "SOPInstanceUID") != sop_instance_uid:
        raise StoreRefused(CANNOT_UNDERSTAND, "SOP Instance UID differs from the C-STORE request")
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise StoreRefused(DATASET_DOES_NOT_MATCH_SOP_CLASS, "no Pixel Data in the dataset",
                           "invalid")
    modality = header.text(ds, "Modality") or ""
    if sop_class_uid in MG_ONLY_SOP_CLASSES and modality != "MG":
        raise StoreRefused(
            DATASET_DOES_NOT_MATCH_SOP_CLASS,
            f"Modality {modality or '(empty)'} is not MG: mammography only",
        )


@dataclass
class AssociationCounts:
    """What one association stored and what it was refused (for its history row)."""

    stored: int = 0
    refused: int = 0
    outcome: str = "closed"  # released / aborted, once known
    # answered Success from the journal, their rows and files not yet made (StoreService.flush)
    batch: list[Accepted] = field(default_factory=list)


@dataclass(eq=False)
class Accepted:
    """An instance in the ingest journal, answered Success, whose row and file come next."""

    record: JournalRecord
    ds: Dataset | None  # as parsed before Success (None: read back from the journal)
    at: float = 0.0  # time.monotonic() when it was answered
    # written ahead of its row (StoreService.prepare): the content's SHA-256, and the file
    # this instance created where none was
    sha256: str = ""
    written_ahead: Path | None = None


def _received(event: evt.Event) -> ReceivedDataset | None:
    """The dataset ``dicom_node.receive`` took for this C-STORE (None on an association whose
    DIMSE provider is pynetdicom's own: the handler reads pynetdicom's buffer then)."""
    dimse = getattr(event.assoc, "dimse", None)
    if not isinstance(dimse, SpoolingDIMSE):
        return None
    return dimse.take(int(cast(Any, event.request).MessageID))


def _payload_of(received: ReceivedDataset | None, limit: int) -> bytes | Path:
    """The received Part-10 bytes, or the file a large dataset was written to as it came."""
    if received is None:
        raise StoreRefused(CANNOT_UNDERSTAND, "no dataset came with the C-STORE request")
    if received.too_large:
        # (refused as it passed the limit: the rest was read off the wire, not kept)
        raise StoreRefused(CANNOT_UNDERSTAND, f"dataset exceeds dicom.max_dataset_bytes ({limit})",
                           "too_large")
    if received.error is not None:
        raise SpoolError(f"cannot receive into the spool: {received.error.strerror}") \
            from received.error
    if received.in_memory:
        return received.data()
    assert received.path is not None
    return received.path


_STUDIES = cast(Table, Study.__table__)
_REMOVED_AT = select(_STUDIES.c.images_removed_at).where(
    _STUDIES.c.study_instance_uid == bindparam("uid"))
_NEW_STUDY: dict[tuple[str, tuple[str, ...]], Any] = {}


def _new_study_statement(dialect: str, columns: tuple[str, ...]) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING id`` of a study's first image, built once
    per dialect (the values are bound per call)."""
    statement = _NEW_STUDY.get((dialect, columns))
    if statement is None:
        insert_for = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = _NEW_STUDY[(dialect, columns)] = insert_for(_STUDIES).values(
            {name: bindparam(name) for name in columns}
        ).on_conflict_do_nothing(index_elements=["study_instance_uid"]).returning(_STUDIES.c.id)
    return statement


def _holds(path: Path, sha256: str) -> bool:
    """Whether the file at ``path`` is there with this content (after a crash, a file whose
    row was committed may be missing, empty or cut short: it was not flushed yet)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except FileNotFoundError:
        return False


def _sop_of(item: Accepted) -> str:
    return str(item.ds.SOPInstanceUID) if item.ds is not None else "(read back from the journal)"


def _counts(assoc: Any) -> AssociationCounts:
    counts = getattr(assoc, "mammogate_counts", None)
    if counts is None:
        counts = assoc.mammogate_counts = AssociationCounts()
    return counts


class StoreService:
    """C-STORE and C-ECHO handlers with their dependencies (bound via the extra-args list)."""

    def __init__(self, settings: Settings, db: Database, spool: Spool):
        self.settings = settings
        self.db = db
        self.spool = spool
        storage = settings.storage
        self.spool_space = FreeSpaceGuard(
            spool.root, "spool", min_free_bytes=storage.min_free_bytes,
            min_free_percent=storage.min_free_percent,
            check_seconds=storage.free_space_check_seconds,
            report_seconds=storage.refusal_log_seconds,
        )
        dicom = settings.dicom
        self.journal = Journal(spool.root / JOURNAL_FOLDER, spool.root,
                               dicom.journal_segment_bytes) if dicom.store_journal else None
        # accepted instances whose rows could not be written yet (the database was away)
        self._backlog: list[Accepted] = []
        self._backlog_lock = threading.Lock()
        # studies known not to be removed by retention (UID -> when checked), for the journal
        self._open_studies: dict[str, float] = {}

    def handle_echo(self, event: evt.Event) -> int:
        """C-ECHO. Status: 0x0000 Success."""
        log.info("C-ECHO from %s", event.assoc.requestor.ae_title)
        return SUCCESS

    def handle_store(self, event: evt.Event) -> int | Dataset:
        """C-STORE through pynetdicom's reactor (a request the DUL thread did not serve, see
        ``dicom_node.receive``): :meth:`store`'s answer as pynetdicom takes it."""
        request: Any = event.request
        received = _received(event)
        status, comment = self.store(
            event.assoc, str(request.AffectedSOPClassUID or ""),
            str(request.AffectedSOPInstanceUID or ""), received,
            # pynetdicom's own buffer: an association the guard did not make
            encoded=(lambda: event.encoded_dataset(include_meta=True)) if received is None else None,
        )
        return _status(status, comment) if comment else status

    def store_served(self, assoc: Any, request: StoreRequest,
                     received: ReceivedDataset) -> tuple[int, str]:
        """C-STORE served on the association's DUL thread (``SpoolingDIMSE.stores``): a small
        instance goes through the ingest journal, its row and file made by :meth:`flush`."""
        return self.store(assoc, request.sop_class_uid, request.sop_instance_uid, received,
                          journal=True)

    def store(self, assoc: Any, sop_class_uid: str, sop_uid: str,
              received: ReceivedDataset | None,
              encoded: Callable[[], bytes] | None = None, *, journal: bool = False) -> tuple[int, str]:
        """C-STORE: make the instance durable, record it, answer (status, Error Comment or "").

        Statuses (every failure carries an Error Comment with the reason):
            0x0000 Success -- in the spool (fsynced) and in the database, or (``journal``, a
                small instance) in the ingest journal (fdatasynced), its row and spool file
                made by :meth:`flush` moments later; also for a re-sent instance (the first
                copy is kept)
            0xA700 Out of resources -- the spool's disk is below storage.min_free_bytes or
                storage.min_free_percent, or the spool or database could not be written
            0xA900 Dataset does not match SOP class -- no pixel data, not Modality MG, or a
                SOP Class UID other than the presentation context's
            0xC000 Cannot understand -- the dataset does not parse, its UIDs are missing or
                invalid, the study's images were removed by retention, or an internal error
                (logged) stopped the store
        """
        calling_ae = str(assoc.requestor.ae_title).strip()
        called_ae = str(assoc.acceptor.ae_title).strip()
        counts = _counts(assoc)
        try:
            short = self.spool_space.shortage()
            if short is not None:
                counts.refused += 1
                instance_rejected(calling_ae, "disk_full")
                return self._refuse_for_space(short, calling_ae, sop_uid)
            payload = encoded() if received is None and encoded is not None else \
                _payload_of(received, self.settings.dicom.max_dataset_bytes)
            ds = parse_dataset(payload, self.settings.dicom)
            check_dataset(ds, sop_class_uid, sop_uid)
            if journal and self.journal is not None and isinstance(payload, bytes) \
                    and self.journal.fits(len(payload)):
                self._journal(ds, payload, counts, calling_ae, called_ae)
            else:
                self._store(ds, payload, received, calling_ae, called_ae)
            counts.stored += 1
            instance_received(calling_ae)
            return SUCCESS, ""
        except StoreRefused as refused:
            counts.refused += 1
            instance_rejected(calling_ae, refused.category)
            return self._refuse(refused, calling_ae, sop_uid)
        except (SpoolError, SQLAlchemyError) as exc:
            counts.refused += 1
            if isinstance(exc, SQLAlchemyError):  # the database is away: one line, no traceback
                log.error("C-STORE of %s from %s: cannot make it durable: database error %s",
                          sop_uid, calling_ae, type(exc).__name__)
            else:
                log.exception("C-STORE of %s from %s: cannot make it durable", sop_uid, calling_ae)
            full = isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC
            instance_rejected(calling_ae, "disk_full" if full else
                              "database" if isinstance(exc, SQLAlchemyError) else "spool")
            return OUT_OF_RESOURCES, ("spool disk full: try later" if full
                                      else f"cannot store now ({type(exc).__name__}): try later")
        except Exception as exc:  # noqa: BLE001 -- a handler answers with a status, never raises
            counts.refused += 1
            instance_rejected(calling_ae, "other")
            log.exception("C-STORE of %s from %s: internal error", sop_uid, calling_ae)
            return CANNOT_UNDERSTAND, f"internal error: {type(exc).__name__}"
        finally:
            if received is not None:
                received.discard()  # its file, unless the spool took it over

    # -- the ingest journal (dicom_node.journal) ------------------------------------------

    def _journal(self, ds: Dataset, payload: bytes, counts: AssociationCounts,
                 calling_ae: str, called_ae: str) -> None:
        """Make a small instance durable in the journal; its row and file follow (flush)."""
        assert self.journal is not None
        with self._backlog_lock:
            waiting = len(self._backlog)
        if waiting >= self.settings.dicom.store_batch_max * 10:
            raise SpoolError(f"{waiting} instances wait for the database")
        self._check_not_removed_soon(_uid(ds, "StudyInstanceUID"))
        meta = {"calling_ae": calling_ae, "called_ae": called_ae,
                "received_at": utcnow().isoformat()}
        try:
            record = self.journal.append(meta, payload)
        except JournalError as exc:
            raise SpoolError(str(exc)) from exc
        counts.batch.append(Accepted(record, ds, time.monotonic()))

    def _check_not_removed_soon(self, study_uid: str) -> None:
        """The retention check before Success, read once a minute per study (the flush checks
        again, under the study's lock)."""
        now = time.monotonic()
        checked = self._open_studies.get(study_uid)
        if checked is not None and now - checked < OPEN_STUDY_SECONDS:
            return
        self._check_not_removed(study_uid)
        if len(self._open_studies) >= 10_000:
            self._open_studies.clear()
        self._open_studies[study_uid] = now

    @property
    def batch_idle_seconds(self) -> float:
        return self.settings.dicom.store_batch_idle_seconds

    def pending(self, assoc: Any) -> bool:
        """Whether the association has instances answered from the journal but not flushed."""
        return bool(_counts(assoc).batch)

    def prepare(self, assoc: Any) -> None:
        """Write the spool file of the instance just answered from the journal while its peer
        sends the next (the flush then makes its row alone): created only where no file is
        (a re-sent instance's file, or another's, is the flush's to judge). Never raises: what
        cannot be written now, the flush writes."""
        batch = _counts(assoc).batch
        item = batch[-1] if batch else None
        if item is None or item.sha256 or item.ds is None:
            return
        data = item.record.data
        item.sha256 = hashlib.sha256(data).hexdigest()
        try:
            path = self.spool.path_for(_uid(item.ds, "StudyInstanceUID"),
                                       _uid(item.ds, "SOPInstanceUID"))
            if self.spool.create(data, path):
                item.written_ahead = path
        except (SpoolError, InvalidUIDError) as exc:
            log.debug("instance %s: file left to the flush (%s)", _sop_of(item), exc)

    def flush_due(self, assoc: Any) -> bool:
        """Whether the batch is full or old (then flushed after the answer, if the database is
        free)."""
        batch = _counts(assoc).batch
        dicom = self.settings.dicom
        return bool(batch) and (len(batch) >= dicom.store_batch_max
                                or time.monotonic() - batch[0].at >= dicom.store_batch_max_seconds)

    def flush(self, assoc: Any, now: bool = True) -> None:
        """Write the rows and spool files of the association's journalled instances (with any
        the database refused before): one transaction. Called on the association's DUL thread
        when its peer pauses or the batch is full or old (``now`` False: if another writer
        holds the database for more than dicom.store_batch_lock_wait_seconds, the batch waits
        for the next pause rather than the sender for the database), and when the peer sends
        anything but data (``now``: it waits). Never raises: what cannot be written now waits
        in the backlog (and in the journal)."""
        counts = _counts(assoc)
        batch, counts.batch = counts.batch, []
        dicom = self.settings.dicom
        if now or not batch or len(batch) >= dicom.store_batch_max * 10:
            self._apply_accepted(batch)
            return
        try:
            self._apply_in_one(batch, recovering=False, lock_wait=dicom.store_batch_lock_wait_seconds)
        except OperationalError as exc:  # the database is busy (or away): at the next pause
            counts.batch = batch + counts.batch
            log.debug("flush of %d journalled instance(s) postponed: %s", len(batch),
                      type(exc).__name__)
            return
        except (SQLAlchemyError, SpoolError, OSError):
            self._apply_accepted(batch)  # one at a time; what fails waits in the backlog
            return
        if self.journal is not None:
            self.journal.applied([item.record for item in batch])

    def retry_backlog(self) -> None:
        """Instances whose rows the database refused before: tried again (periodically)."""
        self._apply_accepted([])

    def _apply_accepted(self, batch: list[Accepted]) -> None:
        with self._backlog_lock:
            items, self._backlog = self._backlog + batch, []
        if not items:
            return
        done, failed = self._apply(items)
        if failed:
            with self._backlog_lock:
                self._backlog = failed + self._backlog
        if self.journal is not None:
            self.journal.applied([item.record for item in done])

    def _apply(self, items: list[Accepted], *, recovering: bool = False
               ) -> tuple[list[Accepted], list[Accepted]]:
        """Rows and files for ``items``: all in one transaction, or, when that fails, each in
        its own. (applied, not applied)."""
        try:
            self._apply_in_one(items, recovering=recovering)
            return items, []
        except (SQLAlchemyError, SpoolError, OSError) as exc:
            if len(items) == 1:
                log.error("instance %s from the ingest journal: cannot record it now (%s); "
                          "tried again later", _sop_of(items[0]), exc)
                return [], items
            log.warning("a batch of %d journalled instances failed (%s): one at a time",
                        len(items), type(exc).__name__)
        done: list[Accepted] = []
        failed: list[Accepted] = []
        for item in items:
            applied, not_applied = self._apply([item], recovering=recovering)
            done += applied
            failed += not_applied
        return done, failed

    def _apply_in_one(self, items: list[Accepted], *, recovering: bool,
                      lock_wait: float | None = None) -> None:
        """One transaction: which instances exist already (one query), each study counted once
        for its new images, the rows inserted together, then the files written."""
        entries = []
        for item in items:
            data = item.record.data
            ds = item.ds if item.ds is not None else parse_dataset(data, self.settings.dicom)
            entries.append((item, ds, item.sha256 or hashlib.sha256(data).hexdigest()))
        stored: list[tuple[str, str, int, str]] = []
        duplicates: list[tuple[str, str, str, str]] = []  # (SOP UID, stored sha, sha, AE)
        discarded: list[tuple[str, str, str]] = []
        with (self.db.engine.begin() if lock_wait is None
              else self.db.write_within(lock_wait)) as conn:
            # (a file retention removed is not written again by a replay: path "")
            existing: dict[str, tuple[str, str]] = {
                row.sop_instance_uid: (row.sha256, "" if row.images_removed_at else row.path)
                for row in conn.execute(
                    select(INSTANCES.c.sop_instance_uid, INSTANCES.c.sha256, INSTANCES.c.path,
                           _STUDIES.c.images_removed_at)
                    .join(_STUDIES, _STUDIES.c.id == INSTANCES.c.study_id)
                    .where(INSTANCES.c.sop_instance_uid.in_({_uid(ds, "SOPInstanceUID")
                                                             for _, ds, _ in entries})))}
            # the new instances, by study and sender (a duplicate within the batch counts once)
            studies: dict[tuple[str, str, str], list[tuple[Accepted, Dataset, str]]] = {}
            for item, ds, sha256 in entries:
                sop_uid = _uid(ds, "SOPInstanceUID")
                meta = item.record.meta
                calling_ae = meta.get("calling_ae", "")
                known = existing.get(sop_uid)
                if known is not None:
                    if item.written_ahead:  # where the first copy's file was not
                        self._undo_written_ahead(item, known)
                    if not recovering or known[0] != sha256:
                        duplicates.append((sop_uid, known[0], sha256, calling_ae))
                    elif known[1] and not _holds(Path(known[1]), sha256):
                        # its row was committed, its file not yet flushed when the node stopped
                        self.spool.place(item.record.data, Path(known[1]))
                    continue
                existing[sop_uid] = (sha256, "")
                key = (_uid(ds, "StudyInstanceUID"), calling_ae, meta.get("called_ae", ""))
                studies.setdefault(key, []).append((item, ds, sha256))
            rows: list[dict[str, Any]] = []
            files: list[tuple[bytes, Path]] = []
            for (study_uid, calling_ae, called_ae), group in studies.items():
                try:
                    study_id = self._upsert_study(conn, group[0][1], calling_ae, called_ae,
                                                  count=len(group))
                except StoreRefused as refused:  # retention removed the study meanwhile
                    discarded += [(_uid(ds, "SOPInstanceUID"), calling_ae, refused.reason)
                                  for _, ds, _ in group]
                    for item, _, _ in group:
                        if item.written_ahead:
                            self._undo_written_ahead(item, None)
                    continue
                for item, ds, sha256 in group:
                    sop_uid = _uid(ds, "SOPInstanceUID")
                    path = self.spool.path_for(study_uid, sop_uid)
                    meta = item.record.meta
                    received_at = datetime.fromisoformat(meta["received_at"]) \
                        if "received_at" in meta else utcnow()
                    rows.append(self._instance_row(ds, study_id, calling_ae, path,
                                                   len(item.record.data), sha256, received_at))
                    if not item.written_ahead:
                        files.append((item.record.data, path))
                    stored.append((sop_uid, study_uid, len(item.record.data), calling_ae))
            if rows:
                conn.execute(INSERT_INSTANCE, rows)
                # after the rows: a concurrent copy of an instance waits (or fails) on its row
                for data, path in files:
                    self.spool.place(data, path)
                self.db.wakeup.notify(conn, ANALYSIS_WORK)
        if stored:
            self.db.wakeup.wake(ANALYSIS_WORK)
        for sop_uid, study_uid, size, calling_ae in stored:
            log.debug("stored %s (study %s, %d bytes) from %s", sop_uid, study_uid, size,
                      calling_ae)
        if stored:  # one line a batch: a line an image costs a tenth of the image's time
            uids = sorted({study_uid for _, study_uid, _, _ in stored})
            log.info("recorded %d instance(s) of %d study(ies) from %s%s: %s", len(stored),
                     len(uids), ", ".join(sorted({ae for _, _, _, ae in stored})),
                     " (replayed from the ingest journal)" if recovering else "",
                     " ".join(uids[:MAX_LOGGED_STUDIES])
                     + (" ..." if len(uids) > MAX_LOGGED_STUDIES else ""))
        for sop_uid, stored_sha256, sha256, calling_ae in duplicates:  # (audited after commit)
            self._log_duplicate(sop_uid, stored_sha256, sha256, calling_ae)
        for sop_uid, calling_ae, reason in discarded:
            log.warning("instance %s from %s, answered Success, not kept: %s", sop_uid,
                        calling_ae, reason)
            with self.db.session() as session:
                audit(session, actor=f"dicom:{calling_ae}", action="c-store-discarded",
                      target=sop_uid, detail=f"accepted, then not kept: {reason}")

    def _undo_written_ahead(self, item: Accepted, known: tuple[str, str] | None) -> None:
        """A file written ahead (``prepare``) for an instance that is not kept (a re-sent one,
        or its study's images were removed): removed -- unless it is, byte for byte, the file
        of the copy that was kept, which was missing -- and only while it holds this
        instance's bytes (a flush of the kept copy may have written its own there since)."""
        path, item.written_ahead = item.written_ahead, None
        assert path is not None
        if known is not None and known[1] == str(path) and known[0] == item.sha256:
            return
        if _holds(path, item.sha256):
            path.unlink(missing_ok=True)

    def recover(self) -> int:
        """Replay what ingest journals of stopped processes hold (after a crash): their rows and
        files made as a flush would have, idempotently. Returns the instances replayed. A
        segment whose records cannot all be applied stays, for the next start."""
        replayed = 0
        for path, records, release in Journal.leftovers(self.spool.root / JOURNAL_FOLDER):
            items = []
            for record in records:
                try:
                    items.append(Accepted(record, parse_dataset(record.data, self.settings.dicom)))
                except StoreRefused as refused:
                    log.error("ingest journal %s: a record does not parse (%s): skipped",
                              path.name, refused.reason)
            done, failed = self._apply(items, recovering=True) if items else ([], [])
            if failed:
                log.error("ingest journal %s: %d instance(s) could not be recorded; kept for "
                          "the next start", path.name, len(failed))
                continue
            sync_filesystem(self.spool.root)
            release()
            replayed += len(done)
            log.info("ingest journal %s replayed: %d instance(s)", path.name, len(done))
        return replayed

    def close(self) -> None:
        """A clean stop: the backlog tried once more, the journal closed."""
        self.retry_backlog()
        if self.journal is not None:
            self.journal.close()

    def _refuse_for_space(self, reason: str, calling_ae: str, sop_uid: str) -> tuple[int, str]:
        """0xA700 while the spool's disk is low; logged and audited at most once per
        storage.refusal_log_seconds, however many stores come."""
        count = self.spool_space.refused()
        if count is not None:
            self._refuse(StoreRefused(OUT_OF_RESOURCES, f"{reason} ({count} C-STOREs refused "
                                      "since the last report): free space in the spool"),
                         calling_ae, sop_uid)
        return OUT_OF_RESOURCES, reason

    def _refuse(self, refused: StoreRefused, calling_ae: str, sop_uid: str) -> tuple[int, str]:
        log.warning(
            "C-STORE of %s from %s refused (0x%04X): %s",
            sop_uid or "(no UID)", calling_ae, refused.status, refused.reason,
        )
        try:
            with self.db.session() as session:
                audit(session, actor=f"dicom:{calling_ae}", action="c-store-refused", target=sop_uid, detail=refused.reason)
        except SQLAlchemyError:
            log.exception("could not record the refused C-STORE of %s", sop_uid)
        return refused.status, refused.reason

    def _spool(self, ds: Dataset, payload: bytes | Path,
               received: ReceivedDataset | None) -> SpooledFile:
        """The instance written (or, received into a file, that file fsynced) under a temporary
        name in the spool: ``Spool.commit`` puts it in place."""
        study_uid, sop_uid = _uid(ds, "StudyInstanceUID"), _uid(ds, "SOPInstanceUID")
        if isinstance(payload, bytes):
            return self.spool.write(payload, study_uid, sop_uid)
        assert received is not None
        try:
            path, size, sha256 = received.sealed()
        except OSError as exc:
            raise SpoolError(f"cannot write {sop_uid}.dcm to the spool: {exc.strerror}") from exc
        return self.spool.adopt(path, size, sha256, study_uid, sop_uid)

    def _store(self, ds: Dataset, payload: bytes | Path, received: ReceivedDataset | None,
               calling_ae: str, called_ae: str) -> None:
        study_uid = _uid(ds, "StudyInstanceUID")
        sop_uid = _uid(ds, "SOPInstanceUID")
        spooled = self._spool(ds, payload, received)
        in_place = False
        try:
            # Core statements on one connection: this is the per-image path, where a Session's
            # bookkeeping costs more than the statements (the ORM only for a study that settled
            # or whose images were removed); the wake-up is announced as Database.announce does
            with self.db.engine.begin() as conn:
                study_id = self._upsert_study(conn, ds, calling_ae, called_ae)
                # The unique SOP Instance UID: a copy stored before, or a concurrent one, fails
                # (or blocks) here, so only the holder of this row puts its file in place.
                conn.execute(INSERT_INSTANCE, self._instance_row(
                    ds, study_id, calling_ae, spooled.path, spooled.size, spooled.sha256, utcnow()))
                self.spool.commit(spooled)
                in_place = True
                self.db.wakeup.notify(conn, ANALYSIS_WORK)
            self.db.wakeup.wake(ANALYSIS_WORK)  # committed: this process's worker looks now
        except BaseException as exc:
            # A file already in place stays: once our row is rolled back another association
            # may have put the same instance there and committed it, and a file no row names is
            # harmless (the next copy of the instance replaces it).
            if not in_place:
                self.spool.discard(spooled)
            raced = self._stored(sop_uid) if isinstance(exc, IntegrityError) else None
            if raced is None:
                raise
            # a re-sent image of a study whose images retention removed is refused, not kept
            self._check_not_removed(study_uid)
            # stored before, or by another association
            self._log_duplicate(raced.sop_instance_uid, raced.sha256, spooled.sha256, calling_ae)
            return
        log.info(
            "stored %s (study %s, %d bytes) from %s", sop_uid, study_uid, spooled.size, calling_ae
        )

    @staticmethod
    def _instance_row(ds: Dataset, study_id: int, calling_ae: str, path: Path, size: int,
                      sha256: str, received_at: datetime) -> dict[str, Any]:
        # the view as read from whichever attribute holds it (ViewCodeSequence, ViewPosition,
        # ImageLaterality, Laterality, or the image's text)
        info = view_info(ds)
        return {
            "sop_instance_uid": _uid(ds, "SOPInstanceUID"),
            "study_id": study_id,
            "series_instance_uid": _uid(ds, "SeriesInstanceUID"),
            "sop_class_uid": _uid(ds, "SOPClassUID"),
            "study_instance_uid": _uid(ds, "StudyInstanceUID"),
            "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID)[:64],
            "modality": _text(ds, "Modality", 16),
            "laterality": (info.laterality or "")[:2],
            "view": (info.view or "")[:16],
            "calling_ae_title": calling_ae[:16],
            "path": str(path),
            "size": size,
            "sha256": sha256,
            "received_at": received_at,
        }

    def _check_not_removed(self, study_uid: str) -> None:
        """A study whose images retention removed takes none again (not even a re-sent one):
        its analysis would miss the removed ones."""
        with self.db.read_engine.connect() as conn:  # (SQLite: no write lock for a read)
            removed_at = conn.execute(_REMOVED_AT, {"uid": study_uid}).scalar_one_or_none()
        if removed_at is not None:
            log.warning("C-STORE for study %s: %s", study_uid, removed_reason(study_uid, removed_at))
            raise StoreRefused(CANNOT_UNDERSTAND, _removed_comment(removed_at), "study_removed")

    def _stored(self, sop_instance_uid: str) -> Instance | None:
        with self.db.session() as session:
            return session.scalar(
                select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)
            )

    def _exam_of(self, conn: Connection, ds: Dataset, study_uid: str) -> tuple[str, str]:
        """(the study UID the instance is recorded under, the exam key): its own, unless
        dicom.group_studies_by_patient_and_date puts it into an exam assembled earlier."""
        if not self.settings.dicom.group_studies_by_patient_and_date:
            return study_uid, ""
        stem = patient_stem(_text(ds, "PatientID", 64))
        date = _text(ds, "StudyDate", 8)
        if not stem or not date:
            return study_uid, ""  # nothing safe to group on
        key = f"{stem}|{date}"[:128]
        first = conn.scalar(select(Study.study_instance_uid).where(Study.exam_key == key)
                            .order_by(Study.id).limit(1))
        if first is not None and first != study_uid:
            log.info("study %s joins the exam of study %s (same patient and date)", study_uid, first)
            return first, key
        return study_uid, key

    def _upsert_study(self, conn: Connection, ds: Dataset, calling_ae: str, called_ae: str,
                      count: int = 1) -> int:
        """The study's row for ``count`` new images like ``ds`` (made, or counted): its id."""
        now = utcnow()
        study_uid, exam_key = self._exam_of(conn, ds, _uid(ds, "StudyInstanceUID"))
        # the common case in one statement: another image of a study that is receiving
        study_id = another_image_of_receiving_study(conn, study_uid, now, count)
        if study_id is not None:
            return study_id
        values = dict(
            study_instance_uid=study_uid,
            state=StudyState.RECEIVING,
            accession_number=_text(ds, "AccessionNumber", 16),
            patient_name=_text(ds, "PatientName", 324),
            patient_id=_text(ds, "PatientID", 64),
            patient_birth_date=_text(ds, "PatientBirthDate", 8),
            study_date=_text(ds, "StudyDate", 8),
            study_description=_text(ds, "StudyDescription", 64),
            manufacturer=_text(ds, "Manufacturer", 64),
            manufacturer_model=_text(ds, "ManufacturerModelName", 64),
            calling_ae_title=calling_ae,
            # which of the node's AE titles was called; routes may match on it
            called_ae_title=called_ae[:16],
            exam_key=exam_key,
            instance_count=count,  # these images
            first_received_at=now,
            last_received_at=now,
            updated_at=now,
            last_error="",
        )
        # a study's first image: the study is new, and receiving, in one statement
        created: int | None = conn.execute(
            _new_study_statement(conn.dialect.name, tuple(values)), values
        ).scalar_one_or_none()
        if created is not None:
            return created
        # A study that settled, was analysed or whose images were removed: the ORM, in this
        # transaction (the Session joins it, and leaves commit and rollback to the block).
        with Session(bind=conn, join_transaction_mode="rollback_only") as session:
            study = session.scalar(
                select(Study).where(Study.study_instance_uid == study_uid).with_for_update()
            )
            assert study is not None
            if study.images_removed_at is not None:  # checked again under the study's lock
                raise StoreRefused(CANNOT_UNDERSTAND, _removed_comment(study.images_removed_at),
                                    "study_removed")
            previous = study_receives_images(session, study)
            if previous is not None:
                # More images after the study settled: analysed again once it is quiet.
                log.info("study %s receives more images (was %s)", study_uid, previous)
            study.instance_count = study.instance_count + count
            study.last_received_at = now
            study.updated_at = now
            session.flush()
            return study.id

    def _log_duplicate(self, sop_instance_uid: str, stored_sha256: str, sha256: str,
                       calling_ae: str) -> None:
        if sha256 == stored_sha256:
            log.info("duplicate %s from %s: identical to the stored copy, kept once",
                     sop_instance_uid, calling_ae)
            return
        log.warning("duplicate %s from %s has a DIFFERENT payload; the first copy is kept",
                    sop_instance_uid, calling_ae)
        with self.db.session() as session:
            audit(session, actor=f"dicom:{calling_ae}", action="duplicate-differs",
                  target=sop_instance_uid,
                  detail="a different payload under a stored SOP Instance UID; first copy kept")


def load_policy(settings: Settings, db: Database) -> AssociationPolicy:
    """The association policy: the node's AE titles (settings) and its peers (database)."""
    with db.read_session() as session:
        peers = [peer_rule(p.ae_title, p.hosts)
                 for p in session.scalars(select(AllowedPeer).order_by(AllowedPeer.ae_title))]
    return AssociationPolicy.build(settings.dicom.listening_ae_titles, peers)


def _removed_comment(removed_at: Any) -> str:
    return f"this study's images were removed by retention on {removed_at:%Y-%m-%d}"



def build_ae(settings: Settings) -> AE:
    dicom = settings.dicom
    ae = AE(ae_title=dicom.ae_title)
    ae.acse_timeout = dicom.acse_timeout
    ae.dimse_timeout = dicom.dimse_timeout
    ae.network_timeout = dicom.network_timeout
    ae.maximum_pdu_size = dicom.maximum_pdu_size
    # the association limits are the guard's (which counts requested associations only);
    # pynetdicom's own count includes silent connections, so it is set out of the way
    ae.maximum_associations = dicom.max_connections + 1
    # called and calling AE titles are checked by the guard's policy, which gives reasons
    ae.require_called_aet = False
    ae.require_calling_aet = []
    ae.add_supported_context("1.2.840.10008.1.1")  # Verification
    for sop_class in ACCEPTED_SOP_CLASSES:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    return ae



class Scp:
    """The running SCP. ``refresh_policy()`` re-reads the peers from the database."""

    def __init__(self, settings: Settings, db: Database, spool: Spool):
        self.settings = settings
        self.db = db
        self.service = StoreService(settings, db, spool)
        self.ae = build_ae(settings)
        self.policy = load_policy(settings, db)
        self.server: GuardedServer | None = None
        self.ssl_context = server_context(settings.dicom)  # a bad TLS file: ConfigError, now

    def start(self) -> tuple[str, int]:
        # what a crash left in the ingest journal is recorded before anything new comes
        replayed = self.service.recover()
        if replayed:
            log.warning("%d instance(s) answered before a crash were recorded from the ingest "
                        "journal", replayed)
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self.service.handle_echo),
            (evt.EVT_C_STORE, self.service.handle_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, _on_released),
            (evt.EVT_ABORTED, _on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        dicom = self.settings.dicom
        try:
            server = cast(GuardedServer, self.ae.make_server(
                (dicom.bind, dicom.port), evt_handlers=handlers, server_class=GuardedServer,
                request_handler=GuardedRequestHandler, ssl_context=self.ssl_context,
            ))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"DICOM port {dicom.port} on {dicom.bind} is already in use (another node "
                    "or DICOM server?): stop it, or set dicom.port (MAMMOGATE_DICOM__PORT) to a "
                    "free port"
                ) from exc
            raise StartupError(
                f"cannot listen for DICOM on {dicom.bind}:{dicom.port} ({exc.strerror}): check "
                "dicom.bind and dicom.port"
            ) from exc
        server.dicom = dicom
        server.limits = AssociationLimits(
            maximum_associations=dicom.maximum_associations,
            maximum_associations_per_host=dicom.maximum_associations_per_host,
            max_connections=dicom.max_connections,
            association_request_seconds=dicom.association_request_seconds,
            network_timeout=dicom.network_timeout,
            maximum_pdu_size=dicom.maximum_pdu_size,
        )
        server.policy = self.policy
        server.receiving_folder = self.service.spool.receiving_folder()
        server.stores = self.service  # C-STOREs served on the DUL thread
        server.on_refused_connection = self._on_refused_connection  # type: ignore[method-assign]  # the SCP audits
        self.ae._servers.append(server)  # as start_server does: the server's shutdown unregisters it
        threading.Thread(target=server.serve_forever, name="dicom-acceptor", daemon=True).start()
        self.server = server
        host, port = server.server_address[:2]
        log.info(
            "DICOM SCP %s listening on %s:%s (%s; allowed calling AE titles: %s)",
            " / ".join(self.policy.listening), host, port, describe_tls(dicom),
            self._describe_peers(),
        )
        return str(host), int(port)

    def _describe_peers(self) -> str:
        if self.policy.accepts_any_caller:
            return "any"
        return ", ".join(
            p.ae_title + (f" from {'/'.join(p.hosts)}" if p.hosts else "")
            for p in self.policy.peers.values()
        )

    def _on_refused_connection(self, host: str, reason: str) -> None:
        count_association("connection_refused")
        self._audit("connection-refused", "dicom:", host, reason)

    def _audit(self, action: str, actor: str, target: str, detail: str) -> None:
        try:
            with self.db.session() as session:
                audit(session, actor=actor, action=action, target=target, detail=detail)
        except SQLAlchemyError:
            log.exception("could not record %s from %s", action, target)

    # -- association history --------------------------------------------------------------

    def _record(self, assoc: Any, *, accepted: bool, reason: str = "") -> int | None:
        requestor = assoc.requestor
        primitive = requestor.primitive
        called = str(getattr(primitive, "called_ae_title", "") or "").strip()
        try:
            with self.db.session() as session:
                row = AssociationRecord(
                    requested_at=utcnow(),
                    calling_ae_title=str(requestor.ae_title or "").strip()[:16],
                    called_ae_title=called[:16],
                    address=str(requestor.address)[:64],
                    port=int(requestor.port or 0),
                    accepted=accepted,
                    outcome="open" if accepted else "rejected",
                    reason=reason,
                    security=_security(assoc)[:255],
                    ended_at=None if accepted else utcnow(),
                )
                session.add(row)
                session.flush()
                return row.id
        except SQLAlchemyError:
            log.exception("could not record the association from %s", requestor.address)
            return None

    def _on_accepted(self, event: evt.Event) -> None:
        assoc = event.assoc
        log.info(
            "association accepted: %s -> %s from %s:%s",
            str(assoc.requestor.ae_title).strip(), str(assoc.acceptor.ae_title).strip(),
            assoc.requestor.address, assoc.requestor.port,
        )
        _counts(assoc)
        count_association("accepted")
        assoc.mammogate_history_id = self._record(assoc, accepted=True)  # type: ignore[attr-defined]

    def _on_rejected(self, event: evt.Event) -> None:
        """Log, audit and record a rejected association: who called, from where, and why."""
        primitive = event.assoc.acceptor.primitive if event.assoc.acceptor else None
        reason = getattr(event.assoc, "guard_reason", "") or str(
            getattr(primitive, "reason_str", "") or "see the association policy"
        )
        calling = str(event.assoc.requestor.ae_title).strip()
        address = str(event.assoc.requestor.address)
        if not getattr(event.assoc, "guard_reason", ""):  # the guard logs its own
            log.warning("association from %s (%s) rejected: %s", calling, address, reason)
        count_association("rejected")
        self._audit("association-rejected", f"dicom:{calling}", address, reason)
        self._record(event.assoc, accepted=False, reason=reason)

    def _on_closed(self, event: evt.Event) -> None:
        history_id = getattr(event.assoc, "mammogate_history_id", None)
        if history_id is None:
            return
        counts = _counts(event.assoc)
        try:
            with self.db.session() as session:
                session.execute(
                    update(AssociationRecord)
                    .where(AssociationRecord.id == history_id)
                    .values(ended_at=utcnow(), outcome=counts.outcome,
                            instances_stored=counts.stored, instances_refused=counts.refused)
                )
        except SQLAlchemyError:
            log.exception("could not record the end of association %d", history_id)
        log.info("association %d from %s ended (%s): %d stored, %d refused", history_id,
                 str(event.assoc.requestor.ae_title).strip(), counts.outcome, counts.stored,
                 counts.refused)

    def refresh_policy(self) -> None:
        policy = load_policy(self.settings, self.db)
        if policy.accepts_any_caller and not self.policy.accepts_any_caller \
                and not self._may_accept_any():
            log.error(
                "the database now lists no allowed calling AE titles while DICOM listens on %s: "
                "keeping the previous list (%s) rather than accepting any caller",
                self.settings.dicom.bind, self._describe_peers(),
            )
            return
        if policy.peers != self.policy.peers:
            self.policy = policy
            if self.server is not None:
                self.server.policy = policy
            log.info("allowed calling AE titles now: %s", self._describe_peers())

    def _may_accept_any(self) -> bool:
        """The one calling-AE rule: an empty list of peers (any caller) only where
        dicom.accept_any_calling_ae says so, or where the port is reachable from this machine
        alone. The file's settings are checked against it when loaded; the database's list
        at start (:meth:`check_policy`) and at each refresh (:meth:`refresh_policy`)."""
        dicom = self.settings.dicom
        return dicom.accept_any_calling_ae or dicom.binds_loopback

    def check_policy(self) -> None:
        """Refuse to start on a database that lists no allowed calling AE titles where the
        rule wants some."""
        if self.policy.accepts_any_caller and not self._may_accept_any():
            raise PolicyError(
                f"dicom.bind = {self.settings.dicom.bind!r} but the database lists no allowed "
                "calling AE titles (the file's dicom.allowed_calling_ae_titles seeds the "
                "database only on first start: run `mammogate config apply`), and "
                "dicom.accept_any_calling_ae is false"
            )

    def on_idle(self) -> None:
        """Periodic duties (every dicom.refresh_seconds, in a loop of the SCP's role): the
        peers read again, journalled instances the database refused before tried again."""
        self.refresh_policy()
        self.service.retry_backlog()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.service.close()


def _security(assoc: Any) -> str:
    """How the association's connection is secured: "" in plain TCP."""
    raw = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    return peer_summary(raw) if isinstance(raw, ssl.SSLSocket) else ""


def _on_released(event: evt.Event) -> None:
    _counts(event.assoc).outcome = "released"


def _on_aborted(event: evt.Event) -> None:
    _counts(event.assoc).outcome = "aborted"
