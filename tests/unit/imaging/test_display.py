from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.uid import RLELossless

from mammogate.imaging import (
    DicomReadError,
    PixelDecodeError,
    UnsupportedImageError,
    display_image,
    read_dataset,
)
from tests.shared_data import shared_file


def stored(ds: Dataset) -> np.ndarray:
    return np.asarray(ds.pixel_array, dtype=np.float64)


def test_window_maps_linearly_to_unit_range(synthetic_ds: Dataset) -> None:
    image = display_image(synthetic_ds)
    centre, width = float(synthetic_ds.WindowCenter), float(synthetic_ds.WindowWidth)
    expected = np.clip(((stored(synthetic_ds) - (centre - 0.5)) / (width - 1)) + 0.5, 0, 1)
    assert image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert np.abs(image - expected).max() < 2e-3


def test_narrow_window_clips_and_sigmoid_stays_monotonic(synthetic_ds: Dataset) -> None:
    synthetic_ds.WindowCenter, synthetic_ds.WindowWidth = "1500", "400"
    linear = display_image(synthetic_ds)
    assert (linear == 0).any() and (linear == 1).any()
    synthetic_ds.VOILUTFunction = "SIGMOID"
    sigmoid = display_image(synthetic_ds)
    order = np.argsort(stored(synthetic_ds).ravel(), kind="stable")
    assert np.all(np.diff(sigmoid.ravel()[order]) >= -1e-6)
    assert 0.0 <= sigmoid.min() and sigmoid.max() <= 1.0


def test_monochrome1_is_inverted_so_dense_tissue_stays_bright(synthetic_ds: Dataset) -> None:
    reference = display_image(synthetic_ds)
    inverted = 4095 - synthetic_ds.pixel_array.astype(np.uint16)
    synthetic_ds.PixelData = inverted.astype("<u2").tobytes()
    synthetic_ds.PhotometricInterpretation = "MONOCHROME1"
    synthetic_ds.WindowCenter = str(4095 - float(synthetic_ds.WindowCenter))
    del synthetic_ds.PresentationLUTShape
    image = display_image(synthetic_ds)
    assert np.abs(image - reference).max() < 2e-3


def test_presentation_lut_inverse_inverts(synthetic_ds: Dataset) -> None:
    reference = display_image(synthetic_ds)
    synthetic_ds.PresentationLUTShape = "INVERSE"
    assert np.allclose(display_image(synthetic_ds), 1.0 - reference, atol=1e-6)


def test_real_monochrome1_for_processing_header_is_inverted() -> None:
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-Im-GE-SenDS-scaled.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    image = display_image(ds)
    raw = stored(ds)
    assert image.min() >= 0 and image.max() <= 1
    # brightest displayed pixel is the lowest stored value (MONOCHROME1: low = white)
    assert raw.ravel()[np.argmax(image)] == raw.min()


def test_real_voi_lut_sequence_is_used_for_presentation() -> None:
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-Im-GE_Seno_1_ForPresentation.dcm"))
    assert "VOILUTSequence" in ds and ds.VOILUTFunction == "SIGMOID"
    image = display_image(ds)
    assert image.shape == (ds.Rows, ds.Columns)
    assert 0.0 < image.min() <= image.max() < 1.0


def test_ge_jpeg_lossless_decodes_through_gdcm_with_voi_lut() -> None:
    ds = read_dataset(
        shared_file("dicom", "vendor_samples", "fodicom_GH133_GE_SenographeEssential_RMLO.dcm")
    )
    image = display_image(ds)
    assert image.shape == (3062, 2394)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image.std() > 0.05


def test_rle_digitised_film_decodes() -> None:
    ds = read_dataset(shared_file("dicom", "cbis_ddsm", "1-130.dcm"))
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    image = display_image(ds)
    assert image.shape == (4432, 2864)
    assert image.max() == 1.0


def test_missing_pixel_data_is_a_decode_error() -> None:
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-Im-Hologic-PropProj.dcm"))
    with pytest.raises(PixelDecodeError, match="no Pixel Data"):
        display_image(ds)


def test_truncated_pixel_data_is_a_decode_error(synthetic_ds: Dataset) -> None:
    synthetic_ds.PixelData = synthetic_ds.PixelData[: len(synthetic_ds.PixelData) // 3]
    with pytest.raises(PixelDecodeError) as info:
        display_image(synthetic_ds)
    assert info.value.__cause__ is not None


def test_multi_frame_is_unsupported(synthetic_ds: Dataset) -> None:
    synthetic_ds.NumberOfFrames = 2
    with pytest.raises(UnsupportedImageError):
        display_image(synthetic_ds)


def test_non_dicom_file_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "not.dcm"
    path.write_bytes(b"hello, not DICOM at all" * 10)
    with pytest.raises(DicomReadError):
        read_dataset(path)
