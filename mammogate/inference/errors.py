"""The exceptions of ``mammogate.inference``, importable without TensorFlow (the worker catches
them in a process that never imports it)."""

from __future__ import annotations


class InferenceError(Exception):
    """Base of the errors raised by ``mammogate.inference``."""


class BundleError(InferenceError):
    """The model bundle is missing, malformed, or its model file fails the sha256 check."""


class AnalysisAborted(InferenceError):
    """The analysis child exceeded a limit or died; the message says which and how much."""


class AnalysisInterrupted(AnalysisAborted):
    """The worker is stopping: the analysis was ended, through no fault of the study."""
