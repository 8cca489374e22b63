"""PyTorch front-end of the gridded loader (imports torch; only apps that use it import this)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .gridded import GriddedLoader


class GriddedDataset(IterableDataset):
    """``(inputs, target)`` float32 tensors of whole batches; every iteration is a new pass.

    Use it with ``DataLoader(dataset, batch_size=None)``: the loader batches and prefetches with
    its own threads, so ``num_workers=0`` is what it is made for. The tensors share the
    loader's buffers and stay valid until the next batch is requested; ``copy=True`` hands out
    copies instead (to keep batches longer).
    """

    def __init__(self, loader: GriddedLoader, steps: int | None = None, copy: bool = False) -> None:
        super().__init__()
        self.loader, self.steps, self.copy = loader, steps, copy

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if get_worker_info() is not None:
            raise RuntimeError(
                "GriddedDataset: use DataLoader(..., num_workers=0); the loader has its own threads "
                "(loader.threads)"
            )
        for batch in self.loader.iter_batches(self.steps):
            inputs, target = torch.from_numpy(batch.inputs), torch.from_numpy(batch.target)
            yield (inputs.clone(), target.clone()) if self.copy else (inputs, target)
