from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammogate.inference import Analyzer, ModelBundle
from mammogate.training.datasets import load_synthetic
from mammogate.training.metrics import froc, roc_auc, sensitivity_at_false_marks
from mammogate.training.synthetic import write_study

# Not the seeds of model.json's held-out check (9000..9019), nor training's (500000+): a test of
# its own, not a re-run of the reported numbers.
TEST_SEEDS = range(9100, 9120)


def test_check_seeds_are_used_by_neither_training_nor_the_reported_evaluation(shipped_bundle: ModelBundle) -> None:
    metadata = shipped_bundle.metadata
    first, last = (int(v) for v in metadata["evaluation"]["held_out_synthetic"]["seeds"].split(".."))
    assert not set(range(first, last + 1)) & set(TEST_SEEDS)
    for dataset in metadata["training_data"]["datasets"]:
        if dataset["name"] == "synthetic":
            count, _, seed = dataset["spec"].partition(":")[2].partition("@")
            training = load_synthetic(int(count), int(seed or 0))
            assert not {r.synthetic_seed for r in training.records} & set(TEST_SEEDS)


@pytest.mark.slow
def test_shipped_model_does_on_unseen_synthetic_studies_what_its_bundle_says(
    analyzer: Analyzer, tmp_path: Path
) -> None:
    """model.json reports the shipped model's exam AUC and lesion sensitivity on 20 held-out
    synthetic studies; on 20 other unseen studies it must do as well, within the sampling error
    of 20 studies, and better than chance. (The model issue's target, exam AUC >= 0.98 and
    >= 90 % lesion sensitivity at 0.5 false marks per image, is not met by the shipped model:
    model.json and docs/model.md say so.)"""
    reported = analyzer.bundle.metadata["evaluation"]["held_out_synthetic"]
    probe = Analyzer(dataclasses.replace(analyzer.bundle, operating_point=0.0), max_findings_per_image=5)
    labels, scores = [], []
    marks: list[list[tuple[float, bool, int]]] = []
    lesions = 0
    for number, seed in enumerate(TEST_SEEDS):
        study = write_study(tmp_path / str(seed), seed=seed, lesion=number % 2 == 1, burned_in_label=number % 3 == 0)
        result = probe.analyze_study(study.paths)
        assert result.exam_score is not None and not result.skipped
        labels.append(float(study.has_lesion))
        scores.append(result.exam_score)
        for image in result.images:
            truth = study.lesions[image.sop_instance_uid]
            image_marks = []
            for finding in image.findings:
                hit = any(np.hypot(finding.center[0] - t.center[0], finding.center[1] - t.center[1]) <= t.radius for t in truth)
                image_marks.append((finding.probability, hit, lesions if hit else -1))
            marks.append(image_marks)
            lesions += len(truth)
    assert sum(labels) == 10 and lesions == 20
    auc = roc_auc(labels, scores)
    sensitivity = sensitivity_at_false_marks(froc(marks, lesions), 0.5)
    print(f"unseen synthetic: exam AUC {auc:.3f} (model.json {reported['exam_auc']}), "
          f"lesion sensitivity {sensitivity:.2f} (model.json {reported['lesion_sensitivity_at_0.5_false_marks_per_image']})")
    assert auc > 0.5, f"exam AUC {auc:.3f}: no better than chance on unseen synthetic studies"
    # 10 vs 10 exams: an AUC's standard error is about 0.1; 20 lesions: a sensitivity's about 0.11
    assert auc >= reported["exam_auc"] - 0.25, f"exam AUC {auc:.3f}, model.json says {reported['exam_auc']}"
    assert sensitivity >= reported["lesion_sensitivity_at_0.5_false_marks_per_image"] - 0.3, (
        f"lesion sensitivity {sensitivity:.2f} at 0.5 false marks per image, model.json says "
        f"{reported['lesion_sensitivity_at_0.5_false_marks_per_image']}")


