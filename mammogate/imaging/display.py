"""Reading DICOM files and the display pipeline: modality LUT → VOI LUT → presentation LUT.

The result is a float32 image in [0, 1] where bright means dense tissue (what a radiologist
sees on a For Presentation display), in the original pixel matrix and orientation.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, apply_voi_lut

from mammogate.imaging.errors import DicomReadError, PixelDecodeError, UnsupportedImageError
from mammogate.imaging.geometry import chest_wall_on_right

logger = logging.getLogger(__name__)

_DECODE_ERRORS = (
    ValueError,
    RuntimeError,
    NotImplementedError,
    AttributeError,
    TypeError,
    KeyError,
    IndexError,
    OSError,
    EOFError,
    struct.error,  # an OW LUT Data shorter than its LUT Descriptor says
)


def read_dataset(path: Path, *, stop_before_pixels: bool = False) -> Dataset:
    """Read a DICOM file; raises ``DicomReadError`` when it is not readable DICOM."""
    try:
        return dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DicomReadError(f"cannot read {Path(path).name} as DICOM: {exc}") from exc


def read_headers(paths: Iterable[Path], *, skip_unreadable: bool = True) -> list[Dataset]:
    """The headers (no pixel data) of DICOM files; an unreadable one is left out (it is a
    failed view, and brings no attributes) unless ``skip_unreadable`` is false."""
    headers = []
    for path in paths:
        try:
            headers.append(read_dataset(Path(path), stop_before_pixels=True))
        except DicomReadError:
            if not skip_unreadable:
                raise
    return headers


def header_of(ds: Dataset) -> Dataset:
    """A copy of ``ds`` without its pixel data (and anything after it): what result objects
    and routing need, small enough to pass between processes."""
    header = Dataset()
    for element in ds:
        if element.tag >= 0x7FE00000:
            break
        header.add(element)
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    header.set_original_encoding(ds.is_implicit_VR, ds.is_little_endian, ds.original_character_set)
    return header


def _decoder_panic(exc: BaseException) -> bool:
    """A decoder written in Rust (pylibjpeg-rle) that panicked on corrupt data: pyo3's
    ``PanicException`` derives from ``BaseException``, so no ``except Exception`` sees it."""
    return type(exc).__name__ == "PanicException" and type(exc).__module__ == "pyo3_runtime"


def decode_pixels(ds: Dataset) -> np.ndarray:
    """The stored pixel values of a single-frame grayscale image, as decoded by pydicom."""
    if "PixelData" not in ds:
        raise PixelDecodeError("the dataset has no Pixel Data")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise UnsupportedImageError(f"multi-frame image ({ds.NumberOfFrames} frames)")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise UnsupportedImageError("not a grayscale image (SamplesPerPixel != 1)")
    try:
        pixels = ds.pixel_array
    except BaseException as exc:
        if not isinstance(exc, _DECODE_ERRORS) and not _decoder_panic(exc):
            raise
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise PixelDecodeError(f"pixel data do not decode (transfer syntax {syntax}): {exc}") from exc
    if pixels.ndim != 2:
        raise UnsupportedImageError(f"expected a 2-D pixel matrix, got shape {pixels.shape}")
    return pixels


# (functional group sequence, attributes) copied to the top level for a single-frame enhanced
# object (Breast Projection X-Ray, Breast Tomosynthesis): PS3.3 C.7.6.16.2.
_FUNCTIONAL_GROUP_ATTRIBUTES = (
    ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth", "VOILUTFunction", "WindowCenterWidthExplanation")),
    ("PixelValueTransformationSequence", ("RescaleIntercept", "RescaleSlope", "RescaleType")),
    ("PixelMeasuresSequence", ("PixelSpacing", "SliceThickness")),
)


def frame_attributes(ds: Dataset) -> Dataset:
    """The dataset as a single-frame image sees it: for an enhanced object, the window, rescale
    and pixel spacing of frame 1 from PerFrameFunctionalGroupsSequence, else from
    SharedFunctionalGroupsSequence, copied to the top level where the top level has none.

    Returns ``ds`` itself when it has no functional groups, else a shallow copy (``ds`` is left
    as it was)."""
    if "SharedFunctionalGroupsSequence" not in ds and "PerFrameFunctionalGroupsSequence" not in ds:
        return ds
    groups: list[Dataset] = []
    for keyword in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        items = ds.get(keyword) or []
        if len(items):
            groups.append(items[0])  # per frame first: it overrides the shared group
    flat = Dataset({tag: ds[tag] for tag in ds.keys()})  # its own element dict: ``ds`` unchanged
    if "file_meta" in ds.__dict__:
        flat.file_meta = ds.file_meta
    for sequence, keywords in _FUNCTIONAL_GROUP_ATTRIBUTES:
        for group in groups:
            items = group.get(sequence) or []
            if not len(items):
                continue
            item = items[0]
            if all(k not in flat for k in keywords):
                for keyword in keywords:
                    if keyword in item:
                        setattr(flat, keyword, item[keyword].value)
            break
    return flat


def _padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """Pixels that are PixelPaddingValue, or in the range it spans with PixelPaddingRangeLimit."""
    padding = ds.get("PixelPaddingValue")
    if isinstance(padding, (MultiValue, list, tuple)):
        padding = padding[0] if len(padding) else None  # a multi-valued one: its first
    if padding is None or isinstance(padding, bytes):
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if isinstance(limit, (MultiValue, list, tuple)):
        limit = limit[0] if len(limit) else None
    if limit is None or isinstance(limit, bytes):
        return np.asarray(stored == int(padding))
    low, high = sorted((int(padding), int(limit)))
    return np.asarray((stored >= low) & (stored <= high))


def _voi_range(ds: Dataset, values: np.ndarray) -> tuple[float, float] | None:
    """The output range of the VOI transform, found by pushing extreme inputs through it."""
    if "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        if item.get("LUTData") in (None, b"", []):
            return None
        # pydicom decodes LUT Data whether it was read as US or, in Implicit VR, as OW bytes
        entries = int(item.LUTDescriptor[0]) or 65536
        first = int(item.LUTDescriptor[1])
        lut = np.asarray(apply_voi(np.arange(first, first + entries), ds, index=0), dtype=np.float64)
        return float(lut.min()), float(lut.max())
    if "WindowCenter" in ds and "WindowWidth" in ds:
        extremes = np.array([values.min() - 1e6, values.max() + 1e6], dtype=np.float64)
        with np.errstate(over="ignore"):  # SIGMOID saturates at the extremes, as intended
            low, high = (float(v) for v in apply_voi_lut(extremes, ds, index=0))
        return (low, high) if high > low else None
    return None


def reduction_factor(rows: int, max_rows: int | None) -> int:
    """The integer block size that brings ``rows`` down to at least ``max_rows`` (1: none)."""
    if not max_rows or rows <= max_rows:
        return 1
    return max(1, rows // max_rows)


def block_mean(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks (edge rows and columns that do not fill a block
    are dropped), rounded back to the input's integer type so LUT lookups stay exact."""
    if factor <= 1:
        return pixels
    rows, columns = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
    blocks = pixels[:rows, :columns].reshape(rows // factor, factor, columns // factor, factor)
    mean = blocks.mean(axis=(1, 3), dtype=np.float32)
    if pixels.dtype.kind in "iu":
        return np.rint(mean).astype(pixels.dtype)
    return mean.astype(pixels.dtype)


def block_any(mask: np.ndarray | None, factor: int) -> np.ndarray | None:
    """A mask reduced as :func:`block_mean` reduces its image: a block with any pixel set is
    set (a block with any padding in it is padding)."""
    if mask is None or factor <= 1:
        return mask
    rows, columns = mask.shape[0] // factor, mask.shape[1] // factor
    blocks = mask[:rows * factor, :columns * factor].reshape(rows, factor, columns, factor)
    return np.asarray(blocks.any(axis=(1, 3)))


def display_image(ds: Dataset, *, max_rows: int | None = None) -> np.ndarray:
    """Decode and run the display pipeline; float32 in [0, 1], bright = dense tissue.

    With ``max_rows``, the stored values are first averaged over integer blocks
    (``reduction_factor``) so the LUTs run on the small image, not the detector's full matrix;
    the result then has ``Rows // factor`` rows (the caller maps back with ds.Rows / rows).
    A single-frame enhanced object's window comes from its functional groups
    (``frame_attributes``). Without a window the range is that of the pixels that are not
    padding (PixelPaddingValue / PixelPaddingRangeLimit); padding is shown black."""
    stored = decode_pixels(ds)
    ds = frame_attributes(ds)
    factor = reduction_factor(stored.shape[0], max_rows)
    padding = _padding_mask(ds, stored)
    if factor > 1:
        stored = block_mean(stored, factor)
        padding = block_any(padding, factor)
    try:
        modality = np.asarray(apply_modality_lut(stored, ds))
        if modality.dtype.kind == "f" and np.array_equal(modality, np.round(modality)):
            modality = modality.astype(np.int64)
        values = modality.astype(np.float64)
        voi = _voi_range(ds, values)
        if voi is not None:
            # integer input keeps pydicom's VOI LUT lookup exact
            with np.errstate(over="ignore"):
                values = np.asarray(apply_voi_lut(modality, ds, index=0), dtype=np.float64)
            low, high = voi
        else:
            image_values = values[~padding] if padding is not None and not padding.all() else values
            low, high = float(image_values.min()), float(image_values.max())
    except _DECODE_ERRORS as exc:
        raise PixelDecodeError(f"the modality or VOI LUT cannot be applied: {exc}") from exc
    span = high - low
    image = (values - low) / span if span > 0 else np.zeros_like(values)
    image = np.clip(image, 0.0, 1.0)
    if _inverted(ds):
        image = 1.0 - image
    if padding is not None:
        image[padding] = 0.0
    return image.astype(np.float32)


def _inverted(ds: Dataset) -> bool:
    shape = str(ds.get("PresentationLUTShape", "") or "").upper()
    if shape:
        return shape == "INVERSE"
    return str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"


@dataclass(frozen=True)
class ViewerPixels:
    """An image for the portal's viewer, which windows it in the browser: the modality values
    (Rescale Slope/Intercept applied) of a block-averaged copy, stored as unsigned 16-bit
    ``(value - offset) / scale``, with the image's own default window in modality units."""

    values: np.ndarray  # uint16 codes, rows x columns of the reduced copy; 0 is padding
    offset: float
    scale: float
    window_center: float
    window_width: float
    invert: bool  # MONOCHROME1 or an INVERSE presentation LUT: low values are bright
    original_rows: int
    original_columns: int
    # where the chest wall is (geometry.chest_wall_on_right); None for a rotated image
    chest_wall_on_right: bool | None = None

    def to_bytes(self) -> bytes:
        return self.values.astype("<u2", copy=False).tobytes()


PADDING_CODE = 0  # the viewer's code for padding (shown black whatever the window)
VIEWER_MAX_PIXELS = 8192 * 8192  # beyond this the viewer is refused (the overlay stays)


def check_viewable(header: Dataset) -> None:
    """Refuse (UnsupportedImageError) what the viewer does not serve, from the header alone, so
    a caller can check before reading pixel data: several frames, or more than
    ``VIEWER_MAX_PIXELS`` pixels."""
    frames = int(header.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedImageError(f"multi-frame image ({frames} frames)")
    rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    if rows * columns > VIEWER_MAX_PIXELS:
        raise UnsupportedImageError(f"{rows} x {columns} pixels is more than the viewer serves")


def viewer_pixels(ds: Dataset, *, max_rows: int = 1024) -> ViewerPixels:
    """The modality values for windowing in the browser, block-averaged to at most
    ``max_rows`` rows (the block size rounds up), float32 throughout so a detector-size image
    costs a few times its reduced size.

    Codes 1-65535 hold ``offset + code x scale``; integer values whose range fits keep their
    exact value (scale 1), others spread over the 16 bits (a fractional Rescale Slope keeps its
    grey levels). Code 0 (``PADDING_CODE``) is padding, which the viewer shows black. The
    default window is the image's first finite Window Center/Width (a VOI LUT Sequence or a
    SIGMOID function is approximated by a linear window over the same range); without one, the
    0.5th to 99.5th percentile of the values that are not padding."""
    check_viewable(ds)
    stored = decode_pixels(ds)
    original_rows, original_columns = stored.shape
    ds = frame_attributes(ds)
    factor = max(1, -(-original_rows // max_rows))  # ceil: never more rows than asked for
    try:
        padding = _padding_mask(ds, stored)
    except (TypeError, ValueError) as exc:
        raise PixelDecodeError(f"Pixel Padding Value is not usable: {exc}") from exc
    stored = block_mean(stored, factor)
    padding = block_any(padding, factor)
    try:
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
        voi = _voi_range(ds, values) if "VOILUTSequence" in ds else None  # None: no usable LUT
    except _DECODE_ERRORS as exc:
        raise PixelDecodeError(f"the modality or VOI LUT cannot be applied: {exc}") from exc
    del stored
    if padding is not None and padding.all():
        padding = None  # nothing but padding: show it as it is
    image_values = values[~padding] if padding is not None else values.ravel()
    low, high = float(image_values.min()), float(image_values.max())
    span = high - low
    exact = span <= 65534 and bool(np.all(image_values == np.round(image_values)))
    scale = 1.0 if exact or span == 0 else span / 65534.0
    offset = low - scale  # code 1 is the lowest value
    center = width = None
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center = _first(ds.WindowCenter)
        width = _first(ds.WindowWidth)
    elif voi is not None:  # a VOI LUT: the input range it maps
        center, width = _voi_input_window(ds)
    if center is None or width is None or not (math.isfinite(center) and math.isfinite(width) and width > 0):
        sample = image_values[:: max(1, image_values.size // 1_000_000)]  # percentiles of <= 1e6
        p_low, p_high = np.percentile(sample, [0.5, 99.5])
        center, width = float(p_low + p_high) / 2, max(float(p_high - p_low), 1.0)
    del image_values
    invert = _inverted(ds)
    encoded = np.clip(np.rint((values - offset) / scale), 1, 65535).astype(np.uint16)
    if padding is not None:
        encoded[padding] = PADDING_CODE
    # which side the chest wall is on: Patient Orientation, else the tissue of a small copy
    small = values[::4, ::4]
    shown = np.clip((small - (center - width / 2)) / width, 0, 1)  # bright = tissue
    if invert:
        shown = 1.0 - shown
    if padding is not None:
        shown[padding[::4, ::4]] = 0.0
    try:
        chest_wall = chest_wall_on_right(ds, shown)
    except UnsupportedImageError:
        chest_wall = None
    return ViewerPixels(encoded, offset, scale, float(center), float(width), invert,
                        original_rows, original_columns, chest_wall)


def _first(value: object) -> float | None:
    """The first of a multi-valued DS (Window Center/Width may list several windows)."""
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _voi_input_window(ds: Dataset) -> tuple[float, float]:
    """The range of inputs the first VOI LUT maps (first mapped value, number of entries)."""
    item = ds.VOILUTSequence[0]
    entries = int(item.LUTDescriptor[0]) or 65536
    first = float(item.LUTDescriptor[1])
    return first + entries / 2, float(entries)
