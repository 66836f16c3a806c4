"""Malformed datasets and PDUs for the node, shared by the CI fuzz test and
``benchmarks/fuzz.py``: hypothesis strategies, and a harness that sends each case to a running
node over a real association (or a raw socket for PDUs), interleaved with valid instances."""

from __future__ import annotations

import io
import socket
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from mammogate.training.synthetic import make_study

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
SUCCESS, FAILURES = 0x0000, {0xA700, 0xA900, 0xC000}


def valid_instance(seed: int, uid_entropy: int | None = None) -> Dataset:
    """A small valid MG For Presentation image with UIDs of its own (random, or derived from
    ``uid_entropy`` so a hypothesis strategy stays deterministic)."""
    ds = make_study(seed=seed, lesion=False, rows=96, columns=80).datasets[seed % 4]

    def uid(part: str) -> str:
        if uid_entropy is None:
            return str(generate_uid())
        return str(generate_uid(entropy_srcs=["fuzz", str(uid_entropy), part]))

    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.SOPInstanceUID = uid("sop")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _encoded(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _meta_end(data: bytes) -> int:
    return 132 + 12 + int.from_bytes(data[140:144], "little")


@st.composite
def malformed_file(draw: Any) -> bytes:
    """A Part-10 file whose File Meta group is sound (so the sender can send it) and whose
    dataset is mutated: flipped or inserted bytes, truncation, a corrupted element length, odd
    geometry, or a Deflated body of random bytes."""
    ds = valid_instance(draw(st.integers(0, 3)), draw(st.integers(0, 2**31)))
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "length", "geometry", "deflate"]))
    if kind == "geometry":
        ds.Rows = draw(st.integers(0, 65535))
        ds.Columns = draw(st.integers(0, 65535))
        ds.BitsAllocated = draw(st.sampled_from([0, 1, 7, 8, 12, 16, 32, 64, 65535]))
        if draw(st.booleans()):
            ds.NumberOfFrames = draw(st.integers(0, 100000))
        if draw(st.booleans()):
            ds.SamplesPerPixel = draw(st.integers(0, 5))
        return _encoded(ds)
    data = bytearray(_encoded(ds))
    start = _meta_end(bytes(data))
    body = len(data) - start
    if kind == "deflate":
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        encoded = _encoded(ds)
        head = encoded[: _meta_end(encoded)]
        payload = draw(st.binary(min_size=0, max_size=4096))
        if draw(st.booleans()):
            payload = zlib.compress(payload)[2:-4]  # a raw deflate stream of random content
        return head + payload
    if kind == "flip":
        for _ in range(draw(st.integers(1, 20))):
            at = start + draw(st.integers(0, body - 1))
            data[at] = draw(st.integers(0, 255))
    elif kind == "truncate":
        del data[start + draw(st.integers(0, body - 1)) :]
    elif kind == "insert":
        at = start + draw(st.integers(0, body))
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    else:  # an element's length field: 2-byte or 4-byte, anywhere in the first 2 kB
        at = start + draw(st.integers(0, min(body, 2048) - 4))
        length = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xfe\xff\x00\x00"]))
        data[at : at + 4] = length
    return bytes(data)


@st.composite
def malformed_pdu(draw: Any) -> bytes:
    """Bytes a hostile peer sends right after connecting: PDUs of any type and length."""
    pdu_type = draw(st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x00, 0xFF]))
    length = draw(st.one_of(st.integers(0, 512), st.just(0xFFFFFFFF), st.integers(0, 2**32 - 1)))
    body = draw(st.binary(min_size=0, max_size=512))
    return bytes([pdu_type, 0]) + length.to_bytes(4, "big") + body


@dataclass
class Harness:
    """Sends cases to a node at 127.0.0.1:``port`` and keeps the tally."""

    port: int
    work: Path
    called: str = "MAMMOGATE"
    statuses: dict[int, int] = field(default_factory=dict)
    valid_sent: list[str] = field(default_factory=list)  # SOP Instance UIDs answered Success
    counter: int = 0

    def _associate(self) -> Any:
        ae = AE(ae_title="FUZZER")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        for syntax in (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):  # one context each
            ae.add_requested_context(MG_FOR_PRESENTATION, syntax)
        assoc = ae.associate("127.0.0.1", self.port, ae_title=self.called)
        assert assoc.is_established, "the node refused a well-formed association"
        return assoc

    def send_file(self, data: bytes) -> int:
        """Status of one C-STORE of ``data`` (-1: the association broke without a status)."""
        self.counter += 1
        path = self.work / f"case-{self.counter}.dcm"
        path.write_bytes(data)
        assoc = self._associate()
        chunked = _config.STORE_SEND_CHUNKED_DATASET
        _config.STORE_SEND_CHUNKED_DATASET = True  # send the bytes as they are, never parsed here
        try:
            status = assoc.send_c_store(path)
            code = int(status.Status) if "Status" in status else -1
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = chunked
            if assoc.is_established:
                assoc.release()
            path.unlink()
        self.statuses[code] = self.statuses.get(code, 0) + 1
        return code

    def send_valid(self, seed: int) -> None:
        ds = valid_instance(seed)
        assoc = self._associate()
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        assert int(status.Status) == SUCCESS, f"a valid instance got 0x{int(status.Status):04X}"
        self.valid_sent.append(str(ds.SOPInstanceUID))

    def send_pdu(self, data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            try:
                sock.sendall(data)
                sock.settimeout(10)
                while sock.recv(4096):  # until the node answers and closes, or rejects
                    pass
            except OSError:
                return  # reset by the node: also an answer
