"""Exceptions raised by :mod:`mammogate.reporting` (the tree is drawn in the package docstring)."""

from __future__ import annotations


class ReportingError(Exception):
    """Base class of every error this package raises on purpose."""


class SourceMismatchError(ReportingError, ValueError):
    """The source headers do not match the result (missing image, other study)."""


class ReportParseError(ReportingError, ValueError):
    """A dataset is not a Mammography CAD SR this package can read back."""


class ReportWriteError(ReportingError, OSError):
    """A report could not be written durably to disk."""
