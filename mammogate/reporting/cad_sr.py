"""The Mammography CAD SR (TID 4000): build it from a StudyResult, read it back, write it.

Layout of the content tree (DICOM_SR.md 1.4)::

    1      CONTAINER Mammography CAD Report (DCMR 4000)
    1.1      HAS CONCEPT MOD Language = en-US
    1.2      CONTAINS Image Library
    1.2.k      CONTAINS IMAGE (TID 4020), analysed views first, then views that failed
    1.3      CONTAINS CAD Processing and Findings Summary (TID 4001)
               INFERRED FROM Individual Impression/Recommendation (TID 4003), one per finding
    1.4      CONTAINS Summary of Detections (+ Successful / Failed Detections, TID 4015/4017)
    1.5      CONTAINS Summary of Analyses = Not Attempted

Views that failed are in the Image Library too: their TID 4017 Detection Performed must
reference them there, and the library may not be empty when no view could be analysed. A
failed file with no header among the sources (it did not even read as DICOM, so it has no SOP
Instance UID to reference) is left out of the SR.
When nothing was even attempted (every image skipped as out of scope), the library lists
the skipped images and both summaries say so (111245, 111225).

Probabilities are written x100 as DS with the most precise representation that fits 16
characters (pydicom ``format_number_as_ds``): at least 14 significant digits in 0..100, so a
value read back matches the StudyResult's probability to ~1e-12 (the model itself computes in
float32, and batching alone moves its output by ~1e-9). Coordinates are FL (float32).
"""

from __future__ import annotations

import copy
import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from mammogate import DISCLAIMER, __version__
from mammogate.imaging.views import view_info, views_summary
from mammogate.inference.correspondence import RULE as CORRESPONDENCE_RULE
from mammogate.inference.correspondence import corresponding_findings
from mammogate.inference.results import ImageResult, ModelInfo, SkippedImage, StudyResult
from mammogate.reporting import sr_items as si
from mammogate.reporting.cad_templates import (
    AlgorithmIdentification,
    CompositeFeature,
    DetectionPerformed,
    ImageLibraryEntry,
    SingleImageFinding,
    valid_da,
    valid_tm,
)
from mammogate.reporting.errors import ReportParseError, ReportWriteError, SourceMismatchError
from mammogate.reporting.sr_items import ContentItemPath
from mammogate.storage import describe_os_error, fsync_directory, write_dicom_atomically

logger = logging.getLogger(__name__)

MAMMOGRAPHY_CAD_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.50"
SERIES_DESCRIPTION = "mammogate CAD (not for clinical use)"
MANUFACTURER = "mammogate"
_IMAGE_LIBRARY_PATH: ContentItemPath = (1, 2)
_COPIED_FROM_SOURCE = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
)


def algorithm_identification(model: ModelInfo) -> AlgorithmIdentification:
    """TID 4019 for a model bundle; the parameters carry its hash and the disclaimer."""
    parameters = [f"operating_point={model.operating_point:g}", DISCLAIMER]
    if model.description:
        parameters.insert(1, model.description)
    if model.sha256:
        parameters.insert(0, f"sha256={model.sha256}")
    return AlgorithmIdentification(model.name, model.version, parameters)