@pytest.mark.slow
def test_study_result_scores_and_heatmaps(analyzer: Analyzer, tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", seed=9101, lesion=True, rows=512, columns=416)
    result = analyzer.analyze_study(study.paths)
    assert result.study_instance_uid == study.study_instance_uid
    assert result.model == analyzer.bundle.model_info
    assert len(result.images) == 4 and set(result.breast_scores) == {"L", "R"}
    for side in ("L", "R"):
        assert result.breast_scores[side] == max(i.score for i in result.images if i.laterality == side)
    assert result.exam_score == max(result.breast_scores.values())
    assert result.category == ("flagged" if result.exam_score >= analyzer.threshold else "not_flagged")
    for image in result.images:
        assert (image.rows, image.columns) == (512, 416)
        assert image.heatmap is not None
        rows, columns = image.heatmap.shape  # the whole original frame, at the cells' size
        assert abs(rows / columns - 512 / 416) < 0.1
        assert image.heatmap.max() == pytest.approx(image.score)
        assert all(f.probability >= analyzer.threshold for f in image.findings)
        truth = study.lesions[image.sop_instance_uid]
        if truth and image.score >= analyzer.threshold:
            # the heatmap is in the original orientation: its peak is near the lesion
            r, c = np.unravel_index(np.argmax(image.heatmap), image.heatmap.shape)
            column, row = (c + 0.5) * 416 / columns, (r + 0.5) * 512 / rows
            assert np.hypot(column - truth[0].center[0], row - truth[0].center[1]) < 2 * truth[0].radius


def test_each_image_knows_its_nipple_breast_depth_and_pixel_spacing(analyzer: Analyzer, tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", seed=9102, lesion=False, rows=512, columns=416)
    result = analyzer.analyze_study(study.paths)
    files = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, study.paths)}
    assert len(result.images) == 4
    for image in result.images:
        ds = files[image.sop_instance_uid]
        assert image.pixel_spacing == pytest.approx(float(ds.ImagerPixelSpacing[0]))
        assert image.nipple is not None and image.breast_depth is not None
        column, row = image.nipple
        # the synthetic breast is a half ellipse 62-82 % of the width deep from the chest wall
        # (left on the left breast, right on the right one), its apex the nipple
        anterior = column if image.laterality == "L" else 416 - column
        assert 0.55 * 416 < anterior < 0.9 * 416, (image.laterality, image.view, column)
        assert 0.2 * 512 < row < 0.8 * 512
        assert image.breast_depth == pytest.approx(anterior, rel=0.1)
        pixels = np.asarray(ds.pixel_array, dtype=np.float64)
        assert pixels[int(row), int(column) - 8 if image.laterality == "L" else int(column) + 8] > pixels.min()
        assert image.distance_from_nipple(image.nipple) == (0.0, 0.0)
        # which way the rows run on the patient, for the findings' clock positions
        assert image.patient_orientation == tuple(ds.PatientOrientation)


