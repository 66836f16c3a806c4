"""The one place TensorFlow is imported at serving time (lazily), with one thread pool."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)
_configured = False
# per model, per grid (rows, columns): its serving function (the model's own lifetime)
_serving: weakref.WeakKeyDictionary[Any, dict[tuple[int, int], Callable[[np.ndarray], Any]]] = (
    weakref.WeakKeyDictionary()
)


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


def serving_function(model: Any, rows: int, columns: int) -> Callable[[np.ndarray], Any]:
    """``model(batch, training=False)`` as one TensorFlow graph for batches of any size on a
    ``rows`` x ``columns`` grid, traced at its first call and never again.

    Keras' ``predict_on_batch`` traces its graph at the first call and again at the first call
    with another batch size (seconds each on a CPU, for every study with another number of
    views); a fixed input signature with an open batch dimension traces once. The closure holds
    the model weakly, so the cache does not keep a model alive."""
    per_grid = _serving.setdefault(model, {})
    function = per_grid.get((rows, columns))
    if function is None:
        tf = tensorflow()
        ref = weakref.ref(model)

        def call(batch: Any) -> Any:
            live = ref()
            if live is None:  # pragma: no cover -- the cache entry dies with the model
                raise RuntimeError("the model was released")
            return live(batch, training=False)

        function = tf.function(call, input_signature=[tf.TensorSpec([None, rows, columns, 1], tf.float32)])
        per_grid[(rows, columns)] = function
    return function