def build_mammography_cad_sr(
    result: StudyResult,
    sources: Sequence[Dataset],
    *,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 9001,
    instance_number: int = 1,
    content_datetime: datetime | None = None,
    device_serial_number: str | None = None,
    software_versions: Sequence[str] | None = None,
    predecessors: Sequence[PriorDocument] = (),
) -> Dataset:
    """A Mammography CAD SR for ``result``, ready to write as Part 10 (Explicit VR LE).

    ``predecessors``: the documents this one replaces (an earlier analysis of the study),
    listed in the Predecessor Documents Sequence so a PACS can tell the current result.

    ``sources`` are the headers of the study's images (pixel data not needed); patient and
    study attributes and the Specific Character Set are copied from the first image of the
    Image Library (the first analysed one when there is one), not from whatever object
    arrived first.
    ``device_serial_number`` defaults to this host's name (where the model ran);
    ``software_versions`` to mammogate's and the model's versions.

    Raises TypeError / ValueError for bad arguments (a finding outside its image, a result
    without images) and SourceMismatchError when a source is missing or from another study.
    """
    if not isinstance(result, StudyResult):
        raise TypeError(f"result must be a StudyResult, not {type(result).__name__}")
    headers = index_sources(result, sources)
    library = _library_images(result, headers)
    entries = [ImageLibraryEntry.from_source(_header(headers, uid)) for uid, _ in library]
    path_of = {uid: (*_IMAGE_LIBRARY_PATH, k) for k, (uid, _) in enumerate(library, start=1)}
    algorithm = algorithm_identification(result.model)

    single: dict[int, tuple[SingleImageFinding, ContentItemPath]] = {}
    for image in result.images:
        for index, finding in enumerate(image.findings):
            _check_finding_on_image(image, index)
            single[id(finding)] = (
                SingleImageFinding(finding.probability, finding.center, finding.outline, algorithm,
                                   certainty=finding.certainty),
                path_of[image.sop_instance_uid],
            )
    # a lesion seen on a breast's two views is one composite feature (TID 4004) inferred
    # from its two findings, in place of two unrelated marks (the rule: inference.correspondence)
    pairs = corresponding_findings(result)
    pair_of = {id(p.craniocaudal): p for p in pairs}
    in_pairs = {id(f) for p in pairs for f in (p.craniocaudal, p.lateral)}
    impressions = []
    for finding in result.findings:
        if id(finding) in pair_of:
            pair = pair_of[id(finding)]
            impressions.append(CompositeFeature(
                [single[id(pair.craniocaudal)], single[id(pair.lateral)]], pair.probability,
                algorithm).to_item())
        elif id(finding) not in in_pairs:
            impressions.append(single[id(finding)][0].to_item(single[id(finding)][1]))

    analysed = [path_of[i.sop_instance_uid] for i in result.images]
    failed = [
        path_of[s.sop_instance_uid] for s in result.failed_images if s.sop_instance_uid in path_of
    ]
    content = [
        si.coded("HAS CONCEPT MOD", si.LANGUAGE_OF_CONTENT, si.ENGLISH_US),
        si.container("CONTAINS", si.IMAGE_LIBRARY, [e.to_item() for e in entries]),
        si.coded(
            "CONTAINS",
            si.CAD_PROCESSING_AND_FINDINGS_SUMMARY,
            _processing_summary(bool(analysed), bool(failed), bool(impressions)),
            [
                # TID 4002: the impression in words, and the algorithm that made it (TID 4019)
                si.text("HAS PROPERTIES", si.IMPRESSION_DESCRIPTION,
                        impression_description(result, len(pairs))),
                *algorithm.to_items(),
                *impressions,
            ],
        ),
        _summary_of_detections(algorithm, analysed, failed),
        si.coded("CONTAINS", si.SUMMARY_OF_ANALYSES, si.NOT_ATTEMPTED),
    ]

    when = content_datetime or datetime.now()
    first = _header(headers, library[0][0])
    _warn_other_patients(first, sources)
    ds = _document(
        first,
        result,
        series_instance_uid=series_instance_uid or generate_uid(),
        sop_instance_uid=sop_instance_uid or generate_uid(),
        series_number=series_number,
        instance_number=instance_number,
        when=when,
        device_serial_number=device_serial_number,
        software_versions=software_versions,
    )
    ds.CurrentRequestedProcedureEvidenceSequence = evidence_items(
        [_header(headers, uid) for uid, _ in library])
    if predecessors:
        ds.PredecessorDocumentsSequence = [
            references(result.study_instance_uid, [
                (p.series_instance_uid, p.sop_class_uid, p.sop_instance_uid) for p in predecessors
            ])
        ]
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [si.code_item(si.MAMMOGRAPHY_CAD_REPORT)]
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "4000"
    ds.ContentTemplateSequence = [template]
    ds.ContentSequence = content
    logger.info(
        "built Mammography CAD SR %s for study %s: %d images, %d findings (%d on two views), "
        "%d failed",
        ds.SOPInstanceUID,
        result.study_instance_uid,
        len(analysed),
        len(single),
        len(pairs),
        len(failed),
    )
    return ds


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def received_views(headers: Sequence[Dataset]) -> list[str]:
    """Laterality + view ("RMLO") of each image header whose laterality and view are known."""
    views = set()
    for header in headers:
        info = view_info(header)
        if info.laterality in ("L", "R") and info.view:
            views.add(f"{info.laterality}{info.view}")
    return sorted(views)


