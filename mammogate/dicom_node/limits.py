"""Bounded reads of received datasets: every size is checked before anything is inflated or
decoded, so one small hostile file cannot make the node allocate gigabytes.

- the encoded dataset's size (``dicom.max_dataset_bytes``);
- a Deflated dataset is inflated by us, in bounded steps, never past that same limit;
- the declared geometry: Rows and Columns (``dicom.max_rows_columns``), frames
  (``dicom.max_frames``) and the pixel bytes they imply (``dicom.max_pixel_bytes``);
- native (uncompressed) Pixel Data whose length disagrees with the declared geometry (a dataset
  cut off inside its pixels) is refused;
- the number of elements and the nesting depth of sequences (``dicom.max_elements``,
  ``dicom.max_sequence_depth``).

``LimitExceeded`` says which limit, with the value found and the key that sets it.
"""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import VR

from mammogate.config.settings import DicomSettings
from mammogate.dicom_node.header import integer

INFLATE_CHUNK = 1 << 20
HEADER_PROBE = 1 << 18  # inflate this much, then look for the header's end
MAX_HEADER_BYTES = 16 << 20  # elements before Pixel Data, at most


class LimitExceeded(ValueError):
    """A received dataset exceeds one of the limits; the message names the setting."""


def check_encoded_size(data: bytes, settings: DicomSettings) -> None:
    if len(data) > settings.max_dataset_bytes:
        raise LimitExceeded(
            f"dataset of {len(data)} bytes exceeds dicom.max_dataset_bytes ({settings.max_dataset_bytes})"
        )


_KNOWN_VRS = frozenset(str(vr) for vr in VR)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def split_file_meta(data: bytes) -> tuple[int, str] | None:
    """(offset where the dataset starts after the File Meta group, its transfer syntax UID) of
    a Part-10 file, read by hand (the group is always Explicit VR Little Endian); None when
    the bytes do not start like one."""
    found = _file_meta_elements(data)
    return None if found is None else (found[0], found[1])


# (offset of the dataset, transfer syntax UID, the File Meta group's elements)
FileMetaGroup = tuple[int, str, dict[BaseTag, DataElement | RawDataElement]]


def _file_meta_elements(data: bytes) -> FileMetaGroup | None:
    """``split_file_meta`` and the group's elements, raw, as pydicom's reader makes them."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    offset, syntax = 132, ""
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    while offset + 8 <= len(data):
        group = int.from_bytes(data[offset : offset + 2], "little")
        if group != 0x0002:
            break
        element = int.from_bytes(data[offset + 2 : offset + 4], "little")
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            length = int.from_bytes(data[offset + 8 : offset + 12], "little")
            start = offset + 12
        else:
            length = int.from_bytes(data[offset + 6 : offset + 8], "little")
            start = offset + 8
        if start + length > len(data):
            return None
        value = data[start : start + length]
        if element == 0x0010:
            syntax = value.decode("ascii", "replace").strip("\x00 ")
        tag = BaseTag(0x00020000 | element)
        elements[tag] = RawDataElement(tag, vr.decode("latin-1"), length, value, start - 132,
                                       False, True)
        offset = start + length
    return offset, syntax, elements


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
PIXEL_DATA = BaseTag(0x7FE00010)
UNDEFINED_LENGTH = 0xFFFFFFFF
_MAY_BE_SEQUENCE = {"SQ", "UN", None}


def _header_of(body: bytes) -> Dataset | None:
    """The top-level elements before Pixel Data of a partly inflated Explicit VR LE dataset,
    or None while ``body`` does not yet reach them. Candidates are the places where the Pixel
    Data tag appears; one inside a nested item (an icon) does not parse as a whole header."""
    start = 0
    while (position := body.find(_PIXEL_DATA_TAG, start)) >= 0:
        start = position + 1
        try:
            header = read_dataset(BytesIO(body[:position]), is_implicit_VR=False, is_little_endian=True)
        except (EOFError, ValueError, struct.error, OSError, KeyError, TypeError, NotImplementedError):
            continue
        if "Rows" in header and "Columns" in header:
            return header
    return None


def inflate_bounded(data: bytes, offset: int, settings: DicomSettings) -> bytes:
    """The inflated dataset of a Deflated Explicit VR Little Endian file whose dataset starts
    at ``offset``. The header (everything before Pixel Data) is inflated first and its
    geometry checked (``check_geometry``); the rest is inflated only up to what that geometry
    declares (and never past ``dicom.max_dataset_bytes``)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pieces: list[bytes] = []
    total = 0
    pending = data[offset:]
    limit = settings.max_dataset_bytes
    header_checked = False
    probe = HEADER_PROBE
    try:
        while pending:
            piece = inflater.decompress(pending, INFLATE_CHUNK)
            total += len(piece)
            if total > limit:
                raise LimitExceeded(f"Deflated dataset inflates past dicom.max_dataset_bytes ({limit})")
            pieces.append(piece)
            pending = inflater.unconsumed_tail
            if not header_checked and (total >= probe or not pending):
                probe *= 2
                header = _header_of(b"".join(pieces))
                if header is not None or total >= MAX_HEADER_BYTES:
                    header_checked = True
                    if header is not None:
                        check_geometry(header, settings)
                        # what the geometry allows: the header, the pixels, a trailing margin
                        limit = min(limit, total + expected_pixel_bytes(header) + MAX_HEADER_BYTES)
            if not piece and not pending:
                break
        tail = inflater.flush()
    except zlib.error as exc:
        raise LimitExceeded(f"Deflated dataset does not inflate: {exc}") from exc
    if total + len(tail) > limit:
        raise LimitExceeded(f"Deflated dataset inflates past what its header declares (limit {limit} bytes)")
    return b"".join(pieces) + tail


