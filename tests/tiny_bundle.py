"""A small deterministic model bundle for tests: a fixed centre-surround filter (the cell's mean
intensity minus that of its neighbourhood), so a bright blob in the breast is its highest logit.
Built from Keras layers with set weights, saved and described like a trained bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammogate.inference.bundle import MODEL_FILE, write_model_json

STRIDE = 8


def write_tiny_bundle(
    out: Path, *, rows: int = 256, columns: int = 160, gain: float = 40.0, offset: float = -4.0,
    operating_point: float = 0.5, slope: float = 1.0, intercept: float = 0.0,
) -> Path:
    """logits = gain * (mean of the 8x8 cell - mean of the 5x5 cells around it) + offset, on
    both channels; calibration ``sigmoid(slope * logit + intercept)``."""
    import keras
    from keras import layers

    from mammogate.inference.tf_runtime import tensorflow

    tensorflow()
    image = keras.Input((rows, columns, 1), name="image")
    cells = layers.AveragePooling2D(STRIDE, name="cells")(image)
    surround = layers.AveragePooling2D(5, strides=1, padding="same", name="surround")(cells)
    contrast = layers.Subtract()([cells, surround])
    logits = layers.Conv2D(2, 1, name="logits")(contrast)
    model = keras.Model(image, logits, name="tiny")
    model.get_layer("logits").set_weights(
        [np.full((1, 1, 1, 2), gain, np.float32), np.full((2,), offset, np.float32)]
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    (out / "NOTICE").write_text("test bundle\n", encoding="utf-8")
    write_model_json(out, {
        "name": "tiny-test-model",
        "version": "0.0.1",
        "input_size": [rows, columns],
        "outputs": {"kind": "logit map", "heatmap_stride": STRIDE, "channels": ["malignant", "lesion"]},
        "sharpness": 6.0,
        "calibration": {
            "malignant": {"slope": slope, "intercept": intercept},
            "lesion": {"slope": slope, "intercept": intercept},
        },
        "operating_point": {"name": "balanced", "threshold": operating_point},
        "operating_points": [{"name": "balanced", "threshold": operating_point}],
        "training_data": {"datasets": [{"name": "none", "images": 0}], "folds": 0},
        "cross_validation": {},
        "evaluation": {},
        "licence": "test only",
    })
    return out