def impression_description(result: StudyResult, lesions_on_two_views: int = 0) -> str:
    """The overall impression in words (TID 4002 Impression Description): the exam and breast
    probabilities against the operating point, how many views were analysed, which expected
    views were missing, and the disclaimer."""
    parts = []
    if result.exam_score is not None:
        flagged = result.exam_score >= result.model.operating_point
        parts.append(
            f"Exam probability of cancer {_percent(result.exam_score)}, "
            f"{'at or above' if flagged else 'below'} the operating point "
            f"{_percent(result.model.operating_point)} ({'flagged' if flagged else 'not flagged'})"
        )
        breasts = [
            f"{name} breast {_percent(result.breast_scores[side])}"
            for side, name in (("R", "right"), ("L", "left")) if side in result.breast_scores
        ]
        if breasts:
            parts.append("; ".join(breasts))
    parts.append(f"{len(result.images)} view{'s' if len(result.images) != 1 else ''} analysed")
    if result.expected_views:
        _, summary = views_summary(received_views(result.headers), result.expected_views)
        parts.append(f"Received {summary}")
    if lesions_on_two_views:
        parts.append(
            f"{lesions_on_two_views} finding pair{'s' if lesions_on_two_views != 1 else ''} on "
            f"a breast's two views reported as one mass ({CORRESPONDENCE_RULE})"
        )
    return ". ".join(parts) + f". {DISCLAIMER}"


def copy_source_attributes(ds: Dataset, first: Dataset) -> None:
    """The patient and study attributes of a result object, and their character set, from its
    first source image."""
    if "SpecificCharacterSet" in first:
        ds.SpecificCharacterSet = copy.deepcopy(first.SpecificCharacterSet)
    for keyword in _COPIED_FROM_SOURCE:
        if keyword in first and _copyable(first[keyword]):
            ds[keyword] = copy.deepcopy(first[keyword])
        else:
            # Type 2 in the SR: a missing or invalid source value (real archives hold birth
            # dates of 00000000) is left empty rather than copied into an invalid object.
            setattr(ds, keyword, "")


def sanitised(header: Dataset) -> Dataset:
    """A copy of a source header whose patient and study attributes are as the result objects
    carry them (highdicom copies them from the headers it is given, and fails on a birth date
    of 00000000)."""
    clean = copy.deepcopy(header)
    copy_source_attributes(clean, header)
    return clean


def _copyable(element: DataElement) -> bool:
    """False for a DA or TM value that is not a real date or time (e.g. 00000000, 999999)."""
    if element.VR not in ("DA", "TM") or not element.value:
        return True
    valid = valid_da if element.VR == "DA" else valid_tm
    return valid(str(element.value).strip())


def _warn_other_patients(first: Dataset, sources: Sequence[Dataset]) -> None:
    """Log (UIDs only: no patient data in the log) sources whose PatientID differs from the
    header the SR's patient attributes are copied from."""
    others = [
        str(s.SOPInstanceUID) for s in sources if s.get("PatientID") != first.get("PatientID")
    ]
    if others:
        logger.warning(
            "study %s: %d source(s) have another PatientID than %s, whose patient attributes "
            "the SR copies: %s",
            first.get("StudyInstanceUID"),
            len(others),
            first.SOPInstanceUID,
            ", ".join(others),
        )


