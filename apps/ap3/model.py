"""The AP3 emulators (Keras 3): a bidirectional RNN and a 1-D CNN over the half levels of a column,
and the heating rates derived from fluxes (as climetlab-maelstrom-radiation's ``get_heating_rate``)."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

#: g / cp (m s-2 / J kg-1 K-1) and seconds per day: heating rates in K d-1, as the plugin's default.
G_CP = 9.80665 / 1004
SECONDS_PER_DAY = 24 * 3600


def build_rnn(channels: int, outputs: int, cell: str, units: int, depth: int) -> keras.Model:
    """``(batch, half_levels, channels) -> (batch, half_levels, outputs)``: each layer reads the
    column downwards and upwards (fluxes depend on everything above and below a level)."""
    inputs = keras.Input((None, channels), name="column")
    recurrent = {"lstm": layers.LSTM, "gru": layers.GRU}[cell]
    x = inputs
    for _ in range(depth):
        x = layers.Bidirectional(recurrent(units, return_sequences=True))(x)
    return keras.Model(inputs, layers.Dense(outputs)(x), name=f"bi{cell}")


def build_cnn(channels: int, outputs: int, filters: int, depth: int, kernel_size: int) -> keras.Model:
    """``(batch, half_levels, channels) -> (batch, half_levels, outputs)``: ``depth`` convolutions
    along the levels, so a level sees ``depth * (kernel_size - 1)`` neighbouring levels."""
    inputs = keras.Input((None, channels), name="column")
    x = inputs
    for _ in range(depth):
        x = layers.Conv1D(filters, kernel_size, padding="same", activation="relu")(x)
    return keras.Model(inputs, layers.Conv1D(outputs, 1)(x), name="cnn1d")


def heating_rate(flux_dn: Any, flux_up: Any, pressure_hl: Any) -> Any:
    """``-g/cp * d(net flux)/dp`` per layer in K d-1 from fluxes and pressures on half levels
    (NumPy arrays or tensors alike)."""
    net = flux_dn - flux_up
    return (
        -G_CP
        * SECONDS_PER_DAY
        * (net[..., 1:] - net[..., :-1])
        / (pressure_hl[..., 1:] - pressure_hl[..., :-1])
    )
