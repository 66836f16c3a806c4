"""Association guard: no connection, idle association or slow sender can hold the DICOM service.

pynetdicom counts every open connection as an association, starts a thread for it and reads a
PDU byte by byte for as long as its sender trickles; these classes put bounds on that:

- ``GuardedServer`` refuses (closes) a connection beyond ``dicom.max_connections`` at once;
- a connection that has not sent its A-ASSOCIATE-RQ within ``dicom.association_request_seconds``
  is closed (the ARTIM timer, and the read deadline below);
- ``GuardedACSE`` counts only associations whose peer has sent an A-ASSOCIATE-RQ towards
  ``dicom.maximum_associations``, and those of one host towards
  ``dicom.maximum_associations_per_host``: above either, A-ASSOCIATE-RJ "local limit exceeded"
  (rejected-transient, so the sender tries again later). A flood of silent sockets therefore
  never takes the slots of real modalities;
- ``GuardedSocket`` refuses a PDU longer than the maximum PDU the node announced (plus the
  P-DATA item headers) before reading it, and gives a whole PDU ``dicom.network_timeout`` to
  arrive (``association_request_seconds`` before the association is requested): one byte every
  few seconds does not keep a connection alive;
- established associations idle for ``dicom.network_timeout`` are dropped (pynetdicom's idle
  timer);
- with TLS (``dicom.tls``) the handshake runs in the connection's own thread, not in the
  accepting loop (where pynetdicom does it, so one silent client would stop the port), within
  ``dicom.association_request_seconds``, and a connection in its handshake counts towards
  ``dicom.max_connections``; a failed handshake is logged with the peer's address and the
  reason and reported to ``on_refused_connection``. The PDU bound and read deadlines apply to
  the decrypted stream as to a plain one.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from mammogate.config.settings import DicomSettings
from mammogate.dicom_node import tls
from mammogate.dicom_node.policy import AssociationPolicy
from mammogate.dicom_node.receive import ServedStores, SpoolingDIMSE

log = logging.getLogger(__name__)

ASSOCIATION_PDU_LIMIT = 1 << 20  # A-ASSOCIATE-RQ and other non-data PDUs: far below this
PDU_HEADER_SLACK = 1024  # P-DATA item headers on top of the announced maximum
RECV_AHEAD_BYTES = 1 << 20  # a PDU's buffer grows by at most this before its bytes come


@dataclass(frozen=True)
class AssociationLimits:
    maximum_associations: int
    maximum_associations_per_host: int
    max_connections: int
    association_request_seconds: float
    network_timeout: float
    maximum_pdu_size: int  # what the node announces; 0 would be unlimited


def _requested(assoc: Any) -> bool:
    """Whether the peer of an association has sent its A-ASSOCIATE-RQ and the association has
    not ended: one released or aborted no longer counts against the limits, though its thread
    may still be finishing (recording its end), or a modality sending studies one association
    after another would be refused by its own previous association."""
    if getattr(assoc.requestor, "primitive", None) is None:
        return False
    return not (assoc.is_released or assoc.is_aborted or assoc.is_rejected)


class GuardedSocket(AssociationSocket):
    """An association socket with a PDU size bound and a per-PDU read deadline."""

    limits: AssociationLimits

    def recv(self, nr_bytes: int) -> bytearray:
        requested = _requested(self._assoc)
        if requested:
            bound = self.limits.maximum_pdu_size + PDU_HEADER_SLACK
        else:  # nothing but an A-ASSOCIATE-RQ can come yet
            bound = ASSOCIATION_PDU_LIMIT
        if nr_bytes > bound:
            raise OSError(f"a PDU of {nr_bytes} bytes exceeds the maximum of {bound}")
        deadline = time.monotonic() + (
            self.limits.network_timeout if requested else self.limits.association_request_seconds
        )
        assert self.socket is not None
        previous = self.socket.gettimeout()
        # Received in place: a buffer of the PDU's size, up to RECV_AHEAD_BYTES at a time (a
        # peer that announces a large PDU and sends nothing holds no more than that).
        data = bytearray(min(nr_bytes, RECV_AHEAD_BYTES))
        got = 0
        try:
            while got < nr_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{nr_bytes} bytes not received in time ({got} came)")
                if got == len(data):
                    data.extend(bytes(min(nr_bytes - got, RECV_AHEAD_BYTES)))
                self.socket.settimeout(left)
                with memoryview(data) as view:
                    count = self.socket.recv_into(view[got:])
                if not count:
                    del data[got:]
                    return data
                got += count
        finally:
            self.socket.settimeout(previous)
        return data


# How long the DUL thread waits for the socket (or a primitive to send, which wakes it at once),
# and the association thread for a decoded message, before they look at their other duties
# (release, abort, timers, stop) again.
PROMPT_WAIT_SECONDS = 0.02
MESSAGE_WAIT_SECONDS = 0.005


class PromptDUL(DULServiceProvider):
    """pynetdicom's DUL thread, woken by the socket or by a primitive to send instead of
    sleeping a millisecond between looks: an incoming PDU is read the moment it arrives, and a
    C-STORE response is sent the moment the association thread hands it over (pynetdicom's loop
    sleeps ``_run_loop_delay`` and then polls both). Each C-STORE round trip otherwise waits out
    those sleeps on both of its threads."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._run_loop_delay = 0  # the wait is in _is_transport_event, on the socket
        # A pipe that send_pdu (the association thread) writes a byte to and the DUL thread's
        # select reads: a response is sent the moment it is queued. It lives as long as the
        # reactor runs; the lock keeps a late send_pdu from writing to a closed (and perhaps
        # reused) descriptor.
        self._wake_read = self._wake_write = -1
        self._wake_lock = threading.Lock()

    def run_reactor(self) -> None:
        with self._wake_lock:
            self._wake_read, self._wake_write = os.pipe()
            os.set_blocking(self._wake_read, False)
            os.set_blocking(self._wake_write, False)
        try:
            super().run_reactor()
        finally:
            self._flush()  # an association that ended: its journalled instances' rows
            with self._wake_lock:
                os.close(self._wake_read)
                os.close(self._wake_write)
                self._wake_read = self._wake_write = -1

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        with self._wake_lock:
            if self._wake_write >= 0:
                try:
                    os.write(self._wake_write, b"\0")
                except BlockingIOError:
                    pass  # the pipe is full: a wake-up is pending already

    def _is_transport_event(self) -> bool:
        """Wait for the socket (or a primitive to send); P-DATA on an established association
        is read and served here, one PDU after another, without going back through
        pynetdicom's loop (its event queue, a ``sleep(0)`` and a second ``select`` per PDU)
        while nothing else is queued; anything else, pynetdicom reads."""
        dimse = self.assoc.dimse
        served = False
        while (self.event_queue.empty() and self.to_provider_queue.empty()
               and not self._kill_thread):
            if isinstance(dimse, SpoolingDIMSE) and dimse.has_pending():
                # instances answered from the journal: their rows and files once the peer
                # pauses (a sender streaming images sends the next within a fraction of this)
                if not self._wait_readable(dimse.batch_idle_seconds()):
                    dimse.flush_pending(now=False)
            if not self._wait_readable(PROMPT_WAIT_SECONDS) or not self._read_p_data():
                break  # nothing yet (timers, stop), or not data: pynetdicom looks
            served = True
            self._idle_timer.restart()
        return served or bool(super()._is_transport_event())

    def _read_pdu_data(self) -> None:
        if self._read_p_data():
            return
        super()._read_pdu_data()
        # anything but data (a release, an abort, a closed connection) comes after the rows
        # of what was answered before it: flushed before the state machine acts on it
        events = self.event_queue.queue
        if events and events[-1] != "Evt10":
            self._flush()

    def _read_p_data(self) -> bool:
        """A P-DATA-TF PDU on an established association, read and split into its
        presentation data values by hand and handed to the DIMSE provider -- what pynetdicom
        does (Sta6 + Evt10: DT-2, no change of state) without building PDU objects or going
        through its event queue. False, having read nothing, for anything else (the next PDU
        is not P-DATA, or not all of its header is here yet, TLS, someone listening for PDU
        events): pynetdicom reads it."""
        dimse = self.assoc.dimse
        wrapper = self.socket
        raw = getattr(wrapper, "socket", None)
        if (not isinstance(dimse, SpoolingDIMSE) or dimse.stores is None or wrapper is None
                or type(raw) is not socket.socket
                or self.state_machine.current_state != "Sta6" or not self.event_queue.empty()
                or self.assoc.get_handlers(evt.EVT_PDU_RECV)
                or self.assoc.get_handlers(evt.EVT_DATA_RECV)):
            return False
        try:
            head = raw.recv(6, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False  # pynetdicom's read reports it
        if len(head) < 6 or head[0] != 0x04:
            return False
        length = int.from_bytes(head[2:6], "big")
        try:
            body = self._read_body(wrapper, raw, length)
        except (OSError, TimeoutError) as exc:
            log.warning("association from %s: connection closed inside a PDU (%s)",
                        self.assoc.requestor.address, exc)
            self.event_queue.put("Evt17")  # transport closed, as pynetdicom's read says
            return True
        if len(body) != length:
            self.event_queue.put("Evt17")
            return True
        values = split_pdvs(body)
        if values is None:
            self.event_queue.put("Evt19")  # an invalid PDU, as pynetdicom's decoder says
            return True
        primitive = P_DATA()
        primitive.presentation_data_value_list = values  # type: ignore[assignment]  # lists, as pynetdicom checks
        dimse.receive_primitive(primitive)
        return True

    @staticmethod
    def _read_body(wrapper: Any, raw: socket.socket, length: int) -> bytes | bytearray:
        """The PDU whose 6-byte header was peeked: its body. A PDU within the peer's bound
        and ``RECV_AHEAD_BYTES`` is read with one call when it is all here (the common case);
        the rest of one that is not, and any other, through the guarded socket (its size bound
        and its per-PDU deadline)."""
        limits = getattr(wrapper, "limits", None)
        whole = 6 + length
        if (isinstance(limits, AssociationLimits) and whole <= RECV_AHEAD_BYTES
                and length <= limits.maximum_pdu_size + PDU_HEADER_SLACK):
            buffer = bytearray(whole)
            try:
                got = raw.recv_into(buffer, whole, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                got = 0
            if got < whole:
                del buffer[got:]
                buffer += wrapper.recv(whole - got)
            return buffer[6:]
        wrapper.recv(6)
        return wrapper.recv(length)

    def _flush(self) -> None:
        dimse = self.assoc.dimse
        if isinstance(dimse, SpoolingDIMSE):
            dimse.flush_pending()

    def _wait_readable(self, timeout: float) -> bool:
        """Wait for the socket or a wake-up; whether anything came."""
        wrapper = self.socket
        raw = getattr(wrapper, "socket", None)
        if raw is None or not getattr(wrapper, "_is_connected", False):
            time.sleep(min(timeout, 0.001))
            return False
        if isinstance(raw, ssl.SSLSocket) and raw.pending():
            return True  # decrypted bytes buffered already
        try:
            ready, _, _ = select.select([raw, self._wake_read], [], [], timeout)
        except (OSError, ValueError):
            return True  # closed meanwhile: pynetdicom's own check reports it
        if self._wake_read in ready:
            try:
                os.read(self._wake_read, 4096)
            except BlockingIOError:
                pass  # drained already
        return bool(ready)


def split_pdvs(body: bytes | bytearray) -> list[list[Any]] | None:
    """The presentation data value items of a P-DATA-TF PDU's body (PS3.8 9.3.5): (context
    ID, message control header and fragment) each; None if an item's length is impossible."""
    values: list[list[Any]] = []
    offset, end = 0, len(body)
    view = memoryview(body)
    while offset < end:
        if end - offset < 6:
            return None
        length = int.from_bytes(view[offset:offset + 4], "big")
        if length < 2 or offset + 4 + length > end:
            return None
        values.append([body[offset + 4], bytes(view[offset + 5:offset + 4 + length])])
        offset += 4 + length
    return values or None


class PromptAssociation(Association):
    """An acceptor association whose reactor waits for the next decoded message (up to
    ``MESSAGE_WAIT_SECONDS``, see :func:`make_prompt`) instead of sleeping a millisecond
    before each look: the next C-STORE request is served as soon as it is decoded.

    The loop is pynetdicom 3's ``Association._run_reactor`` without that sleep (pinned by
    ``pynetdicom>=3.0,<4``; ``tests/integration/test_scp.py`` and ``test_hostile_input.py``
    exercise release, abort and the idle timeout through it)."""

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            if isinstance(self.dimse, SpoolingDIMSE):
                self.dimse.discard_all()

    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)  # waits briefly: make_prompt
            if msg:
                self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # EVT_ACSE_RECV for its subscribers
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                log.warning("association from %s: network timeout (dicom.network_timeout)",
                            self.requestor.address)
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


def make_prompt(assoc: Association) -> None:
    """Replace the association's DUL by a :class:`PromptDUL` (before it starts) and let its
    reactor wait for the next decoded message rather than poll for it."""
    assoc.dul = PromptDUL(assoc)
    # the timers live in the DUL: set them again on the new one
    assoc.acse_timeout = assoc.acse_timeout
    assoc.network_timeout = assoc.network_timeout
    dimse = assoc.dimse
    queue_get = dimse.msg_queue.get

    def get_msg(block: bool = False) -> Any:
        try:
            return queue_get(timeout=dimse.dimse_timeout if block else MESSAGE_WAIT_SECONDS)
        except queue.Empty:
            return None, None

    dimse.get_msg = get_msg  # type: ignore[method-assign]


class GuardedACSE(ACSE):
    """Rejects an association the policy refuses (with the reason) or over the node's limits,
    counting requested associations only."""

    limits: AssociationLimits
    policy: AssociationPolicy | None = None

    def _reject(self, reason: str, rsd: tuple[int, int, int]) -> None:
        log.warning("association from %s (%s) rejected: %s",
                    self.requestor.ae_title, self.assoc.requestor.address, reason)
        self.assoc.guard_reason = reason  # type: ignore[attr-defined]
        self.send_reject(*rsd)
        evt.trigger(self.assoc, evt.EVT_REJECTED, {})
        self.assoc.kill()

    def _negotiate_as_acceptor(self) -> None:
        host = str(self.assoc.requestor.address)
        request = self.requestor.primitive
        assert request is not None
        # pynetdicom sets these only inside its own negotiation; the handlers need them first
        self.requestor.ae_title = request.calling_ae_title
        called = str(request.called_ae_title).strip()
        policy = self.policy
        if policy is not None:
            refusal = policy.verdict(str(request.calling_ae_title), called, host)
            if refusal is not None:
                self._reject(refusal.reason, (0x01, 0x01, refusal.diagnostic))
                return
            self.acceptor.ae_title = called  # answer as the AE title that was called
        others = [
            a for a in self.assoc.ae.active_associations
            if a is not self.assoc and a.is_acceptor and _requested(a)
        ]
        same_host = [a for a in others if str(a.requestor.address) == host]
        reason = ""
        if len(others) >= self.limits.maximum_associations:
            reason = f"dicom.maximum_associations ({self.limits.maximum_associations}) reached"
        elif len(same_host) >= self.limits.maximum_associations_per_host:
            reason = f"dicom.maximum_associations_per_host ({self.limits.maximum_associations_per_host}) reached for {host}"
        if not reason:
            super()._negotiate_as_acceptor()
            return
        # rejected-transient, provider (presentation), local limit exceeded: try again later
        self._reject(reason, (0x02, 0x03, 0x02))


class GuardedRequestHandler(RequestHandler):
    def handle(self) -> None:
        server: GuardedServer = self.server  # type: ignore[assignment]
        host = str(self.client_address[0])
        if server.open_connections() >= server.limits.max_connections:
            reason = f"dicom.max_connections ({server.limits.max_connections}) open"
            log.warning("connection from %s closed: %s", host, reason)
            server.on_refused_connection(host, reason)
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("connection from %s already closed", host)
            return
        try:
            # Nagle would hold each small C-STORE-RSP back until the peer's delayed ACK
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            log.debug("TCP_NODELAY not set for %s: %s", host, exc)
        if server.ssl_context is not None:
            with server.handshaking():
                try:
                    self.request = tls.handshake(self.request, server.ssl_context, server.dicom)
                except tls.TlsHandshakeError as exc:
                    log.warning("TLS handshake with %s failed: %s", host, exc)
                    server.on_refused_connection(host, f"TLS handshake failed: {exc}")
                    return
            assert isinstance(self.request, ssl.SSLSocket)
            log.info("TLS from %s: %s", host, tls.peer_summary(self.request))
        super().handle()

    def _create_association(self) -> Any:
        """pynetdicom's ``RequestHandler._create_association`` with the guarded socket and ACSE
        (a socket wrapper announces the connection as it is made, so it is made once)."""
        from copy import deepcopy
        from datetime import datetime

        from pynetdicom._globals import MODE_ACCEPTOR

        server: GuardedServer = self.server  # type: ignore[assignment]
        assoc = PromptAssociation(self.ae, MODE_ACCEPTOR)
        if server.receiving_folder is not None:  # C-STORE datasets straight towards the spool
            assoc.dimse = SpoolingDIMSE(assoc, server.receiving_folder,
                                        server.dicom.max_dataset_bytes, server.stores)
        make_prompt(assoc)
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        guarded = GuardedSocket.__new__(GuardedSocket)
        guarded.limits = server.limits
        GuardedSocket.__init__(guarded, assoc, client_socket=self.request)
        assoc.set_socket(guarded)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(server.contexts)
        assoc.requestor.address_info = self.remote
        quiet = _pynetdicom_quiet()
        if quiet:
            for log_event, log_handler in STANDARD_LOG_HANDLERS:
                assoc.unbind(log_event, log_handler)
        for event in server._handlers:
            if event.is_intervention and server._handlers[event]:
                assoc.bind(event, *server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in server._handlers[event]:
                    if quiet and (event, handler[0]) in STANDARD_LOG_HANDLERS:  # type: ignore[index]
                        continue
                    assoc.bind(event, handler[0], handler[1])  # type: ignore[index]
        acse = GuardedACSE(assoc)
        acse.limits = server.limits
        acse.policy = server.policy
        assoc.acse = acse
        assoc.acse_timeout = server.limits.association_request_seconds  # ARTIM: the request must come soon
        return assoc


# pynetdicom's logging handlers, bound to every association: they format each PDU and DIMSE
# message (a quarter of a millisecond per C-STORE) for log lines at INFO and DEBUG, which the
# node discards (``cli`` sets the pynetdicom logger to WARNING). Left bound when that logger
# is turned up to INFO or DEBUG for troubleshooting.
STANDARD_LOG_HANDLERS = frozenset({
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
})


def _pynetdicom_quiet() -> bool:
    return not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)


class GuardedServer(ThreadedAssociationServer):
    limits: AssociationLimits
    policy: AssociationPolicy | None = None  # replaced as a whole when the peers change
    dicom: DicomSettings  # for the TLS handshake's deadline and its explanations
    # where large C-STORE datasets are written as they arrive (dicom_node.receive); None:
    # pynetdicom's own buffer
    receiving_folder: Path | None = None
    # the SCP's store service, for C-STOREs served on the DUL thread; None: pynetdicom's reactor
    stores: ServedStores | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._handshakes = 0
        self._handshakes_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only: pynetdicom would run the TLS handshake here, in the accepting loop."""
        assert self.socket is not None
        return self.socket.accept()

    @contextmanager
    def handshaking(self) -> Iterator[None]:
        with self._handshakes_lock:
            self._handshakes += 1
        try:
            yield
        finally:
            with self._handshakes_lock:
                self._handshakes -= 1

    def open_connections(self) -> int:
        """Associations (requested or not) and connections still in their TLS handshake."""
        return len(self.active_associations) + self._handshakes

    def on_refused_connection(self, host: str, reason: str) -> None:
        """Called for a connection closed over ``max_connections`` or in a failed TLS
        handshake (the SCP audits it)."""
