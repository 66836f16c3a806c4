from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from mammogate.imaging import (
    DicomReadError,
    PixelDecodeError,
    UnsupportedImageError,
    display_image,
    read_dataset,
)
from mammogate.imaging.display import decode_pixels, frame_attributes
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


@pytest.mark.shared_data
def test_real_monochrome1_for_processing_header_is_inverted() -> None:
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-Im-GE-SenDS-scaled.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    image = display_image(ds)
    raw = stored(ds)
    assert image.min() >= 0 and image.max() <= 1
    # brightest displayed pixel is the lowest stored value (MONOCHROME1: low = white)
    assert raw.ravel()[np.argmax(image)] == raw.min()


@pytest.mark.shared_data
def test_real_voi_lut_sequence_is_used_for_presentation() -> None:
    ds = read_dataset(shared_file("dicom", "headers_only", "MG-Im-GE_Seno_1_ForPresentation.dcm"))
    assert "VOILUTSequence" in ds and ds.VOILUTFunction == "SIGMOID"
    image = display_image(ds)
    assert image.shape == (ds.Rows, ds.Columns)
    assert 0.0 < image.min() <= image.max() < 1.0


@pytest.mark.shared_data
def test_ge_jpeg_lossless_decodes_through_gdcm_with_voi_lut() -> None:
    ds = read_dataset(
        shared_file("dicom", "vendor_samples", "fodicom_GH133_GE_SenographeEssential_RMLO.dcm")
    )
    image = display_image(ds)
    assert image.shape == (3062, 2394)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image.std() > 0.05


@pytest.mark.shared_data
def test_voi_lut_read_as_ow_in_implicit_vr_gives_the_same_image(tmp_path: Path) -> None:
    """In Implicit VR pydicom reads LUT Data (US or OW) as OW bytes: still a valid VOI LUT."""
    source = shared_file("dicom", "vendor_samples", "fodicom_GH133_GE_SenographeEssential_RMLO.dcm")
    reference = display_image(read_dataset(source))
    ds = read_dataset(source)
    ds.decompress()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "implicit.dcm"
    ds.save_as(path, enforce_file_format=True)
    implicit = read_dataset(path)
    assert implicit.VOILUTSequence[0]["LUTData"].VR == "OW"
    assert np.array_equal(display_image(implicit), reference)


def test_synthetic_ow_lut_data_matches_us(synthetic_ds: Dataset) -> None:
    lut = (4095 / (1 + np.exp(-(np.arange(4096) - 1900) / 600))).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.add_new("LUTData", "US", lut.tolist())
    synthetic_ds.VOILUTSequence = [item]
    reference = display_image(synthetic_ds)
    item.add_new("LUTData", "OW", lut.astype("<u2").tobytes())
    assert np.array_equal(display_image(synthetic_ds), reference)
    assert reference.min() < 0.1 and reference.max() > 0.9


@pytest.mark.shared_data
def test_rle_digitised_film_decodes() -> None:
    ds = read_dataset(shared_file("dicom", "cbis_ddsm", "1-130.dcm"))
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    image = display_image(ds)
    assert image.shape == (4432, 2864)
    assert image.max() == 1.0


@pytest.mark.shared_data
def test_rle_decodes_with_the_compiled_plugin_exactly_as_pydicoms_own() -> None:
    from pydicom.pixels import pixel_array
    from pydicom.pixels.decoders import RLELosslessDecoder

    assert "pylibjpeg" in RLELosslessDecoder.available_plugins  # pylibjpeg-rle: 5x faster
    ds = read_dataset(shared_file("dicom", "cbis_ddsm", "1-131.dcm"))
    assert np.array_equal(decode_pixels(ds), pixel_array(ds, decoding_plugin="pydicom"))


def test_an_rle_decoder_panic_is_a_decode_error() -> None:
    """pylibjpeg-rle is written in Rust: on some corrupt data it panics, and pyo3's
    PanicException is a BaseException that no ``except Exception`` catches."""
    from pydicom.pixels import pixel_array

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 64, 48, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64 * 48, dtype="<u2") % 4096).tobytes()
    ds.compress(RLELossless, encoding_plugin="pydicom")
    corrupt = bytearray(ds.PixelData)
    corrupt[28] = 0x7F  # the first segment's offset in the RLE header: past where it starts
    ds.PixelData = bytes(corrupt)
    with pytest.raises(BaseException) as panic:
        pixel_array(ds, decoding_plugin="pylibjpeg")
    assert not isinstance(panic.value, Exception)  # the panic the node must still catch
    with pytest.raises(PixelDecodeError, match="pixel data do not decode"):
        decode_pixels(ds)
    with pytest.raises(PixelDecodeError):
        display_image(ds)


