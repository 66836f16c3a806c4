"""The network: a small residual fully convolutional net with a top-down path, from the model
grid to a stride-8 map of two logits per cell (0: malignant, 1: any lesion).

The same layers serve three uses, as in Shen et al. (2019): on patches (lesion-centred crops,
the patch classifier), on whole images (the image classifier), and at serving time. Nothing is
converted between them: the net is fully convolutional, and an image's or a patch's score is
the masked log-sum-exp of its cells (``mammogate.inference.scoring``, with the same formula in
Keras ops here). Only built-in Keras layers are used, so a saved model loads without custom code.
"""

from __future__ import annotations

from typing import Any

HEATMAP_STRIDE = 8
CHANNELS = ("malignant", "lesion")
WIDTHS = (24, 32, 48, 96, 128)  # stem, stride 4, 8, 16, 32


def _conv_bn(x: Any, filters: int, *, kernel: int = 3, strides: int = 1, dilation: int = 1, relu: bool = True) -> Any:
    from keras import layers

    x = layers.Conv2D(
        filters, kernel, strides=strides, padding="same", dilation_rate=dilation, use_bias=False,
        kernel_initializer="he_normal",
    )(x)
    x = layers.BatchNormalization(momentum=0.95)(x)
    return layers.Activation("relu")(x) if relu else x


def _residual(x: Any, filters: int, *, strides: int = 1, dilation: int = 1) -> Any:
    from keras import layers

    shortcut = x
    y = _conv_bn(x, filters, strides=strides)
    y = _conv_bn(y, filters, dilation=dilation, relu=False)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = _conv_bn(shortcut, filters, kernel=1, strides=strides, relu=False)
    return layers.Activation("relu")(layers.Add()([y, shortcut]))


def build_heatmap_model(
    rows: int | None = None, columns: int | None = None, *, widths: tuple[int, ...] = WIDTHS,
    name: str = "mammogate_heatmap",
) -> Any:
    """Image (rows, columns, 1) in [0, 1] → logits (rows/8, columns/8, 2). ``rows`` and
    ``columns`` may be None (any multiple of 32)."""
    import keras
    from keras import layers

    stem, w4, w8, w16, w32 = widths
    inputs = keras.Input((rows, columns, 1), name="image")
    x = layers.Rescaling(2.0, offset=-1.0)(inputs)
    x = _conv_bn(x, stem, kernel=5, strides=2)
    s4 = _residual(x, w4, strides=2)
    s8 = _residual(_residual(s4, w8, strides=2), w8)
    s16 = _residual(_residual(s8, w16, strides=2), w16, dilation=2)
    s32 = _residual(_residual(s16, w32, strides=2), w32, dilation=2)
    up16 = layers.Concatenate()([layers.UpSampling2D(interpolation="bilinear")(s32), s16])
    up16 = _conv_bn(up16, w16)
    up8 = layers.Concatenate()([layers.UpSampling2D(interpolation="bilinear")(up16), s8])
    up8 = _conv_bn(up8, 64)
    up8 = layers.SpatialDropout2D(0.1)(up8)
    logits = layers.Conv2D(
        len(CHANNELS), 1, name="logits", bias_initializer=keras.initializers.Constant(-3.0)
    )(up8)
    return keras.Model(inputs, logits, name=name)


def masked_lse(logits: Any, mask: Any, sharpness: float) -> Any:
    """Keras-ops twin of ``mammogate.inference.scoring.pooled_logits``: per channel,
    max + log(mean over masked cells of exp(r (x - max))) / r. ``logits`` (B, h, w, C), ``mask``
    (B, h, w, 1) of 0/1; an empty mask counts every cell."""
    from keras import ops

    mask = ops.where(ops.sum(mask, axis=(1, 2, 3), keepdims=True) > 0, mask, ops.ones_like(mask))
    masked = ops.where(mask > 0, logits, ops.full_like(logits, -1e4))
    top = ops.max(masked, axis=(1, 2), keepdims=True)
    weights = ops.exp(sharpness * (masked - top)) * mask
    mean = ops.sum(weights, axis=(1, 2)) / ops.sum(mask, axis=(1, 2))
    return ops.reshape(top, (-1, logits.shape[-1])) + ops.log(mean + 1e-12) / sharpness
