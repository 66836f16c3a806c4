"""Serving the CNN: the model bundle, view selection, preprocessing, prediction, findings and
scores of a study.

Exception tree::

    InferenceError           base of this package's errors
    └── BundleError          the model bundle is missing, malformed, or its sha256 does not match

Imaging errors of single images are not raised from ``Analyzer.analyze_study``: they become
``SkippedImage(failed=True)`` with the reason. TensorFlow is imported lazily, the first time a
model is loaded.
"""

from mammogate.inference.analyzer import Analyzer
from mammogate.inference.bundle import (
    DEFAULT_MODEL_NAME,
    BundleError,
    InferenceError,
    ModelBundle,
    default_bundle_dir,
    file_sha256,
    load_bundle,
    write_model_json,
)
from mammogate.inference.pipeline import (
    PreparedImage,
    ScoredImage,
    ViewSelection,
    postprocess,
    predict,
    preprocess,
    select_view,
)
from mammogate.inference.results import (
    Finding,
    ImageResult,
    ModelInfo,
    SkippedImage,
    StudyResult,
)
from mammogate.inference.scoring import Calibration

__all__ = [
    "DEFAULT_MODEL_NAME",
    "Analyzer",
    "BundleError",
    "Calibration",
    "Finding",
    "ImageResult",
    "InferenceError",
    "ModelBundle",
    "ModelInfo",
    "PreparedImage",
    "ScoredImage",
    "SkippedImage",
    "StudyResult",
    "ViewSelection",
    "default_bundle_dir",
    "file_sha256",
    "load_bundle",
    "postprocess",
    "predict",
    "preprocess",
    "select_view",
    "write_model_json",
]
