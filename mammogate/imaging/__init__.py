"""TensorFlow-free pixel work for mammograms: decoding, display LUTs, laterality and view,
chest-wall normalisation, resampling to the model grid and back, PNG renderings.

Exception tree (dependency errors are translated here, once, with ``raise ... from exc``)::

    ImagingError                 anything this package refuses or cannot do
    ├── DicomReadError           the file is not readable DICOM
    ├── PixelDecodeError         pixel data missing, truncated, or no decoder for its transfer syntax
    └── UnsupportedImageError    decodes, but is not a single-frame grayscale image

Only numpy, pydicom, Pillow and ``mammogate.config`` are imported here.
"""

from mammogate.imaging.display import (
    display_image,
    frame_attributes,
    header_of,
    read_dataset,
    read_headers,
    viewer_pixels,
)
from mammogate.imaging.errors import (
    DicomReadError,
    ImagingError,
    PixelDecodeError,
    UnsupportedImageError,
)
from mammogate.imaging.geometry import (
    GridTransform,
    chest_wall_on_right,
    normalise_laterality,
    rotation_reason,
    to_model_grid,
)
from mammogate.imaging.render import render_overlay_png
from mammogate.imaging.views import (
    LATERALITY_CODES,
    VIEW_CODES,
    CodeTuple,
    ViewInfo,
    laterality_code,
    view_code,
    view_info,
)

__all__ = [
    "LATERALITY_CODES",
    "VIEW_CODES",
    "CodeTuple",
    "DicomReadError",
    "GridTransform",
    "ImagingError",
    "PixelDecodeError",
    "UnsupportedImageError",
    "ViewInfo",
    "chest_wall_on_right",
    "display_image",
    "frame_attributes",
    "header_of",
    "laterality_code",
    "normalise_laterality",
    "read_dataset",
    "read_headers",
    "render_overlay_png",
    "rotation_reason",
    "to_model_grid",
    "view_code",
    "view_info",
    "viewer_pixels",
]
