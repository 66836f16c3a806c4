"""Receiving a C-STORE's dataset: in memory while it is small, streamed into the spool once it
is large, and bounded by ``dicom.max_dataset_bytes`` as it arrives.

pynetdicom joins every fragment of a dataset into one buffer, which the handler then copies
again (with the File Meta Information in front) and writes: for a 27 MB mammogram, several
passes over the bytes after the last one arrived. ``SpoolingDIMSE`` (installed on each
acceptor association by the guard, so the node's own SCU and any other pynetdicom user in the
process keep pynetdicom's behaviour) takes the data fragments of a C-STORE request as the DUL
thread decodes them into a :class:`ReceivedDataset`:

- the Part-10 preamble and File Meta Information (:func:`file_meta_bytes`, byte for byte what
  pynetdicom's ``Event.encoded_dataset()`` writes) come first;
- up to ``SPILL_BYTES`` it keeps the fragments in memory (the handler writes them to the spool
  as before);
- past that it writes them to ``<spool>/.receiving/.incoming-*.tmp`` as they arrive, hashing
  them on the way and starting the kernel's writeback every ``WRITEBACK_BYTES``, so that after
  the last fragment the handler has only an fsync of the tail, a rename and the database row
  left before Success (the file is the spool file: no copy);
- past ``dicom.max_dataset_bytes`` it keeps nothing more (and removes its file): the handler
  refuses the instance without the rest ever being held.

**One thread per C-STORE.** pynetdicom decodes each request's command set into a pydicom
dataset, queues the message to the association's reactor thread, calls the handler there, encodes
the response as a pydicom dataset and queues it back to the DUL thread to send: two hand-overs
between threads (each a wait for the GIL on a busy machine) and two pydicom datasets per image,
more time than a small image's durable store itself. When the SCP gives the provider its store
service (``stores``), a C-STORE request whose command set is well formed and whose presentation
context is accepted for its SOP class is served in the DUL thread as it arrives: the command set
read by hand (:func:`decode_command`), the dataset taken as above, the store function called, the
response encoded by hand (:func:`store_response_bytes`) and written to the socket. Anything
else -- another service, a malformed or unusual command, a peer listening for DIMSE events --
takes pynetdicom's path unchanged: the handler then finds the dataset by the request's Message
ID (``SpoolingDIMSE.take``). Datasets of an association that ends mid-transfer are removed
when it ends (``SpoolingDIMSE.discard_all``). A crash leaves at most a temporary file, which
``Spool.sweep_incoming`` removes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import os
import struct
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

log = logging.getLogger(__name__)

SPILL_BYTES = 1 << 20  # a dataset larger than this goes to a spool file as it arrives
WRITEBACK_BYTES = 8 << 20  # then the kernel is asked to start writing every this many bytes
DUL_STOP_SECONDS = 2.0  # how long an ended association's dataset waits for its DUL thread
MAX_UNANSWERED = 4  # datasets kept for the handler (one, without asynchronous operations)
PREAMBLE = b"\x00" * 128 + b"DICM"


# -- the File Meta Information, encoded by hand -------------------------------------------------

def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    head = tag.to_bytes(4, "little")  # group, element: little endian each, group first
    head = head[2:] + head[:2]
    if vr == b"OB":
        return head + vr + b"\x00\x00" + len(value).to_bytes(4, "little") + value
    return head + vr + len(value).to_bytes(2, "little") + value


def _ui(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b"\x00" if len(raw) % 2 else raw


def _sh(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


_VERSION = _element(0x00020001, b"OB", b"\x00\x01")
_IMPLEMENTATION = (_element(0x00020012, b"UI", _ui(str(PYNETDICOM_IMPLEMENTATION_UID)))
                   + _element(0x00020013, b"SH", _sh(PYNETDICOM_IMPLEMENTATION_VERSION)))


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """The encoded File Meta Information group that pynetdicom's ``encode_file_meta`` writes
    for a received C-STORE (without the preamble): version, Media Storage SOP Class and
    Instance UIDs, Transfer Syntax UID, pynetdicom's implementation UID and version name."""
    body = b"".join((
        _VERSION,
        _element(0x00020002, b"UI", _ui(sop_class_uid)),
        _element(0x00020003, b"UI", _ui(sop_instance_uid)),
        _element(0x00020010, b"UI", _ui(transfer_syntax)),
        _IMPLEMENTATION,
    ))
    return _element(0x00020000, b"UL", len(body).to_bytes(4, "little")) + body


