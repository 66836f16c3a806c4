"""Senders: deliver result objects to destinations, with retries and a dead-letter state.

A sender is a narrow seam: ``send(path, destination)`` returns or raises :class:`SendError`,
whose ``retryable`` tells the loop whether to try again later.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mammogate.config import Settings
from mammogate.db import Database, Delivery, DestinationRow, utcnow
from mammogate.db.queue import claim_delivery, give_up_abandoned_deliveries, retry_delay

log = logging.getLogger(__name__)


class SendError(Exception):
    def __init__(self, reason: str, *, retryable: bool):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Sender(Protocol):
    def send(self, path: Path, destination: DestinationRow) -> None: ...


# Warning statuses a C-STORE SCP may answer (PS3.4 GG.4.2 and PS3.7 C.4): the object is stored.
C_STORE_WARNINGS = frozenset({0x0001, 0x0107, 0x0116})


class DimseSender:
    """C-STORE SCU: one association per object."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def send(self, path: Path, destination: DestinationRow) -> None:
        try:
            ds = pydicom.dcmread(path)
        except (OSError, InvalidDicomError) as exc:
            raise SendError(f"cannot read {path.name}: {exc}", retryable=False) from exc
        dicom = self.settings.dicom
        ae = AE(ae_title=self.settings.sender_ae_title)
        ae.acse_timeout = dicom.acse_timeout
        ae.dimse_timeout = dicom.dimse_timeout
        ae.network_timeout = dicom.network_timeout
        syntaxes = [str(ds.file_meta.TransferSyntaxUID)]
        for fallback in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if fallback not in syntaxes:
                syntaxes.append(fallback)
        ae.add_requested_context(ds.SOPClassUID, syntaxes)
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
        if assoc.is_rejected:
            reason = getattr(assoc.acceptor.primitive, "reason_str", "rejected")
            raise SendError(
                f"association rejected by {destination.ae_title}: {reason}", retryable=True
            )
        if not assoc.is_established and assoc.rejected_contexts:
            raise SendError(
                f"{destination.ae_title} does not accept {ds.SOPClassUID.name} "
                f"({ds.SOPClassUID}): presentation context rejected",
                retryable=False,
            )
        if not assoc.is_established:
            raise SendError(
                f"cannot associate with {destination.ae_title} at "
                f"{destination.host}:{destination.port} (unreachable or aborted)",
                retryable=True,
            )
        try:
            status = assoc.send_c_store(ds)
        except ValueError as exc:  # pynetdicom: no accepted presentation context for the class
            raise SendError(
                f"{destination.ae_title} does not accept {ds.SOPClassUID.name} "
                f"({ds.SOPClassUID}): {exc}",
                retryable=False,
            ) from exc
        finally:
            assoc.release()
        if not status or "Status" not in status:
            raise SendError(
                f"no C-STORE response from {destination.ae_title} (timeout or abort)",
                retryable=True,
            )
        code = int(status.Status)
        comment = str(status.get("ErrorComment", "")) or "no error comment"
        if code == 0x0000:
            return
        if (code & 0xF000) == 0xB000 or code in C_STORE_WARNINGS:
            log.warning("%s stored %s with warning status 0x%04X: %s", destination.ae_title,
                        ds.SOPInstanceUID, code, comment)
            return
        raise SendError(
            f"{destination.ae_title} answered C-STORE status 0x{code:04X}: {comment}",
            # Refused, out of resources (0xA7xx): try again later. A dataset the peer finds
            # wrong for its class (0xA9xx) or cannot understand (0xCxxx) will not get better.
            retryable=(code & 0xFF00) == 0xA700,
        )


class SenderLoop:
    """Claims due deliveries and sends them until stopped."""

    def __init__(self, settings: Settings, db: Database, worker_id: str):
        self.settings = settings
        self.db = db
        self.worker_id = worker_id
        self.senders: dict[str, Sender] = {"dimse": DimseSender(settings)}
        self.stopping = threading.Event()

    def run(self) -> None:
        log.info("sender %s started", self.worker_id)
        while not self.stopping.is_set():
            try:
                worked = self.run_once()
            except SQLAlchemyError as exc:
                log.error("sender: database error, retrying: %s", exc.__class__.__name__)
                worked = False
            if not worked:
                self.stopping.wait(self.settings.sender.poll_seconds)
        log.info("sender %s stopped", self.worker_id)

    def run_once(self) -> bool:
        cfg = self.settings.sender
        with self.db.session() as session:
            for abandoned in give_up_abandoned_deliveries(session, cfg.max_attempts):
                log.error("delivery %d given up: %s", abandoned.id, abandoned.last_error)
            delivery = claim_delivery(session, self.worker_id, cfg.lease_seconds, cfg.max_attempts)
            if delivery is None:
                return False
            delivery_id = delivery.id
            destination = delivery.destination
            report = delivery.report
            session.expunge_all()
        path = Path(report.path)
        try:
            sender = self.senders.get(destination.kind)
            if sender is None:
                raise SendError(f"no sender for destination kind {destination.kind!r}", retryable=False)
            if not destination.enabled:
                raise SendError(f"destination {destination.name} is disabled", retryable=False)
            sender.send(path, destination)
        except SendError as exc:
            self._failed(delivery_id, exc)
            return True
        except Exception as exc:  # noqa: BLE001 -- one bad delivery must not stop the sender
            log.exception("delivery %d: unexpected error", delivery_id)
            self._failed(delivery_id, SendError(f"internal error: {type(exc).__name__}: {exc}",
                                                retryable=True))
            return True
        with self.db.session() as session:
            row = self._owned(session, delivery_id)
            if row is None:
                return True
            row.state = "delivered"
            row.delivered_at = utcnow()
            row.lease_until = None
            row.last_error = ""
        log.info(
            "delivered %s %s to %s (%s)",
            report.kind, report.sop_instance_uid, destination.name, destination.ae_title,
        )
        return True

    def _owned(self, session: Session, delivery_id: int) -> Delivery | None:
        row = session.get(Delivery, delivery_id)
        if row is None or row.state != "sending" or row.locked_by != self.worker_id:
            log.warning("delivery %d was taken over (lease expired); not recording", delivery_id)
            return None
        return row

    def _failed(self, delivery_id: int, exc: SendError) -> None:
        cfg = self.settings.sender
        with self.db.session() as session:
            row = self._owned(session, delivery_id)
            if row is None:
                return
            row.last_error = exc.reason
            row.lease_until = None
            if not exc.retryable or row.attempts >= cfg.max_attempts:
                row.state = "dead"
                log.error(
                    "delivery %d is dead after %d attempts: %s", row.id, row.attempts, exc.reason
                )
                return
            delay = retry_delay(row.attempts, cfg.retry_initial_seconds, cfg.retry_max_seconds)
            row.state = "pending"
            row.next_attempt_at = utcnow() + timedelta(seconds=delay)
            log.warning(
                "delivery %d failed (attempt %d), retrying in %.1f s: %s",
                row.id, row.attempts, delay, exc.reason,
            )