def index_sources(result: StudyResult, sources: Sequence[Dataset]) -> dict[str, Dataset]:
    """The source headers by SOP Instance UID, each checked to belong to the result's study
    (or to one of the studies an assembled exam holds)."""
    if isinstance(sources, Dataset) or not isinstance(sources, Sequence):
        raise TypeError("sources must be a sequence of pydicom Datasets")
    if not sources:
        raise ValueError("sources must hold at least one source image header")
    headers: dict[str, Dataset] = {}
    for i, source in enumerate(sources):
        if not isinstance(source, Dataset):
            raise TypeError(f"sources[{i}] must be a pydicom Dataset, not {type(source).__name__}")
        study = source.get("StudyInstanceUID")
        if study != result.study_instance_uid and study not in result.assembled_from:
            raise SourceMismatchError(
                f"sources[{i}] belongs to study {study}, not {result.study_instance_uid}"
            )
        headers[str(source.SOPInstanceUID)] = source
    return headers


def _header(headers: dict[str, Dataset], uid: str) -> Dataset:
    try:
        return headers[uid]
    except KeyError:
        raise SourceMismatchError(f"sources: no header for SOP Instance UID {uid}") from None


def _library_images(
    result: StudyResult, headers: dict[str, Dataset]
) -> list[tuple[str, ImageResult | SkippedImage]]:
    # a failed file without a header did not read as DICOM: no SOP Instance UID to reference
    failed = [s for s in result.failed_images if s.sop_instance_uid in headers]
    attempted: list[ImageResult | SkippedImage] = [*result.images, *failed]
    chosen = attempted or [s for s in result.skipped if not s.failed]
    if not chosen:
        raise ValueError("result has no images at all: nothing to report on")
    unique: dict[str, ImageResult | SkippedImage] = {}
    for image in chosen:
        if image.sop_instance_uid in unique:
            raise ValueError(f"result lists SOP Instance UID {image.sop_instance_uid} twice")
        unique[image.sop_instance_uid] = image
    return list(unique.items())


def _check_finding_on_image(image: ImageResult, index: int) -> None:
    finding = image.findings[index]
    name = f"result: finding {index} of image {image.sop_instance_uid}"
    if finding.sop_instance_uid != image.sop_instance_uid:
        raise ValueError(f"{name} references another image ({finding.sop_instance_uid})")
    for column, row in (finding.center, *finding.outline):
        if not (0 <= column <= image.columns and 0 <= row <= image.rows):
            raise ValueError(
                f"{name} has point ({column}, {row}) outside the {image.columns}x{image.rows} image"
            )


def _processing_summary(any_analysed: bool, any_failed: bool, any_findings: bool) -> Code:
    if not any_analysed:
        return si.NONE_SUCCEEDED_WITHOUT_FINDINGS
    if any_failed:
        return (
            si.NOT_ALL_SUCCEEDED_WITH_FINDINGS
            if any_findings
            else si.NOT_ALL_SUCCEEDED_WITHOUT_FINDINGS
        )
    return si.ALL_SUCCEEDED_WITH_FINDINGS if any_findings else si.ALL_SUCCEEDED_WITHOUT_FINDINGS


def _summary_of_detections(
    algorithm: AlgorithmIdentification,
    analysed: list[ContentItemPath],
    failed: list[ContentItemPath],
) -> Dataset:
    groups = []
    if analysed:
        groups.append(
            si.container(
                "INFERRED FROM",
                si.SUCCESSFUL_DETECTIONS,
                [DetectionPerformed(algorithm, analysed).to_item()],
            )
        )
    if failed:
        groups.append(
            si.container(
                "INFERRED FROM",
                si.FAILED_DETECTIONS,
                [DetectionPerformed(algorithm, failed).to_item()],
            )
        )
    if analysed and failed:
        value = si.PARTIALLY_SUCCEEDED
    elif analysed:
        value = si.SUCCEEDED
    elif failed:
        value = si.FAILED
    else:
        value = si.NOT_ATTEMPTED
    return si.coded("CONTAINS", si.SUMMARY_OF_DETECTIONS, value, groups)


