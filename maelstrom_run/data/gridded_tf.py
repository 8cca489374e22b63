"""tf.data front-end of the gridded loader (imports TensorFlow; only apps that use it import this)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from .gridded import GriddedLoader


def dataset(loader: GriddedLoader, steps: int | None = None) -> Any:
    """A ``tf.data.Dataset`` of ``(inputs, target)`` batches; every iteration is a new pass of ``loader``.

    ``steps`` batches per iteration (passes continue one after another), or one pass. Each batch is
    copied out of the loader's buffer (TensorFlow may keep a NumPy array's memory as the tensor's
    while it asks for the next batch), so the loader reuses its buffer right away.
    """
    py, px = loader.patch
    signature = (
        tf.TensorSpec((None, py, px, loader.channels), tf.float32),
        tf.TensorSpec((None, py, px), tf.float32),
    )

    def generate() -> Any:
        for batch in loader.iter_batches(steps):
            yield batch.inputs.copy(), batch.target.copy()

    return tf.data.Dataset.from_generator(generate, output_signature=signature)