@pytest.mark.slow
def test_analysis_is_deterministic(analyzer: Analyzer, tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", seed=9102, lesion=True, rows=512, columns=416)
    first = analyzer.analyze_study(study.paths)
    again = analyzer.analyze_study(list(reversed(study.paths)))
    fresh = Analyzer(analyzer.bundle).analyze_study(study.paths)
    for other in (again, fresh):
        assert [(i.sop_instance_uid, i.score) for i in other.images] == [
            (i.sop_instance_uid, i.score) for i in first.images
        ]
        assert other.findings == first.findings
        assert other.exam_score == first.exam_score


def test_pixels_that_do_not_decode_become_a_failed_skipped_image(
    analyzer: Analyzer, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "s", seed=9103, lesion=False, rows=256, columns=208)
    broken = study.paths[0]
    ds = pydicom.dcmread(broken)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(broken)
    result = analyzer.analyze_study(study.paths)
    assert len(result.images) == 3
    (skipped,) = result.skipped
    assert skipped.failed and skipped.sop_instance_uid == str(ds.SOPInstanceUID)
    assert "pixel data" in skipped.reason.lower()
    assert result.failed_images == (skipped,)
    assert result.category in ("flagged", "not_flagged")


def test_an_rgb_image_is_skipped_as_out_of_scope_not_failed(
    analyzer: Analyzer, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "s", seed=9108, lesion=False, rows=256, columns=208)
    rgb = study.paths[0]
    ds = pydicom.dcmread(rgb)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture, Modality still MG
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.zeros((ds.Rows, ds.Columns, 3), dtype=np.uint8).tobytes()
    ds.save_as(rgb)
    result = analyzer.analyze_study(study.paths)
    assert len(result.images) == 3
    (skipped,) = result.skipped
    assert skipped.sop_instance_uid == str(ds.SOPInstanceUID) and not skipped.failed
    assert "grayscale" in skipped.reason
    assert result.failed_images == ()


def test_study_with_nothing_analysable_fails(analyzer: Analyzer, tmp_path: Path) -> None:
    study = write_study(tmp_path / "s", seed=9104, lesion=False, rows=256, columns=208)
    for path in study.paths[:2]:
        ds = pydicom.dcmread(path)
        ds.PixelData = b"\0\0"
        ds.save_as(path)
    for path in study.paths[2:]:
        ds = pydicom.dcmread(path)
        ds.PresentationIntentType = "FOR PROCESSING"
        ds.save_as(path)
    garbage = tmp_path / "s" / "garbage.dcm"
    garbage.write_bytes(b"not dicom")
    result = analyzer.analyze_study([*study.paths, garbage])
    assert result.images == () and result.exam_score is None and result.category == "failed"
    assert result.breast_scores == {}
    assert [s.failed for s in result.skipped].count(True) == 3
    assert [s.failed for s in result.skipped].count(False) == 2
    assert any(s.sop_instance_uid == "garbage.dcm" for s in result.skipped)


def test_study_with_every_image_out_of_scope_is_skipped_not_failed(
    analyzer: Analyzer, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "s", seed=9106, lesion=False, rows=256, columns=208)
    for path in study.paths:
        ds = pydicom.dcmread(path)
        ds.PresentationIntentType = "FOR PROCESSING"
        ds.save_as(path)
    result = analyzer.analyze_study(study.paths)
    assert result.images == () and result.exam_score is None and result.failed_images == ()
    assert len(result.skipped) == 4 and result.category == "skipped"


def test_flagged_images_have_findings_and_scores_are_not_rounded(
    analyzer: Analyzer, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "s", seed=9107, lesion=True, rows=512, columns=416)
    result = analyzer.analyze_study(study.paths)
    for image in result.images:
        assert bool(image.findings) is (image.score >= analyzer.threshold)
        if image.findings:
            assert max(f.probability for f in image.findings) == image.score
        # every finding is placed on the breast (inference.position), from the header's
        # Patient Orientation: nothing assumed
        assert all(f.position is not None and not f.position.orientation_assumed for f in image.findings)
    assert any(round(i.score, 6) != i.score for i in result.images)
    assert any(f.position is not None and f.position.region for f in result.findings)


@pytest.mark.parametrize("lesion", [False])
def test_skipped_views_do_not_count_towards_breast_scores(
    analyzer: Analyzer, tmp_path: Path, lesion: bool
) -> None:
    study = write_study(tmp_path / "s", seed=9105, lesion=lesion, rows=256, columns=208)
    for path in study.paths:
        ds = pydicom.dcmread(path)
        if ds.ImageLaterality == "L":
            ds.ViewCodeSequence[0].CodeValue = "399260004"
            ds.ViewCodeSequence[0].CodeMeaning = "medio-lateral"
            ds.save_as(path)
    result = analyzer.analyze_study(study.paths)
    assert set(result.breast_scores) == {"R"}
    assert {s.reason for s in result.skipped} == {"view ML is not a screening view (CC/MLO)"}
