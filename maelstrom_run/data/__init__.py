"""Datasets of the applications: generated sample data in the layout of the real ones, the public
files fetched into a cache, views of them (xarray, tf.data, PyTorch), loaders and preprocessing.
Imports core, config and backends (their files, for copies)."""

from __future__ import annotations

from typing import Any


def load_dataset(name_or_config: Any, tier: str | None = None, **kwargs: Any) -> Any:
    """See :func:`maelstrom_run.data.datasets.load_dataset`."""
    from .datasets import load_dataset as load

    return load(name_or_config, tier, **kwargs)


__all__ = ["load_dataset"]