def _document(
    first: Dataset,
    result: StudyResult,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int,
    when: datetime,
    device_serial_number: str | None,
    software_versions: Sequence[str] | None,
) -> Dataset:
    for name, value in (("series_number", series_number), ("instance_number", instance_number)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be positive, not {value}")
    ds = Dataset()
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = UID(MAMMOGRAPHY_CAD_SR_STORAGE)
    file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationVersionName = f"MAMMOGATE_{__version__}"[:16]
    ds.file_meta = file_meta

    ds.SOPClassUID = MAMMOGRAPHY_CAD_SR_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    copy_source_attributes(ds, first)
    ds.StudyInstanceUID = result.study_instance_uid
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.SeriesDate = ds.InstanceCreationDate
    ds.SeriesTime = ds.InstanceCreationTime
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = f"{result.model.name}"[:64]
    serial = platform.node() if device_serial_number is None else device_serial_number
    if serial:
        ds.DeviceSerialNumber = serial[:64]
    ds.SoftwareVersions = [
        str(version)[:64]  # LO
        for version in (
            software_versions
            if software_versions is not None
            else [f"mammogate {__version__}", f"{result.model.name} {result.model.version}"]
        )
    ]
    ds.InstanceNumber = instance_number
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.PerformedProcedureCodeSequence = []
    return ds


@dataclass(frozen=True)
class PriorDocument:
    """A result object an earlier analysis of the same study sent."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


def evidence_items(headers: Sequence[Dataset]) -> list[Dataset]:
    """One Current Requested Procedure Evidence item per study the images belong to (more
    than one for an exam assembled from several studies)."""
    by_study: dict[str, list[tuple[str, str, str]]] = {}
    for h in headers:
        by_study.setdefault(str(h.StudyInstanceUID), []).append(
            (str(h.SeriesInstanceUID), str(h.SOPClassUID), str(h.SOPInstanceUID)))
    return [references(study, objects) for study, objects in by_study.items()]


def references(study_instance_uid: str, objects: Sequence[tuple[str, str, str]]) -> Dataset:
    """A Hierarchical SOP Instance Reference Macro item: (series, class, instance) per object."""
    series: dict[str, list[Dataset]] = {}
    for series_uid, class_uid, instance_uid in objects:
        ref = Dataset()
        ref.ReferencedSOPClassUID = class_uid
        ref.ReferencedSOPInstanceUID = instance_uid
        series.setdefault(series_uid, []).append(ref)
    study = Dataset()
    study.StudyInstanceUID = study_instance_uid
    study.ReferencedSeriesSequence = []
    for uid, refs in series.items():
        item = Dataset()
        item.SeriesInstanceUID = uid
        item.ReferencedSOPSequence = refs
        study.ReferencedSeriesSequence.append(item)
    return study


# Reading back ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportedFinding:
    """One Single Image Finding read back from a Mammography CAD SR."""

    sop_instance_uid: str
    sop_class_uid: str
    laterality: str | None  # "L", "R", "B" from the Image Library entry, if it says
    probability: float  # 0..1 (the SR holds %)
    center: tuple[float, float]  # (column, row)
    outline: tuple[tuple[float, float], ...]  # empty when the SR has no Outline
    algorithm_name: str
    algorithm_version: str
    rendering_intent: Code
    certainty: float | None = None  # Certainty of Finding, 0..1, when the SR states it


@dataclass(frozen=True)
class ReportedComposite:
    """One Composite Feature (TID 4004) read back: a lesion inferred from several findings."""

    feature: Code  # e.g. (129788004, SCT) Mammographic breast mass
    probability: float  # 0..1
    findings: tuple[int, ...]  # indices into CadSrContents.findings


@dataclass(frozen=True)
class CadSrContents:
    """What a Mammography CAD SR says, in the terms of this package."""

    sop_instance_uid: str
    study_instance_uid: str
    summary: Code  # CAD Processing and Findings Summary (CID 6047), e.g. 111242
    detections: Code  # Summary of Detections (CID 6042)
    analyses: Code  # Summary of Analyses (CID 6042)
    image_sop_instance_uids: tuple[str, ...]  # the Image Library, in order
    findings: tuple[ReportedFinding, ...]  # every single image finding, composites' included
    composites: tuple[ReportedComposite, ...] = ()
    impression: str | None = None  # the Impression Description (TID 4002), when present


def _is(item: Dataset, concept: Code) -> bool:
    names = item.get("ConceptNameCodeSequence")
    if not names:
        return False
    return bool(
        names[0].CodeValue == concept.value
        and names[0].CodingSchemeDesignator == concept.scheme_designator
    )


def _child(item: Dataset, concept: Code, where: str) -> Dataset:
    for child in item.get("ContentSequence", []):
        if _is(child, concept):
            return child
    raise ReportParseError(f"{where}: no {concept.meaning} ({concept.value}) item")


def _value_code(item: Dataset) -> Code:
    return si.code_of(item.ConceptCodeSequence[0])


def _resolve(root: Dataset, path: Sequence[int], where: str) -> Dataset:
    if not path or path[0] != 1:
        raise ReportParseError(f"{where}: reference {list(path)} does not start at the root")
    item = root
    for index in path[1:]:
        children = item.get("ContentSequence", [])
        if not 1 <= index <= len(children):
            raise ReportParseError(f"{where}: reference {list(path)} does not resolve")
        item = children[index - 1]
    if item.get("ValueType") != "IMAGE":
        raise ReportParseError(f"{where}: reference {list(path)} is not an IMAGE")
    return item


def _points(item: Dataset) -> tuple[tuple[float, float], ...]:
    data = [float(v) for v in item.GraphicData]
    return tuple((data[i], data[i + 1]) for i in range(0, len(data) - 1, 2))


def _laterality(image: Dataset) -> str | None:
    for child in image.get("ContentSequence", []):
        if _is(child, si.IMAGE_LATERALITY):
            value = _value_code(child).value
            for letter, code in si.LATERALITY_CODES.items():
                if code.value == value:
                    return letter
    return None


def _read_finding(root: Dataset, finding: Dataset, where: str) -> ReportedFinding:
    def text_of(concept: Code) -> str:
        return str(_child(finding, concept, where).TextValue)

    center = _child(finding, si.CENTER, where)
    refs = [c for c in center.get("ContentSequence", []) if "ReferencedContentItemIdentifier" in c]
    if not refs:
        raise ReportParseError(f"{where}: Center has no SELECTED FROM reference")
    path = _path(refs[0].ReferencedContentItemIdentifier)
    image = _resolve(root, path, where)
    outline = [c for c in finding.get("ContentSequence", []) if _is(c, si.OUTLINE)]
    probability = _child(finding, si.PROBABILITY_OF_CANCER, where)
    certainty = [c for c in finding.get("ContentSequence", []) if _is(c, si.CERTAINTY_OF_FINDING)]
    ref = image.ReferencedSOPSequence[0]
    return ReportedFinding(
        sop_instance_uid=str(ref.ReferencedSOPInstanceUID),
        sop_class_uid=str(ref.ReferencedSOPClassUID),
        laterality=_laterality(image),
        probability=float(probability.MeasuredValueSequence[0].NumericValue) / 100.0,
        center=_points(center)[0],
        outline=_points(outline[0]) if outline else (),
        algorithm_name=text_of(si.ALGORITHM_NAME),
        algorithm_version=text_of(si.ALGORITHM_VERSION),
        rendering_intent=_value_code(_child(finding, si.RENDERING_INTENT, where)),
        certainty=(float(certainty[0].MeasuredValueSequence[0].NumericValue) / 100.0
                   if certainty else None),
    )


def _path(value: object) -> list[int]:
    # UL with VM 1-n: pydicom gives an int for one value, a MultiValue for several
    return [value] if isinstance(value, int) else [int(v) for v in value]  # type: ignore[attr-defined]


def read_cad_sr(ds: Dataset) -> CadSrContents:
    """Parse a Mammography CAD SR (ours or any TID 4000 with this layout).

    Raises ReportParseError when ``ds`` is not a Mammography CAD SR or its tree is not
    TID 4000 as this package reads it (a missing summary, a dangling reference).
    """
    if ds.get("SOPClassUID") != MAMMOGRAPHY_CAD_SR_STORAGE:
        raise ReportParseError(f"not a Mammography CAD SR: SOP Class {ds.get('SOPClassUID')}")
    if not _is(ds, si.MAMMOGRAPHY_CAD_REPORT):
        raise ReportParseError("root concept is not (111036, DCM) Mammography CAD Report")
    try:
        library = _child(ds, si.IMAGE_LIBRARY, "root")
        summary = _child(ds, si.CAD_PROCESSING_AND_FINDINGS_SUMMARY, "root")
        findings: list[ReportedFinding] = []
        composites = []
        for i, impression in enumerate(summary.get("ContentSequence", []), start=1):
            if not _is(impression, si.INDIVIDUAL_IMPRESSION):
                continue
            for item in impression.get("ContentSequence", []):
                if _is(item, si.SINGLE_IMAGE_FINDING):
                    findings.append(_read_finding(ds, item, f"impression {i}"))
                elif _is(item, si.COMPOSITE_FEATURE):
                    first = len(findings)
                    findings.extend(
                        _read_finding(ds, part, f"impression {i} composite feature")
                        for part in item.get("ContentSequence", [])
                        if _is(part, si.SINGLE_IMAGE_FINDING)
                    )
                    probability = _child(item, si.PROBABILITY_OF_CANCER, f"impression {i}")
                    composites.append(ReportedComposite(
                        feature=_value_code(item),
                        probability=float(probability.MeasuredValueSequence[0].NumericValue) / 100.0,
                        findings=tuple(range(first, len(findings))),
                    ))
        descriptions = [c for c in summary.get("ContentSequence", [])
                        if _is(c, si.IMPRESSION_DESCRIPTION)]
        return CadSrContents(
            sop_instance_uid=str(ds.SOPInstanceUID),
            study_instance_uid=str(ds.StudyInstanceUID),
            summary=_value_code(summary),
            detections=_value_code(_child(ds, si.SUMMARY_OF_DETECTIONS, "root")),
            analyses=_value_code(_child(ds, si.SUMMARY_OF_ANALYSES, "root")),
            image_sop_instance_uids=tuple(
                str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                for item in library.get("ContentSequence", [])
                if item.get("ValueType") == "IMAGE"
            ),
            findings=tuple(findings),
            composites=tuple(composites),
            impression=str(descriptions[0].TextValue) if descriptions else None,
        )
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ReportParseError):
            raise
        raise ReportParseError(f"malformed Mammography CAD SR: {exc}") from exc


def read_cad_sr_findings(ds: Dataset) -> list[ReportedFinding]:
    """The findings of a Mammography CAD SR (``read_cad_sr(ds).findings`` as a list)."""
    return list(read_cad_sr(ds).findings)


# Writing ------------------------------------------------------------------------------------


def write_dataset(ds: Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` as a Part 10 file atomically (``storage.write_dicom_atomically``: temp file,
    fsync, rename, fsync the folder). Raises ReportWriteError when the file system refuses."""
    target = Path(path)
    try:
        return write_dicom_atomically(ds, target)
    except OSError as exc:
        raise ReportWriteError(describe_os_error(exc, f"cannot write {target}")) from exc


def save_report(ds: Dataset, directory: str | os.PathLike[str]) -> Path:
    """Write ``ds`` atomically as ``<directory>/<SOPInstanceUID>.dcm`` and return the path."""
    folder = Path(directory)
    try:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            fsync_directory(folder.parent)  # the new folder's own entry survives a crash too
    except OSError as exc:
        raise ReportWriteError(f"cannot create {folder}: {exc}") from exc
    path = write_dataset(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    logger.info("saved report %s to %s", ds.SOPInstanceUID, path)
    return path