@pytest.mark.shared_data
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


BREAST_PROJECTION_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.13.1.4"


def _breast_projection(ds: Dataset, *, per_frame: bool) -> Dataset:
    """The synthetic mammogram as a single-frame enhanced Breast Projection object: window and
    pixel spacing only in the functional groups."""
    window = Dataset()
    window.WindowCenter, window.WindowWidth = ds.WindowCenter, ds.WindowWidth
    window.VOILUTFunction = ds.VOILUTFunction
    measures = Dataset()
    measures.PixelSpacing = ["0.0700", "0.0700"]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    frame = Dataset()
    if per_frame:
        shared_window = Dataset()  # the per-frame window wins over a shared one
        shared_window.WindowCenter, shared_window.WindowWidth = "300", "200"
        shared.FrameVOILUTSequence = [shared_window]
        frame.FrameVOILUTSequence = [window]
    else:
        shared.FrameVOILUTSequence = [window]
    ds.SOPClassUID = BREAST_PROJECTION_FOR_PRESENTATION
    ds.NumberOfFrames = 1
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [frame]
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction", "ImagerPixelSpacing"):
        delattr(ds, keyword)
    return ds


@pytest.mark.parametrize("per_frame", [False, True])
def test_breast_projection_window_comes_from_the_functional_groups(
    synthetic_ds: Dataset, per_frame: bool
) -> None:
    reference = display_image(synthetic_ds)
    ds = _breast_projection(synthetic_ds, per_frame=per_frame)
    assert np.abs(display_image(ds) - reference).max() < 1e-6
    flat = frame_attributes(ds)
    assert (str(flat.WindowCenter), str(flat.WindowWidth), flat.VOILUTFunction) == ("1900", "3600", "LINEAR")
    assert [float(v) for v in flat.PixelSpacing] == [0.07, 0.07]
    assert "WindowCenter" not in ds  # the dataset itself is left as it was


def test_multi_frame_breast_projection_stays_unsupported(synthetic_ds: Dataset) -> None:
    ds = _breast_projection(synthetic_ds, per_frame=False)
    ds.NumberOfFrames = 2
    with pytest.raises(UnsupportedImageError):
        display_image(ds)


def _padded_monochrome1(padding: int, *, range_limit: int | None = None) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = 60, 50
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
    pixels = np.full((60, 50), padding, dtype=np.uint16)
    pixels[:, :30] = np.linspace(2000, 6000, 60 * 30).reshape(60, 30).astype(np.uint16)
    if range_limit is not None:
        pixels[:5, 30:] = range_limit  # the other end of the padding range
    ds.PixelPaddingValue = padding
    if range_limit is not None:
        ds.PixelPaddingRangeLimit = range_limit
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.mark.parametrize("range_limit", [None, 16000])
def test_padding_does_not_set_the_intensity_range(range_limit: int | None) -> None:
    ds = _padded_monochrome1(16383, range_limit=range_limit)
    image = display_image(ds)
    tissue = image[:, :30]
    assert tissue.min() == pytest.approx(0.0, abs=1e-6)  # 6000: least dense (MONOCHROME1)
    assert tissue.max() == pytest.approx(1.0, abs=1e-6)  # 2000: densest
    assert np.all(image[:, 30:] == 0.0)


def test_overlay_of_a_reduced_image_keeps_its_aspect_and_marks() -> None:
    import io

    from PIL import Image

    from mammogate.imaging import render_overlay_png

    reduced = np.zeros((1365, 1109), np.float32)  # a 4096 x 3328 image reduced by 3
    png = render_overlay_png(reduced, None, [(3000.0, 2000.0)], original_rows=4096)
    picture = Image.open(io.BytesIO(png))
    assert picture.size == (416, 512)
    pixels = np.asarray(picture)
    column, row = round(3000 * 512 / 4096), round(2000 * 512 / 4096)
    ring = pixels[row - 20 : row + 20, column - 20 : column + 20]
    assert (ring[..., 0] > 200).any() and (ring[..., 2] < 50).any()  # the yellow ring is there