def read_bounded(data: bytes, settings: DicomSettings) -> Dataset:
    """Parse received Part-10 bytes within the limits: encoded size, bounded inflation, then
    (from the parsed header, nothing decoded) geometry, native pixel length and structure.
    Raises ``LimitExceeded``; pydicom's own parse errors pass through for the caller."""
    check_encoded_size(data, settings)
    # the group read by hand (once), the dataset by pydicom in the encoding it names (what
    # dcmread does, without its second pass over the group)
    found = _file_meta_elements(data)
    if found is not None and found[1] == DeflatedExplicitVRLittleEndian:
        body = inflate_bounded(data, found[0], settings)
        ds = read_dataset(BytesIO(body), is_implicit_VR=False, is_little_endian=True)
        ds.file_meta = _file_meta(data, found)
    elif found is not None and (encoding := _encoding(found[1])):
        ds = read_dataset(BytesIO(data[found[0]:]), is_implicit_VR=encoding[0],
                          is_little_endian=encoding[1])
        ds.file_meta = _file_meta(data, found)
    else:
        ds = dcmread(BytesIO(data), force=False)
    check_structure(ds, settings)
    check_geometry(ds, settings)
    check_native_pixel_length(ds)
    return ds


DEFER_BYTES = 1 << 16  # values longer than this stay in the file (read_bounded_file)


def read_bounded_file(path: Path, settings: DicomSettings) -> Dataset:
    """``read_bounded`` for a received Part-10 file (a large dataset, ``dicom_node.receive``):
    the same limits, with values longer than ``DEFER_BYTES`` (the pixels) left in the file, so
    that the checks read the header alone. A Deflated file is read into memory and checked as
    bytes (its size is within ``dicom.max_dataset_bytes``)."""
    size = path.stat().st_size
    if size > settings.max_dataset_bytes:
        raise LimitExceeded(
            f"dataset of {size} bytes exceeds dicom.max_dataset_bytes ({settings.max_dataset_bytes})"
        )
    with path.open("rb") as fh:
        found = split_file_meta(fh.read(HEADER_PROBE))
        if found is None or found[1] == DeflatedExplicitVRLittleEndian:
            fh.seek(0)
            return read_bounded(fh.read(), settings)
        fh.seek(0)
        ds = dcmread(fh, defer_size=DEFER_BYTES, force=False)
    check_structure(ds, settings)
    check_geometry(ds, settings)
    check_native_pixel_length(ds, file_size=size)
    return ds


