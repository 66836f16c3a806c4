"""Laterality and view of a mammogram from its headers, and their coded forms for reporting.

Laterality: ImageLaterality (0020,0062), else series Laterality (0020,0060), else text.
View: ViewCodeSequence (0054,0220, CID 4014) is authoritative, else ViewPosition (0018,5101),
else text such as ``LEFT_CC`` in PatientID / SeriesDescription (digitised-film archives).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom import Dataset

CodeTuple = tuple[str, str, str]  # (CodeValue, CodingSchemeDesignator, CodeMeaning)

# CID 4014 View for Mammography: abbreviation → SCT code, with the retired SNOMED-RT values.
VIEW_CODES: dict[str, CodeTuple] = {
    "CC": ("399162004", "SCT", "cranio-caudal"),
    "MLO": ("399368009", "SCT", "medio-lateral oblique"),
    "ML": ("399260004", "SCT", "medio-lateral"),
    "LM": ("399352003", "SCT", "latero-medial"),
    "LMO": ("399099002", "SCT", "latero-medial oblique"),
    "XCCL": ("399192008", "SCT", "cranio-caudal exaggerated laterally"),
    "XCCM": ("399101009", "SCT", "cranio-caudal exaggerated medially"),
    "FB": ("399196006", "SCT", "caudo-cranial"),
    "SIO": ("399188001", "SCT", "superolateral to inferomedial oblique"),
    "ISO": ("441555000", "SCT", "inferomedial to superolateral oblique"),
    "SPECIMEN": ("127457009", "SCT", "tissue specimen from breast"),
}
_SNM3_VIEWS = {
    "R-10242": "CC",
    "R-10226": "MLO",
    "R-10224": "ML",
    "R-10228": "LM",
    "R-10230": "LMO",
    "R-1024A": "XCCL",
    "R-1024B": "XCCM",
    "R-10244": "FB",
    "R-102D0": "SIO",
    "R-40AAA": "ISO",
    "G-8310": "SPECIMEN",
}
_SCT_VIEWS = {code[0]: view for view, code in VIEW_CODES.items()}
# CID 4015 View Modifier for Mammography: the SCT code for each retired SNOMED-RT value.
_SNM3_VIEW_MODIFIERS: dict[str, CodeTuple] = {
    "R-102D4": ("399226006", "SCT", "Rolled Medial"),
    "R-40AB3": ("442581004", "SCT", "Nipple in profile"),
    "R-40AB2": ("442580003", "SCT", "Axillary tissue"),
    "P2-00161": ("441752004", "SCT", "Anterior compression"),
    "R-102C9": ("415670009", "SCT", "Rolled Superior"),
    "R-102D7": ("399055006", "SCT", "Spot Compression"),
    "R-102C2": ("399110001", "SCT", "tangential"),
    "R-102D1": ("399011000", "SCT", "Axillary Tail"),
    "R-102D6": ("399163009", "SCT", "Magnification"),
    "R-102D5": ("399209000", "SCT", "Implant Displaced"),
    "R-102D2": ("399161006", "SCT", "Cleavage"),
    "R-40ABE": ("442593008", "SCT", "Infra-mammary fold"),
    "R-102D3": ("399197002", "SCT", "Rolled Lateral"),
    "R-102CA": ("414493004", "SCT", "Rolled Inferior"),
}

# CID 6022 Side.
LATERALITY_CODES: dict[str, CodeTuple] = {
    "L": ("80248007", "SCT", "Left breast"),
    "R": ("73056007", "SCT", "Right breast"),
    "B": ("63762007", "SCT", "Both breasts"),
}

_VIEW_POSITIONS = {
    "CC": "CC",
    "MLO": "MLO",
    "ML": "ML",
    "LM": "LM",
    "LMO": "LMO",
    "XCCL": "XCCL",
    "XCC": "XCCL",
    "XCCM": "XCCM",
    "FB": "FB",
    "SIO": "SIO",
    "ISO": "ISO",
}
# ViewPosition values that name no projection of the breast (calibration and QC objects).
_NON_VIEW_POSITIONS = {"FLATFIELD", "FLAT FIELD", "FLAT_FIELD", "PHANTOM", "QC", "CALIBRATION"}
_LATERALITY_PREFIX = re.compile(r"^(?:LEFT|RIGHT|L|R)[\s_\-.]*(?=[A-Z])")
_TEXT_VIEW = re.compile(
    r"(?<![A-Z0-9])(LEFT|RIGHT|L|R)[\s_\-.]*(XCCL|XCCM|MLO|LMO|CC|ML|LM)(?![A-Z0-9])"
)
_TEXT_FIELDS = ("PatientID", "SeriesDescription", "ProtocolName", "ImageComments", "StudyDescription")


@dataclass(frozen=True)
class ViewInfo:
    """Laterality and view of one image, where each came from, and their codes."""

    laterality: str | None  # "L", "R", "B" or None
    view: str | None  # CC, MLO, ML, LM, XCCL, ... or None
    laterality_source: str | None  # the attribute keyword (or "text") it came from
    view_source: str | None
    view_modifiers: tuple[CodeTuple, ...] = ()
    # Set (and ``view`` None) when ViewPosition says the object is no view of a breast at all
    # although ViewCodeSequence names one (Hologic writes a CC code on its FLATFIELD objects).
    view_conflict: str | None = None

    @property
    def view_code(self) -> CodeTuple | None:
        return view_code(self.view)

    @property
    def laterality_code(self) -> CodeTuple | None:
        return laterality_code(self.laterality)


def view_code(view: str | None) -> CodeTuple | None:
    """The CID 4014 code for a view abbreviation, or None."""
    return VIEW_CODES.get(view.upper()) if view else None


def view_modifier_code(value: str, scheme: str) -> CodeTuple | None:
    """The CID 4015 SCT code for a retired SNOMED-RT (SNM3 / SRT) view modifier, or None."""
    if scheme.strip().upper() not in {"SNM3", "SRT"}:
        return None
    return _SNM3_VIEW_MODIFIERS.get(value.strip())


def laterality_code(laterality: str | None) -> CodeTuple | None:
    """The CID 6022 code for "L", "R" or "B", or None."""
    return LATERALITY_CODES.get(laterality.upper()) if laterality else None


def _clean_laterality(value: object) -> str | None:
    text = str(value or "").strip().upper()
    return text if text in {"L", "R", "B"} else None


def _view_from_code_sequence(ds: Dataset) -> str | None:
    for item in ds.get("ViewCodeSequence", None) or []:
        value = str(item.get("CodeValue", "")).strip()
        scheme = str(item.get("CodingSchemeDesignator", "")).strip().upper()
        if scheme in {"SCT", "SNM3", "SRT"}:
            view = _SCT_VIEWS.get(value) or _SNM3_VIEWS.get(value)
            if view:
                return view
        meaning = str(item.get("CodeMeaning", "")).strip().lower()
        for abbreviation, code in VIEW_CODES.items():
            if meaning == code[2]:
                return abbreviation
    return None


def _view_modifiers(ds: Dataset) -> tuple[CodeTuple, ...]:
    modifiers: list[CodeTuple] = []
    for item in ds.get("ViewCodeSequence", None) or []:
        for mod in item.get("ViewModifierCodeSequence", None) or []:
            modifiers.append(
                (
                    str(mod.get("CodeValue", "")),
                    str(mod.get("CodingSchemeDesignator", "")),
                    str(mod.get("CodeMeaning", "")),
                )
            )
    return tuple(modifiers)


def _view_position(ds: Dataset) -> tuple[str, str | None] | None:
    """ViewPosition as written (upper case) and the view it maps to, or None when it is empty.
    A laterality prefix (``RMLO``, ``L CC``) is allowed."""
    position = str(ds.get("ViewPosition", "") or "").strip().upper()
    if not position:
        return None
    view = _VIEW_POSITIONS.get(position) or _VIEW_POSITIONS.get(_LATERALITY_PREFIX.sub("", position))
    return position, view


def _from_text(ds: Dataset) -> tuple[str | None, str | None]:
    for keyword in _TEXT_FIELDS:
        text = str(ds.get(keyword, "") or "").upper()
        match = _TEXT_VIEW.search(text)
        if match:
            return match.group(1)[0], match.group(2)
    return None, None


def patient_stem(patient_id: str) -> str:
    """The PatientID without a laterality-and-view part that names the image rather than the
    patient ("Mass-Test_P_00173_LEFT_CC" -> "Mass-Test_P_00173"); unchanged when it has none."""
    text = patient_id.strip()
    match = _TEXT_VIEW.search(text.upper())
    if match is None:
        return text
    return (text[:match.start()] + text[match.end():]).strip(" _-.")


def view_info(ds: Dataset) -> ViewInfo:
    """Laterality and view of an image, with the header each was taken from."""
    laterality: str | None = None
    laterality_source: str | None = None
    for keyword in ("ImageLaterality", "Laterality"):
        laterality = _clean_laterality(ds.get(keyword))
        if laterality:
            laterality_source = keyword
            break

    view = _view_from_code_sequence(ds)
    view_source = "ViewCodeSequence" if view else None
    position = _view_position(ds)
    conflict: str | None = None
    if view is not None and position is not None:
        # the code is authoritative about *which* view (a vendor ViewPosition naming another
        # view loses), but not when ViewPosition says the object is no view of a breast at all
        written, position_view = position
        if position_view is None and written in _NON_VIEW_POSITIONS:
            conflict = f"ViewPosition {written} contradicts ViewCodeSequence ({view})"
            view, view_source = None, None
    elif view is None and position is not None and position[1] is not None:
        view, view_source = position[1], "ViewPosition"

    if laterality is None or (view is None and conflict is None):
        text_laterality, text_view = _from_text(ds)
        if laterality is None and text_laterality:
            laterality, laterality_source = text_laterality, "text"
        if view is None and conflict is None and text_view:
            view, view_source = text_view, "text"
    return ViewInfo(laterality, view, laterality_source, view_source, _view_modifiers(ds), conflict)


def views_summary(present: Sequence[str], expected: Sequence[str]) -> tuple[list[str], str]:
    """The expected views missing, and a sentence a reader takes in at a glance."""
    missing = [v for v in expected if v not in present]
    if not expected:
        return [], f"{len(present)} views" if present else "no view recognised"
    found = len(expected) - len(missing)
    text = f"{found} of {len(expected)} expected views"
    return missing, text + (f"; {', '.join(missing)} missing" if missing else "")
