"""The Mammography CAD SR: tree shape and round trip through a file (the DICOM validators' word
on it: tests/integration/test_dicom_validators.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mammogate import DISCLAIMER
from mammogate.inference.results import ImageResult, ModelInfo, SkippedImage, StudyResult
from mammogate.reporting import (
    ReportParseError,
    ReportWriteError,
    SourceMismatchError,
    build_mammography_cad_sr,
    read_cad_sr,
    read_cad_sr_findings,
    save_report,
    write_dataset,
)

from .factories import (
    PATIENT_NAME,
    SourceFactory,
    finding,
    image_result,
    skipped,
    study_result,
)

# Helpers -------------------------------------------------------------------------------------


def concept(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def value(item: Dataset) -> str:
    return str(item.ConceptCodeSequence[0].CodeValue)


def child(item: Dataset, code: str) -> Dataset:
    matches = children(item, code)
    assert len(matches) == 1, f"expected one {code} under {concept(item)}"
    return matches[0]


def children(item: Dataset, code: str) -> list[Dataset]:
    return [
        c
        for c in item.get("ContentSequence", [])
        if "ConceptNameCodeSequence" in c and concept(c) == code
    ]


def resolve(root: Dataset, path: Sequence[int]) -> Dataset:
    assert path[0] == 1
    item = root
    for index in path[1:]:
        item = item.ContentSequence[index - 1]
    return item


def by_reference_targets(item: Dataset, root: Dataset, relationship: str) -> list[Dataset]:
    refs = [
        c
        for c in item.ContentSequence
        if "ReferencedContentItemIdentifier" in c and c.RelationshipType == relationship
    ]
    for ref in refs:
        assert "ValueType" not in ref and "ConceptNameCodeSequence" not in ref
    return [resolve(root, list(ref.ReferencedContentItemIdentifier)) for ref in refs]


def referenced_uid(image_item: Dataset) -> str:
    assert image_item.ValueType == "IMAGE"
    return str(image_item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def write_and_read(ds: Dataset, directory: Path) -> tuple[Path, Dataset]:
    path = save_report(ds, directory)
    return path, pydicom.dcmread(path)


# Scenarios ----------------------------------------------------------------------------------


def scenario(
    name: str, make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> tuple[StudyResult, list[Dataset]]:
    rcc, rmlo, lcc, lmlo = (
        make_source("R", "CC", magnified=True),
        make_source("R", "MLO"),
        make_source("L", "CC"),
        make_source("L", "MLO"),
    )
    sources = [rcc, rmlo, lcc, lmlo]
    images: tuple[ImageResult, ...]
    if name == "findings":
        images = (
            image_result(
                rcc, (finding(rcc, 0.875, (20.5, 26.5)), finding(rcc, 0.61, (10.0, 40.0)))
            ),
            image_result(rmlo, (finding(rmlo, 0.123456789012, (30.25, 12.75)),)),
            image_result(lcc),
            image_result(lmlo),
        )
        return study_result(study_uid, model, images), sources
    if name == "two_views":
        # the RCC and RMLO marks lie at about the same distance from the nipple: one mass; the
        # LCC mark has no partner; the LMLO view never arrived
        nipple = {"nipple": (47.5, 32.0), "breast_depth": 46.0, "pixel_spacing": 0.5}
        images = (
            image_result(rcc, (finding(rcc, 0.875, (20.5, 26.5), certainty=0.5),), **nipple),
            image_result(rmlo, (finding(rmlo, 0.61, (22.0, 40.0), certainty=0.75),), **nipple),
            image_result(lcc, (finding(lcc, 0.55, (10.0, 10.0)),), **nipple),
        )
        result = dataclasses.replace(
            study_result(study_uid, model, images), headers=(rcc, rmlo, lcc),
            expected_views=("RCC", "LCC", "RMLO", "LMLO"))
        return result, [rcc, rmlo, lcc]
    if name == "no_findings":
        images = tuple(image_result(s) for s in sources)
        return study_result(study_uid, model, images), sources
    if name == "failed_view":
        images = (
            image_result(rcc, (finding(rcc, 0.7, (20.0, 20.0)),)),
            image_result(rmlo),
            image_result(lcc),
        )
        return study_result(study_uid, model, images, (skipped(lmlo, failed=True),)), sources
    if name == "no_analysable_view":
        failed = tuple(skipped(s, failed=True) for s in sources)
        return study_result(study_uid, model, (), failed), sources
    if name == "nothing_attempted":
        out_of_scope = tuple(
            skipped(s, failed=False, reason="For Processing image") for s in sources
        )
        return study_result(study_uid, model, (), out_of_scope), sources
    raise AssertionError(name)


SCENARIOS = ["findings", "two_views", "no_findings", "failed_view", "no_analysable_view", "nothing_attempted"]
# (CAD Processing and Findings Summary, Summary of Detections, Image Library entries)
EXPECTED = {
    "findings": ("111242", "111222", 4),
    "two_views": ("111242", "111222", 3),
    "no_findings": ("111241", "111222", 4),
    "failed_view": ("111244", "111223", 4),
    "no_analysable_view": ("111245", "111224", 4),
    "nothing_attempted": ("111245", "111225", 4),
}


# Tree shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_root_is_tid_4000_with_the_expected_summaries(
    name: str, make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario(name, make_source, study_uid, model)
    _, ds = write_and_read(build_mammography_cad_sr(result, sources), tmp_path)

    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.50"
    assert ds.Modality == "SR"
    assert ds.ValueType == "CONTAINER" and concept(ds) == "111036"
    assert ds.ContentTemplateSequence[0].MappingResource == "DCMR"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "4000"
    assert [concept(c) for c in ds.ContentSequence] == [
        "121049",
        "111028",
        "111017",
        "111064",
        "111065",
    ]
    summary_code, detections_code, library_size = EXPECTED[name]
    assert value(child(ds, "111017")) == summary_code
    assert value(child(ds, "111064")) == detections_code
    assert value(child(ds, "111065")) == "111225"
    assert "ContentSequence" not in child(ds, "111065")
    library = child(ds, "111028").ContentSequence
    assert len(library) == library_size
    assert all(item.ValueType == "IMAGE" for item in library)
    assert ds.CompletionFlag == "COMPLETE" and ds.VerificationFlag == "UNVERIFIED"


def test_findings_carry_probability_geometry_and_references(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario("findings", make_source, study_uid, model)
    _, ds = write_and_read(build_mammography_cad_sr(result, sources), tmp_path)

    impressions = children(child(ds, "111017"), "111034")
    assert len(impressions) == 3
    expected = [(f, f.sop_instance_uid) for f in result.findings]
    for impression, (original, uid) in zip(impressions, expected, strict=True):
        assert impression.RelationshipType == "INFERRED FROM"
        assert value(child(impression, "111056")) == "111150"
        single = child(impression, "111059")
        assert value(single) == "129793001"
        assert child(single, "111001").TextValue == "MammoNet"
        assert child(single, "111003").TextValue == "1.2.0"
        probability = child(single, "111047").MeasuredValueSequence[0]
        assert float(probability.NumericValue) == pytest.approx(
            original.probability * 100, abs=1e-10
        )
        assert probability.MeasurementUnitsCodeSequence[0].CodeValue == "%"
        center = child(single, "111010")
        assert center.GraphicType == "POINT"
        assert list(center.GraphicData) == pytest.approx(list(original.center))
        outline = child(single, "111041")
        assert outline.GraphicType == "POLYLINE"
        assert list(outline.GraphicData) == pytest.approx([v for p in original.outline for v in p])
        for scoord in (center, outline):
            (target,) = by_reference_targets(scoord, ds, "SELECTED FROM")
            assert referenced_uid(target) == uid


def test_image_library_entry_has_acquisition_context_from_the_header(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    result, sources = scenario("findings", make_source, study_uid, model)
    ds = build_mammography_cad_sr(result, sources)

    first = child(ds, "111028").ContentSequence[0]
    assert referenced_uid(first) == sources[0].SOPInstanceUID
    assert first.ReferencedSOPSequence[0].ReferencedSOPClassUID == sources[0].SOPClassUID
    assert all(c.RelationshipType == "HAS ACQ CONTEXT" for c in first.ContentSequence)
    assert value(child(first, "111027")) == "73056007"
    view = child(first, "111031")
    assert value(view) == "399162004"
    assert value(child(view, "111032")) == "399163009"
    assert child(first, "111044").TextValue == "P"
    assert child(first, "111043").TextValue == "L"
    assert child(first, "111060").Date == "20240315"
    assert child(first, "111061").Time == "101500"
    assert child(first, "111018").Date == "20240315"
    assert child(first, "111019").Time == "101712"
    horizontal = child(first, "111026").MeasuredValueSequence[0]
    assert float(horizontal.NumericValue) == pytest.approx(0.065)
    assert horizontal.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
    assert float(child(first, "111066").MeasuredValueSequence[0].NumericValue) == pytest.approx(
        0.07
    )
    assert value(child(child(ds, "111028").ContentSequence[2], "111027")) == "80248007"
    assert "ContentSequence" not in child(child(ds, "111028").ContentSequence[1], "111031")


def test_retired_snomed_view_codes_become_their_sct_equivalents(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    result, sources = scenario("findings", make_source, study_uid, model)
    old = sources[0].ViewCodeSequence[0]
    old.CodeValue, old.CodingSchemeDesignator = "R-10242", "SNM3"  # as GE and Hologic write CC
    ds = build_mammography_cad_sr(result, sources)
    view = child(child(ds, "111028").ContentSequence[0], "111031").ConceptCodeSequence[0]
    assert (view.CodeValue, view.CodingSchemeDesignator) == ("399162004", "SCT")


def test_retired_snomed_view_modifier_codes_become_their_sct_equivalents(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    result, sources = scenario("findings", make_source, study_uid, model)
    old = sources[0].ViewCodeSequence[0].ViewModifierCodeSequence[0]
    old.CodeValue, old.CodingSchemeDesignator, old.CodeMeaning = "R-102D5", "SRT", "implant displaced"
    ds = build_mammography_cad_sr(result, sources)
    view = child(child(ds, "111028").ContentSequence[0], "111031")
    modifier = child(view, "111032").ConceptCodeSequence[0]
    assert (modifier.CodeValue, modifier.CodingSchemeDesignator) == ("399209000", "SCT")
    assert modifier.CodeMeaning == "Implant Displaced"


def test_a_failed_file_that_did_not_read_as_dicom_is_left_out(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario("failed_view", make_source, study_uid, model)
    # the analyzer names an unreadable file by its name; no header exists for it
    unreadable = SkippedImage("garbage.dcm", "", "", "cannot read garbage.dcm as DICOM", True)
    result = study_result(study_uid, model, result.images, (*result.skipped, unreadable))
    _, ds = write_and_read(build_mammography_cad_sr(result, sources), tmp_path)

    library = [referenced_uid(i) for i in child(ds, "111028").ContentSequence]
    assert library == [s.SOPInstanceUID for s in sources]  # lmlo failed with its header
    failed = child(child(ds, "111064"), "111025")
    targets = by_reference_targets(child(failed, "111022"), ds, "HAS PROPERTIES")
    assert [referenced_uid(t) for t in targets] == [sources[3].SOPInstanceUID]

    # only the unreadable file failed: every view that has a header succeeded
    alone = study_result(study_uid, model, tuple(image_result(s) for s in sources), (unreadable,))
    ds = build_mammography_cad_sr(alone, sources)
    assert value(child(ds, "111017")) == "111241"
    assert value(child(ds, "111064")) == "111222"
    assert children(child(ds, "111064"), "111025") == []
    assert len(child(ds, "111028").ContentSequence) == 4


def test_failed_view_is_reported_under_failed_detections(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    result, sources = scenario("failed_view", make_source, study_uid, model)
    ds = build_mammography_cad_sr(result, sources)

    detections = child(ds, "111064")
    successful = child(detections, "111063")
    failed = child(detections, "111025")
    for group, expected in ((successful, result.images), (failed, result.failed_images)):
        assert group.RelationshipType == "INFERRED FROM"
        performed = child(group, "111022")
        assert value(performed) == "129793001"
        assert child(performed, "111001").TextValue == "MammoNet"
        targets = by_reference_targets(performed, ds, "HAS PROPERTIES")
        assert [referenced_uid(t) for t in targets] == [i.sop_instance_uid for i in expected]
    assert len(children(child(ds, "111017"), "111034")) == 1


def test_no_analysable_view_has_only_failed_detections(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    result, sources = scenario("no_analysable_view", make_source, study_uid, model)
    ds = build_mammography_cad_sr(result, sources)

    detections = child(ds, "111064")
    assert children(detections, "111063") == []
    targets = by_reference_targets(
        child(child(detections, "111025"), "111022"), ds, "HAS PROPERTIES"
    )
    assert {referenced_uid(t) for t in targets} == {s.SOPInstanceUID for s in sources}
    # no impression: the summary holds only its description, which says nothing was analysed
    assert [concept(c) for c in child(ds, "111017").ContentSequence][:3] == ["111033", "111001", "111003"]
    assert children(child(ds, "111017"), "111034") == []
    assert child(child(ds, "111017"), "111033").TextValue.startswith("0 views analysed.")


def test_nothing_attempted_lists_the_skipped_images_and_no_detection_groups(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    result, sources = scenario("nothing_attempted", make_source, study_uid, model)
    ds = build_mammography_cad_sr(result, sources)

    assert "ContentSequence" not in child(ds, "111064")
    assert [referenced_uid(i) for i in child(ds, "111028").ContentSequence] == [
        s.SOPInstanceUID for s in sources
    ]


# Document-level attributes ------------------------------------------------------------------


def test_patient_and_study_attributes_are_copied_and_the_french_name_survives(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario("findings", make_source, study_uid, model)
    path, ds = write_and_read(build_mammography_cad_sr(result, sources), tmp_path)

    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == PATIENT_NAME
    assert "Dupré^Hélène".encode() in path.read_bytes()
    assert str(ds.ReferringPhysicianName) == "Martin^Éloïse"
    for keyword in (
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
    ):
        assert ds[keyword].value == sources[0][keyword].value, keyword
    assert ds.StudyInstanceUID == study_uid
    assert ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert ds.Manufacturer == "mammogate"


def test_patient_attributes_come_from_the_first_analysed_image_not_the_first_arrival(
    make_source: SourceFactory,
    study_uid: str,
    model: ModelInfo,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    result, sources = scenario("no_findings", make_source, study_uid, model)
    stray = make_source("R", "CC")  # arrived first, out of scope, with another patient's data
    stray.SpecificCharacterSet = "ISO_IR 100"
    stray.PatientName, stray.PatientID, stray.AccessionNumber = "Other^Patient", "OTHER-9", "X9"
    result = study_result(
        study_uid, model, result.images, (skipped(stray, failed=False, reason="For Processing"),)
    )
    with caplog.at_level("WARNING", logger="mammogate.reporting.cad_sr"):
        _, ds = write_and_read(build_mammography_cad_sr(result, [stray, *sources]), tmp_path)

    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == PATIENT_NAME
    assert (ds.PatientID, ds.AccessionNumber) == ("MG-0001", "ACC123")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(stray.SOPInstanceUID) in warnings[0]
    assert "OTHER-9" not in warnings[0] and "MG-0001" not in warnings[0]  # UIDs only


def test_software_versions_are_cut_to_the_lo_limit(
    make_source: SourceFactory, study_uid: str, tmp_path: Path
) -> None:
    long_name = ModelInfo(name="M" * 70, version="1.0", sha256="", operating_point=0.4)
    result, sources = scenario("no_findings", make_source, study_uid, long_name)
    _, ds = write_and_read(build_mammography_cad_sr(result, sources), tmp_path)
    assert len(ds.ManufacturerModelName) == 64
    assert [len(v) for v in ds.SoftwareVersions][1] == 64
    ds = build_mammography_cad_sr(result, sources, software_versions=["v" * 65, "2"])
    assert list(ds.SoftwareVersions) == ["v" * 64, "2"]


def test_every_output_says_it_is_not_for_clinical_use(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    result, sources = scenario("no_findings", make_source, study_uid, model)
    ds = build_mammography_cad_sr(result, sources)

    assert "not for clinical use" in ds.SeriesDescription
    performed = child(child(child(ds, "111064"), "111063"), "111022")
    parameters = [c.TextValue for c in children(performed, "111002")]
    assert DISCLAIMER in parameters
    assert f"sha256={model.sha256}" in parameters


def test_arguments_set_uids_numbers_and_content_datetime(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario("no_findings", make_source, study_uid, model)
    series_uid, sop_uid = generate_uid(), generate_uid()
    ds = build_mammography_cad_sr(
        result,
        sources,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        series_number=42,
        instance_number=3,
        content_datetime=datetime(2024, 3, 16, 8, 30, 5),
        device_serial_number="node-7",
        software_versions=["mammogate 9"],
    )
    path, back = write_and_read(ds, tmp_path)

    assert path.name == f"{sop_uid}.dcm"
    assert (back.SeriesInstanceUID, back.SOPInstanceUID) == (series_uid, sop_uid)
    assert (back.SeriesNumber, back.InstanceNumber) == (42, 3)
    assert (back.ContentDate, back.ContentTime) == ("20240316", "083005")
    assert back.DeviceSerialNumber == "node-7"
    assert back.SoftwareVersions == "mammogate 9"
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPInstanceUID == sop_uid
    assert path.read_bytes()[128:132] == b"DICM"


def test_evidence_lists_every_referenced_image_by_study_and_series(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    other_series = make_source("L", "MLO")
    other_series.SeriesInstanceUID = generate_uid()
    result, sources = scenario("failed_view", make_source, study_uid, model)
    result = study_result(
        study_uid, model, (*result.images, image_result(other_series)), result.skipped
    )
    ds = build_mammography_cad_sr(result, [*sources, other_series])

    (study,) = ds.CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == study_uid
    listed = {
        (series.SeriesInstanceUID, ref.ReferencedSOPInstanceUID)
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    library = {referenced_uid(i) for i in child(ds, "111028").ContentSequence}
    assert {uid for _, uid in listed} == library
    assert (other_series.SeriesInstanceUID, other_series.SOPInstanceUID) in listed
    assert len(study.ReferencedSeriesSequence) == 2
    assert ds.ReferencedPerformedProcedureStepSequence == []
    assert ds.PerformedProcedureCodeSequence == []


# Reading back --------------------------------------------------------------------------------


def test_read_cad_sr_findings_returns_what_was_predicted(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario("findings", make_source, study_uid, model)
    _, ds = write_and_read(build_mammography_cad_sr(result, sources), tmp_path)

    reported = read_cad_sr_findings(ds)
    assert len(reported) == len(result.findings)
    for got, want in zip(reported, result.findings, strict=True):
        assert got.sop_instance_uid == want.sop_instance_uid
        assert got.laterality == want.laterality
        assert got.probability == pytest.approx(want.probability, abs=1e-12)
        assert got.center == pytest.approx(want.center)
        assert [p for point in got.outline for p in point] == pytest.approx(
            [p for point in want.outline for p in point]
        )
        assert (got.algorithm_name, got.algorithm_version) == (model.name, model.version)
        assert got.rendering_intent.value == "111150"
    contents = read_cad_sr(ds)
    assert contents.summary.value == "111242"
    assert contents.detections.value == "111222"
    assert contents.analyses.value == "111225"
    assert contents.image_sop_instance_uids == tuple(s.SOPInstanceUID for s in sources)


def test_read_cad_sr_rejects_other_objects_and_dangling_references(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    result, sources = scenario("findings", make_source, study_uid, model)
    with pytest.raises(ReportParseError, match="not a Mammography CAD SR"):
        read_cad_sr(sources[0])
    ds = build_mammography_cad_sr(result, sources)
    center = child(child(children(child(ds, "111017"), "111034")[0], "111059"), "111010")
    center.ContentSequence[0].ReferencedContentItemIdentifier = [1, 2, 99]
    with pytest.raises(ReportParseError, match="does not resolve"):
        read_cad_sr(ds)
    del ds.ContentSequence[3]
    with pytest.raises(ReportParseError):
        read_cad_sr(ds)


# Argument checks -----------------------------------------------------------------------------


def test_sources_from_another_study_are_refused(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    result, sources = scenario("no_findings", make_source, study_uid, model)
    sources[2].StudyInstanceUID = generate_uid()
    with pytest.raises(SourceMismatchError, match=r"sources\[2\]"):
        build_mammography_cad_sr(result, sources)


def test_a_missing_source_header_is_refused(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    result, sources = scenario("no_findings", make_source, study_uid, model)
    with pytest.raises(SourceMismatchError, match="no header"):
        build_mammography_cad_sr(result, sources[:-1])
    with pytest.raises(ValueError, match="^sources"):
        build_mammography_cad_sr(result, [])
    with pytest.raises(TypeError, match="^sources"):
        build_mammography_cad_sr(result, sources[0])  # type: ignore[arg-type]


def test_a_finding_outside_its_image_is_refused(
    make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    source = make_source("R", "CC")
    result = study_result(
        study_uid, model, (image_result(source, (finding(source, 0.9, (46.0, 10.0)),)),)
    )
    with pytest.raises(ValueError, match="outside the 48x64 image"):
        build_mammography_cad_sr(result, [source])


def test_a_result_without_images_is_refused(
    study_uid: str, model: ModelInfo, make_source: SourceFactory
) -> None:
    with pytest.raises(ValueError, match="^result has no images"):
        build_mammography_cad_sr(study_result(study_uid, model, ()), [make_source()])
    with pytest.raises(TypeError, match="^result"):
        build_mammography_cad_sr("result", [make_source()])  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "number"), [("series_number", 0), ("instance_number", True)])
def test_bad_numbers_are_refused(
    name: str, number: object, make_source: SourceFactory, study_uid: str, model: ModelInfo
) -> None:
    result, sources = scenario("no_findings", make_source, study_uid, model)
    with pytest.raises((TypeError, ValueError), match=f"^{name}"):
        build_mammography_cad_sr(result, sources, **{name: number})  # type: ignore[arg-type]


# Writing -------------------------------------------------------------------------------------


def test_save_report_leaves_no_temporary_file(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario("no_findings", make_source, study_uid, model)
    ds = build_mammography_cad_sr(result, sources)
    path = save_report(ds, tmp_path / "reports" / "nested")
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    again = write_dataset(ds, path)
    assert pydicom.dcmread(again).SOPInstanceUID == ds.SOPInstanceUID


def test_write_failure_is_a_report_write_error(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario("no_findings", make_source, study_uid, model)
    ds = build_mammography_cad_sr(result, sources)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ReportWriteError):
        save_report(ds, blocker)
    with pytest.raises(ReportWriteError):
        write_dataset(ds, tmp_path / "missing" / "x.dcm")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


# Algorithm parameters -----------------------------------------------------------------------


def _all_items(item: Dataset) -> list[Dataset]:
    found = []
    for nested in item.get("ContentSequence", []):
        found.append(nested)
        found.extend(_all_items(nested))
    return found


def test_algorithm_parameters_say_what_the_model_was_trained_on_and_how_it_performed(
    make_source: SourceFactory, study_uid: str, tmp_path: Path
) -> None:
    described = ModelInfo(
        name="mammogate-cnn", version="2.0.0", sha256="cd" * 32, operating_point=0.3,
        description="trained on mias (224 images); mias 5-fold CV AUC 0.80 (95% CI 0.70-0.88)",
    )
    result, sources = scenario("findings", make_source, study_uid, described)
    _, ds = write_and_read(build_mammography_cad_sr(result, sources), tmp_path)
    parameters = [
        str(item.get("TextValue", "")) for item in _all_items(ds)
        if "ConceptNameCodeSequence" in item and concept(item) == "111002"
    ]
    assert any("mias 5-fold CV AUC 0.80 (95% CI 0.70-0.88)" in p for p in parameters)
    assert any(DISCLAIMER in p for p in parameters)


# Composite features and the overall impression ----------------------------------------------


def test_a_lesion_on_both_views_of_a_breast_is_one_mass_inferred_from_its_two_findings(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario("two_views", make_source, study_uid, model)
    _, ds = write_and_read(build_mammography_cad_sr(result, sources), tmp_path)

    impressions = children(child(ds, "111017"), "111034")
    assert len(impressions) == 2  # the mass, and the lone left CC mark
    composite = child(impressions[0], "111015")
    assert value(composite) == "129788004"  # Mammographic breast mass
    assert value(child(composite, "111056")) == "111150"
    assert value(child(composite, "111016")) == "111154"  # related spatially
    assert value(child(composite, "111057")) == "111158"  # detected on multiple images
    assert float(child(composite, "111047").MeasuredValueSequence[0].NumericValue) == 87.5
    # Certainty of Feature: the more certain view's Certainty of Finding
    assert float(child(composite, "111011").MeasuredValueSequence[0].NumericValue) == 75.0
    parts = children(composite, "111059")
    assert [p.RelationshipType for p in parts] == ["INFERRED FROM", "INFERRED FROM"]
    part_images = {
        referenced_uid(resolve(ds, child(p, "111010").ContentSequence[0].ReferencedContentItemIdentifier))
        for p in parts
    }
    assert part_images == {sources[0].SOPInstanceUID, sources[1].SOPInstanceUID}
    assert children(impressions[1], "111015") == []
    assert len(children(impressions[1], "111059")) == 1

    contents = read_cad_sr(ds)
    assert len(contents.findings) == 3
    assert len(contents.composites) == 1
    mass = contents.composites[0]
    assert mass.feature.value == "129788004" and mass.probability == pytest.approx(0.875)
    assert {contents.findings[i].sop_instance_uid for i in mass.findings} == part_images
    assert sorted(contents.findings[i].certainty for i in mass.findings) == [0.5, 0.75]
    assert contents.findings[2].certainty is None  # the LCC mark states none: no 111012 item
    assert children(child(impressions[1], "111059"), "111012") == []


def test_findings_too_far_apart_from_the_nipple_stay_two_single_image_findings(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    rcc, rmlo = make_source("R", "CC"), make_source("R", "MLO")
    # 1.2 mm per pixel: the marks lie 33 mm and 51 mm from the nipple, 18 mm apart (> 15)
    where = {"nipple": (47.5, 32.0), "breast_depth": 46.0, "pixel_spacing": 1.2}
    images = (
        image_result(rcc, (finding(rcc, 0.8, (20.0, 32.0)),), **where),
        image_result(rmlo, (finding(rmlo, 0.7, (5.0, 32.0)),), **where),
    )
    result = study_result(study_uid, model, images)
    _, ds = write_and_read(build_mammography_cad_sr(result, [rcc, rmlo]), tmp_path)
    contents = read_cad_sr(ds)
    assert contents.composites == ()
    assert len(contents.findings) == 2


def test_the_impression_says_the_exam_score_and_which_expected_views_were_missing(
    make_source: SourceFactory, study_uid: str, model: ModelInfo, tmp_path: Path
) -> None:
    result, sources = scenario("two_views", make_source, study_uid, model)
    _, ds = write_and_read(build_mammography_cad_sr(result, sources), tmp_path)
    text = read_cad_sr(ds).impression
    assert text is not None
    assert "Exam probability of cancer 87.5 %, at or above the operating point 40.0 % (flagged)" in text
    assert "3 views analysed" in text
    assert "Received 3 of 4 expected views; LMLO missing" in text
    assert "1 finding pair on a breast's two views reported as one mass" in text
    assert text.endswith(DISCLAIMER)


