from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammogate.inference import Analyzer, ModelBundle
from mammogate.training.synthetic import write_study
from mammogate.training.train import roc_auc, train_seeds, validation_seeds

# Not the seeds of model.json's held-out evaluation (9000..9019), nor training (100000+) or
# validation (150000+): a test of its own, not a re-run of the reported numbers.
TEST_SEEDS = range(9100, 9120)


def test_auc_test_seeds_are_used_by_neither_training_validation_nor_the_reported_evaluation(
    shipped_bundle: ModelBundle,
) -> None:
    metadata = shipped_bundle.metadata
    evaluated = metadata["evaluation"]["held_out_test"]["seeds"]
    first, last = (int(v) for v in evaluated.split(".."))
    used = set(range(first, last + 1))
    seed = metadata["training_data"]["seed"]
    used |= set(train_seeds(seed, metadata["training_data"]["studies"]))
    used |= set(validation_seeds(seed, metadata["evaluation"]["validation"]["studies"]))
    assert not used & set(TEST_SEEDS)


def test_lesion_studies_rank_above_normal_ones_and_findings_hit_the_lesion(
    analyzer: Analyzer, tmp_path: Path
) -> None:
    labels, scores = [], []
    lesion_images, hits = 0, 0
    for number, seed in enumerate(TEST_SEEDS):
        study = write_study(tmp_path / str(seed), seed=seed, lesion=number % 2 == 1, rows=512, columns=416)
        result = analyzer.analyze_study(study.paths)
        assert result.exam_score is not None and not result.skipped
        labels.append(study.has_lesion)
        scores.append(result.exam_score)
        for image in result.images:
            truth = study.lesions[image.sop_instance_uid]
            if not truth or not image.findings:
                continue
            lesion_images += 1
            best = max(image.findings, key=lambda f: f.probability)
            distance = np.hypot(best.center[0] - truth[0].center[0], best.center[1] - truth[0].center[1])
            hits += distance <= 1.5 * truth[0].radius
    assert sum(labels) == 10
    auc = roc_auc([float(v) for v in labels], scores)
    assert auc >= 0.9, f"exam AUC {auc:.3f} on held-out synthetic studies"
    assert lesion_images >= 8 and hits >= 0.8 * lesion_images, (hits, lesion_images)


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
        rows, columns = image.heatmap.shape
        assert abs(rows / columns - 512 / 416) < 0.1
        assert all(f.probability >= analyzer.threshold for f in image.findings)
        truth = study.lesions[image.sop_instance_uid]
        if truth and image.score >= analyzer.threshold:
            # the heatmap is in the original orientation: its peak is near the lesion
            r, c = np.unravel_index(np.argmax(image.heatmap), image.heatmap.shape)
            column, row = (c + 0.5) * 416 / columns, (r + 0.5) * 512 / rows
            assert np.hypot(column - truth[0].center[0], row - truth[0].center[1]) < 2 * truth[0].radius


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
    assert any(round(i.score, 6) != i.score for i in result.images)


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
