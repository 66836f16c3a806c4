"""Header values of a received dataset read from their raw bytes, on the per-instance path.

pydicom converts an element the first time it is read (``Dataset.__getitem__``: character set,
value representation, hooks), which costs several microseconds an element; the checks and the
row of every received instance read a few dozen. The values read here -- UIDs, code strings,
dates, plain ASCII text, unsigned shorts and integer strings -- are decoded from the element's
bytes directly when they are plain (one value, printable ASCII, a VR known from the encoding or
the dictionary); anything else is converted by pydicom, so the result is always pydicom's.
``tests/unit/dicom_node/test_header.py`` checks that equality on every real sample.
"""

from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

# VRs whose value is text of one line: decoded from the bytes when those are plain ASCII (the
# text VRs may use another character set only through bytes >= 0x80 or escape sequences, which
# go to pydicom); trailing spaces and NULs are padding (AE: leading spaces too), as pydicom reads
_TEXT_VRS = frozenset({"AS", "CS", "DA", "DT", "LO", "PN", "SH", "TM", "UI"})


def _vr(element: RawDataElement) -> str | None:
    if element.VR is not None:
        return element.VR
    try:
        return dictionary_VR(element.tag)
    except KeyError:
        return None


def _plain(raw: bytes) -> bool:
    """One value (no backslash) of ASCII without escape sequences."""
    return raw.isascii() and b"\\" not in raw and b"\x1b" not in raw


_TAGS: dict[str, BaseTag] = {}


def tag(keyword: str) -> BaseTag:
    """The tag of a dictionary keyword (looked up once)."""
    found = _TAGS.get(keyword)
    if found is None:
        number = tag_for_keyword(keyword)
        if number is None:
            raise ValueError(f"{keyword!r} is not a DICOM keyword")
        found = _TAGS[keyword] = BaseTag(number)
    return found


def text(ds: Dataset, keyword: str) -> str | None:
    """The value of the element ``keyword`` as ``str(ds[tag].value)`` gives it; None when the
    element is absent (or pydicom reads its value as None)."""
    element_tag = tag(keyword)
    element = ds._dict.get(element_tag)  # (the element as read: pydicom's own store)
    if element is None:
        return None
    if type(element) is RawDataElement and element.value is not None:
        raw, vr = element.value, _vr(element)
        if vr in _TEXT_VRS and _plain(raw):
            return raw.rstrip(b" \x00").decode("ascii")
        if vr == "AE" and _plain(raw):
            return raw.decode("ascii").strip()
    return _converted(ds, element_tag)


def _converted(ds: Dataset, element_tag: BaseTag) -> str | None:
    value = ds[element_tag].value
    return None if value is None else str(value)


def integer(ds: Dataset, keyword: str) -> Any:
    """The value of the element ``keyword`` as pydicom reads it (an int for US and IS where
    the bytes are plain), None when absent."""
    element_tag = tag(keyword)
    element = ds._dict.get(element_tag)
    if element is None:
        return None
    if type(element) is RawDataElement and element.value is not None:
        raw, vr = element.value, _vr(element)
        if vr == "US" and len(raw) == 2:
            return int.from_bytes(raw, "little" if element.is_little_endian else "big")
        if vr == "IS" and raw and _plain(raw):
            stripped = raw.strip(b" \x00")
            if stripped.isdigit():
                return int(stripped)
    return ds[element_tag].value


def convert_if_ambiguous(ds: Dataset, keyword: str) -> None:
    """Convert the element ``keyword`` now when its VR is not in its encoding (implicit VR):
    pydicom then resolves it (Pixel Data: OB or OW, from Bits Allocated), and a dataset that
    does not allow it fails here. An explicit VR is taken as read."""
    element_tag = tag(keyword)
    element = ds._dict.get(element_tag)
    if element is not None and element.VR is None:
        ds[element_tag]
