"""Receiving a C-STORE's dataset: the File Meta Information as pynetdicom writes it, and a
dataset kept in memory or streamed into the spool, within the size limit."""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from mammogate.dicom_node.receive import (
    PREAMBLE,
    ReceivedDataset,
    decode_command,
    file_meta_bytes,
    p_data_pdu,
)

MG = "1.2.840.10008.5.1.4.1.1.1.2"


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    RLELossless, JPEG2000Lossless])
@pytest.mark.parametrize("sop_instance_uid", ["1.2.3.4", "1.2.3.45", generate_uid(),
                                              "1." + "2" * 62])
def test_the_file_meta_is_byte_for_byte_pynetdicoms(syntax: str, sop_instance_uid: str) -> None:
    expected = encode_file_meta(create_file_meta(
        sop_class_uid=UID(MG), sop_instance_uid=UID(sop_instance_uid), transfer_syntax=UID(syntax)))
    assert file_meta_bytes(MG, sop_instance_uid, syntax) == expected


def _fragments(total: int, size: int = 16384) -> list[bytes]:
    data = bytes(range(256)) * (total // 256 + 1)
    return [data[i:i + size] for i in range(0, total, size)]


def test_a_small_dataset_stays_in_memory_and_leaves_no_file(tmp_path: Path) -> None:
    received = ReceivedDataset(tmp_path / ".receiving", b"META", max_bytes=1 << 30,
                               spill_bytes=1 << 20)
    pieces = _fragments(100_000)
    for piece in pieces:
        received.add(memoryview(b"\x00" + piece)[1:])
    received.finish()
    assert received.in_memory and received.complete
    assert received.data() == PREAMBLE + b"META" + b"".join(pieces)
    assert received.size == len(received.data())
    assert not (tmp_path / ".receiving").exists()


def test_a_large_dataset_is_written_and_hashed_as_it_arrives(tmp_path: Path) -> None:
    folder = tmp_path / ".receiving"
    received = ReceivedDataset(folder, b"META", max_bytes=1 << 30, spill_bytes=1 << 16)
    pieces = _fragments(3_000_000)
    for piece in pieces:
        received.add(piece)
    received.finish()
    assert not received.in_memory and received.path is not None
    assert received.path.parent == folder and received.path.name.startswith(".incoming-")
    path, size, sha256 = received.sealed()
    expected = PREAMBLE + b"META" + b"".join(pieces)
    assert path.read_bytes() == expected
    assert (size, sha256) == (len(expected), hashlib.sha256(expected).hexdigest())
    received.discard()  # the caller took the file over (moved it): nothing else to remove
    assert not path.exists()


def test_past_the_limit_nothing_more_is_kept_and_its_file_is_removed(tmp_path: Path) -> None:
    folder = tmp_path / ".receiving"
    received = ReceivedDataset(folder, b"META", max_bytes=200_000, spill_bytes=50_000)
    for piece in _fragments(1_000_000):
        received.add(piece)
    received.finish()
    assert received.too_large and received.size > 1_000_000
    assert list(folder.iterdir()) == []  # the spilled file went when the limit was passed


def test_a_spool_that_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / ".receiving").write_bytes(b"a file where the folder must go")
    received = ReceivedDataset(tmp_path / ".receiving", b"META", max_bytes=1 << 30,
                               spill_bytes=1000)
    for piece in _fragments(10_000):
        received.add(piece)
    assert received.error is not None and not received.too_large


def test_discard_removes_a_half_received_file(tmp_path: Path) -> None:
    received = ReceivedDataset(tmp_path, b"META", max_bytes=1 << 30, spill_bytes=1000)
    for piece in _fragments(10_000):
        received.add(piece)
    assert received.path is not None and received.path.exists()
    received.discard()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("status", "message_id", "sop_instance_uid", "comment"), [
    (0x0000, 1, "1.2.3.4", ""), (0x0000, 65535, "1.2.3.45", ""), (0xB000, 7, generate_uid(), ""),
    (0xA900, 3, "1.2.3.4", "Modality CT is not MG: mammography only"),
    (0xC000, 9, generate_uid(), "odd length"),
    (0xA700, 2, "1.2.3.45", "x" * 64),
])
def test_a_store_response_is_byte_for_byte_pynetdicoms(
    status: int, message_id: int, sop_instance_uid: str, comment: str
) -> None:
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE

    from mammogate.dicom_node.receive import store_response_bytes

    rsp = C_STORE()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = MG
    rsp.AffectedSOPInstanceUID = sop_instance_uid
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    (pdata,) = list(message.encode_msg(1, 16384))
    ((context_id, pdv),) = pdata.presentation_data_value_list
    ours = store_response_bytes(MG, sop_instance_uid, message_id, status, comment)
    assert pdv == b"\x03" + ours
    # and the PDU the DUL thread writes is the one pynetdicom would send
    assert p_data_pdu(context_id, 0x03, ours) == _encoded_pdu(pdata)


def _encoded_pdu(primitive: object) -> bytes:
    from pynetdicom.pdu import P_DATA_TF

    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)  # type: ignore[arg-type]
    return bytes(pdu.encode())


def _store_request_command(message_id: int, sop_instance_uid: str, **extra: object) -> bytes:
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE

    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = MG
    request.AffectedSOPInstanceUID = sop_instance_uid
    request.Priority = 2
    for keyword, value in extra.items():
        setattr(request, keyword, value)
    request.DataSet = BytesIO(b"\x08\x00\x60\x00\x02\x00\x00\x00MG")  # Modality, implicit VR
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    fragments = []
    for pdata in message.encode_msg(1, 16384):
        for _, pdv in pdata.presentation_data_value_list:
            if pdv[0] & 1:
                fragments.append(pdv[1:])
    return b"".join(fragments)


def test_a_store_request_command_is_read_as_pynetdicom_writes_it() -> None:
    sop_instance_uid = generate_uid()
    command = decode_command(_store_request_command(
        77, sop_instance_uid, MoveOriginatorApplicationEntityTitle="PACS",
        MoveOriginatorMessageID=5))
    assert command is not None
    assert int.from_bytes(command[0x0100], "little") == 0x0001  # C-STORE-RQ
    assert int.from_bytes(command[0x0110], "little") == 77
    assert command[0x0002].rstrip(b"\x00") == MG.encode()
    assert command[0x1000].rstrip(b"\x00") == sop_instance_uid.encode()
    assert command[0x1030].strip() == b"PACS"
    assert int.from_bytes(command[0x0800], "little") != 0x0101  # a dataset follows


@pytest.mark.parametrize("broken", [
    b"\x00\x00\x00",  # shorter than an element header
    b"\x08\x00\x16\x00\x02\x00\x00\x00ab",  # not group 0000
    b"\x00\x00\x00\x01\x10\x00\x00\x00ab",  # a length past the end
    b"\x00\x00\x00\x01\x02\x00\x00\x00\x01\x00" * 2,  # an element twice
])
def test_a_command_set_that_does_not_parse_cleanly_is_left_to_pynetdicom(broken: bytes) -> None:
    assert decode_command(broken) is None
