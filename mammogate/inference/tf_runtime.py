"""The one place TensorFlow is imported at serving time (lazily), with one thread pool."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)
_configured = False


def tensorflow() -> Any:
    """Import TensorFlow once, with one intra-op pool and deterministic ops."""
    global _configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if not _configured:
        _configured = True
        try:
            tf.config.threading.set_inter_op_parallelism_threads(1)
            tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
        except RuntimeError:
            logger.debug("TensorFlow runtime already initialised; thread pools left as they are")
        tf.config.experimental.enable_op_determinism()
    return tf


def load_keras_model(path: Path) -> Any:
    tensorflow()
    import keras

    return keras.saving.load_model(path, compile=False)
