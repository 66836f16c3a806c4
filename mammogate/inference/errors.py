"""The exceptions of ``mammogate.inference``, importable without TensorFlow (the worker catches
them in a process that never imports it)."""

from __future__ import annotations


class InferenceError(Exception):
    """Base of the errors raised by ``mammogate.inference``."""


class BundleError(InferenceError):
    """The model bundle is missing, malformed, or its model file fails the sha256 check."""
