"""The ENS-10 baselines in PyTorch: a per-grid-point MLP and a U-Net, and the Gaussian CRPS.

Both map the normalised ensemble statistics to two channels ``(a, b)`` that correct the raw
ensemble of the target variable: ``mu = mean + a * spread`` and ``sigma = exp(b) * spread``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def location_features(latitude: torch.Tensor, longitude: torch.Tensor) -> torch.Tensor:
    """``(3, lat, lon)``: sin(lat), cos(lat) sin(lon), cos(lat) cos(lon) (a point on the sphere)."""
    lat = torch.deg2rad(latitude)[:, None]
    lon = torch.deg2rad(longitude)[None, :]
    return torch.stack(
        [lat.sin().expand(-1, lon.shape[1]), lat.cos() * lon.sin(), lat.cos() * lon.cos()]
    ).float()


def _zero(layer: nn.Module) -> nn.Module:
    """The output layer starts at zero: an untrained model forecasts the raw ensemble."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class PointMLP(nn.Module):
    """``(batch, channels, *points) -> (batch, 2, *points)``; the 3 location features are appended."""

    def __init__(self, channels: int, hidden: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = channels + 3
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(_zero(nn.Linear(width, 2)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, location: torch.Tensor) -> torch.Tensor:
        location = location.unsqueeze(0).expand(x.shape[0], *location.shape)
        features = torch.cat([x, location], dim=1).movedim(1, -1)
        return self.layers(features).movedim(-1, 1)


class _Block(nn.Sequential):
    def __init__(self, inputs: int, outputs: int, kernel_size: int) -> None:
        super().__init__(
            nn.Conv2d(inputs, outputs, kernel_size, padding=kernel_size // 2),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
            nn.Conv2d(outputs, outputs, kernel_size, padding=kernel_size // 2),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """``(batch, channels, lat, lon) -> (batch, outputs, lat, lon)``, any grid size (padded inside).

    Each of ``levels`` poolings halves the resolution and doubles the filters; the decoder
    upsamples bilinearly and concatenates the encoder's features of the same level.
    """

    def __init__(
        self, channels: int, filters: int, levels: int, kernel_size: int, dropout: float, outputs: int = 2
    ) -> None:
        super().__init__()
        self.levels = levels
        widths = [filters * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList()
        inputs = channels
        for width in widths[:-1]:
            self.down.append(_Block(inputs, width, kernel_size))
            inputs = width
        self.bottom = _Block(inputs, widths[-1], kernel_size)
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.up = nn.ModuleList()
        below = widths[-1]
        for width in reversed(widths[:-1]):
            self.up.append(_Block(below + width, width, kernel_size))
            below = width
        self.head = _zero(nn.Conv2d(below, outputs, 1))

    def forward(self, x: torch.Tensor, location: torch.Tensor | None = None) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.levels
        pad_h, pad_w = -height % multiple, -width % multiple
        # longitude wraps around the globe; latitude repeats its edge
        x = F.pad(x, (0, pad_w, 0, 0), mode="circular") if pad_w else x
        x = F.pad(x, (0, 0, 0, pad_h), mode="replicate") if pad_h else x
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.dropout(self.bottom(x))
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)[..., :height, :width]


_SQRT_PI = 1.0 / math.sqrt(math.pi)


def crps_gaussian(mu: torch.Tensor, sigma: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
    """Continuous ranked probability score of N(mu, sigma^2) for ``observation`` (elementwise)."""
    z = (observation - mu) / sigma
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return sigma * (z * (2 * cdf - 1) + 2 * pdf - _SQRT_PI)


def correct(
    output: torch.Tensor, mean: torch.Tensor, spread: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu, sigma)`` from the model's two channels and the raw ensemble mean and spread."""
    scale = spread + eps
    return mean + output[:, 0] * scale, torch.exp(output[:, 1].clamp(max=10)) * scale
