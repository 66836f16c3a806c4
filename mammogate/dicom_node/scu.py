"""The DIMSE backend of the outbox: C-STORE to a DICOM peer, and C-ECHO to test it.

It implements :class:`mammogate.delivery.Destination`; the composition root registers it for
destinations of kind ``dimse``.
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from mammogate.config import Settings
from mammogate.db import DestinationRow
from mammogate.delivery import SendError

log = logging.getLogger(__name__)


VERIFICATION = "1.2.840.10008.1.1"  # the Verification SOP Class (C-ECHO)

# Warning statuses a C-STORE SCP may answer (PS3.4 GG.4.2 and PS3.7 C.4): the object is stored.
C_STORE_WARNINGS = frozenset({0x0001, 0x0107, 0x0116})


def _no_delay(assoc: Association) -> None:
    """Turn Nagle off on the association's socket (pynetdicom leaves it on): the C-STORE
    request, its dataset and the release are small writes that would otherwise each wait for
    the peer's delayed ACK (about 40 ms on Linux). Measured in benchmarks/delivery.py."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # the peer closed it already: the send reports that
            log.debug("cannot set TCP_NODELAY: %s", exc)


class DimseDestination:
    """C-STORE SCU: one association per object."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def _associate(self, destination: DestinationRow, sop_class: str,
                   syntaxes: list[str]) -> Association:
        dicom = self.settings.dicom
        ae = AE(ae_title=self.settings.sender_ae_title)
        ae.acse_timeout = dicom.acse_timeout
        ae.dimse_timeout = dicom.dimse_timeout
        ae.network_timeout = dicom.network_timeout
        ae.connection_timeout = dicom.acse_timeout  # TCP connect: not the OS's two minutes
        ae.add_requested_context(sop_class, syntaxes)
        tls_args = (self._tls_context(destination), destination.host) if destination.tls else None
        # a failed TLS handshake ends as an association that is not established (pynetdicom
        # logs the error): see _tls_diagnosis
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                             tls_args=tls_args)
        if assoc.is_established:
            _no_delay(assoc)
        return assoc

    def _tls_diagnosis(self, destination: DestinationRow) -> str:
        """Why a TLS association did not start, if the TLS handshake is why (pynetdicom only
        logs it): one more handshake, on the failure path only."""
        if not destination.tls:
            return ""
        context = self._tls_context(destination)
        try:
            with socket.create_connection((destination.host, destination.port),
                                          timeout=self.settings.dicom.acse_timeout) as raw, \
                    context.wrap_socket(raw, server_hostname=destination.host):
                return ""
        except ssl.SSLError as exc:
            return f"; TLS handshake failed: {exc.reason or exc}"
        except OSError:
            return ""

    @staticmethod
    def _tls_context(destination: DestinationRow) -> ssl.SSLContext:
        """Verify the peer against the CA file (else the system's) and its host name; present
        our certificate when one is configured."""
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=destination.tls_ca_file or None)
            if destination.tls_cert_file:
                context.load_cert_chain(destination.tls_cert_file, destination.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise SendError(f"destination {destination.name}: cannot load its TLS files: {exc}",
                            retryable=False) from exc
        return context

    def test(self, destination: DestinationRow) -> str:
        """C-ECHO: the peer accepts our AE title and answers."""
        where = f"{destination.ae_title} at {destination.host}:{destination.port}"
        assoc = self._associate(destination, VERIFICATION, [ExplicitVRLittleEndian,
                                                            ImplicitVRLittleEndian])
        if assoc.is_rejected:
            reason = getattr(assoc.acceptor.primitive, "reason_str", "rejected")
            raise SendError(f"{where} rejected the association from "
                            f"{self.settings.sender_ae_title}: {reason}", retryable=True)
        if not assoc.is_established:
            raise SendError(f"cannot associate with {where} (unreachable or aborted)"
                            f"{self._tls_diagnosis(destination)}", retryable=True)
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if not status or "Status" not in status:
            raise SendError(f"no C-ECHO response from {where}", retryable=True)
        if int(status.Status) != 0:
            raise SendError(f"{where} answered C-ECHO status 0x{int(status.Status):04X}",
                            retryable=True)
        return f"C-ECHO to {where} as {self.settings.sender_ae_title}: success"

    def send(self, path: Path, destination: DestinationRow) -> None:
        try:
            ds = pydicom.dcmread(path)
        except (OSError, InvalidDicomError) as exc:
            raise SendError(f"cannot read {path.name}: {exc}", retryable=False) from exc
        syntaxes = [str(ds.file_meta.TransferSyntaxUID)]
        for fallback in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if fallback not in syntaxes:
                syntaxes.append(fallback)
        assoc = self._associate(destination, ds.SOPClassUID, syntaxes)
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
                f"{destination.host}:{destination.port} (unreachable or aborted)"
                f"{self._tls_diagnosis(destination)}",
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