# -- the C-STORE response's command set, encoded by hand --------------------------------------

def _implicit(tag: int, value: bytes) -> bytes:
    return (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little") \
        + len(value).to_bytes(4, "little") + value


def _lo(value: str) -> bytes:
    raw = value[:64].encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def store_response_bytes(sop_class_uid: str, sop_instance_uid: str, message_id: int,
                         status: int, error_comment: str = "") -> bytes:
    """The command set of a C-STORE-RSP (Implicit VR Little Endian) without Offending Element,
    as pynetdicom encodes it: Command Group Length, Affected SOP Class UID, Command Field 0x8001,
    Message ID Being Responded To, Command Data Set Type 0x0101 (none), Status, Error Comment
    (at most 64 characters, non-ASCII as ``?``), Affected SOP Instance UID (each UID and the
    comment only when there is one)."""
    body = b"".join((
        _implicit(0x00000002, _ui(sop_class_uid)) if sop_class_uid else b"",
        _implicit(0x00000100, (0x8001).to_bytes(2, "little")),
        _implicit(0x00000120, message_id.to_bytes(2, "little")),
        _implicit(0x00000800, (0x0101).to_bytes(2, "little")),
        _implicit(0x00000900, status.to_bytes(2, "little")),
        _implicit(0x00000902, _lo(error_comment)) if error_comment else b"",
        _implicit(0x00001000, _ui(sop_instance_uid)) if sop_instance_uid else b"",
    ))
    return _implicit(0x00000000, len(body).to_bytes(4, "little")) + body


def p_data_pdu(context_id: int, control: int, fragment: bytes) -> bytes:
    """A P-DATA-TF PDU of one presentation data value (PS3.8 9.3.5): PDU type 4, its length,
    the item's length, the context ID, the message control header, the fragment."""
    return struct.pack(">BBLLBB", 0x04, 0, len(fragment) + 6, len(fragment) + 2,
                       context_id, control) + fragment


# -- a C-STORE request's command set, read by hand ----------------------------------------

MAX_COMMAND_BYTES = 64 << 10  # a command set is a few hundred bytes; longer ones: pynetdicom's
C_STORE_RQ_FIELD = 0x0001
NO_DATASET = 0x0101


def decode_command(data: bytes) -> dict[int, bytes] | None:
    """The elements of a command set (group 0000, Implicit VR Little Endian) by element number,
    or None when it is not one that parses cleanly (pynetdicom then reads it, and answers it)."""
    elements: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < 8:
            return None
        group, element, length = struct.unpack_from("<HHL", data, offset)
        offset += 8
        if group != 0 or length > end - offset or element in elements:
            return None
        elements[element] = data[offset:offset + length]
        offset += length
    return elements


def _uid(value: bytes | None) -> str:
    return "" if value is None else value.rstrip(b"\x00 ").decode("ascii", "replace")


def _us(value: bytes | None) -> int | None:
    return int.from_bytes(value, "little") if value is not None and len(value) == 2 else None


@dataclass(frozen=True)
class StoreRequest:
    """A C-STORE request served on the DUL thread (what the store function needs of it)."""

    context_id: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


class ServedStores(Protocol):
    """What the SCP gives the DUL thread (``StoreService``)."""

    def store_served(self, assoc: Any, request: StoreRequest,
                     received: ReceivedDataset) -> tuple[int, str]:
        """Store one instance: (status, Error Comment or ""). Never raises."""

    @property
    def batch_idle_seconds(self) -> float:
        """How long the peer may pause before they are flushed."""

    def pending(self, assoc: Any) -> bool:
        """Whether instances answered Success wait to be flushed (``dicom_node.journal``)."""

    def flush_due(self, assoc: Any) -> bool:
        """Whether they should be flushed now, whatever the peer does next."""

    def prepare(self, assoc: Any) -> None:
        """Work ahead on the instance just answered while the peer sends the next (its spool
        file). Never raises."""

    def flush(self, assoc: Any, now: bool = True) -> None:
        """Flush them (rows and spool files); unless ``now``, only if the database is free.
        Never raises."""


# -- early writeback ---------------------------------------------------------------------------

_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None  # not Linux (glibc): the final fsync writes everything
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range of a file to disk, without waiting for it
    (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``): the fsync that follows has less to do.
    Durability still comes from that fsync; this is only a head start."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


# -- one dataset as it arrives -----------------------------------------------------------------

class ReceivedDataset:
    """A C-STORE's dataset as Part-10 bytes: in memory, or (past ``spill_bytes``) in a file
    under ``folder`` that was written, and hashed, as the fragments came."""

    def __init__(self, folder: Path, meta: bytes, *, max_bytes: int,
                 spill_bytes: int = SPILL_BYTES) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.spill_bytes = spill_bytes
        self.size = len(PREAMBLE) + len(meta)  # bytes of the Part-10 file so far
        self.complete = False
        self.too_large = False  # more than max_bytes came: nothing more is kept
        self.error: OSError | None = None  # the spool file could not be written
        self.path: Path | None = None  # the file, once the dataset spilled into one
        self._pieces: list[bytes | memoryview] = [PREAMBLE, meta]
        self._fd = -1
        self._hash: Any = None
        self._written = 0  # bytes in the file
        self._writeback_from = 0

    @property
    def in_memory(self) -> bool:
        return self.path is None

    def add(self, fragment: bytes | memoryview) -> None:
        """One data fragment (without its message control header). Never raises: a failure
        to write is kept in ``error`` for the handler to answer."""
        if self.too_large or self.error is not None:
            self.size += len(fragment)
            return
        self.size += len(fragment)
        if self.size > self.max_bytes:
            self.too_large = True
            self._drop()
            return
        try:
            if self._fd < 0:
                self._pieces.append(fragment)
                if self.size > self.spill_bytes:
                    self._spill()
            else:
                self._write(fragment)
        except OSError as exc:
            log.warning("cannot write a received dataset to %s: %s", self.folder, exc.strerror)
            self.error = exc
            self._drop()

    def finish(self) -> None:
        """The last fragment came."""
        self.complete = True

    def data(self) -> bytes:
        """The Part-10 bytes of a dataset kept in memory."""
        if not self.in_memory:
            raise ValueError("the dataset is in a file")
        return b"".join(self._pieces)

    def sealed(self) -> tuple[Path, int, str]:
        """(the file, its size, its SHA-256) of a dataset that spilled, fsynced; the caller
        takes the file over (it moves it into place, or removes it)."""
        if self.path is None:
            raise ValueError("the dataset is in memory")
        fd, self._fd = self._fd, -1
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return self.path, self._written, self._hash.hexdigest()

    def discard(self) -> None:
        """Forget the dataset; remove its file if it still has one."""
        self._drop()

    # -- internals ------------------------------------------------------------------------

    def _spill(self) -> None:
        self.folder.mkdir(exist_ok=True)
        path = self.folder / f".incoming-{uuid.uuid4().hex}.tmp"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.path = path
        self._hash = hashlib.sha256()
        pieces, self._pieces = self._pieces, []
        for piece in pieces:
            self._write(piece)

    def _write(self, piece: bytes | memoryview) -> None:
        self._hash.update(piece)
        view = memoryview(piece)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._written += len(piece)
        if self._written - self._writeback_from >= WRITEBACK_BYTES:
            start_writeback(self._fd, self._writeback_from, self._written - self._writeback_from)
            self._writeback_from = self._written

    def _drop(self) -> None:
        self._pieces = []
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        if self.path is not None:
            self.path.unlink(missing_ok=True)


# -- the DIMSE provider that fills them --------------------------------------------------------

class SpoolingDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, except that the data fragments of a C-STORE request go to a
    :class:`ReceivedDataset` instead of pynetdicom's buffer (whose ``DataSet`` stays empty) and,
    given a ``store`` function, a C-STORE request is served on the DUL thread as it arrives
    (see the module's description). Everything else -- the command sets of other messages, the
    message queue, other services -- is pynetdicom's.
    """

    def __init__(self, assoc: Any, folder: Path, max_bytes: int,
                 stores: ServedStores | None = None) -> None:
        super().__init__(assoc)
        self.folder = folder
        self.max_bytes = max_bytes
        self.stores = stores
        self._lock = threading.Lock()
        self._received: dict[int, ReceivedDataset] = {}  # by Message ID
        self._current: ReceivedDataset | None = None
        self._command: list[tuple[int, bytes]] = []  # fragments of a command set, as they came
        self._command_bytes = 0
        self._serving: StoreRequest | None = None  # the C-STORE whose dataset is arriving

    def receive_primitive(self, primitive: Any) -> None:  # the DUL thread
        if not isinstance(primitive, P_DATA):
            super().receive_primitive(primitive)
            return
        passed: list[tuple[int, bytes]] = []
        for context_id, data in primitive.presentation_data_value_list:
            if data and data[0] & 1 and self._serving is not None:
                self._abandon()  # a command where the dataset should go on: a broken request
            if self.stores is not None and data and self._own(context_id, data):
                if passed:
                    self._pass(passed)
                    passed = []
                if data[0] & 1:
                    passed = self._take_command(context_id, data)
                else:
                    self._take_served_fragment(data)
                continue
            message = self.message
            if data and not data[0] & 1 and isinstance(message, C_STORE_RQ):
                if passed:
                    self._pass(passed)
                    passed = []
                self._take_fragment(message, context_id, data)
            else:
                passed.append((context_id, data))
        if passed:
            self._pass(passed)

    # -- C-STORE on the DUL thread -------------------------------------------------------

    def _own(self, context_id: int, data: bytes) -> bool:
        """Whether a fragment is the served path's: a command fragment while no message is in
        progress, or a data fragment of the C-STORE being served (on its context)."""
        if data[0] & 1:
            return self.message is None and self._serving is None
        return self._serving is not None and context_id == self._serving.context_id

    def _take_command(self, context_id: int, data: bytes) -> list[tuple[int, bytes]]:
        """Keep a command fragment; after the last, serve the request if it is a C-STORE the
        DUL thread may serve, else hand every fragment kept to pynetdicom (returned)."""
        self._command.append((context_id, data))
        self._command_bytes += len(data) - 1
        if not data[0] & 2 and self._command_bytes <= MAX_COMMAND_BYTES:
            return []
        fragments, self._command, self._command_bytes = self._command, [], 0
        request = self._store_request(fragments)
        if request is None:
            return fragments
        self._serving = request
        meta = file_meta_bytes(request.sop_class_uid, request.sop_instance_uid,
                               request.transfer_syntax)
        self._current = ReceivedDataset(self.folder, meta, max_bytes=self.max_bytes)
        return []

    def _store_request(self, fragments: list[tuple[int, bytes]]) -> StoreRequest | None:
        if len(fragments) > 1 and len({context_id for context_id, _ in fragments}) > 1:
            return None
        if not fragments[-1][1][0] & 2:
            return None  # longer than MAX_COMMAND_BYTES
        context_id = fragments[0][0]
        command = decode_command(b"".join(memoryview(data)[1:] for _, data in fragments))
        if command is None or _us(command.get(0x0100)) != C_STORE_RQ_FIELD:
            return None
        message_id = _us(command.get(0x0110))
        data_set_type = _us(command.get(0x0800))
        sop_class_uid = _uid(command.get(0x0002))
        sop_instance_uid = _uid(command.get(0x1000))
        context = self.assoc._accepted_cx.get(context_id)
        assoc = self.assoc
        if (message_id is None or data_set_type in (None, NO_DATASET) or not sop_instance_uid
                or context is None or str(context.abstract_syntax) != sop_class_uid
                or self.dul.state_machine.current_state != "Sta6" or assoc._sent_release
                or assoc.get_handlers(evt.EVT_DIMSE_RECV) or assoc.get_handlers(evt.EVT_DIMSE_SENT)):
            return None
        return StoreRequest(context_id, message_id, sop_class_uid, sop_instance_uid,
                            str(context.transfer_syntax[0]))

    def _abandon(self) -> None:
        request, received = self._serving, self._current
        self._serving = self._current = None
        if received is not None:
            received.discard()
        if request is not None:
            log.warning("C-STORE of %s: a command came before its dataset ended; not stored",
                        request.sop_instance_uid)

    def _take_served_fragment(self, data: bytes) -> None:
        received, request = self._current, self._serving
        assert received is not None and request is not None
        received.add(memoryview(data)[1:])
        if not data[0] & 2:
            return
        received.finish()
        self._current = self._serving = None
        stores = self.stores
        assert stores is not None
        try:
            status, comment = stores.store_served(self.assoc, request, received)
        finally:
            received.discard()  # its file, unless the spool took it over
        self._answer(request, status, comment)
        if stores.flush_due(self.assoc):
            stores.flush(self.assoc, now=False)
        else:  # while the peer sends the next
            stores.prepare(self.assoc)

    def has_pending(self) -> bool:
        """Instances answered Success whose rows and files are not made yet (the DUL thread
        flushes them when the peer pauses or sends anything but data: ``PromptDUL``)."""
        return self.stores is not None and self.stores.pending(self.assoc)

    def batch_idle_seconds(self) -> float:
        return self.stores.batch_idle_seconds if self.stores is not None else 0.0

    def flush_pending(self, now: bool = True) -> None:
        """Flush what waits; unless ``now``, only if the database is free (the peer paused)."""
        if self.stores is not None and self.stores.pending(self.assoc):
            self.stores.flush(self.assoc, now)

    def _answer(self, request: StoreRequest, status: int, comment: str) -> None:
        """Write the C-STORE-RSP to the socket (this is the DUL thread, its only writer), or,
        when it does not fit the peer's maximum PDU, queue it through pynetdicom."""
        command = store_response_bytes(request.sop_class_uid, request.sop_instance_uid,
                                       request.message_id, status, comment)
        limit = self.maximum_pdu_size
        socket = self.dul.socket
        if socket is not None and (not limit or len(command) + 6 <= limit):
            socket.send(p_data_pdu(request.context_id, 0x03, command))
            return
        response: Any = C_STORE()
        response.MessageIDBeingRespondedTo = request.message_id
        response.AffectedSOPClassUID = request.sop_class_uid
        response.AffectedSOPInstanceUID = request.sop_instance_uid
        response.Status = status
        if comment:
            response.ErrorComment = comment[:64]
        super().send_msg(response, request.context_id)

    def take(self, message_id: int) -> ReceivedDataset | None:
        """The dataset of the C-STORE request ``message_id``, once (the handler's)."""
        with self._lock:
            return self._received.pop(message_id, None)

    def discard_all(self) -> None:
        """Remove what an association that ended left unanswered (its files too). A dataset
        still arriving is the DUL thread's: removed here only once that thread has stopped
        (else ``Spool.sweep_incoming`` removes its file later)."""
        with self._lock:
            left = list(self._received.values())
            self._received.clear()
        dul = self.assoc.dul
        if dul.is_alive() and dul is not threading.current_thread():
            dul.join(timeout=DUL_STOP_SECONDS)  # it is stopping: the association has ended
        if self._current is not None and not dul.is_alive():
            left.append(self._current)
            self._current = None
        for received in left:
            received.discard()

    def _take_fragment(self, message: Any, context_id: int, data: bytes) -> None:
        received = self._current
        if received is None:
            command = message.command_set
            context = self.assoc._accepted_cx.get(context_id)
            syntax = str(context.transfer_syntax[0]) if context is not None else ""
            meta = file_meta_bytes(str(command.AffectedSOPClassUID or ""),
                                   str(command.AffectedSOPInstanceUID or ""), syntax)
            received = self._current = ReceivedDataset(self.folder, meta, max_bytes=self.max_bytes)
        received.add(memoryview(data)[1:])
        if data[0] & 2:  # the last fragment: pynetdicom completes the message
            received.finish()
            self._current = None
            message_id = int(message.command_set.MessageID)
            with self._lock:
                # a Message ID reused before its answer, or datasets no handler took (pynetdicom
                # answered their requests itself): forgotten, their files removed
                stale = [self._received.pop(message_id)] if message_id in self._received else []
                while len(self._received) >= MAX_UNANSWERED:
                    stale.append(self._received.pop(next(iter(self._received))))
                self._received[message_id] = received
            for forgotten in stale:
                forgotten.discard()
            self._pass([(context_id, b"\x02")])

    def send_msg(self, primitive: Any, context_id: int) -> None:  # the association thread
        """A C-STORE response without an error comment is encoded by hand
        (:func:`store_response_bytes`, byte for byte pynetdicom's encoding): pynetdicom builds
        a pydicom dataset of the command set and encodes it, the slowest part of an answer.
        Anything else, or anyone listening for sent messages, goes through pynetdicom."""
        if (isinstance(primitive, C_STORE) and primitive.MessageIDBeingRespondedTo is not None
                and primitive.ErrorComment is None and primitive.OffendingElement is None
                and primitive.Status is not None
                and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)):
            command = store_response_bytes(
                str(primitive.AffectedSOPClassUID or ""), str(primitive.AffectedSOPInstanceUID or ""),
                int(primitive.MessageIDBeingRespondedTo), int(primitive.Status))
            limit = self.maximum_pdu_size
            if not limit or len(command) + 7 <= limit:
                pdata = P_DATA()
                pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)

    def _pass(self, items: list[tuple[int, bytes]]) -> None:
        primitive = P_DATA()
        primitive.presentation_data_value_list.extend(items)  # as pynetdicom's PDU decoder does
        super().receive_primitive(primitive)
