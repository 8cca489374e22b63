"""The AP6 models: weather regimes (PCA of a pressure-level field, then k-means; scikit-learn) and
the per-turbine production MLP (PyTorch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class Regimes:
    """PCA of the standardised field anomalies, then k-means of the principal components."""

    mean: np.ndarray
    std: float
    pca: object
    kmeans: object

    @classmethod
    def fit(cls, fields: np.ndarray, components: int, regimes: int, seed: int) -> Regimes:
        """``fields``: (time, y, x) of the training times."""
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        mean = fields.mean(axis=0)
        std = float(fields.std()) or 1.0
        flat = ((fields - mean) / std).reshape(len(fields), -1)
        pca = PCA(n_components=components, random_state=seed).fit(flat)
        kmeans = KMeans(n_clusters=regimes, n_init=10, random_state=seed).fit(pca.transform(flat))
        return cls(mean, std, pca, kmeans)

    def predict(self, fields: np.ndarray) -> np.ndarray:
        """The regime (0 .. regimes-1) of each of ``fields`` (time, y, x)."""
        flat = ((fields - self.mean) / self.std).reshape(len(fields), -1)
        return self.kmeans.predict(self.pca.transform(flat))  # type: ignore[attr-defined]

    def centres(self) -> np.ndarray:
        """The cluster centres as anomaly fields (regimes, y, x) in the field's units."""
        back = self.pca.inverse_transform(self.kmeans.cluster_centers_)  # type: ignore[attr-defined]
        return back.reshape(-1, *self.mean.shape) * self.std


class ProductionMLP(nn.Module):
    """``(batch, features) -> (batch,)``: normalised production in [0, 1] (a sigmoid output)."""

    def __init__(self, features: int, hidden: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.layers(x)).squeeze(-1)