def _encoding(syntax: str) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) of a transfer syntax pydicom knows; None otherwise."""
    uid = UID(syntax)
    if not uid.is_transfer_syntax:
        return None
    return uid.is_implicit_VR, uid.is_little_endian


def _file_meta(data: bytes, found: FileMetaGroup) -> FileMetaDataset:
    """The File Meta Information group of Part-10 ``data``: its elements as read by hand
    (``_file_meta_elements``), in pydicom's raw form, when each has a VR pydicom knows;
    otherwise read by pydicom."""
    offset, _syntax, elements = found
    if all(element.VR in _KNOWN_VRS for element in elements.values()):
        return FileMetaDataset(elements)
    return FileMetaDataset(read_dataset(BytesIO(data[132:offset]), is_implicit_VR=False,
                                        is_little_endian=True))


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = integer(ds, keyword)
    try:
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError) as exc:
        raise LimitExceeded(f"{keyword} {value!r} is not a number") from exc


def expected_pixel_bytes(ds: Dataset) -> int:
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    frames = max(1, _int(ds, "NumberOfFrames", 1))
    samples = max(1, _int(ds, "SamplesPerPixel", 1))
    bits = _int(ds, "BitsAllocated", 16)
    return (rows * columns * frames * samples * bits + 7) // 8


def check_geometry(ds: Dataset, settings: DicomSettings) -> None:
    """The declared image geometry against the limits (read from the header, before pixels)."""
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    frames = _int(ds, "NumberOfFrames", 1)
    if rows < 0 or columns < 0 or frames < 0:
        raise LimitExceeded("Rows, Columns or Number of Frames is negative")
    if max(rows, columns) > settings.max_rows_columns:
        raise LimitExceeded(
            f"{rows} x {columns} pixels exceeds dicom.max_rows_columns ({settings.max_rows_columns})"
        )
    if frames > settings.max_frames:
        raise LimitExceeded(f"{frames} frames exceeds dicom.max_frames ({settings.max_frames})")
    if _int(ds, "BitsAllocated", 16) not in (1, 8, 16, 32, 64):
        raise LimitExceeded(f"Bits Allocated {ds.get('BitsAllocated')} is not 1, 8, 16, 32 or 64")
    size = expected_pixel_bytes(ds)
    if size > settings.max_pixel_bytes:
        raise LimitExceeded(
            f"{size} pixel bytes exceed dicom.max_pixel_bytes ({settings.max_pixel_bytes})"
        )


def check_native_pixel_length(ds: Dataset, *, file_size: int | None = None) -> None:
    """Uncompressed Pixel Data must hold what Rows x Columns x frames x bits declare (one pad
    byte allowed): shorter means the dataset was cut off inside its pixels. For a dataset read
    from a file with its pixels left there (``file_size`` given), the length is the one its
    header declares, and the file must hold that many bytes after it."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_compressed or "PixelData" not in ds:
        return
    element = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if isinstance(element, RawDataElement) and element.value is None and file_size is not None:
        # left in the file: its declared length, as far as the file holds it
        length = element.length if element.length != UNDEFINED_LENGTH else 0
        length = max(0, min(length, file_size - element.value_tell))
    else:  # in memory: read (raw or converted) with the rest
        length = len(element.value) if element.value is not None else 0
    expected = expected_pixel_bytes(ds)
    if length not in (expected, expected + 1):
        raise LimitExceeded(
            f"Pixel Data cut off or padded: {length} bytes, {expected} declared"
        )


def check_structure(ds: Dataset, settings: DicomSettings) -> None:
    """Element count and sequence depth, walked without recursion. Elements whose explicit VR
    is not SQ are counted as they were read (not converted); a sequence, or an element whose
    VR the encoding does not say (implicit VR, UN), is converted to see into it."""
    count = 0
    stack: list[tuple[Dataset, int]] = [(ds, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > settings.max_sequence_depth:
            raise LimitExceeded(
                f"sequences deeper than dicom.max_sequence_depth ({settings.max_sequence_depth})"
            )
        for tag in list(current.keys()):
            count += 1
            if count > settings.max_elements:
                raise LimitExceeded(f"more than dicom.max_elements ({settings.max_elements}) elements")
            element = current.get_item(tag, keep_deferred=True)
            if isinstance(element, RawDataElement):
                if element.VR not in _MAY_BE_SEQUENCE:
                    continue
                element = current[tag]
            if element.VR == "SQ":
                stack.extend((item, depth + 1) for item in element.value)
