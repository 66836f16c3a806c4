"""Breast segmentation on the real samples and on synthetic images with burned-in labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage

from mammogate.imaging import display_image
from mammogate.imaging.breast import background_is_bright, pectoral_mask, segment_breast, shrink
from mammogate.imaging.prepare import prepare_dataset, prepare_picture
from mammogate.training.datasets import load
from mammogate.training.synthetic import VIEWS, _breast, make_study
from tests.shared_data import shared_data_dir

# The film labels burned into the CBIS-DDSM sample ("LCC", "LMLO", "RCC", "RMLO" and the film
# numbers), as (row0, row1, column0, column1) in original pixels, read off the images.
CBIS_LABELS = {
    "1-130.dcm": [(596, 812, 2116, 2368)],
    "1-131.dcm": [(656, 1088, 2200, 2584)],
    "1-132.dcm": [(432, 736, 0, 436), (84, 204, 0, 124)],
    "1-133.dcm": [(420, 736, 32, 456), (124, 240, 0, 64)],
}


def _mask_at(region_mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    picture = Image.fromarray(region_mask.astype(np.uint8) * 255)
    return np.asarray(picture.resize((shape[1], shape[0]), Image.Resampling.NEAREST)) > 0


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(CBIS_LABELS))
def test_cbis_film_labels_are_outside_the_breast_mask(name: str) -> None:
    ds = pydicom.dcmread(shared_data_dir() / "dicom" / "cbis_ddsm" / name)
    display = display_image(ds, max_rows=1200)
    factor = ds.Rows // display.shape[0]
    region = segment_breast(display)
    mask = _mask_at(region.mask, display.shape)
    assert 0.15 < mask.mean() < 0.7
    for row0, row1, column0, column1 in CBIS_LABELS[name]:
        box = mask[row0 // factor : row1 // factor + 1, column0 // factor : column1 // factor + 1]
        assert not box.any(), f"{name}: breast mask covers the label at rows {row0}-{row1}"
    # the chest wall side agrees with the headers (Laterality L: chest wall on the left)
    assert region.chest_wall_right is (ds.Laterality == "R")


@pytest.mark.slow
@pytest.mark.shared_data
def test_every_mias_lesion_centre_is_inside_the_breast_and_outside_the_pectoral_muscle() -> None:
    dataset = load(f"mias:{shared_data_dir() / 'mias'}")
    inside = outside_muscle = lesions = with_muscle = 0
    for record in dataset.records:
        assert record.path is not None
        pixels = np.asarray(Image.open(record.path).convert("L"), dtype=np.float32) / 255
        region = segment_breast(pixels)
        assert 0.1 < region.mask.mean() < 0.95, record.key  # some breasts fill the film
        with_muscle += bool(region.pectoral.any())
        scale = region.mask.shape[0] / pixels.shape[0]
        for lesion in record.lesions:
            lesions += 1
            row, column = int(lesion.y * scale), int(lesion.x * scale)
            inside += bool(region.mask[row, column])
            outside_muscle += not region.pectoral[row, column]
    assert lesions >= 80  # 84 abnormality rows, 3 without coordinates
    assert inside == lesions
    assert outside_muscle >= 0.95 * lesions, (outside_muscle, lesions)
    assert with_muscle >= 0.8 * len(dataset.records), with_muscle  # all mini-MIAS images are MLO


@pytest.mark.slow
@pytest.mark.shared_data
def test_kaggle_exports_without_inversion_are_found_and_corrected() -> None:
    folder = shared_data_dir() / "kaggle_bcd640"
    dataset = load(f"csv:{folder}")
    inverted = 0
    for record in dataset.records:
        assert record.path is not None
        pixels = np.asarray(Image.open(record.path).convert("L"), dtype=np.float32) / 255
        inverted += background_is_bright(pixels)
    # the data set's notes: about 16 % of the images lost their MONOCHROME1 inversion
    assert 0.14 * len(dataset) < inverted < 0.18 * len(dataset), inverted
    white = np.asarray(Image.open(folder / "105_1232990271.jpg").convert("L"))
    assert white[:20, -20:].mean() > 200  # white air in the corner away from the breast
    prepared = prepare_picture(white, 640, 384)
    assert prepared.inverted
    assert prepared.grid[~prepared.breast].max() == 0 and prepared.grid[prepared.breast].mean() > 0.2


def _truth(seed: int, index: int, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    laterality, view = VIEWS[index]
    thickness, pectoral = _breast(np.random.default_rng([seed, index + 1, 78]), rows, columns, view)
    breast, muscle = thickness > 0, pectoral > 0
    if laterality == "R":
        breast, muscle = breast[:, ::-1], muscle[:, ::-1]
    return breast, muscle


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / float((a | b).sum())


@pytest.mark.parametrize("seed", [41, 42, 43])
def test_synthetic_breast_and_muscle_are_found_and_burned_in_text_is_not_breast(seed: int) -> None:
    rows, columns = 1024, 832
    labelled = make_study(seed=seed, rows=rows, columns=columns, burned_in_label=True)
    plain = make_study(seed=seed, rows=rows, columns=columns)
    for index, (ds, clean) in enumerate(zip(labelled.datasets, plain.datasets, strict=True)):
        truth_breast, truth_muscle = _truth(seed, index, rows, columns)
        display = display_image(ds)
        region = segment_breast(display, find_pectoral=VIEWS[index][1] != "CC")
        mask = _mask_at(region.mask, (rows, columns))
        label = ds.pixel_array != clean.pixel_array
        assert not (mask & ndimage.binary_dilation(label, iterations=2)).any(), "label text inside the mask"
        assert _iou(mask, truth_breast) > 0.9
        if VIEWS[index][1] == "MLO":
            assert _iou(_mask_at(region.pectoral, (rows, columns)), truth_muscle) > 0.6
        else:
            small = shrink(display, region.mask.shape[0])
            oriented = small[:, ::-1] if region.chest_wall_right else small
            oriented_mask = region.mask[:, ::-1] if region.chest_wall_right else region.mask
            assert not pectoral_mask(oriented, oriented_mask).any(), "a CC view has no pectoral muscle"


def test_an_image_with_nothing_in_it_or_a_tiny_one_is_refused_with_a_reason() -> None:
    from mammogate.imaging import UnsupportedImageError

    with pytest.raises(UnsupportedImageError, match="no breast"):
        prepare_picture(np.zeros((512, 400), np.uint8), 256, 160)
    with pytest.raises(UnsupportedImageError, match="too small"):
        prepare_picture(np.full((1, 1), 200, np.uint8), 256, 160)
    study = make_study(seed=44, rows=128, columns=104)
    ds = study.datasets[0]
    ds.PixelData = np.zeros((128, 104), "<u2").tobytes()
    with pytest.raises(UnsupportedImageError, match="no breast"):
        prepare_dataset(ds, 256, 160)


@pytest.mark.shared_data
def test_prepared_grid_for_a_real_dicom_is_the_breast_only_chest_wall_left() -> None:
    path: Path = shared_data_dir() / "dicom" / "vendor_samples" / "fodicom_GH133_GE_SenographeEssential_RMLO.dcm"
    prepared = prepare_dataset(pydicom.dcmread(path), 640, 384)
    assert prepared.transform.flipped  # a right breast: chest wall on the right, turned left
    assert prepared.breast[:, :8].any(axis=1).mean() > 0.6
    assert prepared.pectoral.any()
    assert prepared.grid[~prepared.breast].max() == 0
