"""The model bundle: a directory with ``model.keras`` and ``model.json``.

``model.json`` holds name, version, sha256 of the model file, input size, preprocessing
parameters, the operating point (threshold, with the sensitivity and specificity it was chosen
at), training data, evaluation metrics, date and a licence note. A bundle whose model file does
not match its sha256 is refused.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mammogate.inference.errors import BundleError, InferenceError  # noqa: F401 -- re-exported
from mammogate.inference.results import ModelInfo
from mammogate.inference.scoring import DEFAULT_SHARPNESS, Calibration

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "mammogate-cnn"
MODEL_FILE = "model.keras"
METADATA_FILE = "model.json"


def file_sha256(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (sha256 unless ``algorithm`` names another)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_bundle_dir(name: str = DEFAULT_MODEL_NAME) -> Path:
    """The bundle shipped as package data at ``mammogate/models/<name>/``."""
    return Path(str(importlib.resources.files("mammogate") / "models" / name))


@dataclass(frozen=True)
class ModelBundle:
    """A verified model bundle (the Keras model itself is loaded on demand)."""

    path: Path
    name: str
    version: str
    sha256: str
    input_rows: int
    input_columns: int
    operating_point: float
    metadata: dict[str, Any] = field(compare=False, repr=False)
    calibration: Calibration = field(default_factory=Calibration)
    sharpness: float = DEFAULT_SHARPNESS
    heatmap_stride: int = 8
    # Platt scaling of the second channel ("lesion": any lesion, benign or malignant), the
    # certainty of a finding; None when the bundle has no such channel
    lesion_calibration: Calibration | None = None

    @property
    def description(self) -> str:
        """One line for the SR's algorithm parameters and the portal: training data and the
        cross-validated AUCs per data set, with their intervals."""
        return model_description(self.metadata)

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(self.name, self.version, self.sha256, self.operating_point, description=self.description)

    def load_model(self) -> Any:
        """Load the Keras model (imports TensorFlow); re-checks the sha256 first."""
        if file_sha256(self.model_file) != self.sha256:
            raise BundleError(f"{self.model_file} changed since the bundle was loaded")
        from mammogate.inference.tf_runtime import load_keras_model

        return load_keras_model(self.model_file)


def load_bundle(path: Path | None = None) -> ModelBundle:
    """Read and verify a bundle; ``None`` means the shipped one. Raises ``BundleError``."""
    bundle_dir = Path(path) if path is not None else default_bundle_dir()
    metadata_path = bundle_dir / METADATA_FILE
    model_path = bundle_dir / MODEL_FILE
    if not metadata_path.is_file() or not model_path.is_file():
        raise BundleError(f"{bundle_dir} is not a model bundle (needs {MODEL_FILE} and {METADATA_FILE})")
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        expected = str(metadata["sha256"]).lower()
        operating_point = float(metadata["operating_point"]["threshold"])
        rows, columns = (int(v) for v in metadata["input_size"])
        name, version = str(metadata["name"]), str(metadata["version"])
        if metadata.get("outputs", {}).get("kind") != "logit map":
            raise ValueError("not a logit-map bundle (bundles before version 2 are no longer served)")
        calibration = metadata["calibration"]["malignant"]
        platt = Calibration(float(calibration["slope"]), float(calibration["intercept"]))
        sharpness = float(metadata.get("sharpness", DEFAULT_SHARPNESS))
        stride = int(metadata["outputs"]["heatmap_stride"])
        lesion_platt = None
        if list(metadata["outputs"].get("channels", []))[1:2] == ["lesion"] and "lesion" in metadata["calibration"]:
            lesion = metadata["calibration"]["lesion"]
            lesion_platt = Calibration(float(lesion["slope"]), float(lesion["intercept"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{metadata_path} is malformed: {exc}") from exc
    actual = file_sha256(model_path)
    if actual != expected:
        raise BundleError(
            f"refusing model bundle {bundle_dir}: sha256 of {MODEL_FILE} is {actual}, "
            f"{METADATA_FILE} says {expected}"
        )
    logger.info("model bundle %s %s (sha256 %s) verified", name, version, actual[:12])
    return ModelBundle(
        bundle_dir, name, version, actual, rows, columns, operating_point, metadata, platt, sharpness, stride,
        lesion_platt,
    )


def with_operating_point(bundle: ModelBundle, name: str) -> ModelBundle:
    """The bundle flagging at its operating point ``name`` (empty: unchanged); BundleError
    naming the ones it has when it has no such point."""
    if not name:
        return bundle
    points = {str(p.get("name")): p for p in bundle.metadata.get("operating_points", [])}
    if name not in points:
        raise BundleError(
            f"model.operating_point {name!r}: the bundle's operating points are {', '.join(sorted(points)) or 'none'}"
        )
    return replace(bundle, operating_point=float(points[name]["threshold"]))


def model_description(metadata: dict[str, Any]) -> str:
    """Training data and cross-validated AUCs (malignant vs rest, per image) of a bundle."""
    data = metadata.get("training_data", {}).get("datasets", [])
    trained = ", ".join(f"{d.get('name')} ({d.get('images')} images)" for d in data) or "unknown data"
    parts = [f"trained on {trained}"]
    for source, metrics in sorted(metadata.get("cross_validation", {}).items()):
        if source == "all_real":
            continue
        image = metrics.get("malignant_vs_rest", {}).get("image", {})
        if image.get("auc") is not None:  # a set with one class (e.g. only benign) has none
            low, high = (image.get("auc_ci95") or [None, None])[:2]
            interval = f" (95% CI {low:.2f}-{high:.2f})" if low is not None and high is not None else ""
            parts.append(f"{source} {metadata.get('training_data', {}).get('folds', '')}-fold CV AUC {image['auc']:.2f}{interval}")
    return "; ".join(parts)


def write_model_json(bundle_dir: Path, metadata: dict[str, Any]) -> Path:
    """Write ``model.json`` for the ``model.keras`` already in ``bundle_dir``, adding its sha256."""
    content = dict(metadata)
    content["sha256"] = file_sha256(Path(bundle_dir) / MODEL_FILE)
    path = Path(bundle_dir) / METADATA_FILE
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
