"""The AP1 U-Net (Keras 3 functional API) and its optimizer."""

from __future__ import annotations

import keras
from keras import layers


def _block(x: keras.KerasTensor, filters: int, kernel_size: int) -> keras.KerasTensor:
    for _ in range(2):
        x = layers.Conv2D(filters, kernel_size, padding="same", activation="relu")(x)
    return x


def build_unet(channels: int, filters: int, levels: int, kernel_size: int, dropout: float) -> keras.Model:
    """``(batch, y, x, channels) -> (batch, y, x)`` for fields whose sides divide by ``2**levels``.

    Each level doubles the filters and halves the resolution; skip connections carry the
    detail of every level to the decoder.
    """
    inputs = keras.Input((None, None, channels), name="fields")
    x, skips = inputs, []
    for level in range(levels):
        x = _block(x, filters * 2**level, kernel_size)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = _block(x, filters * 2**levels, kernel_size)
    if dropout:
        x = layers.SpatialDropout2D(dropout)(x)
    for level in reversed(range(levels)):
        x = layers.Conv2DTranspose(filters * 2**level, 2, strides=2, padding="same")(x)
        x = _block(layers.Concatenate()([x, skips[level]]), filters * 2**level, kernel_size)
    outputs = keras.ops.squeeze(layers.Conv2D(1, 1)(x), axis=-1)
    return keras.Model(inputs, outputs, name="unet")


def make_optimizer(name: str, learning_rate: float, weight_decay: float) -> keras.optimizers.Optimizer:
    """``adam``, ``adamw`` or ``sgd``; a weight decay of 0 is none (AdamW then is Adam)."""
    cls = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}[name]
    return cls(
        learning_rate=learning_rate, weight_decay=weight_decay if weight_decay or name == "adamw" else None
    )
