"""The imaging exception tree (drawn in the package docstring)."""


class ImagingError(Exception):
    """Base of every error raised by ``mammogate.imaging``."""


class DicomReadError(ImagingError):
    """The file could not be read as DICOM."""


class PixelDecodeError(ImagingError):
    """The pixel data is missing, truncated or cannot be decoded."""


class UnsupportedImageError(ImagingError):
    """The pixels decode but are not a single-frame grayscale image."""
